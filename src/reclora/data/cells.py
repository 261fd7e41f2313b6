"""Exact readers of cell values, shared by every format: ids and times as exact 64-bit integers, event
times as unix seconds, ratings as numbers.

Ids and times are read exactly or refused: a value that is not an exact integer within the 64-bit range
(``2.9``, ``inf``, ``nan``, ``1e30``, 2**64) is a :class:`DataError` naming the file, the column and an
example, never truncated or wrapped. An empty cell is a null the validation gate names. Datetime columns
(generic tables) are converted by their own unit and zone (naive = UTC) to unix seconds (sub-second parts
are floored).
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reclora.errors import DataError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# a decimal number in ASCII (what Decimal may parse exactly); no inf/nan, no unicode digits
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def _exact_int(text: str) -> int | None:
    """The integer ``text`` denotes exactly (``"7"``, ``"7.0"``, ``"7e2"``) within int64, else None."""
    if not _DECIMAL.fullmatch(text):
        return None
    d = Decimal(text)
    if d.is_zero():
        return 0
    if d.adjusted() > 18 or d != d.to_integral_value():  # adjusted() first: never build a 10**30 integer
        return None
    i = int(d)
    return i if INT64_MIN <= i <= INT64_MAX else None


def _with_nulls(values: np.ndarray, null: np.ndarray) -> pd.Series:
    """int64 ``values`` as a series: ``int64``, or ``Int64`` with nulls where ``null`` (kept for the gate)."""
    out = pd.Series(np.where(null, 0, values).astype("int64"))
    if null.any():
        out = out.astype("Int64")
        out[null] = pd.NA
    return out


def refuse(where: Path, col: str, what: str, examples: list[Any]) -> DataError:
    """The DataError for cells of column ``col`` of ``where`` that do not hold ``what`` (returned, for the
    caller to raise): "<where>: column '<col>' must hold <what>, e.g. got '<a>', '<b>', '<c>'" (the first
    three ``examples``, each as text)."""
    shown = ", ".join(repr(str(e)) for e in examples[:3])
    return DataError(f"{where}: column {col!r} must hold {what}, e.g. got {shown}")


def exact_int64(values: pd.Series, where: Path, col: str, what: str = "ids") -> pd.Series:
    """Read ``values`` (text or numbers) as exact 64-bit integers.

    Returns an ``int64`` series, or ``Int64`` with nulls where cells are empty/null
    (kept so the validation gate names them). Raises :class:`DataError` naming
    ``where``, ``col`` and up to three examples for any value that is not an
    exact integer in [-2**63, 2**63 - 1]: fractions, inf, nan, words, booleans,
    datetimes, 1e30. ``what`` words the requirement ("ids", "unix seconds").
    """
    need = f"{what} as exact integers (whole numbers within the 64-bit range)"
    s = values.reset_index(drop=True)
    kind = s.dtype.kind
    if kind in "iu":  # numpy or nullable integers: exact already, only uint64 may exceed int64
        bad = s.notna() & (s > INT64_MAX) if kind == "u" else pd.Series(False, index=s.index)
        if bad.any():
            raise refuse(where, col, need, s[bad].tolist())
        return s.astype("Int64" if s.isna().any() else "int64")
    if kind == "f":  # NaN is a null (parquet nulls arrive as NaN); inf and fractions are refused
        v = s.to_numpy(dtype="float64", na_value=np.nan)
        null = np.isnan(v)
        with np.errstate(invalid="ignore"):
            ok = null | (np.isfinite(v) & (np.floor(v) == v) & (v >= -(2.0**63)) & (v < 2.0**63))
        if not ok.all():
            raise refuse(where, col, need, s[~ok].tolist())
        return _with_nulls(v, null)
    if kind != "O" and not isinstance(s.dtype, pd.StringDtype):
        raise refuse(where, col, need, [f"{s.dtype} values"])
    if pd.api.types.infer_dtype(s, skipna=False) == "string":  # fast path: all plain int64 literals
        num = pd.to_numeric(s, errors="coerce")  # int64 only when every value is one (spaces allowed)
        if num.dtype == np.int64:
            return num.astype("int64")
    null = s.isna()
    booleans = s.map(lambda v: isinstance(v, (bool, np.bool_)))  # str(True) is not an id either
    if booleans.any():
        raise refuse(where, col, need, s[booleans].tolist())
    text = s.where(null, s.astype(str).str.strip())
    empty = null | (text == "")
    vals = text[~empty]
    num = pd.to_numeric(vals, errors="coerce")
    if num.dtype != np.int64:  # something is not a plain int64 literal: decide value by value, exactly
        exact = {u: _exact_int(u) for u in pd.unique(vals)}
        bad = vals.map(exact).isna()
        if bad.any():
            raise refuse(where, col, need, list(dict.fromkeys(vals[bad].tolist())))
        num = vals.map(exact).astype("int64")
    full = np.zeros(len(s), dtype="int64")
    full[~empty.to_numpy()] = num.to_numpy(dtype="int64")
    return _with_nulls(full, empty.to_numpy())


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _datetime_seconds(v: Any) -> int | None:
    """Unix seconds (floored) of an ISO 8601 string or a date/datetime object, naive = UTC; None if neither.

    Each value is parsed on its own (``datetime.fromisoformat``), so every value keeps its own offset
    (pandas' vectorized ISO parser applies an earlier value's offset to a later naive one)."""
    if isinstance(v, str):
        try:
            v = dt.datetime.fromisoformat(v.strip())
        except ValueError:
            return None
    if isinstance(v, dt.date) and not isinstance(v, dt.datetime):
        v = dt.datetime(v.year, v.month, v.day)
    if not isinstance(v, dt.datetime):
        return None
    when = v if v.tzinfo is not None else v.replace(tzinfo=dt.UTC)
    secs = (when - _EPOCH) // dt.timedelta(seconds=1)
    return secs if INT64_MIN <= secs <= INT64_MAX else None


def unix_seconds(values: pd.Series, where: Path, col: str) -> pd.Series:
    """Event times as exact unix seconds (int64, or Int64 with nulls for empty cells).

    Accepts integers (already unix seconds, read exactly as by :func:`exact_int64`),
    datetime columns of any unit (s, ms, us, ns) naive (= UTC) or zone-aware, and
    text that is all integers or all ISO 8601 datetimes (each with its own offset,
    or naive = UTC). Sub-second parts are floored. Raises :class:`DataError`
    naming the column and an example for anything else.
    """
    s = values.reset_index(drop=True)
    if not isinstance(s.dtype, pd.DatetimeTZDtype) and s.dtype.kind != "M":
        try:
            return exact_int64(s, where, col, "unix seconds")
        except DataError:
            if s.dtype.kind != "O" and not isinstance(s.dtype, pd.StringDtype):
                raise
            # text that is not all integers: then every value must be a datetime
        empty = s.isna() | s.map(lambda v: isinstance(v, str) and not v.strip())
        secs = {v: _datetime_seconds(v) for v in pd.unique(s[~empty])}
        bad = [v for v, x in secs.items() if x is None]
        if bad:
            raise refuse(where, col, "unix seconds (integers) or ISO 8601 datetimes, one kind per column", bad)
        full = np.zeros(len(s), dtype="int64")
        full[~empty.to_numpy()] = s[~empty].map(secs).to_numpy(dtype="int64")
        return _with_nulls(full, empty.to_numpy())
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    # numpy floors to the second whatever the unit; NaT becomes a null
    return _with_nulls(s.to_numpy().astype("datetime64[s]").astype("int64"), s.isna().to_numpy())


def float_column(df: pd.DataFrame, col: str, where: Path, name: str | None = None) -> pd.Series:
    """A numeric column as float64 (ratings); nulls and out-of-range values are kept for the gate."""
    raw = df[col].reset_index(drop=True)
    if raw.dtype.kind in "iuf":
        return raw.astype("float64")
    s = pd.to_numeric(raw.astype(str) if raw.dtype.kind == "b" else raw, errors="coerce")  # spaces allowed
    missing = s.isna()
    if missing.any():  # an empty cell is a null for the gate; anything else that is not a number is refused
        bad = missing & raw.notna() & (raw.astype(str).str.strip() != "")
        if bad.any():
            raise refuse(where, name or col, "numbers", raw[bad].tolist())
    return s.astype("float64")


def id_column(df: pd.DataFrame, col: str, where: Path, name: str | None = None) -> pd.Series:
    """Column ``col`` of ``df`` as exact int64 ids (:func:`exact_int64`; ``name``: the source column's name
    for errors, default ``col``). Raises DataError as :func:`exact_int64`."""
    return exact_int64(df[col], where, name or col)
