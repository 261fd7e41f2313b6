"""The Kubernetes API client, configured from the pod's service account (or ~/.kube/config outside a cluster).

Only :mod:`reclora.trainjob` (multi-node training) and :mod:`reclora.registry.deploy` (KServe
rollout) talk to the API server, through ``CustomObjectsApi``; tests pass their own ``api``.
"""

from __future__ import annotations

from typing import Any

from reclora.errors import ConfigError


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
