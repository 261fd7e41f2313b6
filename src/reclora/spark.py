"""Beyond one machine, the prepare and features steps on Spark: SparkApplications of the Kubeflow Spark Operator.

Both steps share one body (:func:`spark_application_body`) and one create-and-wait
(:func:`run_on_spark`); they differ in the driver program and its arguments.

Prepare (``data.engine: spark``): the application runs :mod:`reclora.data.spark_job`: the raw data is
fetched onto the shared work volume, :func:`reclora.data.spark_prepare.prepare_spark` builds the
event store and the sample index on the executors, and the prepared directory is uploaded to the
step's output URI, with a report (summary + data version) at a second URI.

Features (``features.offline_store: spark``): the application runs :mod:`reclora.features.spark_job` on the driver: the prepared data is copied
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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reclora.config import Params, as_params
from reclora.errors import ConfigError

GROUP, VERSION, PLURAL = "sparkoperator.k8s.io", "v1beta2", "sparkapplications"
WORK_MOUNT = "/workspace"
DONE_STATES = {"COMPLETED"}
FAILED_STATES = {"FAILED", "SUBMISSION_FAILED", "FAILING", "INVALIDATING"}


STEPS = ("prepare", "features")


def application_name(key: str, step: str = "features") -> str:
    """A DNS-1123 name unique to ``step`` and ``key`` (the step's output URI), so a retried step follows
    its own application."""
    if step not in STEPS:
        raise ValueError(f"unknown Spark step {step!r}; expected one of {STEPS}")
    return f"reclora-{step}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _labels(step: str) -> dict[str, str]:
    return {"app.kubernetes.io/part-of": "reclora", "app.kubernetes.io/component": step}


def _role(spec: Mapping[str, Any], sa: str | None, env: Sequence[Mapping[str, Any]], step: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "cores": int(spec.get("cores", 1)),
        "memory": str(spec.get("memory", "4g")),
        "labels": _labels(step),
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
    step: str = "features",
) -> dict[str, Any]:
    """The SparkApplication (``sparkoperator.k8s.io/v1beta2``) of one run of ``step`` (prepare, features).

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
        "metadata": {"name": name, "namespace": namespace, "labels": _labels(step)},
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
            "driver": _role(driver, service_account, env, step),
            "executor": _role({"instances": 1, **executor}, service_account, env, step),
        },
    }


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

    return create_and_wait(
        body, GROUP, VERSION, PLURAL, _state, api=api, poll_s=poll_s, timeout_s=timeout_s, sleep=sleep
    )


