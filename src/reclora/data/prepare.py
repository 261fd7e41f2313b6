"""The prepare stage: raw data -> canonical tables + CTR samples, written atomically."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from reclora.config import Params, as_params
from reclora.config.data_sections import DataSection
from reclora.data import schema
from reclora.data.loaders import DATASETS, LOADERS, Tables, load_table
from reclora.data.samples import build_sample_index, materialize_histories
from reclora.data.synthetic import generate
from reclora.errors import ConfigError, DataError
from reclora.io import atomic_dir, read_json, refuse_overlap, write_json

SAMPLE_ROW_GROUP = 65536  # rows per parquet row group of the sample index (the unit streaming readers read)
# dictionary-encode only the few-valued index columns: ids and positions are nearly unique, where a
# dictionary is built and then dropped (a quarter of the write time at 25M events)
SAMPLE_DICTIONARY_COLUMNS = ["rating", "label", "history_length"]


def load_dataset(dataset: str, path: str | Path | None, params: Params | Mapping[str, Any]) -> Tables:
    """Load any supported data set into the canonical tables (``params``: the run's, a
    :class:`~reclora.config.Params` or its mapping; ``synthetic`` and ``data.table`` are read). Raises
    ConfigError for an unknown data set or a missing ``path``, DataError for files it cannot read."""
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    params = as_params(params)
    if dataset == "synthetic":
        return generate(**params.synthetic.to_dict())
    if not path:
        raise ConfigError(f"--path is required for dataset {dataset!r}")
    if dataset == "table":
        return load_table(path, params.data.table.to_dict())
    return LOADERS[dataset](Path(path))


def data_settings(params: Params, overrides: Mapping[str, Any]) -> DataSection:
    """Params ``data`` with ``overrides`` (its keys: min_history, max_history, split, max_users, seed; None =
    keep the params' value) in place. Raises ConfigError naming an unknown key or a value the section refuses."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return DataSection.from_dict({**params.data.to_dict(), **given}) if given else params.data


def user_sample(user_ids: np.ndarray, max_users: int, seed: int) -> np.ndarray | None:
    """The ids of a seeded uniform sample of ``max_users`` users drawn from ``user_ids`` (sorted distinct ids),
    or None when ``max_users`` is 0 (all) or not below their number. Both engines draw with it: the same
    sorted ids and seed give the same users."""
    if max_users <= 0 or max_users >= len(user_ids):
        return None
    return np.random.default_rng(seed).choice(user_ids, size=max_users, replace=False)


def sample_users(tables: Tables, max_users: int, seed: int) -> Tables:
    """Keep a seeded uniform sample of users (for data sets too large for one machine)."""
    keep = user_sample(np.sort(tables.interactions["user_id"].dropna().unique()), max_users, seed)
    if keep is None:
        return tables
    inter = tables.interactions[tables.interactions["user_id"].isin(keep)].reset_index(drop=True)
    user_tab = tables.users[tables.users["user_id"].isin(keep)].reset_index(drop=True)
    return Tables(inter, tables.items, user_tab, tables.time_source)


def prepare(
    dataset: str,
    path: str | Path | None,
    out: str | Path,
    params: Params | Mapping[str, Any],
    **overrides: Any,
) -> dict[str, Any]:
    """Run the stage; returns the summary (also written to OUT/meta.json).

    ``params``: the run's params (sections ``data`` and ``synthetic``; a :class:`~reclora.config.Params` or
    its mapping, loaded at the edge with :func:`reclora.config.load_params`). ``overrides`` replace keys of
    params ``data`` (min_history, max_history, split, max_users, seed: :func:`data_settings`).
    """
    refuse_overlap({"--out": out}, {"--path": path if dataset != "synthetic" else None})
    params = as_params(params)
    data = data_settings(params, overrides)
    t0 = time.perf_counter()
    tables = load_dataset(dataset, path, params)
    tables = sample_users(tables, data.max_users, data.seed)
    if tables.interactions.empty:
        raise DataError(f"{dataset}: no interactions found in {path}")
    threshold = float(data.label_threshold[dataset])
    inter = tables.interactions
    if inter[["user_id", "item_id", "timestamp"]].isna().any().any():
        # histories cannot be built around missing ids/times; keep them in the
        # tables so the validation gate names them, build samples from the rest
        sample_src = inter.dropna(subset=["user_id", "item_id", "timestamp"]).astype(
            {"user_id": "int64", "item_id": "int64", "timestamp": "int64"}
        )
    else:
        sample_src = inter
    events, samples = build_sample_index(
        sample_src,
        threshold=threshold,
        min_history=data.min_history,
        max_history=data.max_history,
        fractions=tuple(data.split),
        repeat_is_same_event=tables.time_source == "row_order",
    )
    summary: dict[str, Any] = {
        "dataset": dataset,
        "source": str(path) if path else None,
        "label_threshold": threshold,
        "time_source": tables.time_source,
        "rows": int(len(inter)),
        "users": int(inter["user_id"].nunique()),
        "items": int(tables.items["item_id"].nunique()),
        "samples": {s: int(len(df)) for s, df in samples.items()},
        "positive_rate": round(float((inter["rating"] >= threshold).mean()), 4),
        "positive_rate_by_split": {
            s: round(float(df["label"].mean()), 4) if len(df) else None for s, df in samples.items()
        },
        "min_history": data.min_history,
        "max_history": data.max_history,
        "split": list(data.split),
        "max_users": data.max_users,
        "seconds": None,
    }
    out = Path(out)
    with atomic_dir(out) as tmp:
        tables.interactions.to_parquet(tmp / schema.INTERACTIONS, index=False)
        tables.items.to_parquet(tmp / schema.ITEMS, index=False)
        tables.users.to_parquet(tmp / schema.USERS, index=False)
        events_schema = schema.arrow_schema(schema.EVENT_COLUMNS)
        pq.write_table(pa.Table.from_pandas(events, schema=events_schema, preserve_index=False), tmp / schema.EVENTS)
        del events
        (tmp / schema.SAMPLES_DIR).mkdir()
        sample_schema = schema.arrow_schema(schema.SAMPLE_INDEX_COLUMNS)
        for split, df in samples.items():  # typed by the schema: an empty split keeps its column types
            table = pa.Table.from_pandas(
                df[list(schema.SAMPLE_INDEX_COLUMNS)], schema=sample_schema, preserve_index=False
            )
            pq.write_table(
                table,
                tmp / schema.split_path(split),
                row_group_size=SAMPLE_ROW_GROUP,
                use_dictionary=SAMPLE_DICTIONARY_COLUMNS,
            )
        write_json(tmp / schema.META, summary)  # no wall time inside: the output stays byte-reproducible
    from reclora.hardware import hardware_info

    summary["seconds"] = round(time.perf_counter() - t0, 2)
    summary["out"] = str(out)
    summary["hardware"] = hardware_info()  # what ran it (not in meta.json: the data version is the content only)
    return summary


def read_events(data_dir: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """The event store of a prepared directory (events.parquet: sorted by user_id, timestamp, item_id)."""
    path = Path(data_dir) / schema.EVENTS
    if not path.is_file():
        raise DataError(
            f"{data_dir}: no {schema.EVENTS} (prepared by an older version?); run `reclora data prepare` again"
        )
    return pd.read_parquet(path, columns=columns)


def read_prepared(
    data_dir: str | Path, histories: bool = True
) -> tuple[Tables, dict[str, pd.DataFrame], dict[str, Any]]:
    """Read a prepared directory back: (tables, samples by split, meta).

    ``histories=True``: samples with SAMPLE_COLUMNS, histories materialized as lists from events.parquet
    (memory grows with samples x history length: for small data and tests). ``histories=False``: the
    sample index only (SAMPLE_INDEX_COLUMNS), which is what the scalable stages read.
    """
    d = Path(data_dir)
    need = [schema.INTERACTIONS, schema.ITEMS, schema.USERS, schema.META] + [
        schema.split_path(s) for s in schema.SPLITS
    ]
    missing = [n for n in need if not (d / n).is_file()]
    if missing:
        raise DataError(
            f"{d}: not a prepared data directory (missing {', '.join(missing)}); run `reclora data prepare`"
        )
    meta = read_json(d / schema.META)
    tables = Tables(
        pd.read_parquet(d / schema.INTERACTIONS),
        pd.read_parquet(d / schema.ITEMS),
        pd.read_parquet(d / schema.USERS),
        meta.get("time_source", "timestamp"),
    )
    events = read_events(d, ["item_id", "rating", "timestamp"]) if histories and (d / schema.EVENTS).is_file() else None
    samples = {s: read_split(d, s, histories, events) for s in schema.SPLITS}
    return tables, samples, meta


def read_split(
    data_dir: str | Path, split: str, histories: bool = True, events: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One split's samples: the index (``histories=False``) or SAMPLE_COLUMNS with list histories."""
    d = Path(data_dir)
    path = d / schema.split_path(split)
    names = pq.read_schema(path).names
    if "hist_item_ids" in names:  # a directory prepared before the event store: histories stored per sample
        if not histories:
            raise DataError(f"{d}: prepared by an older version (no sample index); run `reclora data prepare` again")
        return pd.read_parquet(path)
    index = pd.read_parquet(path)
    if not histories:
        return index
    if events is None:
        events = read_events(d, ["item_id", "rating", "timestamp"])
    return materialize_histories(events, index)
