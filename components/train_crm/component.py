"""KFP component of the CRM training step: wraps :func:`reclora.stages.crm_stage` (the DIN-style CRM trained
on the retrieved samples) and logs its test metrics."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output


def train_crm(
    data: Input[Dataset],
    retrieved: Input[Dataset],
    profile: str,
    overrides: dict,
    crm: Output[Model],
    stats: Output[Metrics],
    feature_store: Input[Dataset] = None,
):
    """The DIN-style CRM on the full training split; its hidden vector is RecLoRA's signal. User
    attributes and item genres come from Feast's offline store (the features step's repo; without
    it, from the prepared tables)."""
    from reclora.hardware import setup_process

    setup_process()  # threads from the pod's CPU limit; a step given a GPU torch cannot use stops here

    from reclora.config import load_params_with, validated
    from reclora.stages import crm_stage

    params = validated(load_params_with(overrides, profile or None))
    s = crm_stage(
        data.path,
        retrieved.path,
        crm.path,
        params,
        progress=False,
        feature_store=feature_store.path if feature_store else None,
    )
    for k in ("auc", "logloss", "accuracy", "n"):  # on the whole test split
        stats.log_metric(f"test_{k}", s["test"][k])
    crm.metadata.update({"framework": "torch", "format": "safetensors", "hidden_dim": s["hidden_dim"]})
