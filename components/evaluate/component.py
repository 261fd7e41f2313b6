from typing import NamedTuple

from kfp.dsl import HTML, Artifact, ClassificationMetrics, Input, Markdown, Metrics, Model, Output


def evaluate(
    crm: Input[Model], lora: Input[Model], reclora: Input[Model], registry_uri: str, data_version: str,
    report: Output[HTML], report_files: Output[Artifact], stats: Output[Metrics], roc: Output[ClassificationMetrics],
    summary: Output[Markdown],
) -> NamedTuple("EvaluationOutputs", [("auc", float), ("logloss", float)]):
    """RecLoRA against the CRM, vanilla LoRA and the current champion, on the same samples."""
    from reclora.hardware import setup_process

    setup_process()  # threads from the pod's CPU limit; a step given a GPU torch cannot use stops here

    import shutil
    from collections import namedtuple

    from reclora.stages import champion_metrics, evaluate_stage

    champ = champion_metrics(registry_uri)
    m = evaluate_stage({"CRM": crm.path, "Vanilla LoRA": lora.path, "RecLoRA": reclora.path}, report_files.path,
                       {"data_version": data_version}, champ)  # fmt: skip
    shutil.copy(f"{report_files.path}/report.html", report.path)
    rows = ["| model | AUC | LogLoss | accuracy | n |", "|---|---|---|---|---|"]
    for name, v in m["models"].items():
        rows.append(f"| {name} | {v['auc']:.4f} | {v['logloss']:.4f} | {v['accuracy']:.4f} | {v['n']} |")
        key = name.lower().replace(" ", "_")
        stats.log_metric(f"{key}_auc", v["auc"])
        stats.log_metric(f"{key}_logloss", v["logloss"])
    if champ:
        rows.append(f"\nChampion {champ.get('name')}: AUC {champ['auc']:.4f}")
    with open(summary.path, "w") as f:
        f.write("\n".join(rows) + "\n")
    rec = m["models"]["RecLoRA"]
    if rec.get("roc"):
        fpr, tpr = rec["roc"]["fpr"], rec["roc"]["tpr"]
        roc.log_roc_curve(fpr, tpr, [1.0 - i / max(1, len(fpr) - 1) for i in range(len(fpr))])
    out = namedtuple("EvaluationOutputs", ["auc", "logloss"])
    return out(float(rec["auc"]), float(rec["logloss"]))
