"""KFP component of the evaluate step: wraps :func:`reclora.stages.evaluate_stage` (every model and the champion
scored on the same samples, slices, the promotion gate's decision) and logs its metrics and ROC as KFP artifacts."""

from typing import NamedTuple

from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output


def evaluate(
    crm: Input[Model],
    lora: Input[Model],
    reclora: Input[Model],
    data: Input[Dataset],
    registry_uri: str,
    data_version: str,
    profile: str,
    overrides: dict,
    report: Output[HTML],
    report_files: Output[Artifact],
    stats: Output[Metrics],
    roc: Output[ClassificationMetrics],
    summary: Output[Markdown],
    feature_store: Input[Dataset] = None,
) -> NamedTuple("EvaluationOutputs", [("auc", float), ("logloss", float), ("promote", bool), ("decision", str)]):
    """RecLoRA against the CRM, vanilla LoRA and the current champion re-scored on the same samples; sliced
    metrics; the promotion gate's decision (the register step applies it)."""
    from reclora.hardware import setup_process

    setup_process()  # threads from the pod's CPU limit; a step given a GPU torch cannot use stops here

    import shutil
    from collections import namedtuple

    from reclora.config import load_params_with, validated
    from reclora.evaluation.report import flat_metrics, summary_markdown
    from reclora.stages import evaluate_stage

    m = evaluate_stage(
        {"CRM": crm.path, "Vanilla LoRA": lora.path, "RecLoRA": reclora.path},
        report_files.path,
        {"data_version": data_version},
        data_dir=data.path,
        registry_uri=registry_uri or None,
        feature_store=feature_store.path if feature_store else None,
        challenger="RecLoRA",
        params=validated(load_params_with(overrides, profile or None)),
    )
    shutil.copy(f"{report_files.path}/report.html", report.path)
    for k, v in flat_metrics(m).items():
        stats.log_metric(k, v)
    with open(summary.path, "w") as f:
        f.write(summary_markdown(m))
    rec = m["models"]["RecLoRA"]
    if rec.get("roc"):
        fpr, tpr = rec["roc"]["fpr"], rec["roc"]["tpr"]
        roc.log_roc_curve(fpr, tpr, [1.0 - i / max(1, len(fpr) - 1) for i in range(len(fpr))])
    decision = m["gate"]["decision"]
    out = namedtuple("EvaluationOutputs", ["auc", "logloss", "promote", "decision"])
    return out(float(rec["auc"]), float(rec["logloss"]), bool(decision["promote"]), decision["reason"])
