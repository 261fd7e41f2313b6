"""The Feast objects of the RecLoRA feature repo: entities, sources and feature views.

This module is the single definition of the repo. A repo's ``features.py``
(the checked-in ``feature_repo/features.py`` and every rendered copy, for the
``feast`` CLI: :func:`repo_objects`) and the library
(:func:`reclora.features.repo.apply_feature_repo`, which calls
``FeatureStore.apply`` with these objects) both build their objects here, so
the CLI and the pipeline can never drift apart.

Sources are parquet files in one *sources directory* written by
:func:`reclora.features.sources.build_feature_sources`. Their paths are stored
relative to the feature repo when they can be, so a rendered repo and its
sources can be moved (or renamed into place atomically) together.

Point-in-time semantics of ``user_activity``
--------------------------------------------
One row per (user, distinct event second t): scalar aggregates of the user's
events with timestamp <= t (their count, the latest event time, the mean
rating), stamped ``t + HISTORY_DELAY`` (one second). Feast's point-in-time
join returns, for an entity row at time T, the latest feature row stamped
<= T. Event times are whole unix seconds, so that row covers exactly the
events with timestamp <= T - 1 s, i.e. timestamp < T: strictly earlier
events, the same rule the CTR samples use for their history.

``user_history``: the sequence store's online side
--------------------------------------------------
One row per user: the latest snapshot (the most recent ``history_len`` events,
oldest first, and the count of all of them), stamped one second after the
user's last event. Serving reads it from the online store. Training reads the
same sequences offline from the prepared event store (``events.parquet``,
sliced per sample), never a per-sample copy: a per-second snapshot of 100
events per row would be ~100x the event table (about 50 GB at MovieLens-25M).
A point-in-time lookup before a user's last event therefore finds no
``user_history`` row (nothing leaks); ``user_activity`` is the view that
answers "as of T".
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from reclora.errors import ConfigError

PROJECT = "reclora"

# source files inside the sources directory
USER_PROFILE_FILE = "user_profile.parquet"
ITEM_METADATA_FILE = "item_metadata.parquet"
USER_HISTORY_FILE = "user_history.parquet"
USER_ACTIVITY_FILE = "user_activity.parquet"
SOURCE_FILES = (USER_PROFILE_FILE, ITEM_METADATA_FILE, USER_HISTORY_FILE, USER_ACTIVITY_FILE)

TIMESTAMP_FIELD = "event_timestamp"
# rows that do not change over time (profiles, item metadata) are stamped at the epoch so every
# point-in-time query and every materialization window sees them
STATIC_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)
# a history snapshot of the events of second t becomes visible at t + HISTORY_DELAY (see above)
HISTORY_DELAY = timedelta(seconds=1)

# feature names
PROFILE_TEXT = "profile_text"
ITEM_FEATURES = ("title", "genres")
HISTORY_FEATURES = ("hist_item_ids", "hist_ratings", "hist_timestamps", "n_history")
ACTIVITY_FEATURES = ("n_history", "last_event_timestamp", "mean_rating")

# env var read by a repo's features.py (repo_objects): where the parquet sources are (absolute, or
# relative to the feature repo); default: the repo's REPO_SOURCES file, else "data/sources" inside it
SOURCES_ENV = "RECLORA_FEATURE_SOURCES"
# env var read by a repo's features.py (repo_objects): the offline store type the sources are declared
# for ("spark" -> SparkSource, anything else -> FileSource); default: REPO_SOURCES, else "file"
OFFLINE_STORE_ENV = "RECLORA_FEAST_OFFLINE_STORE"
# written beside feature_store.yaml by reclora.features.repo.render_feature_repo: {"sources": the
# sources directory as the repo stores it, "offline_store": the store type}; the checked-in repo has none
REPO_SOURCES = "feature_sources.json"
# offline stores that read the parquet sources as Feast FileSources (Spark takes SparkSources)
FILE_SOURCE_STORES = ("file", "dask", "duckdb")
DEFAULT_SOURCES = "data/sources"

RESERVED = {"user_id", "item_id", TIMESTAMP_FIELD, PROFILE_TEXT, *HISTORY_FEATURES, *ACTIVITY_FEATURES, *ITEM_FEATURES}


def profile_attributes(profile_path: str | os.PathLike[str]) -> list[tuple[str, Any]]:
    """(name, feast type) of the optional user attributes in a user_profile source (empty if absent)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from feast.types import Bool, Float64, Int64, String

    path = str(profile_path)
    if "://" in path:  # object store: pyarrow reads the schema from the footer when it can
        try:
            schema = pq.read_schema(path)
        except Exception:  # noqa: BLE001 - no credentials/filesystem here: profile_text only
            return []
    elif Path(path).is_file():
        schema = pq.read_schema(path)
    else:
        return []
    out: list[tuple[str, Any]] = []
    for f in schema:
        if f.name in RESERVED or f.name.startswith("__"):
            continue
        t = f.type
        if pa.types.is_boolean(t):
            out.append((f.name, Bool))
        elif pa.types.is_integer(t):
            out.append((f.name, Int64))
        elif pa.types.is_floating(t):
            out.append((f.name, Float64))
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            out.append((f.name, String))
        # other types (lists, binary, nested) are not profile attributes; left out
    return out


