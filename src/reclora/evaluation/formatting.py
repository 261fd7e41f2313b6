"""How the evaluation report's figures read, shared by the plots, the HTML page and the Markdown summary:
the table's metrics, a metric as text, the number of evaluated samples, the models a slice table shows."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

# metric -> (table header, higher is better)
TABLE_METRICS = {
    "auc": ("AUC", True),
    "logloss": ("LogLoss", False),
    "ece": ("ECE", False),
    "accuracy": ("Accuracy", True),
}


def format_metric(value: Any) -> str:
    """How a metric value reads in the HTML table, the legends and the bar labels."""
    if value is None:
        return "n/a"
    return f"{float(value):.4f}"


def is_number(x: Any) -> bool:
    """True for a finite int or float (numpy's included), False for bools, None, NaN, inf and anything else."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)


def samples_text(metrics: Mapping[str, Any]) -> str:
    """The number of evaluated samples with thousands separators ("12,345"): the context's
    ``evaluated_samples``, else the first model's ``n``."""
    n = (metrics.get("context") or {}).get("evaluated_samples")
    if n is None:
        n = next(iter(metrics["models"].values()))["n"]
    return f"{int(n):,}"


def slice_models(metrics: Mapping[str, Any]) -> list[str]:
    """The models the slice rows score (those of the first scored row, in ``model_order``); [] without one."""
    rows = (metrics.get("slices") or {}).get("rows") or []
    first = next((r for r in rows if r.get("scored")), None)
    return [n for n in metrics["model_order"] if first and n in first["models"]]
