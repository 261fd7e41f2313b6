"""The feature views' parquet sources, written from a prepared data directory.

:func:`build_feature_sources` reads the prepared tables (interactions, items, users) and writes one
parquet file per feature view of :mod:`reclora.features.definitions` into a sources directory
(atomically): ``user_profile`` (attributes and the prompt's profile sentence), ``item_metadata``
(title, genres), ``user_history`` (each user's latest history snapshot: serving's sequences) and
``user_activity`` (point-in-time scalar aggregates, one row per user and event second).
:func:`history_snapshots` and :func:`activity_snapshots` are the two snapshot builders, O(events)
and vectorized over a table sorted once by (user, time, item).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from reclora.data import schema
from reclora.errors import ConfigError, DataError
from reclora.features.definitions import (
    HISTORY_DELAY,
    ITEM_METADATA_FILE,
    PROFILE_TEXT,
    RESERVED,
    SOURCE_FILES,
    STATIC_TIMESTAMP,
    TIMESTAMP_FIELD,
    USER_ACTIVITY_FILE,
    USER_HISTORY_FILE,
    USER_PROFILE_FILE,
)
from reclora.io import atomic_dir


def to_utc(ts: Any) -> pd.Timestamp:
    """Unix seconds, a datetime or a string -> a tz-aware UTC Timestamp (naive means UTC)."""
    if isinstance(ts, (int, np.integer, float, np.floating)) and not isinstance(ts, bool):
        return pd.Timestamp(int(ts), unit="s", tz="UTC")
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _read_parquet(path: Path, columns: Iterable[str], what: str) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - any reader failure is a data problem
        raise DataError(f"{path}: cannot read {what} parquet: {e}") from e
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{path}: {what} table lacks column(s) {', '.join(missing)}")
    return df


def check_prepared(data_dir: str | os.PathLike[str]) -> Path:
    """``data_dir`` as a Path when it holds the prepared interactions, items and users tables;
    DataError naming what is missing otherwise (and the command that makes it)."""
    d = Path(data_dir)
    if not d.is_dir():
        raise DataError(f"{d}: prepared data directory not found (run `reclora data prepare` first)")
    need = (schema.INTERACTIONS, schema.ITEMS, schema.USERS)
    missing = [n for n in need if not (d / n).is_file()]
    if missing:
        raise DataError(
            f"{d}: not a prepared data directory (missing {', '.join(missing)}); run `reclora data prepare`"
        )
    return d


def _read_tables(data_dir: str | os.PathLike[str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    d = check_prepared(data_dir)
    inter = _read_parquet(d / schema.INTERACTIONS, schema.INTERACTION_COLUMNS, "interactions")
    items = _read_parquet(d / schema.ITEMS, ["item_id"], "items")
    users = _read_parquet(d / schema.USERS, schema.USER_COLUMNS, "users")
    inter = inter.dropna(subset=["user_id", "item_id", "timestamp"])
    if inter.empty:
        raise DataError(f"{d / schema.INTERACTIONS}: no interactions with user, item and timestamp")
    try:
        inter = inter.astype({"user_id": "int64", "item_id": "int64", "timestamp": "int64"})
        inter["rating"] = inter["rating"].astype("float64")
    except (TypeError, ValueError) as e:
        raise DataError(f"{d / schema.INTERACTIONS}: non-numeric ids, ratings or timestamps: {e}") from e
    return inter, items, users


def _user_profile_frame(users: pd.DataFrame, inter: pd.DataFrame) -> pd.DataFrame:
    from reclora.prompts import profile_text

    users = users.dropna(subset=["user_id"]).astype({"user_id": "int64"}).drop_duplicates("user_id")
    attrs = [c for c in users.columns if c not in RESERVED and not str(c).startswith("__")]
    prof = users[["user_id", *attrs]].copy()
    # users seen only in interactions still get a profile row (no attributes)
    extra = np.setdiff1d(inter["user_id"].unique(), prof["user_id"].to_numpy())
    if len(extra):
        prof = pd.concat([prof, pd.DataFrame({"user_id": extra.astype("int64")})], ignore_index=True)
    for c in attrs:  # object columns of mixed content -> nullable strings (one parquet type)
        if prof[c].dtype == object:
            prof[c] = prof[c].astype("string")
    records = prof[attrs].astype(object).where(prof[attrs].notna(), None).to_dict("records") if attrs else None
    prof[PROFILE_TEXT] = [profile_text(r) for r in records] if records else ""
    prof[TIMESTAMP_FIELD] = pd.Timestamp(STATIC_TIMESTAMP)
    return prof.sort_values("user_id").reset_index(drop=True)[["user_id", TIMESTAMP_FIELD, PROFILE_TEXT, *attrs]]


def _item_metadata_frame(items: pd.DataFrame) -> pd.DataFrame:
    it = items.dropna(subset=["item_id"]).astype({"item_id": "int64"}).drop_duplicates("item_id")
    out = pd.DataFrame({"item_id": it["item_id"].to_numpy()})
    for c in ("title", "genres"):
        col = it[c] if c in it.columns else pd.Series([""] * len(it), index=it.index)
        out[c] = col.fillna("").astype(str).to_numpy()
    out[TIMESTAMP_FIELD] = pd.Timestamp(STATIC_TIMESTAMP)
    return out.sort_values("item_id").reset_index(drop=True)[["item_id", TIMESTAMP_FIELD, "title", "genres"]]


def _in_event_order(df: pd.DataFrame) -> bool:
    """Whether the rows are sorted by (user_id, timestamp, item_id), ascending."""
    if len(df) < 2:
        return True
    keys = [df[c].to_numpy(np.int64) for c in ("user_id", "timestamp", "item_id")]
    ok = np.zeros(len(df) - 1, bool)  # pairs (i, i+1) decided as in order so far
    tie = np.ones(len(df) - 1, bool)  # pairs equal on every key so far
    for k in keys:
        d = k[1:] - k[:-1]
        ok |= tie & (d > 0)
        tie &= d == 0
    return bool((ok | tie).all())


def _sorted_events(inter: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Events sorted by (user, time, item) and, per row: user, time, the first row of its user, and
    whether it is the last row of its (user, second) group. Input already in that order (checked in
    O(n)) is not sorted again: a stable sort would leave it as it is."""
    df = inter[["user_id", "item_id", "rating", "timestamp"]]
    if not _in_event_order(df):
        df = df.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    users = df["user_id"].to_numpy(np.int64)
    ts = df["timestamp"].to_numpy(np.int64)
    n = len(df)
    new_user = np.r_[True, users[1:] != users[:-1]] if n else np.zeros(0, bool)
    user_start = np.maximum.accumulate(np.where(new_user, np.arange(n), 0)) if n else np.zeros(0, np.int64)
    last = np.r_[(users[1:] != users[:-1]) | (ts[1:] != ts[:-1]), True] if n else np.zeros(0, bool)
    return df, users, ts, user_start, last


