"""KFP component of the retrieve step: wraps :func:`reclora.stages.retrieve_stage` (long-short modality
retrieval of each sample's earlier behaviours) with the model fetched by :func:`reclora.storage.fetch_model`."""

from kfp.dsl import Dataset, Input, Output


def retrieve(
    data: Input[Dataset], model_path: str, mode: str, profile: str, overrides: dict, retrieved: Output[Dataset]
):
    """Long-short modality retrieval: K_long and K_short relevant earlier behaviours per sample.
    ``model_path``: a path in the image, a hub id or an object-store URI (downloaded into the cache)."""
    from reclora.hardware import setup_process

    setup_process()  # threads from the pod's CPU limit; a step given a GPU torch cannot use stops here

    from reclora.config import load_params_with, validated
    from reclora.stages import retrieve_stage
    from reclora.storage import fetch_model

    params = validated(load_params_with(overrides, profile or None))
    model = fetch_model(model_path or params["model"].get("path") or None)  # the run's model.path as well
    s = retrieve_stage(data.path, retrieved.path, params, mode=mode or None, model_path=model, progress=False)
    retrieved.metadata.update({"mode": s["mode"], "k_long": s["k_long"], "k_short": s["k_short"]})
