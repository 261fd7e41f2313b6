"""The features stage: Feast sources, ``feast apply``, materialization, point-in-time training features.

Plain Python (no KFP). The Feast objects are defined once in
:mod:`reclora.features.definitions`; this module writes their parquet sources
from a prepared data directory, renders a feature repo (``feature_store.yaml``
+ ``features.py``) into a run directory, applies it, materializes the online
store and reads features back for training (point-in-time) and serving (online).

Stage output (``features_stage(data_dir, OUT)``, written atomically)::

    OUT/
      sources/user_profile.parquet    user_id, event_timestamp (epoch), profile_text, [age, gender, ...]
      sources/item_metadata.parquet   item_id, event_timestamp (epoch), title, genres
      sources/user_history.parquet    user_id, event_timestamp (last event + 1 s), hist_item_ids,
                                      hist_ratings, hist_timestamps, n_history  (one row per user: the
                                      latest snapshot, serving's sequences)
      sources/user_activity.parquet   user_id, event_timestamp (t + 1 s), n_history, last_event_timestamp,
                                      mean_rating  (one row per user and event second t: scalars)
      repo/feature_store.yaml         rendered config (paths relative to repo/, so OUT can move)
      repo/features.py                the repo's objects, for the `feast` CLI (`cd OUT/repo && feast ...`)
      repo/data/registry.db           the Feast registry written by apply
      repo/data/online_store.db       the SQLite online store, materialized up to the latest event
      model_inputs/users.parquet      the training side's shared features (reclora.features.inputs.
      model_inputs/items.parquet      ModelInputs) from get_historical_features on every sample's
                                      (entity, time) row plus the catalogue at the cut-off
      pit_check.parquet               user_activity as of each checked sample's time (a seeded subset
                                      of ``features.pit_check_rows`` distinct (user, time) rows; 0 = all)
      summary.json                    counts, paths, materialization window, point-in-time check, seconds

Memory stays bounded with the data size: no per-sample or per-second copy of a history (training
slices sequences from the prepared event store), point-in-time requests go in chunks of
``features.chunk_rows`` entity rows and each chunk is reduced to one row per entity at once.

Store backends are configuration: ``store_config`` (or ``$RECLORA_FEAST_STORE_CONFIG``, a YAML
file, or a ``features.store`` mapping in params.yaml) is deep-merged over the local default
(provider local, file offline store, SQLite online store, file registry), e.g.
``{"online_store": {"type": "redis", "connection_string": "${REDIS_URL}"},
"registry": "s3://bucket/reclora/registry.db"}``. Feast expands ``${VAR}`` in the YAML.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from reclora.data import read_split, schema
from reclora.errors import ConfigError, DataError
from reclora.features.definitions import (
    DEFAULT_SOURCES,
    OFFLINE_STORE_ENV,
    HISTORY_DELAY,
    HISTORY_FEATURES,
    ITEM_METADATA_FILE,
    PROFILE_TEXT,
    PROJECT,
    RESERVED,
    SOURCE_FILES,
    SOURCES_ENV,
    STATIC_TIMESTAMP,
    TIMESTAMP_FIELD,
    USER_ACTIVITY_FILE,
    USER_HISTORY_FILE,
    USER_PROFILE_FILE,
    feature_definitions,
    feature_refs,
)
from reclora.features._dask import fast_object_tokens
from reclora.io import atomic_dir, refuse_overlap, write_json

if TYPE_CHECKING:
    from feast import FeatureStore

STORE_CONFIG_ENV = "RECLORA_FEAST_STORE_CONFIG"
REGISTRY_PATH = "data/registry.db"
ONLINE_PATH = "data/online_store.db"
PIT_CHECK = "pit_check.parquet"
FEATURE_VIEWS = ("user_profile", "item_metadata", "user_history", "user_activity")
SUMMARY = "summary.json"
# the checked-in repo (template and `feast` CLI entry point); never rendered over
TEMPLATE_DIR = Path(__file__).resolve().parents[3] / "feature_repo"

OFFLINE_STORES = ("file", "duckdb", "spark")  # params features.offline_store
DEFAULT_STORE_CONFIG: dict[str, Any] = {
    "project": PROJECT,
    "provider": "local",
    "registry": REGISTRY_PATH,
    "offline_store": {"type": "file"},
    "online_store": {"type": "sqlite", "path": ONLINE_PATH},
    "entity_key_serialization_version": 3,
    "auth": {"type": "no_auth"},
}

FEATURES_PY = '''\
"""The RecLoRA Feast repo: entities `user`, `item`; feature views `user_profile`, `item_metadata`,
`user_history`, `user_activity`. The objects are defined once in reclora.features.definitions (the library applies
the same ones); this file exposes them to the `feast` CLI.

