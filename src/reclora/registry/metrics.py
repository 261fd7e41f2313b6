"""Metrics as the registry records them: the new adapter's test scores and its baselines'.

The stages write metrics in several shapes; :func:`summarize_metrics` accepts all of them:

* the evaluate report (``metrics.json`` of ``train evaluate``): ``{"models": {name: {...}}, "model_order": [...]}``
  -- the registered model is ``model=`` if given, else the first name containing "reclora",
  else the first model; every other model becomes a baseline;
* the LLM stage's ``metrics.json``: ``{"model": "reclora", "eval": {"auc", "logloss", ...}}``;
* the CRM stage's ``metrics.json``: ``{"model": "CRM", "test": {...}}``;
* a flat ``{"auc": .., "logloss": .., "accuracy": ..}``;
* the summary itself: ``{"model": .., "test": {...}, "baselines": {name: {...}}}``.

Any of them may carry ``"baselines": {name: <one of the shapes above>}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from reclora.errors import DataError

SCORE_KEYS = ("auc", "logloss", "accuracy", "n", "positive_rate")


def _num(v: Any) -> float | int | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    if math.isnan(f) or math.isinf(f):
        return None
    if isinstance(v, int) or (hasattr(v, "dtype") and getattr(v.dtype, "kind", "") in "iu"):
        return int(v)
    return f


def scores(d: Any) -> dict[str, Any] | None:
    """The flat scores (auc, logloss, accuracy, n, positive_rate) of one model, or None if there are none."""
    if not isinstance(d, Mapping):
        return None
    for key in ("test", "eval"):
        inner = d.get(key)
        if isinstance(inner, Mapping) and ("auc" in inner or "logloss" in inner):
            return scores(inner)
    if "auc" in d or "logloss" in d:
        return {k: _num(d.get(k)) for k in SCORE_KEYS if k in d}
    return None


def summarize_metrics(metrics: Mapping[str, Any], model: str | None = None) -> dict[str, Any]:
    """``{"model": name, "test": {auc, logloss, ...}, "baselines": {name: {...}}}`` from any stage's metrics."""
    if not isinstance(metrics, Mapping):
        raise DataError(f"metrics must be a dict, got {type(metrics).__name__}")
    baselines: dict[str, dict[str, Any]] = {}
    models = metrics.get("models")
    if isinstance(models, Mapping) and models:
        order = [n for n in (metrics.get("model_order") or []) if n in models] + [
            n for n in models if n not in (metrics.get("model_order") or [])
        ]
        if model is not None and model not in models:
            raise DataError(f"metrics: model {model!r} is not in the report (models: {', '.join(order)})")
        primary = model or next((n for n in order if "reclora" in n.lower()), order[0])
        test = scores(models[primary])
        for n in order:
            if n != primary and (s := scores(models[n])) is not None:
                baselines[n] = s
    else:
        test = scores(metrics)
        primary = model or (metrics.get("model") if isinstance(metrics.get("model"), str) else None) or "reclora"
    if test is None or (test.get("auc") is None and test.get("logloss") is None):
        raise DataError(
            "metrics: no test AUC/LogLoss found for the registered model; pass the evaluate report, "
            "the LLM stage's metrics.json or {'auc': .., 'logloss': ..}"
        )
    extra = metrics.get("baselines")
    if isinstance(extra, Mapping):
        for n, m in extra.items():
            s = scores(m)
            if s is None:
                raise DataError(f"metrics: baseline {n!r} has no AUC/LogLoss")
            baselines[str(n)] = s
    return {"model": str(primary), "test": test, "baselines": baselines}


def headline(metrics: Mapping[str, Any] | None) -> tuple[float | None, float | None]:
    """(AUC, LogLoss) of the registered model in any accepted shape (a manifest's ``metrics`` too)."""
    if metrics is None:
        return None, None
    t = summarize_metrics(metrics)["test"]
    auc, ll = t.get("auc"), t.get("logloss")
    return (None if auc is None else float(auc)), (None if ll is None else float(ll))
