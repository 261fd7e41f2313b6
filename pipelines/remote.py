"""Compile the pipeline to KFP v2 IR YAML, submit a run to a KFP backend, schedule recurring runs."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

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


def _client(host: str, namespace: str | None = None) -> Any:
    import kfp

    return kfp.Client(host=host, namespace=namespace or "kubeflow")


def _experiment_id(client: Any, name: str) -> str:
    try:
        return client.get_experiment(experiment_name=name).experiment_id
    except Exception:  # noqa: BLE001 - the API answers 404 in several shapes
        return client.create_experiment(name=name).experiment_id


def submit(
    host: str,
    package: str | Path,
    arguments: dict[str, Any] | None = None,
    experiment: str = EXPERIMENT,
    service_account: str = "reclora-pipeline-runner",
    namespace: str | None = None,
) -> Any:
    """Start one run of a compiled pipeline on a KFP v2 backend."""
    client = _client(host, namespace)
    return client.create_run_from_pipeline_package(
        str(package),
        arguments=arguments or {},
        experiment_id=_experiment_id(client, experiment),
        run_name=f"reclora-{time.strftime('%Y%m%d-%H%M%S')}",
        service_account=service_account,
    )


def schedule(
    host: str,
    package: str | Path,
    cron: str,
    arguments: dict[str, Any] | None = None,
    experiment: str = EXPERIMENT,
    name: str = "reclora-scheduled-retraining",
    service_account: str = "reclora-pipeline-runner",
    namespace: str | None = None,
) -> Any:
    """A recurring run for scheduled retraining: cron (KFP's 6 fields, seconds first), no catch-up,
    at most one run at a time."""
    if len(cron.split()) != 6:
        raise ValueError(f"KFP cron needs 6 fields (seconds first), e.g. '0 0 3 * * *'; got {cron!r}")
    client = _client(host, namespace)
    return client.create_recurring_run(
        experiment_id=_experiment_id(client, experiment),
        job_name=name,
        cron_expression=cron,
        max_concurrency=1,
        no_catchup=True,
        params=arguments or {},
        pipeline_package_path=str(package),
        service_account=service_account,
    )


__all__ = ["compile_pipeline", "schedule", "submit"]