Sources directory: ${env} (absolute, or relative to this repo), default "{default}".
Offline store the sources are declared for: ${store_env} (file | duckdb | spark), default "{store}".
"""

import os
from pathlib import Path

from reclora.features.definitions import feature_definitions

SOURCES = os.environ.get("{env}", "{default}")
OFFLINE_STORE = os.environ.get("{store_env}", "{store}")
_defs = feature_definitions(SOURCES, repo_path=Path(__file__).resolve().parent, offline_store=OFFLINE_STORE)

user = _defs["user"]
item = _defs["item"]
user_profile = _defs["user_profile"]
item_metadata = _defs["item_metadata"]
user_history = _defs["user_history"]
user_activity = _defs["user_activity"]
'''


def features_py(default_sources: str = DEFAULT_SOURCES, offline_store: str = "file") -> str:
    """The text of a repo's ``features.py`` whose sources default to ``default_sources``, declared
    for the ``offline_store`` type."""
    return (
        FEATURES_PY.replace("{env}", SOURCES_ENV).replace("{default}", default_sources)
        .replace("{store_env}", OFFLINE_STORE_ENV).replace("{store}", offline_store)
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# sources


def _utc(ts: Any) -> pd.Timestamp:
    """unix seconds, a datetime or a string -> tz-aware UTC Timestamp (naive means UTC)."""
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


def _check_prepared(data_dir: str | os.PathLike[str]) -> Path:
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
    d = _check_prepared(data_dir)
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
        "last_snapshot": _utc(t_max + int(HISTORY_DELAY.total_seconds())).isoformat(),
    }


# ---------------------------------------------------------------------------------------------
# repo


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict) and "type" not in v:
            out[k] = _deep_merge(out[k], v)
        else:  # a new store type replaces the whole block (its options differ)
            out[k] = copy.deepcopy(v) if not isinstance(v, Mapping) else dict(v)
    return out


def store_overrides(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Store-config overrides: ``$RECLORA_FEAST_STORE_CONFIG`` (a YAML file), else params'
    ``features``: ``offline_store`` (file | duckdb | spark; spark with ``spark_conf``) and then the
    ``store`` mapping (any feature_store.yaml keys) over it."""
    path = os.environ.get(STORE_CONFIG_ENV)
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"${STORE_CONFIG_ENV}: file not found: {p}")
        try:
            over = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from e
        if not isinstance(over, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        return over
    if params and isinstance(params.get("features"), Mapping):
        fp = params["features"]
        over = fp.get("store") or {}
        if not isinstance(over, Mapping):
            raise ConfigError("params.yaml: features.store must be a mapping")
        kind = fp.get("offline_store")
        if not kind:
            return dict(over)
        if kind not in OFFLINE_STORES:
            raise ConfigError(f"params.yaml: features.offline_store must be one of {', '.join(OFFLINE_STORES)}, got {kind!r}")
        block: dict[str, Any] = {"type": kind}
        if kind == "spark":
            conf = fp.get("spark_conf") or {}
            if not isinstance(conf, Mapping):
                raise ConfigError("params.yaml: features.spark_conf must be a mapping")
            block["spark_conf"] = {str(k): str(v) for k, v in conf.items()}
            if fp.get("spark_staging_location"):
                block["staging_location"] = str(fp["spark_staging_location"])
        return _deep_merge({"offline_store": block}, over)
    return {}


def store_config(online_path: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | None = None) -> dict:
    """The feature_store.yaml content: the local default, ``online_path``, then ``overrides``."""
    cfg = copy.deepcopy(DEFAULT_STORE_CONFIG)
    if online_path is not None:
        cfg["online_store"]["path"] = str(online_path)
    return _deep_merge(cfg, overrides or {})


def render_feature_repo(
    repo_dir: str | os.PathLike[str],
    sources_dir: str | os.PathLike[str],
    online_path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Path, str]:
    """Write ``feature_store.yaml`` and ``features.py`` into ``repo_dir`` (a run directory).

    ``online_path`` (SQLite file) is absolute or relative to ``repo_dir``; default
    ``data/online_store.db``. ``overrides`` are deep-merged over the local default config
    (a block with a new ``type`` replaces the block).

    Returns (repo_dir, the sources path as the repo stores it: relative to the repo when local,
    so repo and sources move together; an object-store URI as is).
    """
    repo = Path(repo_dir)
    if repo.resolve() == TEMPLATE_DIR.resolve():
        raise ConfigError(
            f"{repo}: this is the checked-in template repo; render into a run directory instead"
        )
    src = str(sources_dir)
    if "://" not in src:
        sp = Path(src)
        if not sp.is_absolute():
            sp = Path.cwd() / sp
        src = os.path.relpath(sp, repo.resolve() if repo.exists() else Path.cwd() / repo)
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "data").mkdir(exist_ok=True)
    cfg = store_config(online_path, overrides)
    head = (
        "# Rendered by reclora.features.store.render_feature_repo (template: feature_repo/).\n"
        "# Relative paths are resolved against this directory by Feast.\n"
    )
    tmp = repo / ".feature_store.yaml.tmp"
    tmp.write_text(head + yaml.safe_dump(cfg, sort_keys=False))
    os.replace(tmp, repo / "feature_store.yaml")
    tmp = repo / ".features.py.tmp"
    tmp.write_text(features_py(src, str(cfg["offline_store"].get("type", "file"))))
    os.replace(tmp, repo / "features.py")
    return repo, src


