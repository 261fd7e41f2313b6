"""The register stage: the new version in the model registry, promoted when the gate passes (and deployed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict, cast

from reclora.config import Params, as_params
from reclora.io import read_json

#: the params sections recorded with a registered version (its params.json and model card)
REGISTERED_SECTIONS = ("data", "retrieval", "crm", "adapter", "train", "validation")


class RegisterResult(TypedDict):
    """What :func:`register_stage` returns (:func:`reclora.registry.register_and_gate`'s result, plus two keys).

    Attributes:
        version: the registered version (vNNNN).
        promoted: whether it became the champion.
        reason: why (or why not), prefixed with the version.
        path: the version's directory or object-store URI.
        champion: the champion after this registration.
        previous_champion: the champion before it.
        decision: the gate's decision (:func:`reclora.registry.gate.decide`).
        model_card: the version's MODEL_CARD.md (a local path or an object-store URI).
        deploy: the InferenceService patch's result when the promoted version was deployed, else None.
    """

    version: str
    promoted: bool
    reason: str
    path: str
    champion: str | None
    previous_champion: str | None
    decision: dict[str, Any]
    model_card: str
    deploy: dict[str, Any] | None


def register_stage(
    crm_dir: str | Path,
    reclora_dir: str | Path,
    retrieved_dir: str | Path,
    data_dir: str | Path,
    evaluation_dir: str | Path,
    registry_uri: str,
    params: Params | Mapping[str, Any],
    data_version: str = "",
    run_id: str = "",
    deploy: bool | None = None,
) -> RegisterResult:
    """Register the new version (immutable) and promote it if it passes the gate (reclora.registry.gate, rules
    from params ``pipeline.promotion``) on the evaluation's same-sample evidence (``evaluation_dir``'s
    metrics.json: the evaluate stage's report with its ``gate`` block).

    ``deploy`` (default: params ``pipeline.serving.deploy``): when the version is promoted, patch the
    KServe InferenceService's storageUri to it (:func:`reclora.registry.deploy.deploy_version`);
    the result is under ``"deploy"`` (None when nothing was patched). ``params``: the run's params (``pipeline``
    and the sections recorded with the version, :data:`REGISTERED_SECTIONS`; a :class:`~reclora.config.Params`
    or its mapping).
    """
    from reclora.registry import register_and_gate
    from reclora.registry.deploy import deploy_version

    params = as_params(params)
    serving = params.pipeline.serving
    storage_root = serving.storage_root or None
    api = None
    if serving.deploy if deploy is None else deploy:  # fail before registering, not after promoting
        from reclora.kube import custom_objects_api
        from reclora.registry.deploy import storage_uri

        storage_uri(registry_uri, "v0000", storage_root=storage_root)
        api = custom_objects_api()
    adapter_meta = read_json(Path(reclora_dir) / "metrics.json")
    r = register_and_gate(
        registry_uri,
        rules=params.pipeline.promotion,
        crm_dir=crm_dir,
        adapter_dir=reclora_dir,
        retrieval_dir=retrieved_dir,
        items_path=data_dir,
        params={name: getattr(params, name).to_dict() for name in REGISTERED_SECTIONS},
        metrics=read_json(Path(evaluation_dir) / "metrics.json"),
        lineage={"data_version": data_version, "pipeline_run_id": run_id},
        base_model=str(adapter_meta.get("base_model", "")),
        model="RecLoRA",
        runtime={k: adapter_meta[k] for k in ("precision", "hardware") if adapter_meta.get(k)},
    )
    r["model_card"] = f"{str(r['path']).rstrip('/')}/MODEL_CARD.md"  # a local path or an object-store URI
    r["deploy"] = None
    if r["promoted"] and api is not None:
        from reclora.kube import pod_namespace

        ns = pod_namespace(serving.namespace)  # in a pod: the run's namespace, where the service account may patch
        r["deploy"] = deploy_version(
            registry_uri, r["version"], service=serving.service, namespace=ns, storage_root=storage_root, api=api
        )
    return cast(RegisterResult, r)
