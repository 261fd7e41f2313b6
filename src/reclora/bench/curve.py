"""`reclora bench curve`: test AUC and LogLoss of vanilla LoRA and RecLoRA against the Few2Many sample size.

prepare -> validate -> retrieve -> CRM once (the CRM always sees the whole training split: a flat
reference line), then vanilla LoRA and RecLoRA at every size, all scored on the same seeded test
subset, sharing one cache of frozen-layer states. Writes FILE.json and FILE.png.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reclora.config import Params, as_params
from reclora.io import refuse_overlap, write_json

MODELS = {"Vanilla LoRA": ("lora", None), "RecLoRA": ("reclora", "crm")}


def plot_curve(result: Mapping[str, Any], png: str | Path) -> Path:
    """Two panels (AUC, LogLoss) against the Few2Many sample size (log scale), the CRM as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [int(n) for n in result["sizes"]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in (
        (axes[0], "auc", "test AUC (higher is better)"),
        (axes[1], "logloss", "test LogLoss (lower is better)"),
    ):
        for name in MODELS:
            ys = [result["sizes"][str(n)][name][metric] for n in sizes]
            ax.plot(sizes, ys, marker="o", label=name)
        ax.axhline(result["crm"][metric], color="grey", linestyle="--", label="CRM (all training data)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("Few2Many training samples")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(f"Learning curve on {result['dataset']} ({result['evaluated']} test samples)")
    fig.tight_layout()
    png = Path(png)
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(png)
    return png


def bench_curve(
    dataset: str,
    path: str | Path | None,
    out: str | Path,
    sizes: Sequence[int],
    work: str | Path | None,
    params: Params | Mapping[str, Any],
    eval_samples: int | None = None,
    max_users: int | None = None,
    model_path: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train both LLM models at every size in ``sizes`` (positive ints); returns and writes
    {"sizes": {n: {model: {auc, logloss, n, seconds, best_epoch}}}, "crm": {...}, "complete", ...} and a
    PNG beside ``out`` (same stem), both rewritten after every size (``complete`` is true after the
    last). ``params``: the run's params (a :class:`~reclora.config.Params` or its mapping); ``eval_samples``
    replaces ``train.eval_samples``, ``max_users`` defaults to ``bench.quality.max_users``. Raises ValueError for
    an empty or non-positive size list."""
    from reclora.bench.quality import CONFIG_SECTIONS, Timer, prepare_and_train_crm, run_info
    from reclora.evaluation import ctr_metrics
    from reclora.stages import PREDICTIONS, llm_stage

    sizes = sorted({int(n) for n in sizes})
    if not sizes or sizes[0] <= 0:
        raise ValueError(f"bench curve: sizes must be positive integers, got {list(sizes)}")
    params = as_params(params)
    if eval_samples is not None:
        params = params.updated(train={"eval_samples": eval_samples})
    out = Path(out)
    work = Path(work) if work else out.parent / f"{out.stem}-work"
    refuse_overlap(
        {"--out": out, "--work": work}, {"--path": path if dataset != "synthetic" else None, "--model": model_path}
    )
    t_all = time.perf_counter()
    secs: dict[str, float] = {}
    timed = Timer(secs, "bench curve")
    max_users = params.bench.quality.max_users if max_users is None else max_users
    data, _ = prepare_and_train_crm(dataset, path, work, params, timed, max_users, model_path, progress)

    import pandas as pd

    points: dict[str, dict[str, Any]] = {}
    evaluated = None
    crm_eval = None
    for n in sizes:
        sized = params.updated(train={"sample_size": n})
        points[str(n)] = {}
        for name, (kind, crm) in MODELS.items():
            d = work / f"{kind}-{n}"
            r = timed(
                f"{kind}_{n}",
                llm_stage,
                kind,
                work / "prepared",
                work / "retrieved",
                crm and work / crm,
                d,
                params=sized,
                model_path=model_path,
                progress=progress,
                cache_dir=work / "layer-cache",
            )
            points[str(n)][name] = r["eval"] | {
                "seconds": r["seconds"],
                "best_epoch": r["train"].get("best_epoch"),
                "train_samples": r["train_samples"],
            }
            if crm_eval is None:  # the CRM on exactly the samples the LLM models are scored on
                ev = pd.read_parquet(d / PREDICTIONS)[["user_id", "item_id", "timestamp"]]
                c = pd.read_parquet(work / "crm" / PREDICTIONS).merge(ev, on=["user_id", "item_id", "timestamp"])
                crm_eval = ctr_metrics(c["label"].to_numpy(), c["p"].to_numpy())
                evaluated = int(len(c))
            print(
                f"[bench curve] {name} @ {n}: AUC {r['eval']['auc']:.4f}, LogLoss {r['eval']['logloss']:.4f} "
                f"(CRM {crm_eval['auc']:.4f} / {crm_eval['logloss']:.4f})",
                flush=True,
            )
        # every finished size is on disk (JSON and PNG): a long run stopped later keeps its points
        result = {
            "benchmark": "curve",
            "dataset": dataset,
            "source": str(path) if path else None,
            "sizes": points,
            "crm": crm_eval,
            "evaluated": evaluated,
            "samples": {"interactions": data["rows"], "splits": data["samples"]},
            "config": {name: getattr(params, name).to_dict() for name in CONFIG_SECTIONS},
            "seconds": secs,
            "wall_seconds": round(time.perf_counter() - t_all, 1),
            **run_info(params),
            "complete": n == sizes[-1],
        }
        result["plot"] = str(plot_curve(result, out.with_suffix(".png")))
        write_json(out, result)
    return result
