"""Beyond one machine, the features step on Spark: a SparkApplication of the Kubeflow Spark Operator.

The application runs :mod:`reclora.features.spark_job` on the driver: the prepared data is copied
from its object-store URI into a work directory on a volume that the driver and every executor
mount (``pipeline.spark.work_claim``, ReadWriteMany), the Feast sources are written there, and
Feast's Spark offline store (``features.offline_store: spark``, SparkSources over those parquet
files) runs the point-in-time joins on the executors; the features output is then uploaded to the
step's output URI. The pipeline step only creates the object and waits
(:func:`reclora.kube.create_and_wait`, the same loop as the Trainer's TrainJobs).
Settings: params ``pipeline.spark`` (image, namespace, service account, driver/executor sizes).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Callable, Mapping, Sequence

from reclora.errors import ConfigError

GROUP, VERSION, PLURAL = "sparkoperator.k8s.io", "v1beta2", "sparkapplications"
WORK_MOUNT = "/workspace"
DONE_STATES = {"COMPLETED"}
FAILED_STATES = {"FAILED", "SUBMISSION_FAILED", "FAILING", "INVALIDATING"}


def application_name(key: str) -> str:
    """A DNS-1123 name unique to ``key`` (the step's output URI), so a retried step follows its own application."""
    return f"reclora-features-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _role(spec: Mapping[str, Any], sa: str | None, env: Sequence[Mapping[str, Any]], claim: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "cores": int(spec.get("cores", 1)),
        "memory": str(spec.get("memory", "4g")),
        "labels": {"app.kubernetes.io/part-of": "reclora", "app.kubernetes.io/component": "features"},
        "env": [dict(e) for e in env],
        "volumeMounts": [{"name": "work", "mountPath": WORK_MOUNT}],
    }
    if "instances" in spec:
        out["instances"] = int(spec["instances"])
    if sa:
        out["serviceAccount"] = sa
    return out


def spark_application_body(
    *,
    name: str,
    namespace: str,
    image: str,
    main_application_file: str,
    arguments: Sequence[str],
    spark_version: str,
    driver: Mapping[str, Any],
    executor: Mapping[str, Any],
    work_claim: str,
    service_account: str | None = None,
    spark_conf: Mapping[str, Any] | None = None,
    env: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The SparkApplication (``sparkoperator.k8s.io/v1beta2``) of one features run.

    ``driver`` / ``executor``: ``cores``, ``memory`` (Spark notation, "4g"), executor ``instances``.
    ``work_claim``: a ReadWriteMany PersistentVolumeClaim mounted at ``/workspace`` on the driver and
    every executor (the sources the executors read). Raises ConfigError on a missing image or claim,
    or fewer than one executor.
    """
    if not image or not work_claim:
        raise ConfigError("a SparkApplication needs pipeline.spark.image and pipeline.spark.work_claim")
    if int(executor.get("instances", 1)) < 1:
        raise ConfigError(f"pipeline.spark.executor.instances must be >= 1, got {executor.get('instances')}")
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SparkApplication",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "reclora", "app.kubernetes.io/component": "features"}},
        "spec": {
            "type": "Python",
            "pythonVersion": "3",
            "mode": "cluster",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "mainApplicationFile": main_application_file,
            "arguments": [str(a) for a in arguments],
            "sparkVersion": str(spark_version),
            "sparkConf": {str(k): str(v) for k, v in (spark_conf or {}).items()},
            "restartPolicy": {"type": "Never"},
            "volumes": [{"name": "work", "persistentVolumeClaim": {"claimName": work_claim}}],
            "driver": _role(driver, service_account, env, work_claim),
            "executor": _role({"instances": 1, **executor}, service_account, env, work_claim),
        },
    }  # fmt: skip


def _state(obj: Mapping[str, Any]) -> tuple[Any, str]:
    app = (obj.get("status") or {}).get("applicationState") or {}
    st = str(app.get("state", ""))
    if st in DONE_STATES:
        return "done", ""
    if st in FAILED_STATES:
        return "failed", f"{st}: {app.get('errorMessage', '')}"
    return None, ""


def run_spark_application(
    body: Mapping[str, Any],
    api: Any = None,
    poll_s: float = 15.0,
    timeout_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Create ``body`` (or follow the application of the same name) and wait for COMPLETED.

    FAILED / SUBMISSION_FAILED raise RuntimeError (a failed one found on a retry is replaced)."""
    from reclora.kube import create_and_wait

    return create_and_wait(body, GROUP, VERSION, PLURAL, _state, api=api, poll_s=poll_s, timeout_s=timeout_s, sleep=sleep)


def features_on_spark(
    data_uri: str,
    out_uri: str,
    params: Mapping[str, Any],
    api: Any = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """The features step as a SparkApplication: ``data_uri`` (prepared data) -> ``out_uri`` (the
    features stage's output), both object-store URIs. Returns the stage summary the application
    wrote (``<out_uri>/summary.json``). Raises ConfigError when a URI is local (the driver pod shares
    no volume with this step), RuntimeError when the application fails."""
    from reclora import storage
    from reclora.trainjob import namespace, secret_env

    for what, uri in (("data", data_uri), ("output", out_uri)):
        if not storage.is_remote(str(uri)):
            raise ConfigError(f"the Spark features step needs an object-store {what} URI, got {uri!r}")
    p = params["pipeline"]
    sp = p.get("spark") or {}
    fp = dict(params.get("features") or {})
    name = application_name(out_uri)
    feat = {**fp, "offline_store": "spark"}
    args = ["--data", data_uri, "--out", out_uri, "--work", f"{WORK_MOUNT}/{name}",
            "--features", json.dumps(feat, default=str)]  # fmt: skip
    body = spark_application_body(
        name=name, namespace=namespace(str(sp.get("namespace", "reclora"))), image=str(sp.get("image", "")),
        main_application_file=str(sp.get("main_application_file", "")), arguments=args,
        spark_version=str(sp.get("spark_version", "")), driver=sp.get("driver") or {},
        executor=sp.get("executor") or {}, work_claim=str(sp.get("work_claim", "")),
        service_account=sp.get("service_account") or None, spark_conf=fp.get("spark_conf") or {},
        env=secret_env(p.get("storage_secret")),
    )  # fmt: skip
    run_spark_application(body, api=api, poll_s=float(sp.get("poll_seconds", 15)),
                          timeout_s=sp.get("timeout_seconds"), sleep=sleep)  # fmt: skip
    fs, path = storage.filesystem(f"{out_uri.rstrip('/')}/summary.json")
    with fs.open(path) as f:
        return json.load(f)


__all__ = ["application_name", "features_on_spark", "run_spark_application", "spark_application_body"]
