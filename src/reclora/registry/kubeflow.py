"""Optional: record a registered version in a Kubeflow Model Registry.

The object-store registry (:mod:`reclora.registry.store`) is always the source of truth: the
predictor loads from it. When ``model_registry_url`` is set (``registry.model_registry_url`` in
params.yaml, or the argument of ``register``/``register_and_gate``), each new version is also
recorded in a Kubeflow Model Registry through its Python client, so it shows up in the Kubeflow
UI with its URI, metrics and lineage::

    pip install model-registry        # not a default dependency; imported only when used

    register(..., model_registry_url="https://model-registry-service.kubeflow.svc:8443",
             model_registry_options={"author": "retraining-pipeline", "user_token": TOKEN})

``model_registry_options``: ``author``, ``is_secure`` (default: true for https), ``port`` (default:
the URL's, else 443/80), ``user_token``, ``custom_ca``, ``model_name`` (default: the registry
name), and ``register_kwargs`` (extra keyword arguments for ``ModelRegistry.register_model``,
e.g. ``storage_key``/``storage_path`` for S3 data connections).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from reclora.registry.errors import RegistryError

MODEL_FORMAT = "reclora-adapter"
MODEL_FORMAT_VERSION = "1"


def load_client() -> Any:
    """The ``model_registry.ModelRegistry`` class, or a clear RegistryError when the client is missing."""
    try:
        from model_registry import ModelRegistry  # type: ignore[import-not-found]
    except ImportError as e:
        raise RegistryError(
            "model_registry_url is set but the Kubeflow Model Registry client is not installed: "
            "`pip install model-registry`, or leave model_registry_url empty to use the object-store registry only"
        ) from e
    return ModelRegistry


def _metadata(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Flat scalar metadata (the client accepts int/float/bool/str only)."""
    met = manifest.get("metrics") or {}
    out: dict[str, Any] = {
        "registry_version": manifest.get("version"),
        "base_model": manifest.get("base_model"),
        "created_at": manifest.get("created_at"),
        "model": met.get("model"),
    }
    for k, v in (met.get("test") or {}).items():
        out[f"test_{k}"] = v
    for b, m in (met.get("baselines") or {}).items():
        for k in ("auc", "logloss"):
            out[f"baseline_{b}_{k}"] = m.get(k)
    for k, v in (manifest.get("lineage") or {}).items():
        out[f"lineage_{k}"] = v
    if (manifest.get("data") or {}).get("data_version"):
        out["data_version"] = manifest["data"]["data_version"]
    return {k: v for k, v in out.items() if isinstance(v, (int, float, bool, str))}


def record_version(
    manifest: Mapping[str, Any],
    version_uri: str,
    url: str,
    *,
    author: str | None = None,
    is_secure: bool | None = None,
    port: int | None = None,
    user_token: str | None = None,
    custom_ca: str | None = None,
    model_name: str | None = None,
    register_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Register ``manifest``'s version (stored at ``version_uri``) in the Model Registry at ``url``."""
    ModelRegistry = load_client()
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if not parts.hostname:
        raise RegistryError(f"bad Kubeflow Model Registry URL {url!r}")
    secure = parts.scheme == "https" if is_secure is None else bool(is_secure)
    port = port or parts.port or (443 if secure else 80)
    kwargs: dict[str, Any] = {"author": author or os.environ.get("USER") or "reclora-pipeline", "is_secure": secure}
    if user_token:
        kwargs["user_token"] = user_token
    if custom_ca:
        kwargs["custom_ca"] = custom_ca
    name = model_name or str(manifest.get("name", "reclora"))
    version = str(manifest.get("version"))
    try:
        client = ModelRegistry(f"{parts.scheme}://{parts.hostname}", port, **kwargs)
        rm = client.register_model(
            name,
            version_uri,
            version=version,
            description=f"RecLoRA adapter {version} on {manifest.get('base_model')}",
            model_format_name=MODEL_FORMAT,
            model_format_version=MODEL_FORMAT_VERSION,
            metadata=_metadata(manifest),
            **dict(register_kwargs or {}),
        )
    except Exception as e:  # the server's and the client's errors vary by version
        raise RegistryError(
            f"version {version} is stored at {version_uri}, but recording it in the Kubeflow Model Registry at "
            f"{url} failed: {type(e).__name__}: {e}"
        ) from e
    return {"url": url, "model": name, "version": version, "id": getattr(rm, "id", None)}