def history_snapshots(inter: pd.DataFrame, history_len: int = 100, latest_only: bool = False) -> pa.Table:
    """History rows: per (user, distinct event second t), the user's events with timestamp <= t.

    Arrays hold the most recent ``history_len`` of them, oldest first (ties in a second ordered by
    item id, as the samples order them); ``n_history`` counts all of them. The row is stamped
    ``t + HISTORY_DELAY`` so that a point-in-time lookup at T sees only events with timestamp < T.
    ``latest_only`` keeps one row per user, its latest (the ``user_history`` source: serving's
    sequences; every second's row would be ~``history_len`` times the event table).
    Returns an Arrow table (list columns; large lists past 2^31 values). ConfigError on history_len < 1.
    """
    if history_len < 1:
        raise ConfigError(f"history_len must be >= 1, got {history_len}")
    df, users, ts, user_start, last = _sorted_events(inter)
    n = len(df)
    if latest_only:  # only the last row of each user
        last = np.r_[users[1:] != users[:-1], True] if n else last
    # last row of every (user, second) group; the snapshot covers rows [user_start, end)
    end = np.flatnonzero(last) + 1
    ustart = user_start[end - 1]
    lo = np.maximum(ustart, end - history_len)
    lengths = end - lo
    offsets = np.r_[0, np.cumsum(lengths)]
    flat = np.repeat(lo - offsets[:-1], lengths) + np.arange(offsets[-1])
    list_type = pa.large_list if offsets[-1] >= 2**31 else pa.list_
    off = pa.array(offsets, pa.int64() if list_type is pa.large_list else pa.int32())

    def lists(values: np.ndarray, typ: pa.DataType) -> pa.Array:
        arr = pa.array(values[flat], typ)
        return (pa.LargeListArray if list_type is pa.large_list else pa.ListArray).from_arrays(off, arr)

    stamp = (ts[end - 1] + int(HISTORY_DELAY.total_seconds())) * 1_000_000_000
    return pa.table(
        {
            "user_id": pa.array(users[end - 1], pa.int64()),
            TIMESTAMP_FIELD: pa.array(stamp, pa.timestamp("ns", tz="UTC")),
            "hist_item_ids": lists(df["item_id"].to_numpy(np.int64), pa.int64()),
            "hist_ratings": lists(df["rating"].to_numpy(np.float32), pa.float32()),
            "hist_timestamps": lists(ts, pa.int64()),
            "n_history": pa.array(end - ustart, pa.int64()),
        }
    )


