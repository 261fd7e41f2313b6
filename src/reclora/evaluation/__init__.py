"""Model evaluation: CTR metrics and the comparison report (JSON, plots, one HTML page).

    from reclora.evaluation import ctr_metrics, calibration_bins, roc_points, write_report
    ctr_metrics(labels, probs)  # {"auc", "logloss", "accuracy", "n", "positive_rate"}
    metrics = write_report(out_dir, {"CRM": (labels, p_crm), "RecLoRA": (labels, p_rec)},
                           context={...}, champion={"name": ..., "auc": ...})

Bad input raises :class:`EvaluationInputError` (a ``ValueError`` and a ``DataError``).
"""

from reclora.evaluation.metrics import (
    EvaluationInputError, calibration_bins, ctr_metrics, paired_bootstrap_auc_diff, roc_points,
)
from reclora.evaluation.report import write_report

__all__ = [
    "EvaluationInputError", "calibration_bins", "ctr_metrics", "paired_bootstrap_auc_diff", "roc_points", "write_report",
]
