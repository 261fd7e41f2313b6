"""The prepare stage on Spark (``data.engine: spark``): the same prepared directory as
:func:`reclora.data.prepare.prepare`, built with Spark's DataFrame API.

Spark does the heavy part: it parses the interactions file split by split on the executors, checks
every id, time and rating cell, computes the per-user windows (earlier events, the block start,
repeated pairs), the two global orders with consecutive ranks (time order: the split and the sample
index's row order; user order: the event store) and writes them as sorted part files. The driver reads
the small catalogue (items, users) with the pandas loaders and merges the sorted part files into the
single parquet files of the layout in one streaming pass (one row group in memory), with the same
schemas (pandas metadata included), row groups and row order as the pandas path, inside one atomic
directory: every later stage reads it unchanged.

Inputs, read as they lie (splittable CSV or parquet, so the executors read byte ranges in parallel;
no conversion on one machine first):

- ``ml-25m`` (any MovieLens CSV release): ``ratings.csv`` by Spark, ``movies.csv`` by the pandas loader;
- ``table``: ``<interactions>.parquet`` (preferred, as the pandas loader) or ``.csv`` by Spark, columns
  mapped by ``data.table``; the items and users tables by the pandas loader;
- ``synthetic``: generated on the driver and handed to Spark as one parquet file (tests, benchmarks).

``ml-100k``, ``ml-1m`` and ``goodbooks-10k`` are small fixed releases: a ConfigError says to use the
pandas engine. What a cell may hold is narrower than the pandas loaders (which parse every exact form):
ids and times are integers (integer columns, integral floats, or text of plain integers such as
``42`` / ``-7`` / `` 42 ``); ratings are numbers (numeric columns or decimal text); an empty cell (or a
null / NaN) is a null, kept in interactions.parquet for the validation gate and left out of the
samples, as in the pandas path. Anything else (``7.0`` or ``1e3`` as an id, ISO datetimes, booleans,
out-of-range integers) is a DataError naming the file, the column and examples, and a CSV line with
the wrong number of fields is a DataError too (Spark's FAILFAST mode). Datetime timestamps of the
generic table need the pandas engine (or unix seconds in the file).

This module holds the stage (:func:`prepare_spark`); its parts: :mod:`reclora.data.spark_engine` (the
engine setting, the Spark session), :mod:`reclora.data.spark_read` (the interactions read and checked),
:mod:`reclora.data.spark_index` (the event store and the sample index), :mod:`reclora.data.spark_write`
(Spark's part files merged into the layout's single files). Their public names are importable from here.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from reclora.config import Params, as_params
from reclora.data import schema
from reclora.data.loaders import DATASETS
from reclora.data.prepare import SAMPLE_DICTIONARY_COLUMNS, SAMPLE_ROW_GROUP, data_settings, user_sample
from reclora.data.samples import SPLIT_CODES, check_fractions, check_history
from reclora.data.spark_engine import ENGINES, data_engine, require_pyspark, spark_session
from reclora.data.spark_index import spark_sample_index
from reclora.data.spark_read import (
    CANONICAL,
    check_source_file,
    interaction_stats,
    read_source,
    refuse_bad_cells,
    spark_errors,
)
from reclora.data.spark_write import TABLE_ROW_GROUP, Sink, merge_parts, pandas_schema, write_parts
from reclora.errors import ConfigError, DataError
from reclora.io import atomic_dir, refuse_overlap, write_json

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

SPARK_DATASETS = ("ml-25m", "table", "synthetic")
PARTS_DIR = "spark-parts"  # inside the atomic output directory; removed before it is renamed into place


def prepare_spark(
    dataset: str,
    path: str | Path | None,
    out: str | Path,
    params: Params | Mapping[str, Any],
    spark: SparkSession | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """The prepare stage on Spark; returns the summary (also OUT/meta.json), as :func:`prepare`.

    Writes the same directory as the pandas path (tables, events.parquet, samples/*.parquet,
    meta.json: equal values, dtypes, row order and row groups) atomically to ``out`` (a local path: on
    a cluster a volume the driver and the executors share). ``params``: the run's params (sections
    ``data`` and ``synthetic``; a :class:`~reclora.config.Params` or its mapping). ``spark``: a session
    (default: :func:`spark_session` with params ``data.spark_conf``). ``overrides`` replace keys of
    params ``data`` (:func:`reclora.data.prepare.data_settings`). Raises ConfigError (a data set the Spark
    path does not read, no pyspark/Java), DataError (missing files, cells it cannot read: see the module doc),
    ValueError (bad split/history).
    """
    params = as_params(params)
    data = data_settings(params, overrides)
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if dataset not in SPARK_DATASETS:
        raise ConfigError(
            f"data.engine spark reads {', '.join(SPARK_DATASETS)}; {dataset} is a small fixed release: "
            "use data.engine pandas"
        )
    if dataset != "synthetic":
        if not path:
            raise ConfigError(f"--path is required for dataset {dataset!r}")
        if not Path(path).is_dir():
            raise DataError(f"data directory not found: {path}")
    fractions = tuple(float(f) for f in data.split)
    min_history, max_history = data.min_history, data.max_history
    check_fractions(fractions, shown=tuple(data.split))
    check_history(min_history, max_history)
    threshold = float(data.label_threshold[dataset])
    max_users, seed = data.max_users, data.seed
    check_source_file(dataset, Path(path) if path else None, data.table)  # before Spark's JVM starts
    refuse_overlap({"--out": out}, {"--path": path if dataset != "synthetic" else None})
    t0 = time.perf_counter()
    spark = spark if spark is not None else spark_session(data.spark_conf)
    if spark.conf.get("spark.master", "").startswith("local"):
        # local mode: a failed task's executor log (a Java stack trace) would bury our one-line error
        spark.sparkContext.setLogLevel(data.spark_log_level or "OFF")
    # every field of a CSV line is parsed, so a line with a field too many or too few fails (FAILFAST)
    # instead of being cut to the columns read
    spark.conf.set("spark.sql.csv.parser.columnPruning.enabled", "false")
    from pyspark.sql import functions as F

    persisted: list[DataFrame] = []
    out = Path(out)
    try:
        with atomic_dir(out) as tmp:
            parts = tmp / PARTS_DIR
            src = read_source(spark, dataset, Path(path) if path else None, params, parts / "input")
            inter = src.inter.persist()
            persisted.append(inter)
            with spark_errors(src.where):
                stats = interaction_stats(inter, threshold, checks=True)
            refuse_bad_cells(src, stats)
            read_stats = stats  # the loaded table's (its dtypes stay through the user sample, as in pandas)

            full, seen = inter, {}

            def distinct(col: str) -> np.ndarray:  # sorted distinct non-null ids of all rows (before max_users)
                if col not in seen:
                    rows = full.where(F.col(col).isNotNull()).select(col).distinct().toPandas()[col]
                    seen[col] = np.sort(rows.to_numpy(np.int64))
                return seen[col]

            users = src.users(lambda: pd.DataFrame({"user_id": distinct("user_id")}))
            items = src.items(lambda: distinct("item_id"))
            if max_users > 0:  # the pandas path's seeded user sample: same sorted ids, same draw
                keep = user_sample(distinct("user_id"), max_users, seed)
                if keep is not None:
                    kept = spark.createDataFrame(pd.DataFrame({"user_id": np.asarray(keep, np.int64)}))
                    inter = inter.join(F.broadcast(kept), "user_id", "left_semi").persist()
                    persisted.append(inter)
                    users = users[users["user_id"].isin(keep)].reset_index(drop=True)
                    stats = interaction_stats(inter, threshold, checks=False)
            if stats["rows"] == 0:
                raise DataError(f"{dataset}: no interactions found in {path}")
            # interactions.parquet: the source rows in their order; ids/times nullable Int64 where a cell was empty
            dtypes = (
                dict(src.dtypes)
                if src.dtypes
                else {c: ("Int64" if read_stats.get(f"null_{c}") else "int64") for c in CANONICAL}
            )
            dtypes["rating"] = dtypes.get("rating", "float64") if src.dtypes else "float64"
            write_parts(inter.select("rid", *CANONICAL).orderBy("rid"), parts / "interactions")
            sink = Sink(tmp / schema.INTERACTIONS, pandas_schema(dtypes), TABLE_ROW_GROUP)
            merge_parts(parts / "interactions", "rid", sink.add, contiguous=False)
            sink.close()
            items.to_parquet(tmp / schema.ITEMS, index=False)
            users.to_parquet(tmp / schema.USERS, index=False)

            complete = inter.where(
                F.col("user_id").isNotNull() & F.col("item_id").isNotNull() & F.col("timestamp").isNotNull()
            )
            events, samples, more = spark_sample_index(
                complete, threshold, min_history, max_history, fractions, repeat_is_same_event=False
            )  # the Spark path reads only data sets with real timestamps (time_source "timestamp")
            persisted += more
            write_parts(events, parts / "events")
            events_schema = pandas_schema(schema.EVENT_COLUMNS, schema.arrow_schema(schema.EVENT_COLUMNS))
            sink = Sink(tmp / schema.EVENTS, events_schema, TABLE_ROW_GROUP)
            merge_parts(parts / "events", "event_pos", sink.add, contiguous=True)
            sink.close()
            write_parts(samples.orderBy("t_rank"), parts / "samples")
            (tmp / schema.SAMPLES_DIR).mkdir()
            sample_schema = pandas_schema(schema.SAMPLE_INDEX_COLUMNS, schema.arrow_schema(schema.SAMPLE_INDEX_COLUMNS))
            sinks = {
                c: Sink(
                    tmp / schema.split_path(s),
                    sample_schema,
                    SAMPLE_ROW_GROUP,
                    use_dictionary=SAMPLE_DICTIONARY_COLUMNS,
                )
                for s, c in SPLIT_CODES.items()
            }
            positives = dict.fromkeys(SPLIT_CODES.values(), 0)

            def route(t: pa.Table) -> None:
                codes = t.column("split")
                for c, sink in sinks.items():
                    part = t.filter(pc.equal(codes, c))
                    if part.num_rows:
                        sink.add(part)
                        positives[c] += int(pc.sum(part.column("label").cast(pa.int64())).as_py() or 0)

            merge_parts(parts / "samples", "t_rank", route, contiguous=False)
            for sink in sinks.values():
                sink.close()
            shutil.rmtree(parts)
            counts = {s: sinks[c].rows for s, c in SPLIT_CODES.items()}
            summary: dict[str, Any] = {
                "dataset": dataset,
                "source": str(path) if path else None,
                "label_threshold": threshold,
                "time_source": "timestamp",
                "rows": stats["rows"],
                "users": stats["users"],
                "items": int(items["item_id"].nunique()),
                "samples": counts,
                "positive_rate": round(stats["positives"] / stats["rows"], 4),
                "positive_rate_by_split": {
                    s: round(positives[c] / counts[s], 4) if counts[s] else None for s, c in SPLIT_CODES.items()
                },
                "min_history": min_history,
                "max_history": max_history,
                "split": list(data.split),
                "max_users": max_users,
                "seconds": None,
            }
            write_json(tmp / schema.META, summary)
    finally:
        for df in persisted:
            df.unpersist()
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    summary["out"] = str(out)
    return summary


__all__ = [
    "ENGINES",
    "SPARK_DATASETS",
    "data_engine",
    "pandas_schema",
    "prepare_spark",
    "require_pyspark",
    "spark_sample_index",
    "spark_session",
]
