"""Turn a failed GE expectation result into one clear human line."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pandas as pd

MAX_EXAMPLES = 3


def _scalar(v: Any) -> Any:
    if hasattr(v, "item") and not isinstance(v, (list, tuple, dict, str)):
        try:
            return v.item()
        except (ValueError, AttributeError):
            return v
    return v


def fmt_value(v: Any) -> str:
    """``v`` as shown in a reason: strings quoted, lists, tuples and dict values as ``(a, b)``, numpy scalars as
    Python values."""
    v = _scalar(v)
    if isinstance(v, dict):
        return "(" + ", ".join(fmt_value(x) for x in v.values()) + ")"
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(fmt_value(x) for x in v) + ")"
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return str(v)


def iso_utc(ts: Any) -> str:
    """Unix seconds as "YYYY-MM-DD HH:MM:SS UTC" ("?" when not a representable time)."""
    try:
        return dt.datetime.fromtimestamp(int(_scalar(ts)), tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def _examples(values: list[Any]) -> list[str]:
    seen: list[str] = []
    for v in values or []:
        s = fmt_value(v)
        if s not in seen:
            seen.append(s)
        if len(seen) == MAX_EXAMPLES:
            break
    return seen


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _splits(frame: pd.DataFrame | None, index: list[Any] | None) -> str:
    if frame is None or "split" not in frame.columns or not index:
        return ""
    idx = [i for i in index if not isinstance(i, dict) and i in frame.index]
    if not idx:
        return ""
    names = list(dict.fromkeys(frame.loc[idx, "split"].tolist()))
    return f" in split {', '.join(names)}" if len(names) == 1 else f" in splits {', '.join(names)}"


def _exception_message(info: Any) -> str | None:
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "unknown error")
    for v in info.values():  # per-metric form: {metric_id: {raised_exception, ...}}
        msg = _exception_message(v)
        if msg:
            return msg
    return None


def failure(table: str, result: Any, frame: pd.DataFrame | None = None) -> dict[str, Any]:
    """``{"table", "expectation", "column", "reason"}`` for one failed ExpectationValidationResult."""
    cfg = result.expectation_config
    meta = (cfg.meta or {}).get("reclora", {})
    kwargs = cfg.kwargs
    column = meta.get("column", kwargs.get("column"))
    where = f"{table}.{column}" if column else table
    r = result.result or {}
    exc = _exception_message(result.exception_info)

    if exc:
        reason = f"{where}: check {cfg.type} could not run: {(exc.splitlines() or [exc])[0]}"
    elif meta.get("reason"):
        reason = f"{where}: {meta['reason']}"
    elif r.get("unexpected_count") is not None and "bad" in meta:
        n = int(r["unexpected_count"])
        total = r.get("element_count")
        noun = meta.get("noun", "value")
        unexpected = r.get("partial_unexpected_list") or []
        index = r.get("partial_unexpected_index_list") or []
        if cfg.type == "expect_column_values_to_not_be_null":
            head = f"{_plural(n, 'null value')} (expected none)"
            ex = [str(_scalar(i)) for i in index[:MAX_EXAMPLES] if not isinstance(i, dict)]
            examples = f" (e.g. rows {', '.join(ex)})" if ex else ""
        else:
            count = f"{n} of {total} {noun}s" if total and noun == "row" else _plural(n, noun)
            head = f"{count} {meta['bad']}"
            ex = _examples(unexpected)
            examples = f" (e.g. {', '.join(ex)})" if ex else ""
        reason = f"{where}: {head}{examples}{_splits(frame, index)}"
    elif "observed_value" in r:
        obs = r["observed_value"]
        stat = meta.get("stat", "observed value")
        expected = meta.get("expected") or _bounds(kwargs)
        shown = fmt_value(obs) if not isinstance(obs, float) else f"{obs:.4g}"
        if meta.get("timestamp"):
            shown = f"{fmt_value(obs)} ({iso_utc(obs)})"
        if isinstance(obs, (list, tuple)):
            shown = "[" + ", ".join(fmt_value(o) for o in obs) + "]"
        reason = f"{where}: {stat} is {shown}, expected {expected}"
    else:
        reason = f"{where}: {cfg.type} failed ({_bounds(kwargs) or 'no details from Great Expectations'})"
    return {"table": table, "expectation": cfg.type, "column": column, "reason": reason}


def _bounds(kwargs: dict[str, Any]) -> str:
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    if lo is not None and hi is not None:
        return f"within [{lo}, {hi}]"
    if lo is not None:
        return f">= {lo}"
    if hi is not None:
        return f"<= {hi}"
    return ""
