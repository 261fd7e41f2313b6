"""Both benchmarks run end to end and write their JSON (on a tiny Llama and small synthetic data;
the real figures come from running them by hand, see the README)."""

import copy
import json

import pytest

from reclora.bench.quality import bench_quality
from reclora.bench.speed import bench_speed, forward_flops, step_flops
from reclora.config import load_params


@pytest.fixture()
def small_params():
    p = copy.deepcopy(load_params())
    p["synthetic"].update(n_users=120, n_items=150, mean_interactions=40)
    p["validation"]["min_interactions"] = 100
    p["crm"].update(max_epochs=3, mlp=[64, 32], embed_dim=16)
    p["train"].update(
        sample_size=32, eval_samples=48, batch_size=8, checkpoint_every=2, epochs=2, valid_samples=24, diagnostics=True
    )
    p["adapter"].update(n_experts=4, rank=4, layers=1)
    p["evaluation"]["slices"]["min_samples"] = 10
    return p


def test_quality_benchmark_writes_every_model(tmp_path, tiny_llama_dir, small_params):
    out = tmp_path / "quality.json"
    r = bench_quality(
        "synthetic",
        None,
        out,
        tmp_path / "work",
        small_params,
        ablations=True,
        model_path=str(tiny_llama_dir),
        progress=False,
    )
    saved = json.loads(out.read_text())
    assert saved["models"] == r["models"]
    names = {
        "CRM",
        "Vanilla LoRA",
        "RecLoRA",
        "RecLoRA + CRM residual",
        "RecLoRA (two-stage)",
        "RecLoRA (uniform gate)",
        "RecLoRA (recent-K)",
        "RecLoRA + CRM residual (no text path)",
    }
    # the peer DIN of a maintained CTR library (the `peer` extra, installed by `make install`) is its own row
    names.add("Peer DIN (DeepCTR-Torch)")
    assert set(saved["models"]) == names
    assert (
        saved["peer"]["library"] == "deepctr-torch 0.3.0" and saved["models"]["Peer DIN (DeepCTR-Torch)"]["auc"] > 0.6
    )
    # the anchored readout without its text path is the CRM, exactly
    no_text = saved["models"]["RecLoRA + CRM residual (no text path)"]
    assert no_text["auc"] == saved["models"]["CRM"]["auc"]
    assert no_text["logloss"] == pytest.approx(saved["models"]["CRM"]["logloss"], abs=1e-6)
    # a paired bootstrap interval for every RecLoRA row against the CRM
    assert set(saved["auc_diff_vs_crm"]) == {n for n in names if n.startswith("RecLoRA")}
    for n, ci in saved["auc_diff_vs_crm"].items():
        assert ci["lo"] <= ci["diff"] <= ci["hi"] and ci["n"] == 48, n
        assert ci["diff"] == pytest.approx(saved["models"][n]["auc"] - saved["models"]["CRM"]["auc"], abs=1e-5)
    # the slice table (CRM, vanilla LoRA, RecLoRA with intervals) on the evaluated samples, printed and saved
    rows = saved["slices"]["rows"]
    assert sum(r["n"] for r in rows if r["feature"] == "item popularity") == 48
    scored = [r for r in rows if r["scored"]]
    assert scored and all(set(saved["models"]) == set(r["models"]) and "RecLoRA - CRM" in r["diffs"] for r in scored)
    assert all(r["note"].startswith(("too small", "not scored")) for r in rows if not r["scored"])
    # early stopping on the validation subset, and the text-path diagnostics
    tr = saved["llm_train"]["RecLoRA"]
    assert 1 <= len(tr["valid_auc"]) <= 2 and tr["best_epoch"] in (1, 2)
    d = saved["diagnostics"]["Vanilla LoRA"]
    assert 0.0 < d["yes_no_mass_base"]["mean"] <= 1.0 and 0.0 <= d["linear_probe"]["auc"] <= 1.0
    for m in saved["models"].values():
        assert 0.0 <= m["auc"] <= 1.0 and m["logloss"] > 0 and m["n"] == 48
    # the CRM learns the synthetic taste x genre signal
    assert saved["crm_full_test"]["auc"] > 0.6
    assert saved["samples"]["few2many_train"] == 32 and saved["samples"]["evaluated"] == 48
    assert {
        "prepare",
        "validate",
        "retrieve",
        "crm",
        "peer_din",
        "lora",
        "reclora",
        "reclora-residual",
        "evaluate",
    } <= set(saved["seconds"])
    report = tmp_path / "work" / "report"
    assert (report / "report.html").is_file() and (report / "roc.png").is_file()
    # adapters are saved as safetensors + JSON, checkpoints are cleaned up after success
    assert (tmp_path / "work" / "reclora" / "adapter" / "adapter_model.safetensors").is_file()
    # two-stage RecLoRA started from the vanilla LoRA the same run trained
    two = json.loads((tmp_path / "work" / "reclora-two-stage" / "metrics.json").read_text())
    assert two["model"] == "reclora+two_stage" and two["adapter"]["init_from"] == str(
        tmp_path / "work" / "lora" / "adapter"
    )
    assert not list((tmp_path / "work").glob(".*.run"))