def activity_snapshots(inter: pd.DataFrame) -> pd.DataFrame:
    """The ``user_activity`` source: one row per (user, distinct event second t) with scalar
    aggregates of the user's events with timestamp <= t: ``n_history`` (count), ``last_event_timestamp``
    (t, unix s) and ``mean_rating`` (float32), stamped ``t + HISTORY_DELAY`` (so "as of T" covers
    timestamp < T). O(events) time and memory, no arrays."""
    df, users, ts, user_start, last = _sorted_events(inter)
    rows = np.flatnonzero(last)
    csum = np.cumsum(df["rating"].to_numpy(np.float64))
    before = np.where(user_start[rows] > 0, csum[np.maximum(user_start[rows] - 1, 0)], 0.0)
    count = rows + 1 - user_start[rows]
    out = pd.DataFrame(
        {
            "user_id": users[rows],
            TIMESTAMP_FIELD: pd.to_datetime((ts[rows] + int(HISTORY_DELAY.total_seconds())) * 1_000_000_000, utc=True),
            "n_history": count.astype(np.int64),
            "last_event_timestamp": ts[rows],
            "mean_rating": ((csum[rows] - before) / np.maximum(count, 1)).astype(np.float32),
        }
    )
    return out


def build_feature_sources(
    data_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], history_len: int = 100
) -> dict[str, Any]:
    """Write the parquet sources of the feature views from a prepared data directory.

    ``out_dir`` is replaced atomically by a directory holding ``user_profile.parquet``,
    ``item_metadata.parquet``, ``user_history.parquet`` (latest snapshot per user) and
    ``user_activity.parquet`` (``event_timestamp`` tz-aware UTC). Returns counts and the event-time
    range. Raises DataError on a missing or malformed prepared directory.
    """
    inter, items, users = _read_tables(data_dir)
    prof = _user_profile_frame(users, inter)
    meta = _item_metadata_frame(items)
    inter = _sorted_events(inter)[0]  # sorted once here; both snapshot tables find it in order
    hist = history_snapshots(inter, int(history_len), latest_only=True)
    activity = activity_snapshots(inter)
    # timestamps in microseconds: every offline store reads them (Spark refuses nanosecond parquet);
    # event times are whole seconds, so nothing is truncated
    us = {"coerce_timestamps": "us", "allow_truncated_timestamps": False}
    with atomic_dir(out_dir) as tmp:
        prof.to_parquet(tmp / USER_PROFILE_FILE, index=False, **us)
        meta.to_parquet(tmp / ITEM_METADATA_FILE, index=False, **us)
        pq.write_table(hist, tmp / USER_HISTORY_FILE, **us)
        activity.to_parquet(tmp / USER_ACTIVITY_FILE, index=False, **us)
    t_min, t_max = int(inter["timestamp"].min()), int(inter["timestamp"].max())
    return {
        "sources_dir": str(out_dir),
        "files": list(SOURCE_FILES),
        "users": int(len(prof)),
        "items": int(len(meta)),
        "interactions": int(len(inter)),
        "history_rows": int(hist.num_rows),
        "activity_rows": int(len(activity)),
        "history_len": int(history_len),
        "profile_attributes": [c for c in prof.columns if c not in ("user_id", TIMESTAMP_FIELD, PROFILE_TEXT)],
        "first_event": t_min,
        "last_event": t_max,
        "last_snapshot": to_utc(t_max + int(HISTORY_DELAY.total_seconds())).isoformat(),
    }


__all__ = ["activity_snapshots", "build_feature_sources", "check_prepared", "history_snapshots", "to_utc"]
