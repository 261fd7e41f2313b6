"""The expectation suites of the data gate: one Great Expectations suite per table.

Every expectation carries ``meta["reclora"]`` with the words used to turn a
failed result into one human line (see :mod:`reclora.validation.reasons`):

* ``column``   the source column to report (derived columns map back to it)
* ``bad``      for row-wise checks: what a violating value is ("outside [1, 5]")
* ``stat`` / ``expected``  for aggregate checks: what was measured and the bound
* ``reason``   a fixed line for a check whose failure needs no figures ("split train has no samples")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import great_expectations as gx
import pandas as pd

from reclora.data import schema
from reclora.validation.load import LIST_COLUMNS, SCALAR_SAMPLE_COLUMNS, PreparedTables, length_column
from reclora.validation.reasons import iso_utc

E = gx.expectations

SUITE_PREFIX = "reclora."
TABLES = ("interactions", "items", "users", "samples")

# Referential checks put the referenced ids into the suite (expect_column_values_to_be_in_set)
# up to this many ids (ML-100K's 1,682 items and 943 users); beyond it the suite and the Data
# Docs page would carry tens of thousands of literals, which GE's pydantic models copy and
# serialize again and again (11,809 ids: 13 s of a 29 s gate), so the ids not found are computed
# into a derived column ``unknown_<col>`` and checked with expect_column_values_to_be_null instead.
MAX_VALUE_SET = 2_000

# The expected dtypes GE checks (expect_column_values_to_be_of_type); strings are checked
# value by value as python ``str`` (GE's map variant for object columns).
_GE_TYPES = {"object": "str"}


def suite_name(table: str) -> str:
    """The GE suite name of ``table`` (``reclora.<table>``)."""
    return SUITE_PREFIX + table


@dataclass
class TableCheck:
    """One table to validate: its name, the frame GE reads, and the suite of expectations to run on it."""

    table: str
    frame: pd.DataFrame
    suite: gx.ExpectationSuite


def _x(cls: type, meta: dict[str, Any], **kwargs: Any) -> Any:
    notes = meta.get("notes")
    return cls(meta={"reclora": meta}, **({"notes": notes} if notes else {}), **kwargs)


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _range(lo: Any, hi: Any) -> str:
    return f"[{_fmt(lo)}, {_fmt(hi)}]"


def _types(columns: dict[str, str]) -> list[Any]:
    out = []
    for col, dtype in columns.items():
        if dtype.startswith("list<"):
            continue
        ge_type = _GE_TYPES.get(dtype, dtype)
        out.append(
            _x(
                E.ExpectColumnValuesToBeOfType,
                {"column": col, "bad": f"not of type {ge_type}", "stat": "dtype", "expected": ge_type},
                column=col,
                type_=ge_type,
            )
        )
    return out


def _columns(table: str, required: list[str]) -> Any:
    return _x(
        E.ExpectTableColumnsToMatchSet,
        {"column": None, "stat": "columns", "expected": f"at least {', '.join(required)}"},
        column_set=required,
        exact_match=False,
    )


def _not_null(col: str, report_as: str | None = None) -> Any:
    return _x(E.ExpectColumnValuesToNotBeNull, {"column": report_as or col, "bad": "null"}, column=col)


def _unique(col: str) -> Any:
    return _x(E.ExpectColumnValuesToBeUnique, {"column": col, "bad": "duplicated"}, column=col)


def _references(frame: pd.DataFrame, col: str, ref: pd.Series, ref_name: str) -> Any:
    """Every ``frame[col]`` value must be one of ``ref`` (referential integrity)."""
    ids = pd.unique(ref.dropna())
    meta = {"column": col, "bad": f"not in {ref_name}"}
    if len(ids) <= MAX_VALUE_SET:
        return _x(E.ExpectColumnValuesToBeInSet, meta, column=col, value_set=sorted(ids.tolist()))
    derived = f"unknown_{col}"
    known = frame[col].isin(ids) | frame[col].isna()
    frame[derived] = frame[col].astype("Float64" if frame[col].dtype.kind == "f" else "Int64").where(~known)
    meta["notes"] = f"{derived} holds the {col} values not found in {ref_name} ({len(ids)} ids)"
    return _x(E.ExpectColumnValuesToBeNull, meta, column=derived)


def _suite(table: str, expectations: list[Any]) -> gx.ExpectationSuite:
    # built before any context exists; ``context.suites.add`` saves it with its expectations
    return gx.ExpectationSuite(name=suite_name(table), expectations=expectations)


def interactions_check(t: PreparedTables, params: dict[str, Any], now: int) -> TableCheck:
    """The interactions suite: columns and types, ratings in range, ids known to items and users, unique events,
    timestamps within [``min_timestamp_seconds``, ``now`` + slack] (unix seconds), row count and positive rate
    within bounds. ``params``: the gate settings (:func:`~reclora.validation.gate.gate_settings`)."""
    df = t.interactions
    lo, hi = params["rating_range"][t.dataset]
    pr_lo, pr_hi = params["positive_rate"]
    slack = int(params["future_slack_seconds"])
    earliest = int(params["min_timestamp_seconds"])
    cols = list(schema.INTERACTION_COLUMNS)
    ex: list[Any] = [_columns("interactions", cols), *_types(schema.INTERACTION_COLUMNS)]
    ex += [_not_null(c) for c in cols]
    ex += [
        _x(
            E.ExpectColumnValuesToBeBetween,
            {"column": "rating", "bad": f"outside {_range(lo, hi)}"},
            column="rating",
            min_value=lo,
            max_value=hi,
        ),
        _references(df, "item_id", t.items["item_id"], "items.item_id"),
        _references(df, "user_id", t.users["user_id"], "users.user_id"),
        _x(
            E.ExpectCompoundColumnsToBeUnique,
            {
                "column": "user_id,item_id,timestamp",
                "noun": "row",
                "bad": "repeat an event (same user_id, item_id, timestamp)",
            },
            column_list=["user_id", "item_id", "timestamp"],
        ),
        _x(
            E.ExpectColumnMaxToBeBetween,
            {
                "column": "timestamp",
                "stat": "latest timestamp",
                "expected": f"<= now + {slack} s = {now + slack}",
                "timestamp": True,
            },
            column="timestamp",
            max_value=now + slack,
        ),
        _x(
            E.ExpectColumnMinToBeBetween,
            {
                "column": "timestamp",
                "stat": "earliest timestamp",
                "expected": f">= {earliest} ({iso_utc(earliest)}, validation.min_timestamp)",
                "timestamp": True,
            },
            column="timestamp",
            min_value=earliest,
        ),
        _x(
            E.ExpectTableRowCountToBeBetween,
            {
                "column": None,
                "stat": "row count",
                "expected": f"within {_range(params['min_interactions'], params['max_interactions'])}",
            },
            min_value=int(params["min_interactions"]),
            max_value=int(params["max_interactions"]),
        ),
        _x(
            E.ExpectColumnProportionOfNonNullValuesToBeBetween,
            {
                "column": "rating",
                "stat": f"positive rate (share of rating >= {_fmt(t.label_threshold)})",
                "expected": f"within {_range(pr_lo, pr_hi)}",
                "notes": f"positive_rating = rating where rating >= {_fmt(t.label_threshold)} (label threshold "
                "from meta.json), else null",
            },
            column="positive_rating",
            min_value=float(pr_lo),
            max_value=float(pr_hi),
        ),
    ]
    if t.meta.get("time_source") == "row_order":
        # no real times (GoodBooks): the (user, item, timestamp) check above can never fire, and a
        # repeated pair is the same event twice, whose later copy would hold its own answer in its history
        ex.append(
            _x(
                E.ExpectCompoundColumnsToBeUnique,
                {
                    "column": "user_id,item_id",
                    "noun": "row",
                    "bad": "repeat a (user_id, item_id) pair; time is row order, so a repeat is the same event twice",
                },
                column_list=["user_id", "item_id"],
            )
        )
    return TableCheck("interactions", df, _suite("interactions", ex))


def items_check(t: PreparedTables) -> TableCheck:
    """The items suite: columns and types, unique non-null item_id, a non-blank title and non-null genres."""
    ex: list[Any] = [_columns("items", list(schema.ITEM_COLUMNS)), *_types(schema.ITEM_COLUMNS)]
    ex += [
        _not_null("item_id"),
        _unique("item_id"),
        _not_null("title"),
        _x(
            E.ExpectColumnValuesToNotMatchRegex,
            {"column": "title", "bad": "empty or whitespace-only", "notes": "every item needs text for the prompt"},
            column="title",
            regex=r"^\s*$",
        ),
        _not_null("genres"),
    ]
    return TableCheck("items", t.items, _suite("items", ex))


def users_check(t: PreparedTables) -> TableCheck:
    """The users suite: columns and types, unique non-null user_id."""
    ex: list[Any] = [_columns("users", list(schema.USER_COLUMNS)), *_types(schema.USER_COLUMNS)]
    ex += [_not_null("user_id"), _unique("user_id")]
    return TableCheck("users", t.users, _suite("users", ex))


def samples_check(t: PreparedTables) -> TableCheck:
    """The samples suite: columns and types, every split non-empty, no nulls, labels in {0, 1} matching the
    rating threshold, n_history >= 1 and at least the history length, history lists of one length."""
    df = t.samples
    first = length_column(LIST_COLUMNS[0])
    ex: list[Any] = [
        _columns("samples", ["split", *SCALAR_SAMPLE_COLUMNS, *(length_column(c) for c in LIST_COLUMNS)]),
        *_types({c: schema.SAMPLE_COLUMNS[c] for c in SCALAR_SAMPLE_COLUMNS}),
        *(
            _x(
                E.ExpectColumnDistinctValuesToContainSet,
                {"column": "split", "reason": f"split {split} has no samples"},
                column="split",
                value_set=[split],
            )
            for split in schema.SPLITS
        ),
    ]
    ex += [_not_null(c) for c in SCALAR_SAMPLE_COLUMNS]
    ex += [_not_null(length_column(c), report_as=c) for c in LIST_COLUMNS]
    ex += [
        _x(
            E.ExpectColumnValuesToBeInSet, {"column": "label", "bad": "not in {0, 1}"}, column="label", value_set=[0, 1]
        ),
        _x(
            E.ExpectColumnPairValuesToBeEqual,
            {
                "column": "label",
                "noun": "row",
                "bad": f"have label != (rating >= {_fmt(t.label_threshold)}) (label, expected)",
                "notes": "rating_label = rating >= label threshold from meta.json",
            },
            column_A="label",
            column_B="rating_label",
        ),
        _x(E.ExpectColumnValuesToBeBetween, {"column": "n_history", "bad": "below 1"}, column="n_history", min_value=1),
        _x(
            E.ExpectColumnPairValuesAToBeGreaterThanB,
            {
                "column": LIST_COLUMNS[0],
                "noun": "row",
                "bad": f"have {LIST_COLUMNS[0]} longer than n_history (n_history, length)",
            },
            column_A="n_history",
            column_B=first,
            or_equal=True,
        ),
    ]
    for c in LIST_COLUMNS[1:]:
        ex.append(
            _x(
                E.ExpectColumnPairValuesToBeEqual,
                {
                    "column": c,
                    "noun": "row",
                    "bad": f"have len({c}) != len({LIST_COLUMNS[0]}) ({LIST_COLUMNS[0]}, {c} lengths)",
                },
                column_A=first,
                column_B=length_column(c),
            )
        )
    return TableCheck("samples", df, _suite("samples", ex))


def build_checks(t: PreparedTables, params: dict[str, Any], now: int) -> list[TableCheck]:
    """The four table checks (interactions, items, users, samples); ``params`` and ``now`` (unix seconds) as
    in :func:`interactions_check`."""
    return [interactions_check(t, params, now), items_check(t), users_check(t), samples_check(t)]
