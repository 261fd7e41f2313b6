"""`reclora bench speed`: train-step time of vanilla LoRA vs RecLoRA, tokens/s, MFU, peak memory.

All figures come from one process and one run, so their ratios are comparable on a
noisy machine: the matmul peak is measured right before the step timings.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reclora.config import Params, as_params
from reclora.io import write_json


def matmul_peak(precision: str, n: int = 2048, seconds: float = 2.0) -> float:
    """Measured dense matmul throughput in GFLOP/s at ``precision`` (fp32 | bf16 | fp16) on the CPU: an
    [n, n] fp32 input times an [n, n] fp32 weight through ``torch.nn.functional.linear`` under that
    precision's autocast, as the model's layers run. ``n`` is halved (down to 256) while one product
    takes more than a quarter of ``seconds`` (software bf16 on an AVX2 CPU), so the measurement stays
    within about ``seconds`` plus the warm-up."""
    from reclora.precision import Capabilities, decide

    prec = decide(precision, Capabilities(device="cpu"))  # an explicit name: no probe, no query
    while True:
        a, w = torch.randn(n, n), torch.randn(n, n)
        with torch.no_grad(), prec.autocast("cpu"):
            t = time.perf_counter()
            torch.nn.functional.linear(a, w)
            first = time.perf_counter() - t
            if first > seconds / 4 and n > 256:
                n //= 2
                continue
            torch.nn.functional.linear(a, w)
            reps, t0 = 0, time.perf_counter()
            while reps == 0 or time.perf_counter() - t0 < seconds:
                torch.nn.functional.linear(a, w)
                reps += 1
            return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def step_flops(config: Any, batch: int, seq: int, adapted_layers: int | None = None, head_rows: int = 2) -> float:
    """Model FLOPs of one adapter train step on a frozen base: the forward pass through every layer plus
    the input gradients through the adapted layers only, for ``batch`` sequences of ``seq`` tokens.

    Forward, per token and layer: 2 * P_layer for the linear maps and 4 * seq * d for attention (QK^T and
    AV). Backward: autograd stops below the lowest adapted layer (nothing there needs a gradient), so only
    the top ``adapted_layers`` layers (None: all) run it; per token and layer 2 * P_layer for the input
    gradients of the linear maps (no weight gradients: the base is frozen) and 8 * seq * d for attention
    (the gradients of QK^T with respect to Q and K, and of AV with respect to the attention weights and V).
    The readout is ``head_rows`` lm_head rows at each sequence's last position (the Yes/No loss: 2),
    forward and backward. Adapter FLOPs are left out (< 1%)."""
    d, L = config.hidden_size, config.num_hidden_layers
    la = L if adapted_layers is None else min(int(adapted_layers), L)
    tokens = batch * seq
    forward = (2 * _layer_params(config) + 4 * seq * d) * L * tokens
    backward = (2 * _layer_params(config) + 8 * seq * d) * la * tokens
    head = 2 * 2 * d * head_rows * batch
    return float(forward + backward + head)


def _layer_params(config: Any) -> int:
    """Weights of one decoder layer's linear maps (q, k, v, o and the gated MLP) of a Llama-style config."""
    d, ff = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * (d // config.num_attention_heads)
    return d * d * 2 + d * kv * 2 + 3 * d * ff


def forward_flops(config: Any, rows: float, tokens: float, tokens_squared: float, head_rows: int = 2) -> float:
    """Model FLOPs of forward passes over ``rows`` sequences with ``tokens`` tokens in all and
    ``tokens_squared`` the sum of their squared lengths: 2 * P_layer per token and layer (linear maps),
    4 * T * d per token and layer in a sequence of T (QK^T and AV), and ``head_rows`` lm_head rows at each
    sequence's last position (the Yes/No readout: 2). ``config``: any object with a Llama config's
    dimension attributes (hidden_size, num_hidden_layers, intermediate_size, num_attention_heads,
    num_key_value_heads)."""
    d, L = config.hidden_size, config.num_hidden_layers
    return float(2 * _layer_params(config) * L * tokens + 4 * d * L * tokens_squared + 2 * d * head_rows * rows)


def _time_steps(
    kind: str,
    model_path: str,
    adapter_cfg: dict,
    batch: int,
    seq: int,
    precision: Any,
    steps: int,
    warmup: int,
    seed: int = 0,
) -> dict[str, float]:
    """Median seconds of ``steps`` train steps of ``kind`` at ``precision`` (a
    :class:`~reclora.precision.Precision`; fp16 with its gradient scaler), random tokens [batch, seq], after
    ``warmup`` untimed steps (their times are kept too, as ``warmup_seconds``)."""
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
    scaler = precision.grad_scaler("cpu")
    times: list[float] = []
    warm: list[float] = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with precision.autocast("cpu"):
            logits = adapter.answer_logits(ids, mask, sig, (0, 1))
        loss = torch.nn.functional.cross_entropy(logits, target)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        (warm if i < warmup else times).append(time.perf_counter() - t0)
    return {
        "step_seconds": float(np.median(times)),
        "step_seconds_all": [round(t, 4) for t in times],
        "warmup_seconds": [round(t, 4) for t in warm],
        "trainable_parameters": int(sum(p.numel() for p in params)),
        # the adapter's own lowest adapted layer: autograd stops below it
        "flops_per_step": step_flops(cfg, batch, seq, adapted_layers=cfg.num_hidden_layers - adapter.first_layer),
    }


def speed_prompts(
    dataset: str, path: str | Path | None, n: int, params: Params | Mapping[str, Any], seed: int = 0
) -> tuple[list[str], np.ndarray]:
    """``n`` real CTR prompts (profile, recent-K history with stars, target) and labels from ``dataset``
    (ML-100K with its path, or the synthetic generator), a seeded sample of the training split. ``params``: the
    run's params (a :class:`~reclora.config.Params` or its mapping: ``data``, ``synthetic``, ``retrieval``)."""
    import tempfile

    from reclora.data import prepare, read_prepared
    from reclora.few2many import sample_few
    from reclora.prompts import NOUNS, build_prompts
    from reclora.retrieval import retrieve

    params = as_params(params)
    with tempfile.TemporaryDirectory() as tmp:
        prepare(dataset, path, Path(tmp) / "prepared", params)
        tables, samples, meta = read_prepared(Path(tmp) / "prepared")
    train = samples["train"]
    few = train.iloc[sample_few(len(train), n, seed)].reset_index(drop=True)
    r = retrieve(few, params.retrieval.k_long, params.retrieval.k_short, "recent", None, None)
    prompts = build_prompts(
        r, tables.items, tables.users, noun=NOUNS.get(meta["dataset"], "item"), threshold=float(meta["label_threshold"])
    )
    return prompts, r["label"].to_numpy()


def few2many_throughput(
    model_path: str, adapter_cfg: dict, train_cfg: dict, prompts: list[str], labels: np.ndarray, seed: int = 0
) -> dict[str, Any]:
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
        "precision": h["precision"]["chosen"],
    }


