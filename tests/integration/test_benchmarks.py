"""Both benchmarks run end to end and write their JSON (on a tiny Llama and small synthetic data;
the real figures come from running them by hand, see the README)."""

import copy
import json

import pytest

from reclora.bench.quality import bench_quality
from reclora.bench.speed import bench_speed, step_flops
from reclora.config import load_params


@pytest.fixture()
def small_params():
    p = copy.deepcopy(load_params())
    p["synthetic"].update(n_users=120, n_items=150, mean_interactions=40)
    p["validation"]["min_interactions"] = 100
    p["crm"].update(max_epochs=3, mlp=[64, 32], embed_dim=16)
    p["train"].update(sample_size=32, eval_samples=48, batch_size=8, checkpoint_every=2)
    p["adapter"].update(n_experts=4, rank=4)
    return p


def test_quality_benchmark_writes_every_model(tmp_path, tiny_llama_dir, small_params):
    out = tmp_path / "quality.json"
    r = bench_quality("synthetic", None, out, tmp_path / "work", small_params, ablations=True,
                      model_path=str(tiny_llama_dir), progress=False)  # fmt: skip
    saved = json.loads(out.read_text())
    assert saved["models"] == r["models"]
    names = {"CRM", "Vanilla LoRA", "RecLoRA", "RecLoRA (uniform gate)", "RecLoRA (recent-K)"}
    assert set(saved["models"]) == names
    for m in saved["models"].values():
        assert 0.0 <= m["auc"] <= 1.0 and m["logloss"] > 0 and m["n"] == 48
    # the CRM learns the synthetic taste x genre signal
    assert saved["crm_full_test"]["auc"] > 0.6
    assert saved["samples"]["few2many_train"] == 32 and saved["samples"]["evaluated"] == 48
    assert {"prepare", "validate", "retrieve", "crm", "vanilla_lora", "reclora", "evaluate"} <= set(saved["seconds"])
    report = tmp_path / "work" / "report"
    assert (report / "report.html").is_file() and (report / "roc.png").is_file()
    # adapters are saved as safetensors + JSON, checkpoints are cleaned up after success
    assert (tmp_path / "work" / "reclora" / "adapter" / "adapter_model.safetensors").is_file()
    assert not list((tmp_path / "work").glob(".*.run"))


def test_speed_benchmark_writes_ratios(tmp_path, tiny_llama_dir):
    p = copy.deepcopy(load_params())
    r = bench_speed(tmp_path / "speed.json", p, str(tiny_llama_dir), batch_size=2, seq_len=16, steps=1, warmup=0)
    saved = json.loads((tmp_path / "speed.json").read_text())
    assert set(saved["runs"]) == {"lora_fp32", "reclora_fp32", "lora_bf16", "reclora_bf16"}
    for prec in ("fp32", "bf16"):
        ratio = saved["runs"][f"reclora_{prec}"]["step_seconds"] / saved["runs"][f"lora_{prec}"]["step_seconds"]
        assert saved["reclora_over_lora_step_time"][prec] == pytest.approx(ratio)
    assert saved["matmul_peak_gflops"]["bf16"] > 0 and saved["peak_rss_gb"] > 0
    assert r["runs"]["reclora_fp32"]["trainable_parameters"] > r["runs"]["lora_fp32"]["trainable_parameters"]


def test_step_flops_counts_the_smollm2_shape():
    from transformers import LlamaConfig

    cfg = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                      num_key_value_heads=3, vocab_size=49152)  # fmt: skip
    # 30 layers x (2*576^2 + 2*576*192 + 3*576*1536) = 106.2M linear params; 4 FLOPs/param/token
    per_token_linear = 4 * 30 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536)
    f = step_flops(cfg, batch=1, seq=1)
    assert f == pytest.approx(per_token_linear + 8 * 576 * 30 + 4 * 576 * 49152)