def open_feature_store(repo_dir: str | os.PathLike[str]) -> "FeatureStore":
    """A FeatureStore on an applied repo (e.g. ``OUT/repo`` of the features stage), for serving."""
    from feast import FeatureStore

    repo = Path(repo_dir)
    if not (repo / "feature_store.yaml").is_file():
        raise DataError(f"{repo}: not a feature repo (no feature_store.yaml); run the features stage first")
    return FeatureStore(repo_path=str(repo.resolve()))


def apply_feature_repo(
    repo_dir: str | os.PathLike[str],
    sources_dir: str | os.PathLike[str],
    online_path: str | os.PathLike[str] | None = None,
    store_config: Mapping[str, Any] | None = None,
) -> "FeatureStore":
    """Render the repo into ``repo_dir`` and apply it (what ``feast apply`` does): register the
    entities, sources and feature views and create the online store tables."""
    src = str(sources_dir)
    if "://" not in src:
        missing = [f for f in SOURCE_FILES if not (Path(src) / f).is_file()]
        if missing:
            raise DataError(
                f"{src}: feature sources missing ({', '.join(missing)}); run build_feature_sources first"
            )
    overrides = store_config if store_config is not None else store_overrides()
    repo, rel = render_feature_repo(repo_dir, src, online_path, overrides)
    store = open_feature_store(repo)
    defs = feature_definitions(rel, repo_path=repo.resolve(), offline_store=str(store.config.offline_store.type))
    store.apply(list(defs.values()))
    return store


