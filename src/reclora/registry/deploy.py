"""Roll the KServe InferenceService to a registry version: patch its ``spec.predictor.model.storageUri``.

    storage_uri(registry_uri, version, storage_root=)   where KServe finds the version
    inference_service_patch(storage_uri)                 the JSON merge patch
    deploy_version(registry_uri, version, ...)           send it (or only return it: dry_run=True)

The storageUri of a version is ``<root>/<name>/versions/<vNNNN>``, where ``root`` is the registry
URI itself for an object store (``s3://bucket/reclora``), or ``serving.storage_root`` for a
registry on a volume (``pvc://reclora-registry`` when the claim is mounted at the registry path).
KServe's storage initializer copies the version to ``/mnt/models`` and rolls the predictor pods.
The pipeline's ServiceAccount may only get and patch this one InferenceService
(infra/k8s/base/rbac.yaml).
"""

from __future__ import annotations

import os
from typing import Any

from reclora.errors import ConfigError
from reclora.registry.backend import DEFAULT_NAME

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"


def storage_uri(
    registry_uri: str | os.PathLike[str], version: str, name: str = DEFAULT_NAME, storage_root: str | None = None
) -> str:
    """The storageUri of ``version``; ConfigError for a local registry without a ``storage_root``."""
    from reclora import storage

    root = storage_root or (str(registry_uri) if storage.is_remote(str(registry_uri)) else "")
    if not root:
        raise ConfigError(
            f"registry {registry_uri} is a local path, which KServe cannot read: set pipeline.serving.storage_root "
            "(e.g. pvc://reclora-registry, the claim mounted at the registry path) or use an object-store registry_uri"
        )
    return f"{root.rstrip('/')}/{name}/versions/{version}"


def inference_service_patch(uri: str) -> dict[str, Any]:
    """The JSON merge patch that points the predictor at ``uri``."""
    return {"spec": {"predictor": {"model": {"storageUri": uri}}}}


def deploy_version(
    registry_uri: str | os.PathLike[str],
    version: str,
    *,
    service: str = "reclora",
    namespace: str = "reclora",
    storage_root: str | None = None,
    name: str = DEFAULT_NAME,
    dry_run: bool = False,
    api: Any = None,
) -> dict[str, Any]:
    """Patch InferenceService ``namespace/service`` to serve ``version`` (KServe then rolls its pods).

    Returns {"service", "namespace", "storageUri", "patch", "dry_run", "previous" (the storageUri
    before, None on a dry run)}. ``api``: a ``kubernetes.client.CustomObjectsApi`` (default: from
    the pod's service account or the kubeconfig). Raises ConfigError without API access.
    """
    uri = storage_uri(registry_uri, version, name, storage_root)
    patch = inference_service_patch(uri)
    out: dict[str, Any] = {
        "service": service,
        "namespace": namespace,
        "storageUri": uri,
        "patch": patch,
        "dry_run": bool(dry_run),
        "previous": None,
    }
    if dry_run:
        return out
    if api is None:
        from reclora.kube import custom_objects_api

        api = custom_objects_api()
    kw = {"group": GROUP, "version": VERSION, "namespace": namespace, "plural": PLURAL, "name": service}
    current = api.get_namespaced_custom_object(**kw)
    out["previous"] = (((current or {}).get("spec") or {}).get("predictor") or {}).get("model", {}).get("storageUri")
    api.patch_namespaced_custom_object(body=patch, **kw)
    return out