def run_on_spark(
    step: str,
    key: str,
    main_application_file: str,
    arguments: Sequence[str],
    params: Params | Mapping[str, Any],
    spark_conf: Mapping[str, Any] | None = None,
    api: Any = None,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Build the SparkApplication of ``step`` (named for ``key``, the step's output URI) from params
    ``pipeline.spark`` and the storage Secret (``params``: a :class:`~reclora.config.Params` or its mapping),
    create it and wait for COMPLETED; returns its name.
    ``arguments``: the driver program's; the work directory ``/workspace/<name>`` is appended as
    ``--work``. Raises ConfigError (missing settings), RuntimeError (the application failed)."""
    from reclora.kube import pod_namespace
    from reclora.trainjob import secret_env

    params = as_params(params)
    settings = params.pipeline.spark
    if not main_application_file:
        raise ConfigError(
            f"the Spark {step} step needs its driver program (pipeline.spark: "
            f"{'prepare_application_file' if step == 'prepare' else 'main_application_file'})"
        )
    name = application_name(key, step)
    body = spark_application_body(
        name=name,
        namespace=pod_namespace(settings.namespace),
        image=settings.image,
        main_application_file=main_application_file,
        arguments=[*arguments, "--work", f"{WORK_MOUNT}/{name}"],
        spark_version=settings.spark_version,
        driver=settings.driver.to_dict(),
        executor=settings.executor.to_dict(),
        work_claim=settings.work_claim,
        service_account=settings.service_account or None,
        spark_conf=spark_conf or {},
        env=secret_env(params.pipeline.storage_secret.to_dict()),
        step=step,
    )
    run_spark_application(
        body, api=api, poll_s=float(settings.poll_seconds), timeout_s=settings.timeout_seconds, sleep=sleep
    )
    return name


def _read_json(uri: str) -> dict[str, Any]:
    from reclora import storage

    fs, path = storage.filesystem(uri)
    with fs.open(path) as f:
        return json.load(f)


def _require_remote(step: str, **uris: str) -> None:
    from reclora import storage

    for what, uri in uris.items():
        if not storage.is_remote(str(uri)):
            raise ConfigError(f"the Spark {step} step needs an object-store {what} URI, got {uri!r}")


def prepare_on_spark(
    dataset: str,
    source: str,
    out_uri: str,
    report_uri: str,
    params: Params | Mapping[str, Any],
    api: Any = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """The prepare step as a SparkApplication (``data.engine: spark``): raw ``source`` -> the prepared
    directory at ``out_uri``; returns the report the driver wrote at ``report_uri`` (the stage summary
    plus ``data_version``). ``source``: an object-store URI, a DVC reference, a path on the work volume
    (``/workspace/...``), or "" for synthetic data. ``params``: the run's params (a
    :class:`~reclora.config.Params` or its mapping; its ``data`` and ``synthetic`` sections go to the driver).
    Raises ConfigError for local output URIs or a local source the driver cannot see, RuntimeError when the
    application fails."""
    from reclora import storage

    _require_remote("prepare", output=out_uri, report=report_uri)
    if source and not (storage.is_remote(source) or storage.is_dvc_ref(source) or source.startswith(f"{WORK_MOUNT}/")):
        raise ConfigError(
            f"the Spark prepare step needs an object-store URI, a DVC reference or a path under "
            f"{WORK_MOUNT}/ as its source (the driver pod shares nothing else), got {source!r}"
        )
    params = as_params(params)
    sections = {"data": {**params.data.to_dict(), "engine": "spark"}, "synthetic": params.synthetic.to_dict()}
    args = [
        "--dataset",
        dataset,
        "--source",
        source,
        "--out",
        out_uri,
        "--report",
        report_uri,
        "--params",
        json.dumps(sections, default=str),
    ]
    run_on_spark(
        "prepare",
        out_uri,
        params.pipeline.spark.prepare_application_file,
        args,
        params,
        spark_conf=params.data.spark_conf,
        api=api,
        sleep=sleep,
    )
    return _read_json(report_uri)


def features_on_spark(
    data_uri: str,
    out_uri: str,
    params: Params | Mapping[str, Any],
    api: Any = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """The features step as a SparkApplication: ``data_uri`` (prepared data) -> ``out_uri`` (the
    features stage's output), both object-store URIs. ``params``: the run's params (a
    :class:`~reclora.config.Params` or its mapping; its ``features`` section goes to the driver as
    ``--features-params``). Returns the stage summary the application
    wrote (``<out_uri>/summary.json``). Raises ConfigError when a URI is local (the driver pod shares
    no volume with this step), RuntimeError when the application fails."""
    _require_remote("features", data=data_uri, output=out_uri)
    params = as_params(params)
    features = {**params.features.to_dict(), "offline_store": "spark"}
    args = ["--data", data_uri, "--out", out_uri, "--features-params", json.dumps(features, default=str)]
    run_on_spark(
        "features",
        out_uri,
        params.pipeline.spark.main_application_file,
        args,
        params,
        spark_conf=params.features.spark_conf,
        api=api,
        sleep=sleep,
    )
    return _read_json(f"{out_uri.rstrip('/')}/summary.json")


__all__ = [
    "application_name",
    "features_on_spark",
    "prepare_on_spark",
    "run_on_spark",
    "run_spark_application",
    "spark_application_body",
]
