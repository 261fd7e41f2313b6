"""KFP component of the LLM training step: wraps :func:`reclora.launch.train_llm` (ranks in this pod) or, with
``num_nodes`` > 1, :func:`reclora.trainjob.train_llm_multinode` (a Kubeflow Trainer TrainJob)."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output


def train_llm(
    kind: str,
    data: Input[Dataset],
    retrieved: Input[Dataset],
    crm: Input[Model],
    model_path: str,
    gate: str,
    profile: str,
    overrides: dict,
    adapter: Output[Model],
    stats: Output[Metrics],
    nproc_per_node: int = 1,
    num_nodes: int = 1,
    checkpoint_uri: str = "",
    run_id: str = "",
    task_name: str = "",
    feature_store: Input[Dataset] = None,
):
    """Few2Many: RecLoRA (or the vanilla LoRA baseline) on a seeded sample of train; scores the eval subset.

    ``nproc_per_node`` > 1: that many data-parallel ranks in this pod (one per GPU); ``num_nodes`` > 1:
    a Kubeflow Trainer TrainJob on that many nodes, awaited. With ``checkpoint_uri`` the checkpoints are
    mirrored to <checkpoint_uri>/<run_id>/<task_name>, so a retry in a new pod resumes from the bucket.
    ``feature_store`` (the features step's output): the prompts' profiles and titles from Feast
    (without it: from the prepared tables)."""
    from reclora.hardware import setup_process

    setup_process()  # threads from the pod's CPU limit; a step given a GPU torch cannot use stops here

    from reclora.config import load_params_with, validated
    from reclora.launch import train_llm as run_ranks
    from reclora.trainjob import train_llm_multinode

    params = validated(load_params_with(overrides, profile or None))
    model_path = model_path or params["model"].get("path") or ""
    ckpt = "/".join(x.strip("/") for x in (checkpoint_uri, run_id, task_name or kind) if x) if checkpoint_uri else None
    crm_in = crm if kind == "reclora" else None
    kw = {"gate": gate, "model_path": model_path or None}
    if num_nodes > 1:  # a TrainJob: inputs and output through the bucket
        crm_uri, fs = (crm_in.uri if crm_in else None), (feature_store.uri if feature_store else None)
        args = (kind, data.uri, retrieved.uri, crm_uri, adapter.path, params, ckpt)
        s = train_llm_multinode(*args, feature_store=fs, **kw)
    else:
        crm_path, fs = (crm_in.path if crm_in else None), (feature_store.path if feature_store else None)
        args = (nproc_per_node, kind, data.path, retrieved.path, crm_path, adapter.path, params)
        s = run_ranks(*args, checkpoint_uri=ckpt, feature_store=fs, **kw)
    for k in ("auc", "logloss", "accuracy", "n"):  # on the seeded evaluation subset of test
        stats.log_metric(f"eval_{k}", s["eval"][k])
    stats.log_metric("train_samples", s["train_samples"])
    stats.log_metric("train_seconds", s["train"]["seconds"])
    adapter.metadata.update({"kind": kind, "base_model": s["base_model"], "format": "safetensors"})
