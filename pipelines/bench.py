"""`reclora bench pipeline`: the local pipeline's wall time against the same stages called directly.

Both runs use the same data set, profile, model and params, one after the other in one
process tree, so their ratio is comparable on a noisy machine.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from reclora.config import as_params, load_params_with
from reclora.io import write_json


def run_stages_directly(work: Path, dataset: str, source_path: str, profile: str, model_path: str) -> float:
    """Seconds (wall time) to run every pipeline stage as a library call, in order, under ``work``: prepare to
    register, with the evaluate step's slices and champion re-scoring."""
    from reclora.data import prepare
    from reclora.features import features_stage
    from reclora.stages import crm_stage, evaluate_stage, llm_stage, register_stage, retrieve_stage
    from reclora.validation import validate_prepared

    params = as_params(load_params_with(None, profile or None))
    t0 = time.perf_counter()
    prepare(dataset, source_path or None, work / "data", params)
    validate_prepared(work / "data", work / "validation", params=params.validation)
    features_stage(work / "data", work / "features", params=params)
    retrieve_stage(work / "data", work / "retrieved", params, model_path=model_path or None, progress=False)
    crm_stage(work / "data", work / "retrieved", work / "crm", params, progress=False)
    for kind in ("lora", "reclora"):
        llm_stage(
            kind,
            work / "data",
            work / "retrieved",
            work / "crm" if kind == "reclora" else None,
            work / kind,
            params,
            model_path=model_path or None,
            progress=False,
        )
    # as the pipeline's evaluate step: slices and the champion re-scored
    evaluate_stage(
        {"CRM": work / "crm", "Vanilla LoRA": work / "lora", "RecLoRA": work / "reclora"},
        work / "report",
        data_dir=work / "data",
        registry_uri=str(work / "registry"),
        feature_store=work / "features",
        challenger="RecLoRA",
        params=params,
    )
    register_stage(
        work / "crm",
        work / "reclora",
        work / "retrieved",
        work / "data",
        work / "report",
        str(work / "registry"),
        params,
    )
    return time.perf_counter() - t0


def bench_pipeline(
    out: str | Path, dataset: str = "synthetic", source_path: str = "", profile: str = "small", model_path: str = ""
) -> dict[str, Any]:
    """The result written to ``out`` (JSON): seconds for the stages called directly and for the kfp.local
    pipeline, their ratio, and the run's hardware. Raises ConfigError when ``out`` overlaps an input."""
    from pipelines.local import run_local
    from reclora.bench.quality import run_info
    from reclora.io import refuse_overlap

    refuse_overlap({"--out": out}, {"--path": source_path if dataset != "synthetic" else None, "--model": model_path})
    with tempfile.TemporaryDirectory(prefix="reclora-bench-pipeline-") as tmp:
        work = Path(tmp)
        direct = run_stages_directly(work / "direct", dataset, source_path, profile, model_path)
        print(f"[bench pipeline] stages called directly: {direct:.1f} s", flush=True)
        t0 = time.perf_counter()
        r = run_local(dataset, source_path, profile, model_path, None, str(work / "kfp"), str(work / "kfp-registry"))
        local = time.perf_counter() - t0
        print(f"[bench pipeline] kfp.local pipeline:     {local:.1f} s", flush=True)
    result = {
        "benchmark": "pipeline_overhead",
        "dataset": dataset,
        "profile": profile,
        "direct_seconds": round(direct, 1),
        "kfp_local_seconds": round(local, 1),
        "ratio": round(local / direct, 3),
        "registered_version": r.get("registered_version"),
        **run_info(load_params_with(None, profile or None)),  # the hardware and the LLM steps' precision
    }
    print(f"[bench pipeline] ratio kfp.local / direct = {result['ratio']:.3f}", flush=True)
    write_json(out, result)
    return result
