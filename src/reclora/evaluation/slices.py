"""Sliced metrics, TFMA-style: AUC, LogLoss and sample count of every model on subsets of the evaluated samples.

    spec = SliceSpec.from_params(params.evaluation.slices.to_dict(), dataset="ml-100k")
    inputs = slice_inputs(prepared_dir, keys)            # the evaluated samples' slicing columns
    slices = define_slices(inputs, spec)                 # [Slice(feature, value, mask)]
    rows = slice_metrics(labels, {"CRM": p1, "RecLoRA": p2}, slices, spec, comparisons=[("RecLoRA", "CRM")])

Slice features (each sample is in exactly one value of the first two, in any number of the others):

    item popularity      the target item's number of samples in the training split: ``unseen`` (none),
                         ``head`` (the top ``head_share`` of training items by that count, ties at the
                         boundary included) and ``tail`` (the other seen items)
    history length       the user's number of earlier interactions (``n_history``, before truncation):
                         ``short`` (< edges[0]), ``medium`` (< edges[1]), ``long`` (the rest)
    unseen in training   ``user`` (the user has no training sample), ``item`` (the target item has none)
    <field>              every value of a categorical column of the items (by the target item) or users
                         table named in ``fields``; "|"-separated values (MovieLens genres) count each

A slice with fewer than ``min_samples`` samples, or one class only, is listed with its count and a
note saying why it is not scored. Intervals come from the paired bootstrap of
:func:`reclora.evaluation.metrics.bootstrap_aucs` on the slice's own samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reclora.evaluation.metrics import (
    EvaluationInputError,
    bootstrap_aucs,
    ctr_metrics,
    diff_summary,
    interval,
    validate,
)

KEY = ["user_id", "item_id", "timestamp"]
FEATURES = ("item popularity", "history length", "unseen in training")


@dataclass(frozen=True)
class SliceSpec:
    """How the evaluated samples are sliced (params ``evaluation.slices``; see the module docstring)."""

    min_samples: int = 30
    head_share: float = 0.2
    history_edges: tuple[int, int] = (20, 50)
    fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.min_samples, bool) or not isinstance(self.min_samples, int) or self.min_samples < 2:
            raise EvaluationInputError(f"slices.min_samples must be an integer >= 2, got {self.min_samples!r}")
        if not 0.0 < float(self.head_share) < 1.0:
            raise EvaluationInputError(f"slices.head_share must lie in (0, 1), got {self.head_share!r}")
        e = self.history_edges
        if len(e) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in e) or not 0 < e[0] < e[1]:
            raise EvaluationInputError(
                f"slices.history_edges must be two increasing positive integers, got {list(e)!r}"
            )

    @classmethod
    def from_params(cls, p: Mapping[str, Any] | None, dataset: str | None = None) -> SliceSpec:
        """From params ``evaluation.slices``: ``fields`` is a list, or a mapping of data set -> list."""
        p = dict(p or {})
        fields = p.get("fields") or []
        if isinstance(fields, Mapping):
            fields = fields.get(str(dataset), []) or []
        if isinstance(fields, str) or not all(isinstance(f, str) and f for f in fields):
            raise EvaluationInputError(f"slices.fields must be a list of column names, got {fields!r}")
        edges = p.get("history_edges", cls.history_edges)
        return cls(
            min_samples=p.get("min_samples", cls.min_samples),
            head_share=float(p.get("head_share", cls.head_share)),
            history_edges=tuple(edges) if isinstance(edges, (list, tuple)) else edges,
            fields=tuple(fields),
        )

    def definitions(self) -> dict[str, str]:
        """One sentence per slice feature, for the report."""
        a, b = self.history_edges
        d = {
            "item popularity": f"the target item's samples in the training split: unseen = none; head = the top "
            f"{self.head_share:.0%} of training items by that count (ties included); tail = the other seen items",
            "history length": f"the user's earlier interactions: short < {a}, medium {a}-{b - 1}, long >= {b}",
            "unseen in training": "user: the user has no training sample; item: the target item has none",
        }
        for f in self.fields:
            d[f] = f"each value of the {f!r} column (by the target item, or the user); '|'-separated values count each"
        return d


@dataclass
class SliceInputs:
    """What slicing needs of the evaluated samples, row-aligned with them."""

    samples: pd.DataFrame  # user_id, item_id, n_history
    train_item_counts: pd.Series  # training samples per item_id (items without any are absent)
    train_users: np.ndarray  # user ids with a training sample
    items: pd.DataFrame | None = None
    users: pd.DataFrame | None = None


@dataclass
class Slice:
    """One slice: ``feature`` (e.g. "item popularity"), ``value`` (e.g. "tail") and its boolean row mask."""

    feature: str
    value: str
    mask: np.ndarray = field(repr=False)

    @property
    def name(self) -> str:
        """The slice's label in reports, "feature: value" (e.g. "item popularity: tail")."""
        return f"{self.feature}: {self.value}"