def test_speed_benchmark_writes_ratios(tmp_path, tiny_llama_dir):
    p = copy.deepcopy(load_params())
    p["adapter"]["layers"] = 1
    p["bench"]["speed"].update(few2many_samples=16, few2many_epochs=2)
    r = bench_speed(tmp_path / "speed.json", p, str(tiny_llama_dir), batch_size=2, seq_len=16, steps=1, warmup=0)
    few = saved_few = json.loads((tmp_path / "speed.json").read_text())["few2many"]
    assert set(few["samples_per_s"]) == {"reference", "default"}
    assert few["speedup"] == pytest.approx(
        few["samples_per_s"]["default"] / few["samples_per_s"]["reference"], rel=1e-2
    )
    assert saved_few["runs"]["reference"]["layers"] == "all" and not saved_few["runs"]["reference"]["cache_lower"]
    assert (
        saved_few["runs"]["default"]["first_adapted_layer"] == 1 and saved_few["runs"]["default"]["samples_seen"] == 32
    )
    saved = json.loads((tmp_path / "speed.json").read_text())
    assert set(saved["runs"]) == {f"{k}_{p}" for k in ("lora", "reclora") for p in ("fp32", "bf16", "auto")}
    for prec in ("fp32", "bf16"):
        ratio = saved["runs"][f"reclora_{prec}"]["step_seconds"] / saved["runs"][f"lora_{prec}"]["step_seconds"]
        assert saved["reclora_over_lora_step_time"][prec] == pytest.approx(ratio)
        assert saved["runs"][f"reclora_{prec}"]["precision"] == prec
    assert saved["matmul_peak_gflops"]["bf16"] > 0 and saved["peak_rss_gb"] > 0
    assert r["runs"]["reclora_fp32"]["trainable_parameters"] > r["runs"]["lora_fp32"]["trainable_parameters"]
    # auto is this machine's choice, timed in the same run as the forced precisions; MFU at that precision's peak
    from reclora.hardware import cpu_model
    from reclora.precision import choose

    chosen = choose("auto", "cpu", log=False).name
    sp = saved["speed"]
    assert saved["precision"]["chosen"] == sp["mfu_precision"] == saved["runs"]["reclora_auto"]["precision"] == chosen
    assert (
        set(sp["step_s"]) == {"fp32", "bf16", "auto"}
        and sp["step_s"]["auto"] == saved["runs"]["reclora_auto"]["step_seconds"]
    )
    assert sp["auto_over_fastest"] == pytest.approx(
        sp["step_s"]["auto"] / min(sp["step_s"]["fp32"], sp["step_s"]["bf16"])
    )
    run = saved["runs"]["reclora_auto"]
    assert sp["mfu"] == pytest.approx(
        run["flops_per_step"] / run["step_seconds"] / 1e9 / saved["matmul_peak_gflops"][chosen]
    )
    assert saved["hardware"]["cpu"]["model"] == cpu_model()[0] and saved["hardware"]["threads"] >= 1
    assert saved["few2many"]["runs"]["default"]["precision"] == chosen  # params' train.precision: auto


def test_step_flops_counts_the_smollm2_shape():
    from transformers import LlamaConfig

    cfg = LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
    )
    # 30 layers x (2*576^2 + 2*576*192 + 3*576*1536) = 106.2M linear params
    p_layer = 2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536
    # every layer adapted: forward 2 FLOPs/param/token + attention 4*seq*d; backward (input gradients)
    # 2 FLOPs/param/token + attention 8*seq*d; the Yes/No head: 2 rows, forward and backward
    f = step_flops(cfg, batch=1, seq=1)
    assert f == pytest.approx(4 * 30 * p_layer + (4 + 8) * 576 * 30 + 4 * 576 * 2)
    # the top 4 layers adapted (the default): backward only through them; 8 sequences of 256 tokens
    f4 = step_flops(cfg, batch=8, seq=256, adapted_layers=4)
    t = 8 * 256
    assert f4 == pytest.approx(
        (2 * p_layer + 4 * 256 * 576) * 30 * t + (2 * p_layer + 8 * 256 * 576) * 4 * t + 4 * 576 * 2 * 8
    )
    assert step_flops(cfg, 8, 256, adapted_layers=99) == step_flops(cfg, 8, 256)  # more than L: all of them


def test_forward_flops_of_a_served_row():
    from transformers import LlamaConfig

    cfg = LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
    )
    per_token = 2 * 30 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536)  # half a train step's linear FLOPs
    # two rows of 100 and 200 tokens: attention 4 d L T^2 per row, the Yes/No rows of the head at each end
    f = forward_flops(cfg, rows=2, tokens=300, tokens_squared=100**2 + 200**2)
    assert f == pytest.approx(per_token * 300 + 4 * 576 * 30 * (100**2 + 200**2) + 2 * 576 * 2 * 2)
    assert forward_flops(cfg, 1, 1, 1) * 2 < step_flops(
        cfg, batch=1, seq=1
    )  # attention's backward is twice its forward


def test_curve_benchmark_writes_points_and_a_plot(tmp_path, tiny_llama_dir, small_params):
    from reclora.bench.curve import bench_curve

    small_params["train"].update(epochs=1, valid_samples=0, diagnostics=False)
    out = tmp_path / "curve.json"
    r = bench_curve(
        "synthetic",
        None,
        out,
        [32, 16],
        tmp_path / "work",
        small_params,
        model_path=str(tiny_llama_dir),
        progress=False,
    )
    saved = json.loads(out.read_text())
    assert list(saved["sizes"]) == ["16", "32"] and saved["evaluated"] == 48 and saved["complete"] is True
    for n, point in saved["sizes"].items():
        assert set(point) == {"Vanilla LoRA", "RecLoRA"}
        for m in point.values():
            assert m["train_samples"] == int(n) and m["n"] == 48 and 0 <= m["auc"] <= 1
    assert 0.5 < saved["crm"]["auc"] <= 1 and (tmp_path / "curve.png").stat().st_size > 10_000
    assert r["plot"] == str(tmp_path / "curve.png")
    with pytest.raises(ValueError, match="positive"):
        bench_curve("synthetic", None, out, [], tmp_path / "w2", small_params, model_path=str(tiny_llama_dir))