# ---------------------------------------------------------------------------------------------
# materialize and read


def _source_file(store: "FeatureStore", view: str) -> str:
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
def offline_reads(store: "FeatureStore") -> Iterator[None]:
    """The context of every offline read (point-in-time joins, materialization).

    The file (dask) store: the fast dask token for list-valued features. The DuckDB store reads a
    source's relative path against the working directory, so the repo directory is the working
    directory while the block runs (the rendered repo stores its sources relative to itself so it
    can move). Not thread-safe for the DuckDB store (``os.chdir`` is per process).
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


def latest_event(store: "FeatureStore") -> pd.Timestamp:
    """The latest ``event_timestamp`` in the user_history source (the newest snapshot)."""
    col = pq.read_table(_source_file(store, "user_history"), columns=[TIMESTAMP_FIELD])[TIMESTAMP_FIELD]
    if len(col) == 0:
        return pd.Timestamp(STATIC_TIMESTAMP)
    return _utc(pc.max(col).as_py())


def materialize(store: "FeatureStore", end: Any = None, start: Any = None) -> dict[str, Any]:
    """Load the offline sources into the online store: the latest row per entity stamped in
    [start, end]. ``end`` defaults to the newest history snapshot (so the online history of a
    user is its latest row: every event so far); ``start`` to the epoch (static rows included)."""
    end_ts = _utc(end) if end is not None else latest_event(store) + timedelta(seconds=1)
    start_ts = _utc(start) if start is not None else pd.Timestamp(STATIC_TIMESTAMP)
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


def _entity_times(entity_df: pd.DataFrame) -> pd.Series:
    if "user_id" not in entity_df.columns or TIMESTAMP_FIELD not in entity_df.columns:
        raise DataError(f"entity_df needs columns user_id and {TIMESTAMP_FIELD}, got {list(entity_df.columns)}")
    t = entity_df[TIMESTAMP_FIELD]
    if pd.api.types.is_numeric_dtype(t):
        return pd.to_datetime(t.astype("int64"), unit="s", utc=True)
    return pd.to_datetime(t, utc=True)


def _key_chunks(store: "FeatureStore", view: str, keys: pd.DataFrame, max_join_rows: int) -> list[pd.DataFrame]:
    """Split the entity keys so that no single request joins more than ``max_join_rows`` rows.

    Feast's file offline store joins every entity row with *all* source rows of its user before
    keeping the latest one at or before its time, so a request costs sum over keys of the user's
    source rows (quadratic in a user's activity for user_history). Chunks bound the memory.
    """
    if max_join_rows <= 0 or len(keys) == 0:
        return [keys]
    try:
        users = pq.read_table(_source_file(store, view), columns=["user_id"])["user_id"].to_pandas()
    except Exception:  # noqa: BLE001 - e.g. a remote source without credentials here: one request
        return [keys]
    per_user = users.value_counts()
    k = keys.sort_values(["user_id", TIMESTAMP_FIELD], kind="stable").reset_index(drop=True)
    cost = k["user_id"].map(per_user).fillna(0).to_numpy(np.int64) + 1
    if cost.sum() <= max_join_rows:
        return [keys]
    chunk = np.cumsum(cost) // max_join_rows
    return [g.reset_index(drop=True) for _, g in k.groupby(chunk, sort=True)]


def historical_user_features(
    store: "FeatureStore",
    entity_df: pd.DataFrame,
    views: Iterable[str] = ("user_profile", "user_activity"),
    max_join_rows: int = 2_000_000,
) -> pd.DataFrame:
    """Point-in-time correct user features for ``entity_df`` (``user_id`` and ``event_timestamp``:
    tz-aware/naive-UTC datetimes or unix seconds), via Feast's ``get_historical_features``.

    Returns ``entity_df`` (same rows, same order, same index) with ``event_timestamp`` as UTC
    datetimes and the features of ``views`` added. ``user_activity`` at T covers only events with
    timestamp < T; a user with no earlier event gets nulls (``n_history`` <NA>). ``user_history``
    holds only each user's latest snapshot: null before the user's last event.
    Large requests are split (``max_join_rows``, see :func:`_key_chunks`); 0 = one request.
    """
    out = entity_df.copy()
    out[TIMESTAMP_FIELD] = _entity_times(entity_df)
    keys = out[["user_id", TIMESTAMP_FIELD]].drop_duplicates().reset_index(drop=True)
    keys["user_id"] = keys["user_id"].astype("int64")
    for view in views:
        # one request per view: Feast's file store drops an entity row that has no feature row at
        # or before its time, which would take the other views' features with it
        refs = feature_refs(store, view)
        names = [r.split(":", 1)[1] for r in refs]
        with offline_reads(store):
            parts = [
                store.get_historical_features(entity_df=chunk, features=refs).to_df()[
                    ["user_id", TIMESTAMP_FIELD, *names]
                ]
                for chunk in _key_chunks(store, view, keys, max_join_rows)
            ]
        got = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        got[TIMESTAMP_FIELD] = pd.to_datetime(got[TIMESTAMP_FIELD], utc=True)
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


def _online(store: "FeatureStore", view: str, key: str, ids: Iterable[Any]) -> pd.DataFrame:
    ids = [int(i) for i in ids]
    if not ids:
        return pd.DataFrame(columns=[key])
    resp = store.get_online_features(features=feature_refs(store, view), entity_rows=[{key: i} for i in ids])
    return pd.DataFrame(resp.to_dict())


def online_user_features(
    store: "FeatureStore", user_ids: Iterable[Any], views: Iterable[str] = ("user_profile", "user_history")
) -> pd.DataFrame:
    """Serving: the users' latest materialized profile and history (one row per id, in order)."""
    ids = [int(i) for i in user_ids]
    frames = [_online(store, v, "user_id", ids) for v in views]
    out = frames[0]
    for f in frames[1:]:
        out = pd.concat([out, f.drop(columns=["user_id"])], axis=1)
    return out


def online_item_features(store: "FeatureStore", item_ids: Iterable[Any]) -> pd.DataFrame:
    """Serving: item title and genres from the online store (one row per id, in order)."""
    return _online(store, "item_metadata", "item_id", item_ids)


# ---------------------------------------------------------------------------------------------
# the stage


def _read_samples(data_dir: Path) -> pd.DataFrame:
    """Every split's sample index (no histories): user_id, item_id, timestamp, n_history, split."""
    missing = [schema.split_path(s) for s in schema.SPLITS if not (data_dir / schema.split_path(s)).is_file()]
    if missing:
        raise DataError(f"{data_dir}: samples missing ({', '.join(missing)}); run `reclora data prepare`")
    cols = ["user_id", "item_id", "timestamp", "n_history"]
    frames = [read_split(data_dir, s, histories=False)[cols].assign(split=s) for s in schema.SPLITS]
    out = pd.concat(frames, ignore_index=True)
    out["split"] = out["split"].astype("category")
    return out


def point_in_time_check(samples: pd.DataFrame, feats: pd.DataFrame) -> dict[str, int]:
    """Compare Feast's ``user_activity`` as of each sample's time with the sample itself.

    ``samples``: user_id, timestamp (unix s), n_history (the sample's count of strictly earlier
    events). ``feats``: user_id, timestamp, n_history, last_event_timestamp (Feast's row as of that
    time; null where Feast has none). Samples without a ``feats`` row are not counted.
    ``leaks``: samples whose Feast aggregate covers an event at or after the sample's time (must be 0).
    ``mismatches``: samples whose Feast ``n_history`` differs from their own. Vectorized, O(rows).
    """
    keys = ["user_id", "timestamp"]
    got = feats[[*keys, "n_history", "last_event_timestamp"]].rename(
        columns={"n_history": "_fn", "last_event_timestamp": "_fl"}
    )
    m = samples[[*keys, "n_history"]].merge(got, on=keys, how="inner")
    last = pd.to_numeric(m["_fl"], errors="coerce")
    leaks = int((last >= m["timestamp"]).sum())
    fn = pd.to_numeric(m["_fn"], errors="coerce").fillna(0).astype("int64")
    mismatches = int((fn != m["n_history"].astype("int64")).sum())
    return {"leaks": leaks, "mismatches": mismatches, "checked": int(len(m))}


def _check_rows(samples: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """The distinct (user_id, timestamp) rows of the point-in-time check: all (n = 0 or n >= their
    number) or a seeded uniform subset of n."""
    keys = samples[["user_id", "timestamp"]].drop_duplicates(ignore_index=True)
    if 0 < n < len(keys):
        keys = keys.sample(n=n, random_state=seed).sort_values(["user_id", "timestamp"], ignore_index=True)
    return keys


def features_stage(
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    history_len: int | None = None,
    params: Mapping[str, Any] | None = None,
    online_path: str | os.PathLike[str] | None = None,
    store_config: Mapping[str, Any] | None = None,
    materialize_end: Any = None,
    max_join_rows: int | None = None,
    pit_check_rows: int | None = None,
    chunk_rows: int | None = None,
) -> dict[str, Any]:
    """The whole features step, written atomically into ``out_dir`` (layout in the module doc).

    Steps: sources, ``apply``, materialize the online store, the training join (the shared user and
    item features through ``get_historical_features`` on every sample's (entity, time) row plus the
    catalogue at the cut-off, in requests of ``chunk_rows`` rows, turned into ModelInputs), and the
    point-in-time check (``user_activity`` as of each checked sample's time against the sample).

    Defaults from params ``features``: ``history_len`` (else ``data.max_history``, 100),
    ``max_join_rows`` (2e6), ``pit_check_rows`` (200,000; 0 = every sample row), ``chunk_rows``
    (1e6). Raises DataError on bad input and if the point-in-time check finds any leak.
    """
    from reclora.config import load_params
    from reclora.features.inputs import DEFAULT_CHUNK_ROWS, MODEL_INPUTS_DIR, model_inputs, offline_feature_frames

    refuse_overlap({"--out": out_dir, "the online store": online_path}, {"--data": data_dir})
    t0 = time.perf_counter()
    data = Path(data_dir)
    if params is None:
        params = load_params()
    fp: Mapping[str, Any] = params["features"] if isinstance(params.get("features"), Mapping) else {}
    if history_len is None:
        history_len = int(fp.get("history_len") or params.get("data", {}).get("max_history", 100))
    if max_join_rows is None:
        max_join_rows = int(fp.get("max_join_rows") or 2_000_000)
    if pit_check_rows is None:
        pit_check_rows = int(fp.get("pit_check_rows", 200_000) or 0)
    if chunk_rows is None:
        chunk_rows = int(fp.get("chunk_rows") or DEFAULT_CHUNK_ROWS)
    if pit_check_rows < 0 or chunk_rows < 0:
        raise ConfigError("features.pit_check_rows and features.chunk_rows must be >= 0")
    seed = int(params.get("data", {}).get("seed", 0))
    overrides = dict(store_config) if store_config is not None else store_overrides(params)
    _check_prepared(data)  # fail fast, with the clear message, before anything is written
    samples = _read_samples(data)
    seconds: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        seconds[name] = round(now - since, 2)
        return now

    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        t = time.perf_counter()
        src_summary = build_feature_sources(data, tmp / "sources", history_len)
        t = lap("sources", t)
        store = apply_feature_repo(tmp / "repo", tmp / "sources", online_path, overrides)
        t = lap("apply", t)
        mat = materialize(store, end=materialize_end)
        t = lap("materialize", t)
        # training's join: the shared features on every sample row + the catalogue at the cut-off
        catalogue_users = pq.read_table(tmp / "sources" / USER_PROFILE_FILE, columns=["user_id"])["user_id"]
        catalogue_items = pq.read_table(tmp / "sources" / ITEM_METADATA_FILE, columns=["item_id"])["item_id"]
        uf, itf = offline_feature_frames(
            store, samples, catalogue_users.to_numpy(), catalogue_items.to_numpy(), chunk_rows=chunk_rows,
            latest_per_key=True,
        )
        mi = model_inputs(uf, itf)
        join_rows = 2 * len(samples) + len(catalogue_users) + len(catalogue_items)
        del uf, itf
        (tmp / MODEL_INPUTS_DIR).mkdir()
        mi.users.to_parquet(tmp / MODEL_INPUTS_DIR / "users.parquet", index=False)
        mi.items.to_parquet(tmp / MODEL_INPUTS_DIR / "items.parquet", index=False)
        t = lap("training_join", t)
        # the point-in-time check: Feast's aggregates as of each checked row's time vs the samples
        keys = _check_rows(samples, pit_check_rows, seed)
        # requests bounded by joined rows (Feast joins each entity row with all its user's rows)
        feats = historical_user_features(
            store, keys.assign(**{TIMESTAMP_FIELD: keys["timestamp"]}), ("user_activity",), max_join_rows
        )
        check = point_in_time_check(samples, feats)
        if check["leaks"]:
            raise DataError(
                f"point-in-time check failed: {check['leaks']} samples got activity at or after their own time"
            )
        feats.to_parquet(tmp / PIT_CHECK, index=False)
        t = lap("pit_check", t)
        summary: dict[str, Any] = {
            "users": src_summary["users"],
            "items": src_summary["items"],
            "interactions": src_summary["interactions"],
            "history_rows": src_summary["history_rows"],
            "activity_rows": src_summary["activity_rows"],
            "history_len": int(history_len),
            "samples": int(len(samples)),
            "training_join_rows": int(join_rows),
            "model_inputs": {"users": int(len(mi.users)), "items": int(len(mi.items)), "attributes": mi.attributes},
            "pit_check_rows": check["checked"],
            "pit_leaks": check["leaks"],
            "pit_mismatches": check["mismatches"],
            "chunk_rows": int(chunk_rows),
            "profile_attributes": src_summary["profile_attributes"],
            "feature_views": list(FEATURE_VIEWS),
            "features": {v: feature_refs(store, v) for v in FEATURE_VIEWS},
            "materialized": mat,
            "store": {
                "provider": store.config.provider,
                "offline_store": store.config.offline_store.type,
                "online_store": store.config.online_store.type,
            },
            "paths": {
                "sources": "sources",
                "repo": "repo",
                "registry": f"repo/{REGISTRY_PATH}",
                "online_store": f"repo/{ONLINE_PATH}" if online_path is None else str(online_path),
                "model_inputs": "model_inputs",
                "pit_check": PIT_CHECK,
            },
            "semantics": (
                "user_activity at T covers the user's events with timestamp < T (rows stamped t + 1 s); "
                "user_history holds each user's latest snapshot (serving); training slices sequences "
                "from the prepared event store"
            ),
            "data_dir": str(data),
        }
        summary["seconds"] = round(time.perf_counter() - t0, 2)
        summary["stage_seconds"] = seconds
        write_json(tmp / SUMMARY, summary)
    summary["out"] = str(out)
    return summary


__all__ = [
    "apply_feature_repo",
    "build_feature_sources",
    "features_stage",
    "historical_user_features",
    "activity_snapshots",
    "history_snapshots",
    "latest_event",
    "materialize",
    "online_item_features",
    "online_user_features",
    "open_feature_store",
    "point_in_time_check",
    "render_feature_repo",
    "store_config",
    "store_overrides",
]
