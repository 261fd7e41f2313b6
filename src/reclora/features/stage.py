"""The features stage: sources, ``apply``, materialization, training's point-in-time join and its check.

Plain Python (no KFP). :func:`features_stage` runs the whole step into one directory, written
atomically (``OUT``)::

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
      repo/feature_sources.json       the sources directory (../sources) and offline store features.py declares
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
The parts: :mod:`reclora.features.sources`, :mod:`reclora.features.repo`, :mod:`reclora.features.read`,
:mod:`reclora.features.inputs`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from reclora.config import Params, as_params
from reclora.data import read_split, schema
from reclora.errors import ConfigError, DataError
from reclora.features.definitions import ITEM_METADATA_FILE, TIMESTAMP_FIELD, USER_PROFILE_FILE, feature_refs
from reclora.features.inputs import MODEL_INPUTS_DIR, model_inputs, offline_feature_frames
from reclora.features.read import DEFAULT_CHUNK_ROWS, historical_user_features, materialize
from reclora.features.repo import ONLINE_PATH, REGISTRY_PATH, apply_feature_repo, store_overrides
from reclora.features.sources import build_feature_sources, check_prepared
from reclora.io import atomic_dir, refuse_overlap, write_json

PIT_CHECK = "pit_check.parquet"
MAX_JOIN_ROWS = 2_000_000  # joined rows per point-in-time check request (each entity row joins its user's rows)
FEATURE_VIEWS = ("user_profile", "item_metadata", "user_history", "user_activity")
SUMMARY = "summary.json"


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
    *,
    params: Params | Mapping[str, Any],
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

    ``params``: the run's parameters (a :class:`~reclora.config.Params` or its mapping, loaded at the edge: the
    CLI, the KFP component, the Spark job). Defaults: ``history_len`` params ``data.max_history``,
    ``max_join_rows`` :data:`MAX_JOIN_ROWS`, ``pit_check_rows`` params ``features.pit_check_rows`` (0 = every
    sample row), ``chunk_rows`` params ``features.chunk_rows`` (0 = the library's default); the check's sample is
    seeded by ``data.seed``, the store configured by ``features`` (``store_config`` replaces that).
    Raises DataError on bad input and if the point-in-time check finds any leak.
    """
    refuse_overlap({"--out": out_dir, "the online store": online_path}, {"--data": data_dir})
    t0 = time.perf_counter()
    data = Path(data_dir)
    params = as_params(params)
    if history_len is None:
        history_len = params.data.max_history
    if max_join_rows is None:
        max_join_rows = MAX_JOIN_ROWS
    if pit_check_rows is None:
        pit_check_rows = params.features.pit_check_rows
    if chunk_rows is None:
        chunk_rows = params.features.chunk_rows or DEFAULT_CHUNK_ROWS
    if pit_check_rows < 0 or chunk_rows < 0:
        raise ConfigError("features.pit_check_rows and features.chunk_rows must be >= 0")
    overrides = dict(store_config) if store_config is not None else store_overrides(params)
    check_prepared(data)  # fail fast, with the clear message, before anything is written
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
            store,
            samples,
            catalogue_users.to_numpy(),
            catalogue_items.to_numpy(),
            chunk_rows=chunk_rows,
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
        keys = _check_rows(samples, pit_check_rows, params.data.seed)
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


__all__ = ["features_stage", "point_in_time_check"]
