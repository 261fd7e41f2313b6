"""KFP component of the register step: wraps :func:`reclora.stages.register_stage` (register the adapter
version, promote it through the gate, optionally patch the KServe InferenceService) and copies out its model
card."""

from typing import NamedTuple

from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output


def register(
    crm: Input[Model],
    reclora: Input[Model],
    retrieved: Input[Dataset],
    data: Input[Dataset],
    evaluation: Input[Artifact],
    registry_uri: str,
    data_version: str,
    run_id: str,
    profile: str,
    overrides: dict,
    model_card: Output[Markdown],
    deploy: bool = False,
) -> NamedTuple("RegisterOutputs", [("version", str), ("promoted", bool), ("reason", str)]):
    """Register the adapter version (immutable) and promote it if it passes the gate; with ``deploy``, a
    promotion also patches the KServe InferenceService's storageUri to the new version (KServe rolls it)."""
    from reclora.hardware import setup_process

    setup_process()  # threads from the pod's CPU limit; a step given a GPU torch cannot use stops here

    from collections import namedtuple

    from reclora.config import load_params_with, validated
    from reclora.stages import register_stage
    from reclora.storage import copy_file

    params = validated(load_params_with(overrides, profile or None))
    r = register_stage(
        crm.path,
        reclora.path,
        retrieved.path,
        data.path,
        evaluation.path,
        registry_uri,
        params,
        data_version=data_version,
        run_id=run_id,
        deploy=deploy,
    )
    copy_file(r["model_card"], model_card.path)
    print(
        f"registered {r['version']} at {r['path']}; {'promoted to champion' if r['promoted'] else 'challenger'}: "
        f"{r['reason']}"
    )
    if r["deploy"]:
        print(f"InferenceService {r['deploy']['namespace']}/{r['deploy']['service']} -> {r['deploy']['storageUri']}")
    out = namedtuple("RegisterOutputs", ["version", "promoted", "reason"])
    return out(r["version"], bool(r["promoted"]), r["reason"])
