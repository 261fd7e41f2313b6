"""The Kubernetes API client, configured from the pod's service account (or ~/.kube/config outside a cluster),
and the namespace the objects a step creates or patches live in (:func:`pod_namespace`).

Only :mod:`reclora.trainjob` (multi-node training), :mod:`reclora.spark` (SparkApplications of the
Kubeflow Spark Operator) and :mod:`reclora.registry.deploy` (KServe rollout) talk to the API server,
through ``CustomObjectsApi``; tests pass their own ``api``. :func:`create_and_wait` is the one
create-or-follow-then-poll loop of the custom resources a pipeline step runs and awaits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from reclora.errors import ConfigError

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def pod_namespace(default: str) -> str:
    """The namespace of this pod (its service account's ``namespace`` file), else ``default``.

    Inside a pod its own namespace wins over any configured one: Kubeflow Pipelines runs a step in
    the run's namespace (a Profile's in multi-user mode, its own in single-user mode), which is where
    the step's service account may create TrainJobs and SparkApplications and patch the
    InferenceService. ``default`` (params ``pipeline.trainjob|spark|serving.namespace``) is for
    runs outside a cluster (the CLI with a kubeconfig).
    """
    return SA_NAMESPACE.read_text().strip() if SA_NAMESPACE.is_file() else default


def custom_objects_api() -> Any:
    """A ``kubernetes.client.CustomObjectsApi`` for this pod's service account, else the local kubeconfig.

    Raises ConfigError when neither is available.
    """
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, FileNotFoundError, TypeError) as e:
            raise ConfigError(f"no Kubernetes API access (not in a cluster and no usable kubeconfig: {e})") from None
    return client.CustomObjectsApi()


State = Literal["done", "failed"] | None


def create_and_wait(
    body: Mapping[str, Any],
    group: str,
    version: str,
    plural: str,
    state: Callable[[Mapping[str, Any]], tuple[State, str]],
    api: Any = None,
    poll_s: float = 15.0,
    timeout_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Create the custom object ``body`` (or follow the one of the same name from an earlier attempt of
    the step) and poll it until ``state(obj)`` says ``"done"`` or ``"failed"`` (with a message).

    An object found already failed is deleted and created again. Returns the final object; raises
    RuntimeError when it fails or ``timeout_s`` passes. ``api``: a ``CustomObjectsApi`` (default:
    :func:`custom_objects_api`).
    """
    from kubernetes.client.exceptions import ApiException

    if api is None:
        api = custom_objects_api()
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    kind = body.get("kind", plural)
    kw = {"group": group, "version": version, "namespace": ns, "plural": plural}
    try:
        api.create_namespaced_custom_object(body=dict(body), **kw)
    except ApiException as e:
        if e.status != 409:  # 409: this step's object exists already (a retry): follow it
            raise
        if state(api.get_namespaced_custom_object(name=name, **kw))[0] == "failed":
            api.delete_namespaced_custom_object(name=name, **kw)
            api.create_namespaced_custom_object(body=dict(body), **kw)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        obj = api.get_namespaced_custom_object(name=name, **kw)
        st, msg = state(obj)
        if st == "done":
            return obj
        if st == "failed":
            raise RuntimeError(f"{kind} {ns}/{name} failed: {msg}")
        if deadline is not None and time.monotonic() > deadline:
            raise RuntimeError(f"{kind} {ns}/{name} did not finish within {timeout_s} s")
        sleep(poll_s)
