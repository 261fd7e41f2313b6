"""`reclora bench quality`: CRM, vanilla LoRA and RecLoRA in one harness on one data set.

prepare -> validate -> retrieve -> CRM (full train) -> vanilla LoRA and RecLoRA (same
Few2Many sample, same prompt, same steps) -> [ablations] -> one report + one JSON.
"""

from __future__ import annotations

import copy
import platform
import time
from pathlib import Path
from typing import Any, Mapping

from reclora.config import load_params
from reclora.errors import ValidationFailed
from reclora.io import write_json


def machine_info() -> dict[str, Any]:
    import os

    import torch

    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
    }


def bench_quality(
    dataset: str,
    path: str | Path | None,
    out: str | Path,
    work: str | Path | None = None,
    params: Mapping[str, Any] | None = None,
    ablations: bool | None = None,
    sample_size: int | None = None,
    eval_samples: int | None = None,
    max_users: int | None = None,
    model_path: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    from reclora.data import prepare
    from reclora.stages import crm_stage, evaluate_stage, llm_stage, retrieve_stage
    from reclora.validation import validate_prepared

    p = copy.deepcopy(dict(params) if params is not None else load_params())
    if sample_size is not None:
        p["train"]["sample_size"] = sample_size
    if eval_samples is not None:
        p["train"]["eval_samples"] = eval_samples
    qp = p["bench"]["quality"]
    ablations = qp["ablations"] if ablations is None else ablations
    out = Path(out)
    work = Path(work) if work else out.parent / f"{out.stem}-work"
    t_all = time.perf_counter()
    secs: dict[str, float] = {}

    def timed(name: str, fn, *a, **kw):
        t = time.perf_counter()
        r = fn(*a, **kw)
        secs[name] = round(time.perf_counter() - t, 1)
        print(f"[bench quality] {name}: {secs[name]} s", flush=True)
        return r

    mu = qp["max_users"] if max_users is None else max_users
    data = timed("prepare", prepare, dataset, path, work / "prepared", p, max_users=mu)
    v = timed("validate", validate_prepared, work / "prepared", work / "validation", params=p["validation"])
    if not v.success:
        raise ValidationFailed(v.describe())
    timed("retrieve", retrieve_stage, work / "prepared", work / "retrieved", p, model_path=model_path, progress=progress)
    crm = timed("crm", crm_stage, work / "prepared", work / "retrieved", work / "crm", p, progress=progress)
    runs = {"CRM": work / "crm"}
    llm: dict[str, dict] = {}
    common = {"params": p, "model_path": model_path, "progress": progress}
    llm["Vanilla LoRA"] = timed(
        "vanilla_lora", llm_stage, "lora", work / "prepared", work / "retrieved", None, work / "lora", **common
    )
    runs["Vanilla LoRA"] = work / "lora"
    llm["RecLoRA"] = timed(
        "reclora", llm_stage, "reclora", work / "prepared", work / "retrieved", work / "crm", work / "reclora", **common
    )
    runs["RecLoRA"] = work / "reclora"
    if ablations:
        llm["RecLoRA (uniform gate)"] = timed(
            "reclora_uniform", llm_stage, "reclora", work / "prepared", work / "retrieved", work / "crm",
            work / "reclora-uniform", gate="uniform", **common,
        )  # fmt: skip
        runs["RecLoRA (uniform gate)"] = work / "reclora-uniform"
        timed("retrieve_recent", retrieve_stage, work / "prepared", work / "retrieved-recent", p, mode="recent")
        timed("crm_recent", crm_stage, work / "prepared", work / "retrieved-recent", work / "crm-recent", p, progress=progress)
        llm["RecLoRA (recent-K)"] = timed(
            "reclora_recent", llm_stage, "reclora", work / "prepared", work / "retrieved-recent", work / "crm-recent",
            work / "reclora-recent", **common,
        )  # fmt: skip
        runs["RecLoRA (recent-K)"] = work / "reclora-recent"
    report = timed(
        "evaluate", evaluate_stage, runs, work / "report",
        {"dataset": dataset, "source": str(path) if path else None, "data": data},
    )  # fmt: skip
    models = report["models"]
    result = {
        "benchmark": "quality",
        "dataset": dataset,
        "source": str(path) if path else None,
        "models": {n: {k: m.get(k) for k in ("auc", "logloss", "accuracy", "n")} for n, m in models.items()},
        "crm_full_test": crm["test"],
        "samples": {
            "interactions": data["rows"], "users": data["users"], "items": data["items"],
            "splits": data["samples"], "few2many_train": int(p["train"]["sample_size"]),
            "evaluated": report.get("context", {}).get("evaluated_samples"),
        },  # fmt: skip
        "llm_train": {n: r["train"] for n, r in llm.items()},
        "config": {k: p[k] for k in ("retrieval", "crm", "adapter", "train")},
        "seconds": secs,
        "wall_seconds": round(time.perf_counter() - t_all, 1),
        "report": str(work / "report" / "report.html"),
        "machine": machine_info(),
    }
    write_json(out, result)
    return result