REFERENCE = {"adapter": {"layers": "all"}, "train": {"cache_lower": False, "bucket": False}}


def bench_few2many_speed(
    model_path: str, params: Params, dataset: str, path: str | Path | None, n: int, epochs: int
) -> dict[str, Any]:
    """Few2Many training samples/s on real prompts: the reference configuration (all layers, no cache, no
    length buckets) against the run's params (``adapter``, ``train``), same prompts, same epochs; and their ratio."""
    prompts, labels = speed_prompts(dataset, path, n, params)
    train_settings = params.train.to_dict() | {"epochs": epochs, "patience": 0}
    out: dict[str, Any] = {
        "dataset": dataset,
        "samples": n,
        "epochs": epochs,
        "mean_prompt_chars": round(float(np.mean([len(x) for x in prompts])), 1),
    }
    runs = {}
    for name, over in (("reference", REFERENCE), ("default", {"adapter": {}, "train": {}})):
        adapter_settings = params.adapter.to_dict() | over["adapter"]
        runs[name] = few2many_throughput(model_path, adapter_settings, train_settings | over["train"], prompts, labels)
        print(
            f"[bench speed] few2many {name}: {runs[name]['samples_per_s']:.2f} samples/s "
            f"(layers {runs[name]['layers']}, cache {runs[name]['cache_lower']}, buckets {runs[name]['bucket']})",
            flush=True,
        )
    out["runs"] = runs
    out["samples_per_s"] = {k: r["samples_per_s"] for k, r in runs.items()}
    out["speedup"] = round(runs["default"]["samples_per_s"] / runs["reference"]["samples_per_s"], 3)
    print(f"[bench speed] few2many speedup: {out['speedup']:.2f}x", flush=True)
    return out


