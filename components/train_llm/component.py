from kfp.dsl import Dataset, Input, Metrics, Model, Output


def train_llm(
    kind: str, data: Input[Dataset], retrieved: Input[Dataset], crm: Input[Model], model_path: str, gate: str,
    profile: str, overrides: dict, adapter: Output[Model], stats: Output[Metrics],
):
    """Few2Many: RecLoRA (or the vanilla LoRA baseline) on a seeded sample of train; scores the eval subset.
    Runs on the GPU node pool on a cluster (bf16); resumes from its checkpoint when retried."""
    from reclora.config import load_params_with
    from reclora.stages import llm_stage

    params = load_params_with(overrides, profile or None)
    s = llm_stage(kind, data.path, retrieved.path, crm.path if kind == "reclora" else None, adapter.path, params,
                  gate=gate, model_path=model_path or None, progress=False)  # fmt: skip
    for k in ("auc", "logloss", "accuracy"):
        stats.log_metric(f"eval_{k}", s["eval"][k])
    stats.log_metric("train_samples", s["train_samples"])
    stats.log_metric("train_seconds", s["train"]["seconds"])
    adapter.metadata.update({"kind": kind, "base_model": s["base_model"], "format": "safetensors"})
