"""CTR metrics for binary click/like predictions, in plain numpy.

    ctr_metrics(labels, probs)          -> {"auc", "logloss", "accuracy", "n", "positive_rate"}
    calibration_bins(labels, probs, 10) -> per-bin mean predicted vs observed rate, counts, ECE
    roc_points(labels, probs)           -> (fpr, tpr), downsampled for plots and JSON

``labels`` are 0/1 (bool or numeric), ``probs`` are probabilities of the positive
class in [0, 1]. Anything else (length mismatch, NaN, out-of-range values,
non-binary labels, empty input) raises :class:`EvaluationInputError`, which is a
``ValueError`` (and a :class:`~reclora.errors.DataError`, so the CLI reports it in
one line). Every number returned is a plain Python ``int``/``float``/``None`` so
the results go into JSON unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reclora.errors import DataError

EPS = 1e-7
"""Probabilities are clipped to ``[EPS, 1 - EPS]`` for the log loss."""
THRESHOLD = 0.5
"""Accuracy counts ``prob >= THRESHOLD`` as a positive prediction."""
MAX_ROC_POINTS = 500


class EvaluationInputError(DataError, ValueError):
    """Labels or probabilities that cannot be scored."""


def _as_1d(values: Any, what: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as e:
        raise EvaluationInputError(f"{what} must be numeric: {e}") from None
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise EvaluationInputError(f"{what} must be one-dimensional, got shape {arr.shape}")
    return arr


def validate(labels: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert ``labels``/``probs`` to float arrays (labels exactly 0.0/1.0)."""
    y = _as_1d(labels, "labels")
    p = _as_1d(probs, "probs")
    if len(y) != len(p):
        raise EvaluationInputError(f"labels and probs differ in length: {len(y)} labels, {len(p)} probs")
    if len(y) == 0:
        raise EvaluationInputError("no predictions to evaluate (empty labels and probs)")
    for arr, what in ((y, "labels"), (p, "probs")):
        bad = ~np.isfinite(arr)
        if bad.any():
            i = int(np.argmax(bad))
            raise EvaluationInputError(f"{what} contain {int(bad.sum())} NaN/infinite value(s), first at index {i}")
        out = (arr < 0.0) | (arr > 1.0)
        if out.any():
            i = int(np.argmax(out))
            raise EvaluationInputError(
                f"{what} must lie in [0, 1]: {int(out.sum())} value(s) outside, first {arr[i]!r} at index {i}"
            )
    nonbin = (y != 0.0) & (y != 1.0)
    if nonbin.any():
        i = int(np.argmax(nonbin))
        raise EvaluationInputError(f"labels must be 0 or 1, got {y[i]!r} at index {i}")
    return y, p


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic, ties counted as one half (same as sklearn)."""
    n_pos = float(y.sum())
    n_neg = float(len(y) - n_pos)
    _, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
    # 1-based rank of each distinct value, averaged over its ties
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum_pos = float(avg_rank[inverse][y == 1.0].sum())
    return (rank_sum_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _single_class_reason(y: np.ndarray) -> str | None:
    n_pos = int(y.sum())
    if n_pos == len(y):
        return f"AUC undefined: only one class present (all {len(y)} labels are 1)"
    if n_pos == 0:
        return f"AUC undefined: only one class present (all {len(y)} labels are 0)"
    return None


def ctr_metrics(labels: Any, probs: Any) -> dict[str, Any]:
    """AUC, log loss, accuracy at 0.5, sample count and positive rate.

    When only one class is present the AUC is ``None`` and ``auc_reason`` says why;
    the other metrics are still computed.
    """
    y, p = validate(labels, probs)
    n = len(y)
    pc = np.clip(p, EPS, 1.0 - EPS)
    logloss = float(-np.mean(y * np.log(pc) + (1.0 - y) * np.log1p(-pc)))
    accuracy = float(np.mean((p >= THRESHOLD) == (y == 1.0)))
    out: dict[str, Any] = {
        "auc": None,
        "logloss": logloss,
        "accuracy": accuracy,
        "n": int(n),
        "positive_rate": float(y.mean()),
    }
    reason = _single_class_reason(y)
    if reason is None:
        out["auc"] = float(_auc(y, p))
    else:
        out["auc_reason"] = reason
    return out


def calibration_bins(labels: Any, probs: Any, n_bins: int = 10) -> dict[str, Any]:
    """Reliability-diagram data over ``n_bins`` equal-width bins of ``[0, 1]``.

    Bin ``i`` holds ``edges[i] <= p < edges[i+1]`` (the last bin includes 1.0).
    Returns ``n_bins``, ``edges`` (n_bins + 1), and per bin ``count``,
    ``mean_predicted`` and ``observed_rate`` (``None`` for empty bins), plus
    ``ece``: the count-weighted mean of ``|mean_predicted - observed_rate|``.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise EvaluationInputError(f"n_bins must be a positive integer, got {n_bins!r}")
    n_bins = int(n_bins)
    y, p = validate(labels, probs)
    idx = np.clip(np.floor(p * n_bins).astype(int), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    mean_pred: list[float | None] = []
    observed: list[float | None] = []
    ece = 0.0
    for c, sp, sy in zip(count, sum_p, sum_y):
        if c == 0:
            mean_pred.append(None)
            observed.append(None)
            continue
        mp, ob = float(sp / c), float(sy / c)
        mean_pred.append(mp)
        observed.append(ob)
        ece += c / len(y) * abs(mp - ob)
    return {
        "n_bins": n_bins,
        "edges": [float(e) for e in np.linspace(0.0, 1.0, n_bins + 1)],
        "count": [int(c) for c in count],
        "mean_predicted": mean_pred,
        "observed_rate": observed,
        "ece": float(ece),
    }


def roc_points(labels: Any, probs: Any, max_points: int = MAX_ROC_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve ``(fpr, tpr)`` from (0, 0) to (1, 1), one point per distinct threshold.

    Collinear intermediate points are dropped (they change neither the plot nor the
    area); if more than ``max_points`` remain, points evenly spaced along the curve's
    index are kept, always including both ends. Raises when only one class is
    present (the curve is undefined).
    """
    if max_points < 2:
        raise EvaluationInputError(f"max_points must be at least 2, got {max_points!r}")
    y, p = validate(labels, probs)
    reason = _single_class_reason(y)
    if reason is not None:
        raise EvaluationInputError(reason.replace("AUC", "ROC curve"))
    order = np.argsort(-p, kind="mergesort")
    p_sorted, y_sorted = p[order], y[order]
    # last index of each run of equal scores = one threshold
    last = np.r_[np.flatnonzero(np.diff(p_sorted)), len(p_sorted) - 1]
    tps = np.cumsum(y_sorted)[last]
    fps = (last + 1) - tps
    if len(tps) > 2:  # as sklearn's roc_curve(drop_intermediate=True): before prepending (0, 0)
        keep = np.r_[True, np.logical_or(np.diff(fps, 2) != 0, np.diff(tps, 2) != 0), True]
        tps, fps = tps[keep], fps[keep]
    tps = np.r_[0.0, tps]
    fps = np.r_[0.0, fps]
    fpr = fps / fps[-1]
    tpr = tps / tps[-1]
    if len(fpr) > max_points:
        sel = np.unique(np.round(np.linspace(0, len(fpr) - 1, max_points)).astype(int))
        fpr, tpr = fpr[sel], tpr[sel]
    return fpr, tpr



def paired_bootstrap_auc_diff(
    labels: Any, probs_a: Any, probs_b: Any, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """AUC(a) - AUC(b) on the same samples, with a paired bootstrap interval.

    Both models are scored on each of ``n_boot`` resamples (with replacement) of the same rows, so
    the interval reflects the difference, not each AUC's own noise. Returns {"diff", "lo", "hi",
    "p_b_better_or_equal" (share of resamples with diff <= 0), "n", "n_boot"}. Raises
    EvaluationInputError for mismatched or single-class input.
    """
    from sklearn.metrics import roc_auc_score

    y, pa = validate(labels, probs_a)
    _, pb = validate(labels, probs_b)
    if len(pa) != len(pb):
        raise EvaluationInputError(f"paired bootstrap: {len(pa)} and {len(pb)} predictions for the same samples")
    reason = _single_class_reason(y)
    if reason:
        raise EvaluationInputError(f"paired bootstrap: {reason}")
    rng = np.random.default_rng(seed)
    n = len(y)
    diffs = []
    while len(diffs) < n_boot:
        idx = rng.integers(0, n, size=n)
        yy = y[idx]
        if yy.min() == yy.max():
            continue
        diffs.append(roc_auc_score(yy, pa[idx]) - roc_auc_score(yy, pb[idx]))
    d = np.asarray(diffs)
    alpha = (1 - level) / 2
    return {
        "diff": round(float(roc_auc_score(y, pa) - roc_auc_score(y, pb)), 6),
        "lo": round(float(np.quantile(d, alpha)), 6),
        "hi": round(float(np.quantile(d, 1 - alpha)), 6),
        "p_b_better_or_equal": round(float(np.mean(d <= 0)), 4),
        "n": int(n),
        "n_boot": int(n_boot),
    }