def slice_inputs(data_dir: str | Path, keys: pd.DataFrame) -> SliceInputs:
    """The slicing columns of the evaluated samples ``keys`` (user_id, item_id, timestamp; rows of the test
    split of the prepared directory ``data_dir``), in ``keys``' order. Reads only the sample index, the
    training split's user_id and item_id columns and the items and users tables. Raises DataError when a
    key is not a test sample."""
    from reclora.data import schema
    from reclora.errors import DataError

    d = Path(data_dir)
    test = pd.read_parquet(d / schema.split_path("test"), columns=KEY + ["n_history"]).drop_duplicates(KEY)
    m = keys[KEY].merge(test, on=KEY, how="left", validate="many_to_one")
    if m["n_history"].isna().any():
        bad = m[m["n_history"].isna()].iloc[0]
        raise DataError(
            f"{d}: evaluated sample (user {bad.user_id}, item {bad.item_id}, time {bad.timestamp}) "
            f"is not in the test split of this prepared data"
        )
    train = pd.read_parquet(d / schema.split_path("train"), columns=["user_id", "item_id"])
    items = pd.read_parquet(d / schema.ITEMS) if (d / schema.ITEMS).is_file() else None
    users = pd.read_parquet(d / schema.USERS) if (d / schema.USERS).is_file() else None
    return SliceInputs(
        samples=m[["user_id", "item_id", "n_history"]].astype({"n_history": "int64"}).reset_index(drop=True),
        train_item_counts=train["item_id"].value_counts(),
        train_users=train["user_id"].unique(),
        items=items,
        users=users,
    )


def _head_threshold(counts: pd.Series, share: float) -> int:
    """The training count at and above which a seen item is head: the count of the item ranked
    ceil(share x seen items) by count."""
    c = np.sort(counts.to_numpy())[::-1]
    if len(c) == 0:
        return 1
    return int(c[max(1, math.ceil(share * len(c))) - 1])


def _values(col: pd.Series) -> list[list[str]]:
    out = []
    for v in col:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append([])
        else:
            out.append([x.strip() for x in str(v).split("|") if x.strip()])
    return out


def define_slices(inputs: SliceInputs, spec: SliceSpec) -> list[Slice]:
    """The slices of the evaluated samples (module docstring), in report order. Raises
    EvaluationInputError when a field of ``spec`` is in neither the items nor the users table."""
    s = inputs.samples
    n = len(s)
    count = s["item_id"].map(inputs.train_item_counts).fillna(0).to_numpy(np.int64)
    head = _head_threshold(inputs.train_item_counts, spec.head_share)
    hist = s["n_history"].to_numpy(np.int64)
    a, b = spec.history_edges
    user_unseen = ~np.isin(s["user_id"].to_numpy(), inputs.train_users)
    out = [
        Slice("item popularity", "unseen", count == 0),
        Slice("item popularity", "tail", (count > 0) & (count < head)),
        Slice("item popularity", "head", count >= max(head, 1)),
        Slice("history length", "short", hist < a),
        Slice("history length", "medium", (hist >= a) & (hist < b)),
        Slice("history length", "long", hist >= b),
        Slice("unseen in training", "user", user_unseen),
        Slice("unseen in training", "item", count == 0),
    ]
    for f in spec.fields:
        if inputs.items is not None and f in inputs.items.columns:
            table, key = inputs.items, "item_id"
        elif inputs.users is not None and f in inputs.users.columns:
            table, key = inputs.users, "user_id"
        else:
            raise EvaluationInputError(f"slice field {f!r} is a column of neither the items nor the users table")
        lookup = dict(zip(table[key].to_numpy(), _values(table[f])))
        per_sample = [lookup.get(k, []) for k in s[key].to_numpy()]
        values: dict[str, np.ndarray] = {}
        for i, vs in enumerate(per_sample):
            for v in vs:
                values.setdefault(v, np.zeros(n, dtype=bool))[i] = True
        for v in sorted(values, key=lambda v: (-int(values[v].sum()), v)):
            out.append(Slice(f, v, values[v]))
    return out


