"""Reading an applied feature store: materialization, point-in-time (offline) and online look-ups.

* :func:`historical_view`: the one point-in-time join, Feast's ``get_historical_features`` on the
  distinct (entity, time) rows of one view, in bounded requests; :func:`historical_user_features`
  (the stage's check, any number of user views) and :mod:`reclora.features.inputs` (training's
  shared features) both go through it;
* :func:`materialize`: the offline sources into the online store;
* :func:`online_user_features`, :func:`online_item_features`: serving's look-ups;
* :func:`offline_reads`: the context every offline read runs in.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from reclora.errors import ConfigError, DataError
from reclora.features._dask import fast_object_tokens
from reclora.features.definitions import STATIC_TIMESTAMP, TIMESTAMP_FIELD, feature_refs
from reclora.features.sources import to_utc

if TYPE_CHECKING:
    from feast import FeatureStore

DEFAULT_CHUNK_ROWS = 1_000_000  # entity rows per get_historical_features request (bounded memory)


def _source_file(store: FeatureStore, view: str) -> str:
    from feast.infra.offline_stores.file_source import FileSource

    src = store.get_feature_view(view).batch_source
    path = getattr(src, "path", None)
    if not path:
        raise ConfigError(f"feature view {view!r}: source is {type(src).__name__} without a parquet path")
    if isinstance(src, FileSource):
        return FileSource.get_uri_for_file_path(store.repo_path, path)
    return str(path)  # SparkSource: absolute path or object-store URI


# offline stores that read a FileSource's relative path against the working directory rather than
# the feature repo (Feast's file/dask store resolves it against the repo itself)
CWD_RELATIVE_STORES = ("duckdb",)


@contextlib.contextmanager
def offline_reads(store: FeatureStore) -> Iterator[None]:
    """The context of every offline read (point-in-time joins, materialization).

    The file (dask) store: the fast dask token for list-valued features. The DuckDB store reads a
    source's relative path against the working directory, so the repo directory is the working
    directory while the block runs. Not thread-safe for the DuckDB store (``os.chdir`` is per process).

    Why not absolute source paths instead: Feast 0.67's DuckDB store (``feast.infra.offline_stores.
    duckdb._read_data_source``) hands a FileSource's path to ``ibis.read_parquet`` as is, ignoring the
    repo path, and the registry stores the paths given at ``apply``. The features stage applies its
    repo in a temporary directory that is then renamed into place, and the repo travels as a KFP
    artifact to other pods: absolute paths would point at where it was built. Sources stored relative
    to the repo keep it movable, and this working directory makes DuckDB read them from the repo.
    """
    kind = str(getattr(store.config.offline_store, "type", "file"))
    with fast_object_tokens():
        if kind not in CWD_RELATIVE_STORES:
            yield
            return
        here = os.getcwd()
        os.chdir(store.repo_path)
        try:
            yield
        finally:
            os.chdir(here)


def latest_event(store: FeatureStore) -> pd.Timestamp:
    """The latest ``event_timestamp`` in the user_history source (the newest snapshot)."""
    col = pq.read_table(_source_file(store, "user_history"), columns=[TIMESTAMP_FIELD])[TIMESTAMP_FIELD]
    if len(col) == 0:
        return pd.Timestamp(STATIC_TIMESTAMP)
    return to_utc(pc.max(col).as_py())


def materialize(store: FeatureStore, end: Any = None, start: Any = None) -> dict[str, Any]:
    """Load the offline sources into the online store: the latest row per entity stamped in
    [start, end]. ``end`` defaults to the newest history snapshot (so the online history of a
    user is its latest row: every event so far); ``start`` to the epoch (static rows included)."""
    end_ts = to_utc(end) if end is not None else latest_event(store) + timedelta(seconds=1)
    start_ts = to_utc(start) if start is not None else pd.Timestamp(STATIC_TIMESTAMP)
    if end_ts < start_ts:
        raise ConfigError(f"materialize: end {end_ts} is before start {start_ts}")
    t0 = time.perf_counter()
    # Feast prints its progress to stdout; keep stdout clean for callers that print JSON there
    with contextlib.redirect_stdout(sys.stderr), offline_reads(store):
        store.materialize(start_date=start_ts.to_pydatetime(), end_date=end_ts.to_pydatetime())
    return {
        "start": start_ts.isoformat(),
        "end": end_ts.isoformat(),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _times(values: Any) -> pd.Series:
    """unix seconds or datetimes -> tz-aware UTC datetimes (ns); a Series keeps its index."""
    s = pd.Series(values)
    if pd.api.types.is_numeric_dtype(s):
        return pd.to_datetime(s.astype("int64"), unit="s", utc=True)
    return pd.to_datetime(s, utc=True)


def _key_chunks(store: FeatureStore, view: str, keys: pd.DataFrame, key: str, max_join_rows: int) -> list[pd.DataFrame]:
    """Split the entity keys so that no single request joins more than ``max_join_rows`` rows.

    Feast's file offline store joins every entity row with *all* source rows of its entity before
    keeping the latest one at or before its time, so a request costs sum over keys of the entity's
    source rows (quadratic in a user's activity for user_history). Chunks bound the memory.
    """
    if max_join_rows <= 0 or len(keys) == 0:
        return [keys]
    try:
        ids = pq.read_table(_source_file(store, view), columns=[key])[key].to_pandas()
    except Exception:  # noqa: BLE001 - e.g. a remote source without credentials here: one request
        return [keys]
    per_key = ids.value_counts()
    k = keys.sort_values([key, TIMESTAMP_FIELD], kind="stable").reset_index(drop=True)
    cost = k[key].map(per_key).fillna(0).to_numpy(np.int64) + 1
    if cost.sum() <= max_join_rows:
        return [keys]
    chunk = np.cumsum(cost) // max_join_rows
    return [g.reset_index(drop=True) for _, g in k.groupby(chunk, sort=True)]


def latest_rows(frame: pd.DataFrame, key: str, names: list[str]) -> pd.DataFrame:
    """Per ``key``, the row with the latest ``event_timestamp`` among those with any value in ``names``
    (ties: the later row); rows of entities Feast knows nothing of (all ``names`` null) are dropped.
    Columns kept; one row per key."""
    f = frame.dropna(subset=[key])
    f = f[f[names].notna().any(axis=1)] if names else f  # entities Feast knows nothing of
    if TIMESTAMP_FIELD in f.columns:
        f = f.sort_values([key, TIMESTAMP_FIELD], kind="stable")
    return f.drop_duplicates(key, keep="last")


def historical_view(
    store: FeatureStore,
    entity_df: pd.DataFrame,
    view: str,
    key: str,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    latest_per_key: bool = False,
    max_join_rows: int = 0,
) -> pd.DataFrame:
    """Point-in-time features of one view for the distinct (``key``, ``event_timestamp``) rows of
    ``entity_df`` (times as unix seconds or datetimes), through ``get_historical_features``.

    Returns one row per distinct (key, time): ``key`` (int64), ``event_timestamp`` (UTC), the view's
    features (null where Feast has no row at or before that time); in the order the rows were first
    asked, or sorted by (key, time) when ``max_join_rows`` splits them. Requests hold at most
    ``chunk_rows`` entity rows each (0 = no limit) and, with ``max_join_rows`` > 0, join at most about
    that many source rows each (see :func:`_key_chunks`).
    ``latest_per_key``: reduce every chunk's answer at once to the row
    :func:`reclora.features.inputs.model_inputs` would keep per key (:func:`latest_rows`), so memory
    holds O(entities) rows, not O(entity rows); ``model_inputs`` gives the same result on it.
    Raises DataError on missing columns.
    """
    for c in (key, TIMESTAMP_FIELD):
        if c not in entity_df.columns:
            raise DataError(f"entity rows need columns {key} and {TIMESTAMP_FIELD}, got {list(entity_df.columns)}")
    times = _times(entity_df[TIMESTAMP_FIELD]).astype("datetime64[ns, UTC]").array  # no per-row objects
    keys = pd.DataFrame({key: entity_df[key].astype("int64").to_numpy(), TIMESTAMP_FIELD: times})
    keys = keys.drop_duplicates(ignore_index=True)
    refs = feature_refs(store, view)
    names = [r.split(":", 1)[1] for r in refs]
    parts = []
    with offline_reads(store):
        for group in _key_chunks(store, view, keys, key, max_join_rows):
            step = len(group) if chunk_rows <= 0 else int(chunk_rows)
            for s in range(0, max(len(group), 1), max(step, 1)):
                chunk = group.iloc[s : s + step]
                got = store.get_historical_features(entity_df=chunk, features=refs).to_df()
                got[TIMESTAMP_FIELD] = pd.to_datetime(got[TIMESTAMP_FIELD], utc=True)
                # Feast may drop entity rows without a feature row: merge back onto the asked rows
                part = chunk.merge(got[[key, TIMESTAMP_FIELD, *names]], on=[key, TIMESTAMP_FIELD], how="left")
                del got
                parts.append(latest_rows(part, key, names) if latest_per_key else part)
    out = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return latest_rows(out, key, names) if latest_per_key and len(parts) > 1 else out


def historical_user_features(
    store: FeatureStore,
    entity_df: pd.DataFrame,
    views: Iterable[str] = ("user_profile", "user_activity"),
    max_join_rows: int = 2_000_000,
) -> pd.DataFrame:
    """Point-in-time correct user features for ``entity_df`` (``user_id`` and ``event_timestamp``:
    tz-aware/naive-UTC datetimes or unix seconds), via :func:`historical_view` per view.

    Returns ``entity_df`` (same rows, same order, same index) with ``event_timestamp`` as UTC
    datetimes and the features of ``views`` added. ``user_activity`` at T covers only events with
    timestamp < T; a user with no earlier event gets nulls (``n_history`` <NA>). ``user_history``
    holds only each user's latest snapshot: null before the user's last event.
    Large requests are split (``max_join_rows``, see :func:`_key_chunks`); 0 = one request.
    Raises DataError when ``entity_df`` lacks ``user_id`` or ``event_timestamp``.
    """
    if "user_id" not in entity_df.columns or TIMESTAMP_FIELD not in entity_df.columns:
        raise DataError(f"entity_df needs columns user_id and {TIMESTAMP_FIELD}, got {list(entity_df.columns)}")
    out = entity_df.copy()
    out[TIMESTAMP_FIELD] = _times(entity_df[TIMESTAMP_FIELD])
    for view in views:
        # one request per view: Feast's file store drops an entity row that has no feature row at
        # or before its time, which would take the other views' features with it
        got = historical_view(store, out, view, "user_id", chunk_rows=0, max_join_rows=max_join_rows)
        names = [c for c in got.columns if c not in ("user_id", TIMESTAMP_FIELD)]
        out = out.drop(columns=[c for c in names if c in out.columns])
        idx = out.index
        out = out.astype({"user_id": "int64"}).merge(got, on=["user_id", TIMESTAMP_FIELD], how="left")
        out.index = idx
        for c in names:  # rows without a feature row: None in object (array/string) columns, not NaN
            if out[c].dtype == object:
                out[c] = out[c].map(lambda v: None if isinstance(v, float) and np.isnan(v) else v)
    if "n_history" in out.columns:
        out["n_history"] = out["n_history"].astype("Int64")
    return out


def _online(store: FeatureStore, view: str, key: str, ids: Iterable[Any]) -> pd.DataFrame:
    ids = [int(i) for i in ids]
    if not ids:
        return pd.DataFrame(columns=[key])
    resp = store.get_online_features(features=feature_refs(store, view), entity_rows=[{key: i} for i in ids])
    return pd.DataFrame(resp.to_dict())


def online_user_features(
    store: FeatureStore, user_ids: Iterable[Any], views: Iterable[str] = ("user_profile", "user_history")
) -> pd.DataFrame:
    """Serving: the users' latest materialized profile and history (one row per id, in order)."""
    ids = [int(i) for i in user_ids]
    frames = [_online(store, v, "user_id", ids) for v in views]
    out = frames[0]
    for f in frames[1:]:
        out = pd.concat([out, f.drop(columns=["user_id"])], axis=1)
    return out


def online_item_features(store: FeatureStore, item_ids: Iterable[Any]) -> pd.DataFrame:
    """Serving: item title and genres from the online store (one row per id, in order)."""
    return _online(store, "item_metadata", "item_id", item_ids)


__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "historical_user_features",
    "historical_view",
    "latest_event",
    "latest_rows",
    "materialize",
    "offline_reads",
    "online_item_features",
    "online_user_features",
]
