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
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from reclora.config import load_params
from reclora.data import schema
from reclora.data.loaders import (
    DATASETS,
    check_mapping,
    csv_header,
    ml25m_items,
    parquet_columns,
    parquet_parts,
    table_file,
    table_items,
    table_source_columns,
    table_users,
)
from reclora.data.prepare import SAMPLE_DICTIONARY_COLUMNS, SAMPLE_ROW_GROUP
from reclora.data.samples import SPLIT_CODES
from reclora.data.synthetic import generate
from reclora.errors import ConfigError, DataError
from reclora.io import atomic_dir, refuse_overlap, write_json

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

ENGINES = ("pandas", "spark")
SPARK_DATASETS = ("ml-25m", "table", "synthetic")
INSTALL_HINT = "pip install -e '.[spark]'"
# pq.write_table's default row group (what the pandas path writes for interactions and events)
TABLE_ROW_GROUP = 1024 * 1024
PARTS_DIR = "spark-parts"  # inside the atomic output directory; removed before it is renamed into place
CANONICAL = ("user_id", "item_id", "rating", "timestamp")
_INT_TEXT = r"^\s*[+-]?[0-9]+\s*$"
_NUMBER_TEXT = r"^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$"


def data_engine(params: dict[str, Any]) -> str:
    """``params["data"]["engine"]`` checked: "pandas" (default, one machine) or "spark"; ConfigError otherwise."""
    data = params.get("data") or {}
    engine = data.get("engine", "pandas")
    engine = "" if engine is None else str(engine)  # an empty value is an error, never a silent default
    if engine not in ENGINES:
        raise ConfigError(f"data.engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    return engine


def require_pyspark() -> Any:
    """The ``pyspark`` module; ConfigError naming the optional extra when it is not installed."""
    try:
        import pyspark
    except ImportError:
        raise ConfigError(f"data.engine spark needs pyspark, the optional `spark` extra: {INSTALL_HINT}") from None
    return pyspark


def spark_session(conf: dict[str, Any] | None = None) -> SparkSession:
    """The active SparkSession, or a new one with ``conf`` (params ``data.spark_conf``; without
    ``spark.master``: local mode on every core here, the cluster's master under spark-submit).

    Raises ConfigError without pyspark or without a Java runtime."""
    require_pyspark()
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise ConfigError("data.engine spark needs a Java runtime (17+) for Spark: no `java` on PATH and no JAVA_HOME")
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("reclora-prepare")
    for k, v in (conf or {}).items():
        builder = builder.config(str(k), str(v))
    return builder.getOrCreate()


# ----------------------------------------------------------------------------------------------
# reading the canonical interactions


@dataclass
class _Source:
    inter: DataFrame  # rid (original row order), user_id, item_id, rating, timestamp + _bad_<col> flags
    raw: DataFrame  # the frame the checks run on (for examples of bad cells)
    checks: dict[str, tuple[Column, str]]  # canonical column -> (bad-cell flag over raw, source column name)
    where: Path  # the interactions file (for messages)
    items: Callable[[Callable[[], np.ndarray]], pd.DataFrame]  # the items table, given the interacted item ids
    users: Callable[[Callable[[], pd.DataFrame]], pd.DataFrame]  # the users table, given the derived one
    dtypes: dict[str, str] | None = None  # interactions.parquet dtypes when fixed by the source (synthetic)


def _typed(field: Any, kind: str, where: Path) -> tuple[Column, Column]:
    """(value, bad) of one source column: ``kind`` "int" -> bigint, "number" -> double; null for an
    empty cell, a null or NaN; ``bad``: a cell the Spark path does not read (see the module doc)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    c, t = F.col(f"`{field.name}`"), field.dataType
    target = "bigint" if kind == "int" else "double"
    null = F.lit(None).cast(target)
    if isinstance(t, T.StringType):
        s = F.regexp_replace(c, r"^\s+|\s+$", "")
        empty = c.isNull() | (s == "")
        parsed = s.try_cast(target)
        bad = ~empty & (~s.rlike(_INT_TEXT if kind == "int" else _NUMBER_TEXT) | parsed.isNull())
        return F.when(empty, null).otherwise(parsed), F.coalesce(bad, F.lit(False))
    if isinstance(t, (T.ByteType, T.ShortType, T.IntegerType, T.LongType)):
        return c.cast(target), F.lit(False)
    if isinstance(t, (T.FloatType, T.DoubleType)):
        d = c.cast("double")
        missing = c.isNull() | F.isnan(d)
        if kind == "number":
            return F.when(missing, null).otherwise(d), F.lit(False)
        exact = (F.rint(d) == d) & (d >= -(2.0**63)) & (d < 2.0**63)
        return F.when(missing | ~exact, null).otherwise(d.try_cast("bigint")), ~missing & ~exact
    if kind == "number" and isinstance(t, T.DecimalType):
        return c.cast("double"), F.lit(False)
    what = "ids and times as integers (integer columns, integral floats or plain integer text)" if kind == "int" else "ratings as numbers"
    raise DataError(f"{where}: column {field.name!r} is {t.simpleString()}; data.engine spark reads {what}; "
                    "use data.engine pandas for other forms (e.g. datetime timestamps)")  # fmt: skip


def _canonical(raw: DataFrame, names: dict[str, str], where: Path, rid: Column | None = None) -> tuple[DataFrame, dict]:
    """The canonical columns of ``raw`` (``names``: canonical -> source column), typed and checked,
    with ``rid``: the original row order (default: Spark's monotonically increasing id, which keeps a
    single file's order across its splits)."""
    from pyspark.sql import functions as F

    missing = [names[c] for c in CANONICAL if names[c] not in raw.columns]
    if missing:
        raise DataError(f"{where}: interactions table lacks columns {missing} (has {list(raw.columns)})")
    fields = {f.name: f for f in raw.schema.fields}
    cols, checks = [(rid if rid is not None else F.monotonically_increasing_id()).alias("rid")], {}
    for c in CANONICAL:
        value, bad = _typed(fields[names[c]], "number" if c == "rating" else "int", where)
        cols += [value.alias(c), bad.alias(f"_bad_{c}")]
        checks[c] = (bad, names[c])
    return raw.select(*cols), checks


def _read_csv(spark: SparkSession, path: Path) -> DataFrame:
    """A CSV with a header, every cell as text; a line with the wrong number of fields fails the job."""
    return (spark.read.option("header", True).option("inferSchema", False).option("mode", "FAILFAST")
            .option("escape", '"').csv(path.resolve().as_uri()))  # fmt: skip


def _source(spark: SparkSession, dataset: str, path: Path | None, params: dict[str, Any], scratch: Path) -> _Source:
    from pyspark.sql import functions as F

    if dataset == "synthetic":
        tables = generate(**params["synthetic"])
        scratch.mkdir(parents=True, exist_ok=True)
        file = scratch / "synthetic-interactions.parquet"
        tables.interactions.assign(rid=np.arange(len(tables.interactions), dtype=np.int64)).to_parquet(file, index=False)
        raw = spark.read.parquet(file.resolve().as_uri())
        inter, checks = _canonical(raw, {c: c for c in CANONICAL}, file, rid=F.col("rid"))
        dtypes = {c: str(t) for c, t in tables.interactions.dtypes.items()}
        return _Source(inter, raw, checks, file, lambda _ids: tables.items, lambda _derived: tables.users, dtypes)
    assert path is not None
    if dataset == "ml-25m":
        file = path / "ratings.csv"
        if not file.is_file():
            raise DataError(f"{path}: missing ratings.csv")
        raw = _read_csv(spark, file)
        names = {"user_id": "userId", "item_id": "movieId", "rating": "rating", "timestamp": "timestamp"}
        inter, checks = _canonical(raw, names, file)
        return _Source(inter, raw, checks, file, lambda _ids: ml25m_items(path), lambda derived: derived())
    spec = params["data"]["table"]
    stem = spec.get("interactions", "interactions")
    src = table_source_columns(spec)
    file = table_file(path, stem)
    if file is None:
        raise DataError(f"{path}: missing {stem}.parquet or {stem}.csv")
    if file.suffix == ".parquet":  # a file, or a directory of part files: one part after the other, in
        parts = [spark.read.parquet(f.resolve().as_uri()) for f in parquet_parts(file)]  # the pandas loader's order
        raw = parts[0]
        for part in parts[1:]:  # union keeps the parts' partitions in order: the row ids follow the parts
            raw = raw.unionByName(part)
    else:
        raw = _read_csv(spark, file)
    inter, checks = _canonical(raw, {c: src[c] for c in CANONICAL}, file)
    return _Source(inter, raw, checks, file, lambda ids: table_items(path, spec, ids),
                   lambda derived: table_users(path, spec, derived))  # fmt: skip


def _check_source_file(dataset: str, path: Path | None, data_p: dict[str, Any]) -> None:
    """DataError when the interactions file ``_source`` would read is missing, or its header repeats a column,
    or the table mapping is ambiguous for it (checked before Spark starts, as the pandas loaders check them)."""
    if dataset == "ml-25m" and path is not None:
        if not (path / "ratings.csv").is_file():
            raise DataError(f"{path}: missing ratings.csv")
        csv_header(path / "ratings.csv")
    if dataset == "table" and path is not None:
        stem = data_p["table"].get("interactions", "interactions")
        file = table_file(path, stem)
        if file is None:
            raise DataError(f"{path}: missing {stem}.parquet or {stem}.csv")
        columns = parquet_columns(file) if file.suffix == ".parquet" else csv_header(file)
        check_mapping(columns, file, table_source_columns(data_p["table"]), CANONICAL)


@contextlib.contextmanager
def _spark_errors(where: Path) -> Iterator[None]:
    """Spark's parse failures (FAILFAST, unreadable files) as one DataError naming the file."""
    try:
        yield
    except (DataError, ConfigError):
        raise
    except Exception as e:
        if type(e).__module__.split(".")[0] not in ("pyspark", "py4j"):
            raise
        text = str(e)
        bad_line = re.search(r"Malformed CSV record: ?(.*?)(?:\s+SQLSTATE: \S+)?\s*$", text, re.M)
        if bad_line:  # FAILFAST: a line with the wrong number of fields (or an unclosed quote)
            raise DataError(f"{where}: a line does not have the header's fields (wrong number of fields or an "
                            f"unclosed quote): {bad_line.group(1).strip()[:200]!r}") from None  # fmt: skip
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        raise DataError(f"{where}: cannot parse ({type(e).__name__}: {first[:300]})") from None


def _stats(inter: DataFrame, threshold: float, checks: bool) -> dict[str, int]:
    """rows, distinct users, positives (rating >= threshold), nulls per id/time column (+ bad cells)."""
    from pyspark.sql import functions as F

    aggs = [F.count(F.lit(1)).alias("rows"), F.countDistinct("user_id").alias("users"),
            F.sum(F.coalesce(F.col("rating") >= threshold, F.lit(False)).cast("long")).alias("positives")]  # fmt: skip
    aggs += [F.sum(F.col(c).isNull().cast("long")).alias(f"null_{c}") for c in ("user_id", "item_id", "timestamp")]
    if checks:
        aggs += [F.sum(F.col(f"_bad_{c}").cast("long")).alias(f"bad_{c}") for c in CANONICAL]
    row = inter.agg(*aggs).collect()[0].asDict()
    return {k: int(v or 0) for k, v in row.items()}


def _refuse_bad_cells(src: _Source, stats: dict[str, int]) -> None:
    for c in CANONICAL:
        if stats.get(f"bad_{c}"):
            bad, name = src.checks[c]
            examples = [r[0] for r in src.raw.where(bad).select(f"`{name}`").limit(3).collect()]
            shown = ", ".join(repr(str(e)) for e in examples)
            need = "numbers" if c == "rating" else (
                "ids and times as integers: integer or integral float columns, or text of plain integers "
                "such as 42 (text such as '7.0' or '1e3' needs data.engine pandas)"
            )
            raise DataError(f"{src.where}: column {name!r} must hold {need}, e.g. got {shown}")


# ----------------------------------------------------------------------------------------------
# the event store and the sample index


def _ranked(df: DataFrame, keys: Sequence[str], name: str) -> tuple[DataFrame, DataFrame]:
    """``df`` sorted by ``keys`` (unique together) with ``name``: each row's 0-based rank in that order,
    consecutive over the whole frame (partition offsets + the row's place in its partition), and the
    persisted sorted frame (unpersist it when done). The result keeps the sorted partitions in order."""
    from pyspark.sql import functions as F

    s = (df.orderBy(*keys).withColumn("_part", F.spark_partition_id())
         .withColumn("_mono", F.monotonically_increasing_id()).persist())  # fmt: skip
    counts = {int(p): int(n) for p, n in s.groupBy("_part").count().collect()}
    offsets, acc = [], 0
    for p in range(max(counts) + 1 if counts else 0):
        offsets.append(acc)
        acc += counts.get(p, 0)
    offset = F.element_at(F.array(*[F.lit(o).cast("bigint") for o in offsets or [0]]), F.col("_part") + 1)
    local = F.col("_mono") - F.shiftleft(F.col("_part").cast("bigint"), 33)  # the id's low 33 bits: row in partition
    return s.withColumn(name, offset + local).drop("_part", "_mono"), s


def spark_sample_index(
    src: DataFrame,
    threshold: float,
    min_history: int = 5,
    max_history: int = 100,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    repeat_is_same_event: bool = False,
) -> tuple[DataFrame, DataFrame, list[DataFrame]]:
    """:func:`reclora.data.samples.build_sample_index` on Spark: ``(events, samples, persisted)``.

    ``src``: user_id, item_id, timestamp (bigint, no nulls), rating (double, may be null) and ``rid``
    (unique; the rows' original order, which breaks every tie as the pandas path's stable sorts do).
    ``events``: EVENT_COLUMNS + ``event_pos`` (0..n-1), its partitions in event order (user_id,
    timestamp, item_id, rid). ``samples``: SAMPLE_INDEX_COLUMNS + ``t_rank`` (the rank in global time
    order: timestamp, user_id, item_id, rid) + ``split`` (0 train, 1 valid, 2 test: ranks below
    round(n * f0), below round(n * (f0 + f1)), the rest), unsorted. ``persisted``: frames to unpersist.
    Raises ValueError on bad fractions or history bounds (the pandas path's messages).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    if min_history < 0 or max_history < 1:
        raise ValueError("min_history must be >= 0 and max_history >= 1")
    user = Window.partitionBy("user_id")
    df = src.select("rid", "user_id", "item_id", "rating", "timestamp")
    # strictly earlier events of the user (ties at the same second are not history); place in the user's block
    df = df.withColumn("n_history", (F.rank().over(user.orderBy("timestamp")) - 1).cast("bigint"))
    df = df.withColumn("_in_block", F.row_number().over(user.orderBy("timestamp", "item_id", "rid")).cast("bigint"))
    if repeat_is_same_event:  # a (user, item) pair's later copies in event order get no sample
        pair = Window.partitionBy("user_id", "item_id").orderBy("timestamp", "rid")
        df = df.withColumn("_repeat", F.row_number().over(pair) > 1)
    timed, p1 = _ranked(df, ["timestamp", "user_id", "item_id", "rid"], "t_rank")
    n = p1.count()
    c1 = int(round(n * fractions[0]))
    c2 = int(round(n * (fractions[0] + fractions[1])))
    ev, p2 = _ranked(timed, ["user_id", "timestamp", "item_id", "rid"], "event_pos")
    ev = ev.withColumn("block_start", F.col("event_pos") - F.col("_in_block") + 1)
    keep = F.col("n_history") >= max(min_history, 1)
    if repeat_is_same_event:
        keep = keep & ~F.col("_repeat")
    length = F.least(F.col("n_history"), F.lit(max_history).cast("bigint"))
    split = F.when(F.col("t_rank") < c1, 0).when(F.col("t_rank") < c2, 1).otherwise(2).cast("byte")
    samples = ev.where(keep).select(
        "user_id", "item_id", "rating", "timestamp",
        F.coalesce(F.col("rating") >= threshold, F.lit(False)).cast("byte").alias("label"), "n_history", "event_pos",
        (F.col("block_start") + F.col("n_history") - length).alias("history_start"), length.alias("history_length"),
        "t_rank", split.alias("split"),
    )  # fmt: skip
    events = ev.select(*schema.EVENT_COLUMNS, "event_pos")
    return events, samples, [p1, p2]


# ----------------------------------------------------------------------------------------------
# sorted part files -> the layout's single parquet files


def _part_files(d: Path) -> list[Path]:
    """Spark's part files of ``d`` in partition order (part-<partition>-<job>-c<file>.<codec>.parquet)."""

    def key(p: Path) -> tuple[int, int]:
        m = re.match(r"part-(\d+)-.*-c(\d+)\.", p.name)
        if not m:
            raise RuntimeError(f"unexpected Spark output file {p}")
        return int(m.group(1)), int(m.group(2))

    return sorted((p for p in d.glob("part-*.parquet")), key=key)


def pandas_schema(dtypes: dict[str, str], arrow: pa.Schema | None = None) -> pa.Schema:
    """The arrow schema (with pandas metadata) pandas writes for a frame with these column dtypes
    (``arrow``: the explicit schema the pandas path passes, if any), so a file written from Spark reads
    back with the same dtypes (e.g. nullable ``Int64``)."""
    empty = pd.DataFrame({c: pd.Series([], dtype=t) for c, t in dtypes.items()})
    return pa.Table.from_pandas(empty, schema=arrow, preserve_index=False).schema


class _Sink:
    """One parquet file written in row groups of exactly ``row_group`` rows (the last one shorter), as
    ``pq.write_table(table, row_group_size=row_group)`` writes a whole table; an empty file as it would."""

    def __init__(self, path: Path, target: pa.Schema, row_group: int, **options: Any):
        self.path, self.schema, self.rg, self.options = path, target, row_group, options
        self.writer: pq.ParquetWriter | None = None
        self.buf: list[pa.Table] = []
        self.pending = 0
        self.rows = 0

    def add(self, table: pa.Table) -> None:
        table = table.select(self.schema.names).cast(self.schema)
        self.buf.append(table)
        self.pending += table.num_rows
        self.rows += table.num_rows
        while self.pending >= self.rg:
            whole = pa.concat_tables(self.buf)
            self._write(whole.slice(0, self.rg))
            rest = whole.slice(self.rg)
            self.buf, self.pending = [rest], rest.num_rows

    def _write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, self.schema, **self.options)
        self.writer.write_table(table, row_group_size=self.rg)

    def close(self) -> None:
        if self.pending:
            self._write(pa.concat_tables(self.buf))
        if self.writer is None:  # no rows at all
            pq.write_table(self.schema.empty_table(), self.path, row_group_size=self.rg, **self.options)
        else:
            self.writer.close()


def _merge(parts: Path, order: str, consume: Callable[[pa.Table], None], contiguous: bool) -> int:
    """Stream the part files of ``parts`` in order into ``consume``; checks that ``order`` increases
    (and is 0, 1, 2, ... when ``contiguous``), so a file out of place fails instead of reordering rows."""
    last, n = -1, 0
    for f in _part_files(parts):
        for batch in pq.ParquetFile(f).iter_batches(batch_size=65536):
            t = pa.Table.from_batches([batch])
            pos = t.column(order).to_numpy()
            if len(pos) == 0:
                continue
            ok = (pos == np.arange(n, n + len(pos))).all() if contiguous else pos[0] > last and (np.diff(pos) > 0).all()
            if not ok:
                raise RuntimeError(f"{parts}: Spark's part files are not in {order} order")
            last, n = int(pos[-1]), n + len(pos)
            consume(t)
    return n


def _write_parts(df: DataFrame, d: Path) -> None:
    df.write.mode("error").parquet(d.resolve().as_uri())


# ----------------------------------------------------------------------------------------------
# the stage


def prepare_spark(
    dataset: str,
    path: str | Path | None,
    out: str | Path,
    params: dict[str, Any] | None = None,
    spark: SparkSession | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """The prepare stage on Spark; returns the summary (also OUT/meta.json), as :func:`prepare`.

    Writes the same directory as the pandas path (tables, events.parquet, samples/*.parquet,
    meta.json: equal values, dtypes, row order and row groups) atomically to ``out`` (a local path: on
    a cluster a volume the driver and the executors share). ``spark``: a session (default:
    :func:`spark_session` with params ``data.spark_conf``). ``overrides`` replace keys of
    params['data']. Raises ConfigError (a data set the Spark path does not read, no pyspark/Java),
    DataError (missing files, cells it cannot read: see the module doc), ValueError (bad split/history).
    """
    params = params if params is not None else load_params()
    data_p = {**params["data"], **{k: v for k, v in overrides.items() if v is not None}}
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if dataset not in SPARK_DATASETS:
        raise ConfigError(f"data.engine spark reads {', '.join(SPARK_DATASETS)}; {dataset} is a small fixed release: "
                          "use data.engine pandas")  # fmt: skip
    if dataset != "synthetic":
        if not path:
            raise ConfigError(f"--path is required for dataset {dataset!r}")
        if not Path(path).is_dir():
            raise DataError(f"data directory not found: {path}")
    fractions = tuple(float(f) for f in data_p["split"])
    min_history, max_history = int(data_p["min_history"]), int(data_p["max_history"])
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {tuple(data_p['split'])}")
    if min_history < 0 or max_history < 1:
        raise ValueError("min_history must be >= 0 and max_history >= 1")
    threshold = float(data_p["label_threshold"][dataset])
    max_users, seed = int(data_p.get("max_users") or 0), int(data_p.get("seed", 0))
    _check_source_file(dataset, Path(path) if path else None, data_p)  # before Spark's JVM starts
    refuse_overlap({"--out": out}, {"--path": path if dataset != "synthetic" else None})
    t0 = time.perf_counter()
    spark = spark if spark is not None else spark_session(data_p.get("spark_conf"))
    if spark.conf.get("spark.master", "").startswith("local"):
        # local mode: a failed task's executor log (a Java stack trace) would bury our one-line error
        spark.sparkContext.setLogLevel(str(data_p.get("spark_log_level") or "OFF"))
    # every field of a CSV line is parsed, so a line with a field too many or too few fails (FAILFAST)
    # instead of being cut to the columns read
    spark.conf.set("spark.sql.csv.parser.columnPruning.enabled", "false")
    from pyspark.sql import functions as F

    persisted: list[DataFrame] = []
    out = Path(out)
    try:
        with atomic_dir(out) as tmp:
            parts = tmp / PARTS_DIR
            src = _source(spark, dataset, Path(path) if path else None, {**params, "data": data_p}, parts / "input")
            inter = src.inter.persist()
            persisted.append(inter)
            with _spark_errors(src.where):
                stats = _stats(inter, threshold, checks=True)
            _refuse_bad_cells(src, stats)
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
                user_ids = distinct("user_id")
                if max_users < len(user_ids):
                    keep = np.random.default_rng(seed).choice(user_ids, size=max_users, replace=False)
                    kept = spark.createDataFrame(pd.DataFrame({"user_id": np.asarray(keep, np.int64)}))
                    inter = inter.join(F.broadcast(kept), "user_id", "left_semi").persist()
                    persisted.append(inter)
                    users = users[users["user_id"].isin(keep)].reset_index(drop=True)
                    stats = _stats(inter, threshold, checks=False)
            if stats["rows"] == 0:
                raise DataError(f"{dataset}: no interactions found in {path}")
            # interactions.parquet: the source rows in their order; ids/times nullable Int64 where a cell was empty
            dtypes = dict(src.dtypes) if src.dtypes else {c: ("Int64" if read_stats.get(f"null_{c}") else "int64") for c in CANONICAL}
            dtypes["rating"] = dtypes.get("rating", "float64") if src.dtypes else "float64"
            _write_parts(inter.select("rid", *CANONICAL).orderBy("rid"), parts / "interactions")
            sink = _Sink(tmp / schema.INTERACTIONS, pandas_schema(dtypes), TABLE_ROW_GROUP)
            _merge(parts / "interactions", "rid", sink.add, contiguous=False)
            sink.close()
            items.to_parquet(tmp / schema.ITEMS, index=False)
            users.to_parquet(tmp / schema.USERS, index=False)

            complete = inter.where(F.col("user_id").isNotNull() & F.col("item_id").isNotNull() & F.col("timestamp").isNotNull())
            events, samples, more = spark_sample_index(
                complete, threshold, min_history, max_history, fractions, repeat_is_same_event=False
            )  # the Spark path reads only data sets with real timestamps (time_source "timestamp")
            persisted += more
            _write_parts(events, parts / "events")
            events_schema = pandas_schema(schema.EVENT_COLUMNS, schema.arrow_schema(schema.EVENT_COLUMNS))
            sink = _Sink(tmp / schema.EVENTS, events_schema, TABLE_ROW_GROUP)
            _merge(parts / "events", "event_pos", sink.add, contiguous=True)
            sink.close()
            _write_parts(samples.orderBy("t_rank"), parts / "samples")
            (tmp / schema.SAMPLES_DIR).mkdir()
            sample_schema = pandas_schema(schema.SAMPLE_INDEX_COLUMNS, schema.arrow_schema(schema.SAMPLE_INDEX_COLUMNS))
            sinks = {c: _Sink(tmp / schema.split_path(s), sample_schema, SAMPLE_ROW_GROUP, use_dictionary=SAMPLE_DICTIONARY_COLUMNS)
                     for s, c in SPLIT_CODES.items()}  # fmt: skip
            positives = dict.fromkeys(SPLIT_CODES.values(), 0)

            def route(t: pa.Table) -> None:
                codes = t.column("split")
                for c, sink in sinks.items():
                    part = t.filter(pc.equal(codes, c))
                    if part.num_rows:
                        sink.add(part)
                        positives[c] += int(pc.sum(part.column("label").cast(pa.int64())).as_py() or 0)

            _merge(parts / "samples", "t_rank", route, contiguous=False)
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
                "split": list(data_p["split"]),
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


__all__ = ["ENGINES", "SPARK_DATASETS", "data_engine", "pandas_schema", "prepare_spark", "require_pyspark",
           "spark_sample_index", "spark_session"]  # fmt: skip