def _source_path(sources_dir: str, name: str, repo_path: Path | None) -> tuple[str, str]:
    """(path stored in the FileSource, path to read now)."""
    if "://" in sources_dir:  # object store URI: stored and read as is
        uri = f"{sources_dir.rstrip('/')}/{name}"
        return uri, uri
    p = Path(sources_dir) / name
    local = p if p.is_absolute() or repo_path is None else Path(repo_path) / p
    return str(p), str(local)


def _source(name: str, path: str, repo: Path | None, offline_store: str) -> Any:
    """A parquet source for ``offline_store``: a FileSource, or for Spark a SparkSource whose path is
    absolute (Spark resolves relative paths against its working directory) or an object-store URI."""
    from feast import FileSource

    if offline_store in FILE_SOURCE_STORES or "." in offline_store:  # a custom store class: its own sources
        return FileSource(name=name, path=path, timestamp_field=TIMESTAMP_FIELD)
    if offline_store != "spark":
        raise ConfigError(f"offline store {offline_store!r}: the feature sources support file, duckdb or spark")
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    if "://" not in path and not Path(path).is_absolute() and repo is not None:
        path = str((repo / path).resolve())
    return SparkSource(name=name, path=path, file_format="parquet", timestamp_field=TIMESTAMP_FIELD)


