"""Run the pipeline locally (kfp.local), compile it to IR YAML, submit it, schedule it."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from reclora.config import load_params, params_path

EXPERIMENT = "reclora"


def compile_pipeline(
    out: str | Path, cpu_image: str | None = None, gpu_image: str | None = None, profile: str | None = None
) -> Path:
    """Compile the pipeline to KFP v2 IR YAML (``profile``: params.yaml profile for its defaults, e.g. "cluster")."""
    from kfp import compiler

    from pipelines.pipeline import build_pipeline

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")  # the compiler wants a .yaml name
    compiler.Compiler().compile(build_pipeline(cpu_image, gpu_image, profile=profile), str(tmp))
    os.replace(tmp, out)
    return out


def _latest_run_dir(root: Path, name: str, after: float) -> Path | None:
    runs = [d for d in root.glob(f"{name}-*") if d.is_dir() and d.stat().st_mtime >= after - 1]
    return max(runs, key=lambda d: d.stat().st_mtime) if runs else None


def _runs_newest_first(run_dir: Path) -> list[Path]:
    """This run, then the earlier runs: a cached step's outputs live in the run that computed them."""
    name = load_params()["pipeline"]["name"]
    earlier = sorted((d for d in run_dir.parent.glob(f"{name}-*") if d != run_dir),
                     key=lambda d: d.stat().st_mtime, reverse=True)  # fmt: skip
    return [run_dir, *earlier]


def _find(run_dir: Path, task: str, output: str) -> Path | None:
    for d in _runs_newest_first(run_dir):
        if (d / task / output).exists():
            return d / task / output
    return None


def _executor_output(run_dir: Path, task: str) -> dict[str, Any]:
    f = _find(run_dir, task, "executor_output.json")
    return json.loads(f.read_text()) if f else {}


def run_local(
    dataset: str = "synthetic",
    source_path: str = "",
    profile: str = "small",
    model_path: str = "",
    overrides: dict[str, Any] | None = None,
    pipeline_root: str | None = None,
    registry_uri: str | None = None,
) -> dict[str, Any]:
    """Execute the whole pipeline with kfp.local's SubprocessRunner in this environment.

    Data steps are cached across runs (kfp.local's file cache under the pipeline root);
    returns where the outputs, reports and the registered adapter are.
    """
    import logging

    from kfp import local

    from pipelines.pipeline import build_pipeline

    p = load_params()["pipeline"]
    root = Path(pipeline_root or p["pipeline_root"]).resolve()
    registry = registry_uri or str(Path(p["registry_uri"]).resolve())
    # the components run `python3 -m kfp.dsl.executor_main` from PATH: use this environment's
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ.setdefault("RECLORA_PARAMS", str(params_path()))
    cache_hits: list[str] = []

    class _Hits(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            msg = record.getMessage()
            if "cache hit" in msg:
                cache_hits.append(msg.split()[1])

    handler = _Hits()
    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.INFO)  # kfp.local reports cache hits at INFO on the root logger
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), enable_caching=True,
               raise_on_error=True)  # fmt: skip
    started = time.time()
    try:
        fn = build_pipeline(gpu=False)
        fn(dataset=dataset, source_path=str(source_path or ""), profile=profile, model_path=model_path,
           overrides=overrides or {}, registry_uri=registry)  # fmt: skip
    finally:
        root_logger.removeHandler(handler)
        root_logger.setLevel(level)
    seconds = time.time() - started
    run_dir = _latest_run_dir(root, p["name"], started)
    out: dict[str, Any] = {"pipeline_root": str(root), "run_dir": str(run_dir) if run_dir else None,
                           "seconds": round(seconds, 1), "cached_steps": sorted(set(cache_hits))}  # fmt: skip
    if run_dir is None:
        return out
    out["validation_passed"] = _executor_output(run_dir, "validate").get("parameterValues", {}).get("Output")
    out["data_version"] = _executor_output(run_dir, "prepare").get("parameterValues", {}).get("Output")
    site = _find(run_dir, "validate", "report_site")
    out["validation_report"] = str(site / "index.html") if site else None
    summary = site / "summary.json" if site else None
    failures = json.loads(summary.read_text()).get("failures", []) if summary and summary.is_file() else []
    out["validation_failures"] = "\n".join(f["reason"] for f in failures)
    ev = _find(run_dir, "evaluate", "report_files")
    out["evaluation_report"] = str(ev / "report.html") if ev else None
    reg = _executor_output(run_dir, "register").get("parameterValues", {})
    if reg:
        out["registered_version"] = reg.get("version")
        out["promoted"] = reg.get("promoted")
        out["promotion_reason"] = reg.get("reason")
        out["registry"] = registry
    return out


def _client(host: str, namespace: str | None = None) -> Any:
    import kfp

    return kfp.Client(host=host, namespace=namespace or "kubeflow")


def _experiment_id(client: Any, name: str) -> str:
    try:
        return client.get_experiment(experiment_name=name).experiment_id
    except Exception:  # noqa: BLE001 - the API answers 404 in several shapes
        return client.create_experiment(name=name).experiment_id


def submit(host: str, package: str | Path, arguments: dict[str, Any] | None = None, experiment: str = EXPERIMENT,
           service_account: str = "reclora-pipeline-runner", namespace: str | None = None) -> Any:  # fmt: skip
    """Start one run of a compiled pipeline on a KFP v2 backend."""
    client = _client(host, namespace)
    return client.create_run_from_pipeline_package(
        str(package), arguments=arguments or {}, experiment_id=_experiment_id(client, experiment),
        run_name=f"reclora-{time.strftime('%Y%m%d-%H%M%S')}", service_account=service_account,
    )  # fmt: skip


def schedule(host: str, package: str | Path, cron: str, arguments: dict[str, Any] | None = None,
             experiment: str = EXPERIMENT, name: str = "reclora-scheduled-retraining",
             service_account: str = "reclora-pipeline-runner", namespace: str | None = None) -> Any:  # fmt: skip
    """A recurring run for scheduled retraining: cron (KFP's 6 fields, seconds first), no catch-up,
    at most one run at a time."""
    if len(cron.split()) != 6:
        raise ValueError(f"KFP cron needs 6 fields (seconds first), e.g. '0 0 3 * * *'; got {cron!r}")
    client = _client(host, namespace)
    return client.create_recurring_run(
        experiment_id=_experiment_id(client, experiment), job_name=name, cron_expression=cron,
        max_concurrency=1, no_catchup=True, params=arguments or {}, pipeline_package_path=str(package),
        service_account=service_account,
    )  # fmt: skip
