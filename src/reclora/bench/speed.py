"""`reclora bench speed`: train-step time of vanilla LoRA vs RecLoRA, tokens/s, MFU, peak memory.

All figures come from one process and one run, so their ratios are comparable on a
noisy machine: the matmul peak is measured right before the step timings.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from reclora.config import load_params
from reclora.io import write_json


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    """Measured dense matmul throughput in GFLOP/s for an n x n x n product."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    for _ in range(2):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def step_flops(config: Any, batch: int, seq: int) -> float:
    """Model FLOPs of one LoRA train step (frozen base): forward + activation gradients.

    Per token and layer the linear layers cost 2 * P_layer FLOPs forward and the same again
    for the input gradients (no weight gradients: the base is frozen); attention adds
    4 * seq * d forward (QK^T and AV) and as much backward. The LM head runs on the last
    position only (logits_to_keep=1). Adapter FLOPs are left out (they are < 1%).
    """
    d, L, ff = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    kv = config.num_key_value_heads * (d // config.num_attention_heads)
    p_layer = d * d * 2 + d * kv * 2 + 3 * d * ff
    tokens = batch * seq
    linear = 2 * 2 * p_layer * L * tokens
    attn = 2 * 4 * seq * d * L * tokens
    head = 2 * 2 * d * config.vocab_size * batch
    return float(linear + attn + head)


def _time_steps(kind: str, model_path: str, adapter_cfg: dict, batch: int, seq: int, bf16: bool,
                steps: int, warmup: int, seed: int = 0) -> dict[str, float]:  # fmt: skip
    from reclora.few2many import build_adapter
    from reclora.llm import load_causal_lm

    torch.manual_seed(seed)
    base, _ = load_causal_lm(model_path)
    cfg = base.config
    adapter = build_adapter(kind, base, adapter_cfg)
    params = [p for _, p in adapter.named_trainable_parameters()]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(min(100, cfg.vocab_size // 2), cfg.vocab_size, (batch, seq), generator=g)  # skip special tokens
    mask = torch.ones_like(ids)
    sig = torch.randn(batch, adapter_cfg["signal_dim"], generator=g) if kind == "reclora" else None
    target = torch.randint(0, 2, (batch,), generator=g)  # the Yes/No loss of train.loss: yes_no
    adapter.train(True)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = adapter.answer_logits(ids, mask, sig, (0, 1))
        loss = torch.nn.functional.cross_entropy(logits, target)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return {
        "step_seconds": float(np.median(times)),
        "step_seconds_all": [round(t, 4) for t in times],
        "trainable_parameters": int(sum(p.numel() for p in params)),
        "flops_per_step": step_flops(cfg, batch, seq),
    }


def speed_prompts(dataset: str, path: str | Path | None, n: int, params: Mapping[str, Any], seed: int = 0) -> tuple[list[str], np.ndarray]:
    """``n`` real CTR prompts (profile, recent-K history with stars, target) and labels from ``dataset``
    (ML-100K with its path, or the synthetic generator), a seeded sample of the training split."""
    import tempfile

    from reclora.data import prepare, read_prepared
    from reclora.few2many import sample_few
    from reclora.prompts import NOUNS, build_prompts
    from reclora.retrieval import retrieve

    with tempfile.TemporaryDirectory() as tmp:
        prepare(dataset, path, Path(tmp) / "prepared", dict(params))
        tables, samples, meta = read_prepared(Path(tmp) / "prepared")
    train = samples["train"]
    few = train.iloc[sample_few(len(train), n, seed)].reset_index(drop=True)
    rp = params["retrieval"]
    r = retrieve(few, int(rp["k_long"]), int(rp["k_short"]), "recent", None, None)
    prompts = build_prompts(r, tables.items, tables.users, noun=NOUNS.get(meta["dataset"], "item"),
                            threshold=float(meta["label_threshold"]))  # fmt: skip
    return prompts, r["label"].to_numpy()


def few2many_throughput(model_path: str, adapter_cfg: dict, train_cfg: dict, prompts: list[str], labels: np.ndarray,
                        seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Few2Many training samples/s of vanilla LoRA for one configuration: every epoch's samples over the
    wall time of ``train_adapter`` (caching of the frozen layers included)."""
    from reclora.few2many import TrainConfig, build_adapter, train_adapter
    from reclora.llm import load_causal_lm

    torch.manual_seed(seed)
    base, tok = load_causal_lm(model_path)
    adapter = build_adapter("lora", base, adapter_cfg)
    cfg = TrainConfig.from_dict(train_cfg | {"checkpoint_every": 0, "seed": seed})
    t0 = time.perf_counter()
    h = train_adapter(adapter, tok, prompts, labels, None, cfg, progress=False)
    secs = time.perf_counter() - t0
    return {
        "samples_per_s": round(h["samples_seen"] / secs, 3),
        "seconds": round(secs, 2),
        "cache_seconds": h["cache_seconds"],
        "samples_seen": h["samples_seen"],
        "layers": adapter_cfg.get("layers", "all"),
        "first_adapted_layer": adapter.first_layer,
        "cache_lower": cfg.cache_lower,
        "bucket": cfg.bucket,
        "epochs": cfg.epochs,
    }


REFERENCE = {"adapter": {"layers": "all"}, "train": {"cache_lower": False, "bucket": False}}


def bench_few2many_speed(model_path: str, p: Mapping[str, Any], dataset: str, path: str | Path | None,
                         n: int, epochs: int) -> dict[str, Any]:  # fmt: skip
    """Few2Many training samples/s on real prompts: the reference configuration (all layers, no cache, no
    length buckets) against params.yaml's, same prompts, same epochs; and their ratio."""
    prompts, labels = speed_prompts(dataset, path, n, p)
    tp = dict(p["train"]) | {"epochs": epochs, "patience": 0}
    out: dict[str, Any] = {"dataset": dataset, "samples": n, "epochs": epochs,
                           "mean_prompt_chars": round(float(np.mean([len(x) for x in prompts])), 1)}  # fmt: skip
    runs = {}
    for name, over in (("reference", REFERENCE), ("default", {"adapter": {}, "train": {}})):
        runs[name] = few2many_throughput(model_path, dict(p["adapter"]) | over["adapter"], tp | over["train"], prompts, labels)
        print(f"[bench speed] few2many {name}: {runs[name]['samples_per_s']:.2f} samples/s "
              f"(layers {runs[name]['layers']}, cache {runs[name]['cache_lower']}, buckets {runs[name]['bucket']})", flush=True)  # fmt: skip
    out["runs"] = runs
    out["samples_per_s"] = {k: r["samples_per_s"] for k, r in runs.items()}
    out["speedup"] = round(runs["default"]["samples_per_s"] / runs["reference"]["samples_per_s"], 3)
    print(f"[bench speed] few2many speedup: {out['speedup']:.2f}x", flush=True)
    return out


def bench_speed(
    out: str | Path,
    params: Mapping[str, Any] | None = None,
    model_path: str | None = None,
    batch_size: int | None = None,
    seq_len: int | None = None,
    steps: int | None = None,
    warmup: int | None = None,
    dataset: str = "synthetic",
    path: str | Path | None = None,
    few2many_samples: int | None = None,
) -> dict[str, Any]:
    """Step times (random tokens, fixed shape) of vanilla LoRA and RecLoRA, and Few2Many training
    samples/s on real prompts (reference vs default configuration); one JSON, one process."""
    from reclora.bench.quality import machine_info
    from reclora.llm import resolve_model_path
    from reclora.io import refuse_overlap
    from reclora.lora.config import gate_signal_width

    refuse_overlap({"--out": out}, {"--path": path if dataset != "synthetic" else None, "--model": model_path})
    p = dict(params) if params is not None else load_params()
    sp = p["bench"]["speed"]
    b, s = batch_size or sp["batch_size"], seq_len or sp["seq_len"]
    n, w = steps or sp["steps"], warmup if warmup is not None else sp["warmup"]
    model_dir = resolve_model_path(model_path)
    width = gate_signal_width(int(p["crm"]["mlp"][-1]), p["adapter"].get("gate_input", "hidden"))
    ap = dict(p["adapter"]) | {"signal_dim": width}
    t_all = time.perf_counter()
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"[bench speed] matmul peak fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s", flush=True)
    runs: dict[str, dict[str, Any]] = {}
    for precision in ("fp32", "bf16"):
        for kind in ("lora", "reclora"):
            r = _time_steps(kind, model_dir, ap, b, s, precision == "bf16", n, w)
            r["tokens_per_s"] = b * s / r["step_seconds"]
            r["achieved_gflops"] = r["flops_per_step"] / r["step_seconds"] / 1e9
            r["mfu_vs_measured_peak"] = r["achieved_gflops"] / peak[precision]
            runs[f"{kind}_{precision}"] = r
            print(
                f"[bench speed] {kind:8s} {precision}: {r['step_seconds']:.2f} s/step, {r['tokens_per_s']:.0f} tokens/s, "
                f"{r['achieved_gflops']:.0f} GFLOP/s = {100 * r['mfu_vs_measured_peak']:.0f}% of the measured peak",
                flush=True,
            )
    few = bench_few2many_speed(model_dir, p, dataset, path, int(few2many_samples or sp.get("few2many_samples", 64)),
                               int(sp.get("few2many_epochs", 2)))  # fmt: skip
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    result = {
        "benchmark": "speed",
        "model": model_dir,
        "batch_size": b,
        "seq_len": s,
        "steps": n,
        "warmup": w,
        "adapter": ap,
        "matmul_peak_gflops": peak,
        "runs": runs,
        "reclora_over_lora_step_time": {
            prec: runs[f"reclora_{prec}"]["step_seconds"] / runs[f"lora_{prec}"]["step_seconds"] for prec in ("fp32", "bf16")
        },
        "bf16_speedup": {k: runs[f"{k}_fp32"]["step_seconds"] / runs[f"{k}_bf16"]["step_seconds"] for k in ("lora", "reclora")},
        "few2many": few,
        "peak_rss_gb": round(rss_gb, 3),
        "wall_seconds": round(time.perf_counter() - t_all, 1),
        "machine": machine_info(),
    }
    print(
        f"[bench speed] RecLoRA/LoRA step time: fp32 {result['reclora_over_lora_step_time']['fp32']:.3f}x, "
        f"bf16 {result['reclora_over_lora_step_time']['bf16']:.3f}x; peak RSS {rss_gb:.2f} GB",
        flush=True,
    )
    write_json(out, result)
    return result