def bench_speed(
    out: str | Path,
    params: Params | Mapping[str, Any],
    model_path: str | None = None,
    batch_size: int | None = None,
    seq_len: int | None = None,
    steps: int | None = None,
    warmup: int | None = None,
    dataset: str = "synthetic",
    path: str | Path | None = None,
    few2many_samples: int | None = None,
) -> dict[str, Any]:
    """Step times (random tokens, fixed shape) of vanilla LoRA and RecLoRA in fp32, in bf16 and under
    ``auto`` (the precision :func:`reclora.precision.choose` picks on this machine), and Few2Many
    training samples/s on real prompts (reference vs default configuration); one JSON, one process.

    The JSON's ``speed`` holds RecLoRA's ``step_s.{fp32,bf16,auto}``, ``auto_over_fastest`` (auto's
    step time over the fastest forced one) and ``mfu`` (auto's achieved FLOP/s over the matmul peak
    measured at the chosen precision); ``precision`` the choice and why; ``hardware`` what ran. ``params``: the
    run's params (a :class:`~reclora.config.Params` or its mapping); the sizes default to ``bench.speed``'s.
    """
    from reclora.bench.quality import run_info
    from reclora.io import refuse_overlap
    from reclora.llm import resolve_model_path
    from reclora.lora.config import gate_signal_width
    from reclora.precision import Capabilities, choose, decide

    refuse_overlap({"--out": out}, {"--path": path if dataset != "synthetic" else None, "--model": model_path})
    params = as_params(params)
    speed_settings = params.bench.speed
    b, s = batch_size or speed_settings.batch_size, seq_len or speed_settings.seq_len
    n, w = steps or speed_settings.steps, warmup if warmup is not None else speed_settings.warmup
    model_dir = resolve_model_path(model_path, params.model)
    width = gate_signal_width(params.crm.mlp[-1], params.adapter.gate_input)
    adapter_settings = params.adapter.to_dict() | {"signal_dim": width}
    t_all = time.perf_counter()
    auto = choose("auto", "cpu")
    precs = {
        "fp32": decide("fp32", Capabilities(device="cpu")),
        "bf16": decide("bf16", Capabilities(device="cpu")),
        "auto": auto,
    }
    peak = {k: matmul_peak(k) for k in dict.fromkeys(["fp32", "bf16", auto.name])}
    print("[bench speed] matmul peak " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()), flush=True)
    runs: dict[str, dict[str, Any]] = {}
    for label, prec in precs.items():
        for kind in ("lora", "reclora"):
            r = _time_steps(kind, model_dir, adapter_settings, b, s, prec, n, w)
            r["precision"] = prec.name
            r["tokens_per_s"] = b * s / r["step_seconds"]
            r["achieved_gflops"] = r["flops_per_step"] / r["step_seconds"] / 1e9
            r["mfu_vs_measured_peak"] = r["achieved_gflops"] / peak[prec.name]
            runs[f"{kind}_{label}"] = r
            print(
                f"[bench speed] {kind:8s} {label} ({prec.name}): {r['step_seconds']:.2f} s/step, {r['tokens_per_s']:.0f} "
                f"tokens/s, {r['achieved_gflops']:.0f} GFLOP/s = {100 * r['mfu_vs_measured_peak']:.0f}% of the measured "
                f"{prec.name} peak",
                flush=True,
            )
    step_s = {k: runs[f"reclora_{k}"]["step_seconds"] for k in precs}
    speed = {
        "model": "reclora",
        "step_s": step_s,
        "step_s_lora": {k: runs[f"lora_{k}"]["step_seconds"] for k in precs},
        "auto_over_fastest": step_s["auto"] / min(step_s["fp32"], step_s["bf16"]),
        "bf16_over_auto": step_s["bf16"] / step_s["auto"],
        "mfu": runs["reclora_auto"]["mfu_vs_measured_peak"],
        "mfu_precision": auto.name,
    }
    print(
        f"[bench speed] auto = {auto.name}: {step_s['auto']:.2f} s/step, {speed['auto_over_fastest']:.3f}x the fastest "
        f"forced precision, MFU {speed['mfu']:.2f} of the measured {auto.name} peak",
        flush=True,
    )
    few = bench_few2many_speed(
        model_dir,
        params,
        dataset,
        path,
        few2many_samples or speed_settings.few2many_samples,
        speed_settings.few2many_epochs,
    )
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    result = {
        "benchmark": "speed",
        "model": model_dir,
        "batch_size": b,
        "seq_len": s,
        "steps": n,
        "warmup": w,
        "adapter": adapter_settings,
        "matmul_peak_gflops": peak,
        "runs": runs,
        "reclora_over_lora_step_time": {
            prec: runs[f"reclora_{prec}"]["step_seconds"] / runs[f"lora_{prec}"]["step_seconds"]
            for prec in ("fp32", "bf16")
        },
        "bf16_speedup": {
            k: runs[f"{k}_fp32"]["step_seconds"] / runs[f"{k}_bf16"]["step_seconds"] for k in ("lora", "reclora")
        },
        "speed": speed,
        "few2many": few,
        "peak_rss_gb": round(rss_gb, 3),
        "wall_seconds": round(time.perf_counter() - t_all, 1),
        "precision": auto.as_dict() | {"few2many": choose(params.train.precision, "cpu", log=False).name},
        "hardware": run_info(params)["hardware"],
    }
    print(
        f"[bench speed] RecLoRA/LoRA step time: fp32 {result['reclora_over_lora_step_time']['fp32']:.3f}x, "
        f"bf16 {result['reclora_over_lora_step_time']['bf16']:.3f}x; peak RSS {rss_gb:.2f} GB",
        flush=True,
    )
    write_json(out, result)
    return result