def slice_metrics(
    labels: Any,
    predictions: Mapping[str, Any],
    slices: Sequence[Slice],
    spec: SliceSpec,
    comparisons: Sequence[tuple[str, str]] = (),
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per slice: ``feature``, ``value``, ``n``, ``positives``, ``scored`` and, when scored, per model
    ``{"auc", "lo", "hi", "logloss"}`` under ``models`` and per comparison (a, b) the paired interval of
    AUC(a) - AUC(b) under ``diffs`` (key ``"a - b"``); when not, ``note`` says why. ``predictions``: model ->
    probabilities, row-aligned with ``labels`` and every slice's mask."""
    y = None
    probs = {}
    for name, p in predictions.items():
        yy, pp = validate(labels, p)
        y = yy if y is None else y
        probs[name] = pp
    if y is None:
        raise EvaluationInputError("slice_metrics: no model to score")
    for a_b in comparisons:
        missing = [m for m in a_b if m not in probs]
        if missing:
            raise EvaluationInputError(f"slice comparison {a_b}: no predictions for {missing}")
    names = list(probs)
    rows = []
    for sl in slices:
        if len(sl.mask) != len(y):
            raise EvaluationInputError(f"slice {sl.name!r}: mask of {len(sl.mask)} rows for {len(y)} samples")
        ys = y[sl.mask]
        row: dict[str, Any] = {"feature": sl.feature, "value": sl.value, "n": int(len(ys)), "positives": int(ys.sum())}
        if len(ys) < spec.min_samples:
            rows.append(
                row
                | {
                    "scored": False,
                    "note": f"too small to score: {len(ys)} sample{'' if len(ys) == 1 else 's'} (< {spec.min_samples})",
                }
            )
            continue
        if ys.min() == ys.max():
            rows.append(row | {"scored": False, "note": f"not scored: all {len(ys)} labels are {int(ys[0])}"})
            continue
        point, boot = bootstrap_aucs(ys, [probs[m][sl.mask] for m in names], n_boot=n_boot, seed=seed)
        models = {}
        for j, m in enumerate(names):
            lo, hi = interval(boot[:, j], level)
            models[m] = {
                "auc": round(float(point[j]), 6),
                "lo": round(lo, 6),
                "hi": round(hi, 6),
                "logloss": round(ctr_metrics(ys, probs[m][sl.mask])["logloss"], 6),
            }
        diffs = {}
        for a, b in comparisons:
            ia, ib = names.index(a), names.index(b)
            diffs[f"{a} - {b}"] = diff_summary(point[ia], point[ib], boot[:, ia], boot[:, ib], level)
        rows.append(row | {"scored": True, "models": models, "diffs": diffs})
    return rows


def slice_table_text(rows: Sequence[Mapping[str, Any]], models: Sequence[str], comparisons: Sequence[str] = ()) -> str:
    """The slice rows of :func:`slice_metrics` as a plain-text table: per slice its count, each model's AUC with
    its interval, and each comparison's AUC difference with its interval (``models``/``comparisons`` pick the
    columns, in order); a slice that is not scored shows its note."""
    cols = [f"{m} AUC" for m in models] + [f"{c} AUC" for c in comparisons]
    width = max([len(f"{r['feature']}: {r['value']}") for r in rows] + [5])
    lines = [f"{'slice':<{width}}  {'n':>6}  " + "  ".join(f"{c:<24}" for c in cols).rstrip()]
    for r in rows:
        head = f"{r['feature'] + ': ' + r['value']:<{width}}  {r['n']:>6}  "
        if not r.get("scored"):
            lines.append(head + r["note"])
            continue
        cells = [
            f"{r['models'][m]['auc']:.4f} [{r['models'][m]['lo']:.4f}, {r['models'][m]['hi']:.4f}]" for m in models
        ]
        cells += [
            f"{r['diffs'][c]['diff']:+.4f} [{r['diffs'][c]['lo']:+.4f}, {r['diffs'][c]['hi']:+.4f}]"
            for c in comparisons
        ]
        lines.append(head + "  ".join(f"{c:<24}" for c in cells).rstrip())
    return "\n".join(lines)