def feature_definitions(
    sources_dir: str | os.PathLike[str],
    repo_path: str | os.PathLike[str] | None = None,
    offline_store: str = "file",
) -> dict[str, Any]:
    """Build the repo's Feast objects by name.

    ``sources_dir``: the directory of the parquet sources, absolute or relative to
    ``repo_path`` (Feast resolves relative source paths against the feature repo),
    or an object-store URI (``s3://...``, ``gs://...``) for a cloud offline store.
    The ``user_profile`` schema is read from its source when it exists: whatever
    attributes the users table has (age, gender, occupation, ...) become fields,
    and ``profile_text`` is always present, so a users table with only
    ``user_id`` still gives a valid view. ``offline_store`` (the store's ``type``): file, duckdb
    (FileSources) or spark (SparkSources over the same parquet files); ConfigError otherwise.
    """
    from feast import Entity, FeatureView, Field, ValueType
    from feast.types import Array, Float32, Int64, String

    sources_dir = str(sources_dir)
    repo = Path(repo_path) if repo_path is not None else None
    profile_path, profile_local = _source_path(sources_dir, USER_PROFILE_FILE, repo)
    items_path, _ = _source_path(sources_dir, ITEM_METADATA_FILE, repo)
    history_path, _ = _source_path(sources_dir, USER_HISTORY_FILE, repo)
    activity_path, _ = _source_path(sources_dir, USER_ACTIVITY_FILE, repo)

    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64, description="a user")
    item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64, description="an item")

    kind = str(offline_store)
    user_profile_source = _source("user_profile_source", profile_path, repo, kind)
    item_metadata_source = _source("item_metadata_source", items_path, repo, kind)
    user_history_source = _source("user_history_source", history_path, repo, kind)
    user_activity_source = _source("user_activity_source", activity_path, repo, kind)

    user_profile = FeatureView(
        name="user_profile",
        entities=[user],
        ttl=timedelta(0),  # 0 = never expires; the rows are stamped at the epoch
        schema=[Field(name="user_id", dtype=Int64), Field(name=PROFILE_TEXT, dtype=String)]
        + [Field(name=n, dtype=t) for n, t in profile_attributes(profile_local)],
        source=user_profile_source,
        online=True,
        description="User attributes (whatever the users table has) and the prompt's profile sentence.",
        tags={"owner": "reclora"},
    )
    item_metadata = FeatureView(
        name="item_metadata",
        entities=[item],
        ttl=timedelta(0),
        schema=[
            Field(name="item_id", dtype=Int64),
            Field(name="title", dtype=String),
            Field(name="genres", dtype=String),
        ],
        source=item_metadata_source,
        online=True,
        description="Item title and genres ('A|B').",
        tags={"owner": "reclora"},
    )
    user_history = FeatureView(
        name="user_history",
        entities=[user],
        ttl=timedelta(0),
        schema=[
            Field(name="user_id", dtype=Int64),
            Field(name="hist_item_ids", dtype=Array(Int64)),
            Field(name="hist_ratings", dtype=Array(Float32)),
            Field(name="hist_timestamps", dtype=Array(Int64)),
            Field(name="n_history", dtype=Int64),
        ],
        source=user_history_source,
        online=True,
        description=(
            "The user's latest behaviour history (serving's sequence store): the most recent events "
            "(oldest first) and the count of all of them; one row per user, stamped 1 s after the "
            "user's last event. Training reads the same sequences from the prepared event store."
        ),
        tags={"owner": "reclora"},
    )
    user_activity = FeatureView(
        name="user_activity",
        entities=[user],
        ttl=timedelta(0),
        schema=[
            Field(name="user_id", dtype=Int64),
            Field(name="n_history", dtype=Int64),
            Field(name="last_event_timestamp", dtype=Int64),
            Field(name="mean_rating", dtype=Float32),
        ],
        source=user_activity_source,
        online=False,  # a point-in-time aggregate for training and the stage's check
        description=(
            "Point-in-time user aggregates as of T over the events with timestamp < T: their count, "
            "the latest event time (unix s) and the mean rating. Row for the events of second t is "
            "stamped t + 1 s."
        ),
        tags={"owner": "reclora"},
    )
    return {
        "user": user,
        "item": item,
        "user_profile_source": user_profile_source,
        "item_metadata_source": item_metadata_source,
        "user_history_source": user_history_source,
        "user_activity_source": user_activity_source,
        "user_profile": user_profile,
        "item_metadata": item_metadata,
        "user_history": user_history,
        "user_activity": user_activity,
    }


def repo_objects(repo_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The Feast objects of the feature repo at ``repo_dir``, as its ``features.py`` gives them to the
    ``feast`` CLI (:func:`feature_definitions` by name).

    Sources directory: ``$RECLORA_FEATURE_SOURCES``, else ``sources`` of the repo's
    ``feature_sources.json`` (written by ``render_feature_repo``), else ``data/sources``; offline
    store: ``$RECLORA_FEAST_OFFLINE_STORE``, else that file's ``offline_store``, else ``file``.
    Raises ConfigError when ``feature_sources.json`` is not a JSON object.
    """
    repo = Path(repo_dir)
    recorded: Any = {}
    if (repo / REPO_SOURCES).is_file():
        try:
            recorded = json.loads((repo / REPO_SOURCES).read_text())
        except ValueError as e:
            raise ConfigError(f"{repo / REPO_SOURCES}: not valid JSON ({e})") from e
        if not isinstance(recorded, dict):
            raise ConfigError(f"{repo / REPO_SOURCES}: must be a JSON object")
    sources = os.environ.get(SOURCES_ENV) or str(recorded.get("sources") or DEFAULT_SOURCES)
    offline_store = os.environ.get(OFFLINE_STORE_ENV) or str(recorded.get("offline_store") or "file")
    return feature_definitions(sources, repo_path=repo, offline_store=offline_store)


def feature_refs(store_or_defs: Any, view: str) -> list[str]:
    """``view:feature`` references of every feature of one view (from the registry or the definitions)."""
    if isinstance(store_or_defs, dict):
        fv = store_or_defs[view]
    else:
        fv = store_or_defs.get_feature_view(view)
    return [f"{view}:{f.name}" for f in fv.features]
