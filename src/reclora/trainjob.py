"""Multi-node LLM training: a Kubeflow Trainer (v2) TrainJob on the ``reclora-torch`` runtime, created and awaited.

The runtime, its service account and the GPU pool settings come from ``infra/k8s/trainer``
(``kustomize build infra/k8s/trainer | kubectl apply -f -``). Every node runs
``torchrun --module reclora.launch llm ...`` (the Trainer sets torchrun's ``PET_*`` rendezvous
variables); the nodes share no volume, so inputs and the output are object-store URIs and the
checkpoints are mirrored to ``checkpoint_uri`` (a restarted node resumes from there).
The job's name is derived from the checkpoint URI, so a retried pipeline step finds its own
job again instead of starting a second one; a failed job is deleted and created anew.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from reclora.config import Params, as_params
from reclora.errors import ConfigError

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"


def job_name(key: str, kind: str) -> str:
    """A DNS-1123 name unique to ``key`` (the checkpoint URI: pipeline run + task) and ``kind``."""
    return f"reclora-{kind}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def secret_env(secret: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """EnvVars from the Secret ``secret["name"]``: ``keys`` (env name -> secret key, required) and
    ``optional_keys`` (the same, may be absent), as params ``pipeline.storage_secret``."""
    if not secret or not secret.get("name"):
        return []
    out = []
    for field, optional in (("keys", False), ("optional_keys", True)):
        for env, key in sorted((secret.get(field) or {}).items()):
            ref = {"name": secret["name"], "key": key, "optional": optional}
            out.append({"name": env, "valueFrom": {"secretKeyRef": ref}})
    return out


def trainjob_body(
    *,
    name: str,
    namespace: str,
    image: str,
    runtime: str,
    args: Sequence[str],
    num_nodes: int,
    nproc_per_node: int,
    resources_per_node: Mapping[str, Any],
    env: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The TrainJob object (as infra/k8s/trainer/trainjob.yaml, with this run's command and size)."""
    if int(num_nodes) < 1 or int(nproc_per_node) < 1:
        raise ConfigError(f"a TrainJob needs num_nodes >= 1 and nproc_per_node >= 1, got {num_nodes}, {nproc_per_node}")
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "reclora", "app.kubernetes.io/component": "trainer"},
        },
        "spec": {
            "runtimeRef": {"apiGroup": GROUP, "kind": "TrainingRuntime", "name": runtime},
            "trainer": {
                "image": image,
                "command": ["torchrun"],
                "args": ["--module", "reclora.launch", *args],
                "numNodes": int(num_nodes),
                "numProcPerNode": int(nproc_per_node),
                "resourcesPerNode": json.loads(json.dumps(resources_per_node)),
                "env": [dict(e) for e in env],
            },
        },
    }


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}


def _state(obj: Mapping[str, Any]) -> tuple[Any, str]:
    cond = _conditions(obj)
    if "Complete" in cond:
        return "done", ""
    if "Failed" in cond:
        return "failed", str(cond["Failed"].get("message", ""))
    return None, ""


def run_trainjob(
    body: Mapping[str, Any],
    api: Any = None,
    poll_s: float = 15.0,
    timeout_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Create ``body`` (or find the job of the same name from an earlier attempt) and wait until it ends.

    A job found in state Failed is deleted and created again. Returns the final object; raises
    RuntimeError when the job fails or ``timeout_s`` passes. ``api``: a ``CustomObjectsApi``
    (default: :func:`reclora.kube.custom_objects_api`).
    """
    from reclora.kube import create_and_wait

    return create_and_wait(
        body, GROUP, VERSION, PLURAL, _state, api=api, poll_s=poll_s, timeout_s=timeout_s, sleep=sleep
    )


def train_llm_multinode(
    kind: str,
    data_uri: str,
    retrieved_uri: str,
    crm_uri: str | None,
    out_dir: str | Path,
    params: Params | Mapping[str, Any],
    checkpoint_uri: str,
    gate: str = "crm",
    model_path: str | None = None,
    api: Any = None,
    sleep: Callable[[float], None] = time.sleep,
    feature_store: str | None = None,
) -> dict[str, Any]:
    """The LLM stage on ``pipeline.gpu.num_nodes`` nodes x ``accelerator_limit`` GPUs through a TrainJob.

    Inputs are object-store URIs (the pipeline's artifact URIs; ``feature_store``: the features stage's
    output); the job writes the adapter to
    ``<checkpoint_uri>/output``, which is then copied into ``out_dir``. ``params``: the run's params (a
    :class:`~reclora.config.Params` or its mapping; ``pipeline.gpu``, ``pipeline.trainjob``, and all of them
    handed to every node). Returns the stage summary
    (the adapter's metrics.json). Raises ConfigError without a ``checkpoint_uri``.
    """
    from reclora import storage
    from reclora.io import read_json
    from reclora.kube import pod_namespace

    if not checkpoint_uri or not storage.is_remote(checkpoint_uri):
        raise ConfigError("multi-node training needs pipeline.checkpoint_uri set to an object-store URI")
    params = as_params(params)
    pipeline = params.pipeline
    gpu, trainjob = pipeline.gpu, pipeline.trainjob
    out_uri = f"{checkpoint_uri.rstrip('/')}/output"
    args = [
        "llm",
        "--kind",
        kind,
        "--data",
        data_uri,
        "--retrieved",
        retrieved_uri,
        "--out",
        out_uri,
        "--gate",
        gate,
        "--checkpoint-uri",
        f"{checkpoint_uri.rstrip('/')}/ckpt",
        "--no-progress",
        "--overrides",
        json.dumps(params.to_dict(), default=str),
    ]
    if crm_uri:
        args += ["--crm", crm_uri]
    if model_path:
        args += ["--model-path", model_path]
    if feature_store:
        args += ["--feature-store", feature_store]
    res = json.loads(json.dumps(trainjob.resources_per_node))
    for side in ("requests", "limits"):
        res.setdefault(side, {})[gpu.accelerator_type] = str(gpu.accelerator_limit)
    body = trainjob_body(
        name=job_name(checkpoint_uri, kind),
        namespace=pod_namespace(trainjob.namespace),
        image=pipeline.gpu_image,
        runtime=trainjob.runtime,
        args=args,
        num_nodes=gpu.num_nodes,
        nproc_per_node=gpu.accelerator_limit,
        resources_per_node=res,
        env=secret_env(pipeline.storage_secret.to_dict()),
    )
    run_trainjob(body, api=api, poll_s=float(trainjob.poll_seconds), timeout_s=trainjob.timeout_seconds, sleep=sleep)
    storage.download_dir(out_uri, out_dir)
    return read_json(Path(out_dir) / "metrics.json")
