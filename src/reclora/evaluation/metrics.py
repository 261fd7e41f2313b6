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


BOOTSTRAP_CHUNK = 4_000_000
"""Resample-by-sample cells bootstrapped at once (memory: a few float64 arrays of this many cells)."""


def _tie_groups(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(order, starts, ends, group): ``p[order]`` ascending, runs of equal scores as groups: first and last
    sorted position of each group, and each sorted sample's group."""
    order = np.argsort(p, kind="mergesort")
    ps = p[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ps)) + 1]
    ends = np.r_[starts[1:], len(ps)] - 1
    group = np.repeat(np.arange(len(starts)), ends - starts + 1)
    return order, starts, ends, group


def _weighted_aucs(w: np.ndarray, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """AUC of ``p`` under each row of sample weights ``w`` [b, n] (a resample's multiplicities): the weighted
    Mann-Whitney statistic, ties counted one half. Rows need positive and negative weight."""
    order, starts, ends, group = _tie_groups(p)
    ws, ys = w[:, order], y[order]
    cneg = np.cumsum(ws * (1.0 - ys), axis=1)
    below = np.where(starts > 0, cneg[:, np.maximum(starts - 1, 0)], 0.0)  # negative weight under each group
    within = cneg[:, ends] - below  # negative weight tied with each group
    credit = below[:, group] + 0.5 * within[:, group]  # per sorted sample
    wpos = ws @ ys
    return ((ws * ys * credit).sum(axis=1)) / (wpos * (ws.sum(axis=1) - wpos))


def bootstrap_aucs(labels: Any, probs: Any, n_boot: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """AUC of several models on the same rows, and on ``n_boot`` resamples of those rows.

    ``probs``: a sequence of m probability vectors for the same n ``labels``. Every model is scored on
    the same resamples (drawn with replacement: ``numpy.random.default_rng(seed).integers(0, n, (b, n))``
    in chunks of b rows; a resample with one class only is dropped and replaced by a later draw), so
    differences between the columns are paired. Returns ``(auc [m], boot [n_boot, m])``. Raises
    EvaluationInputError for bad or single-class input, or ``n_boot`` < 1.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise EvaluationInputError(f"n_boot must be a positive integer, got {n_boot!r}")
    if isinstance(probs, np.ndarray) and probs.ndim == 1:
        raise EvaluationInputError("probs must be a sequence of probability vectors, one per model")
    cols = []
    y = None
    for p in probs:
        yy, pp = validate(labels, p)
        y = yy if y is None else y
        cols.append(pp)
    if y is None:
        raise EvaluationInputError("bootstrap: no model to score")
    reason = _single_class_reason(y)
    if reason:
        raise EvaluationInputError(f"bootstrap: {reason}")
    n = len(y)
    point = np.array([_auc(y, p) for p in cols])
    out = np.empty((int(n_boot), len(cols)))
    rng = np.random.default_rng(seed)
    rows = max(1, BOOTSTRAP_CHUNK // n)
    filled = 0
    while filled < n_boot:
        b = min(int(n_boot) - filled, rows)
        idx = rng.integers(0, n, size=(b, n))
        w = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n).astype(float)
        pos = w @ y
        w = w[(pos > 0) & (pos < n)]  # both classes in the resample
        for j, p in enumerate(cols):
            out[filled : filled + len(w), j] = _weighted_aucs(w, y, p)
        filled += len(w)
    return point, out


def interval(values: Any, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap ``values``: their (1 - level) / 2 and
    1 - (1 - level) / 2 quantiles (numpy's default linear interpolation)."""
    if not 0.0 < float(level) < 1.0:
        raise EvaluationInputError(f"level must lie in (0, 1), got {level!r}")
    alpha = (1.0 - float(level)) / 2.0
    lo, hi = np.quantile(np.asarray(values, dtype=float), [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def diff_summary(
    point_a: float, point_b: float, boot_a: np.ndarray, boot_b: np.ndarray, level: float
) -> dict[str, Any]:
    """{"diff", "lo", "hi", "p_b_better_or_equal", "n_boot", "level"} of AUC(a) - AUC(b) from paired
    bootstrap AUCs (see :func:`bootstrap_aucs`)."""
    d = np.asarray(boot_a) - np.asarray(boot_b)
    lo, hi = interval(d, level)
    return {
        "diff": round(float(point_a - point_b), 6),
        "lo": round(lo, 6),
        "hi": round(hi, 6),
        "p_b_better_or_equal": round(float(np.mean(d <= 0)), 4),
        "n_boot": int(len(d)),
        "level": float(level),
    }


def paired_bootstrap_auc_diff(
    labels: Any, probs_a: Any, probs_b: Any, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """AUC(a) - AUC(b) on the same samples, with a paired bootstrap interval.

    Both models are scored on each of ``n_boot`` resamples (with replacement) of the same rows
    (:func:`bootstrap_aucs`), so the interval reflects the difference, not each AUC's own noise; the
    interval is the central ``level`` percentile interval (:func:`interval`). Returns {"diff", "lo",
    "hi", "p_b_better_or_equal" (share of resamples with diff <= 0), "n", "n_boot", "level"}. Raises
    EvaluationInputError for mismatched or single-class input.
    """
    y, pa = validate(labels, probs_a)
    _, pb = validate(labels, probs_b)
    point, boot = bootstrap_aucs(y, [pa, pb], n_boot=n_boot, seed=seed)
    return {**diff_summary(point[0], point[1], boot[:, 0], boot[:, 1], level), "n": int(len(y))}
