from kfp.dsl import Dataset, Input, Output


def retrieve(data: Input[Dataset], model_path: str, mode: str, profile: str, overrides: dict, retrieved: Output[Dataset]):
    """Long-short modality retrieval: K_long and K_short relevant earlier behaviours per sample."""
    from reclora.config import load_params_with
    from reclora.stages import retrieve_stage

    s = retrieve_stage(data.path, retrieved.path, load_params_with(overrides, profile or None), mode=mode or None,
                       model_path=model_path or None, progress=False)  # fmt: skip
    retrieved.metadata.update({"mode": s["mode"], "k_long": s["k_long"], "k_short": s["k_short"]})
