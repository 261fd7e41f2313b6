"""Model evaluation: CTR metrics and the comparison report (JSON, plots, one HTML page).

    from reclora.evaluation import ctr_metrics, calibration_bins, roc_points, write_report
    ctr_metrics(labels, probs)  # {"auc", "logloss", "accuracy", "n", "positive_rate"}
    bootstrap_aucs(labels, [p_a, p_b])  # (AUCs, [n_boot, 2] AUCs on the same resamples)
    paired_bootstrap_auc_diff(labels, p_a, p_b)  # {"diff", "lo", "hi", ...}
    metrics = write_report(out_dir, {"CRM": (labels, p_crm), "RecLoRA": (labels, p_rec)},
                           context={...}, gate={...}, slices={...})

Sliced metrics: :mod:`reclora.evaluation.slices`; the champion re-scored on the evaluated samples:
:mod:`reclora.evaluation.champion`.

Bad input raises :class:`EvaluationInputError` (a ``ValueError`` and a ``DataError``).
"""

from reclora.evaluation.metrics import (
    EvaluationInputError,
    bootstrap_aucs,
    calibration_bins,
    ctr_metrics,
    interval,
    paired_bootstrap_auc_diff,
    roc_points,
)
from reclora.evaluation.report import write_report

__all__ = [
    "EvaluationInputError",
    "bootstrap_aucs",
    "calibration_bins",
    "ctr_metrics",
    "interval",
    "paired_bootstrap_auc_diff",
    "roc_points",
    "write_report",
]
