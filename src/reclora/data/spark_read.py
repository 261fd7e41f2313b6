"""Reading the canonical interactions on Spark (the prepare stage's input, :mod:`reclora.data.spark_prepare`
says which data sets and cells): each source column typed and checked cell by cell on the executors, the
bad cells counted and refused with examples, Spark's parse failures turned into one DataError naming the
file. The small catalogue (items, users) is read on the driver by the pandas loaders."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from reclora.data.cells import refuse
from reclora.data.files import csv_header, need_file, parquet_columns, parquet_parts
from reclora.data.movielens import ml25m_items
from reclora.data.synthetic import generate
from reclora.data.table import check_mapping, need_table_file, table_items, table_source_columns, table_users
from reclora.errors import ConfigError, DataError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from reclora.config import Params
    from reclora.config.data_sections import TableSection

CANONICAL = ("user_id", "item_id", "rating", "timestamp")
_INT_TEXT = r"^\s*[+-]?[0-9]+\s*$"
_NUMBER_TEXT = r"^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$"


@dataclass
class Source:
    """The interactions as Spark reads them, with what the checks and the catalogue need (see the fields)."""

    inter: DataFrame  # rid (original row order), user_id, item_id, rating, timestamp + _bad_<col> flags
    raw: DataFrame  # the frame the checks run on (for examples of bad cells)
    checks: dict[str, tuple[Column, str]]  # canonical column -> (bad-cell flag over raw, source column name)
    where: Path  # the interactions file (for messages)
    items: Callable[[Callable[[], np.ndarray]], pd.DataFrame]  # the items table, given the interacted item ids
    users: Callable[[Callable[[], pd.DataFrame]], pd.DataFrame]  # the users table, given the derived one
    dtypes: dict[str, str] | None = None  # interactions.parquet dtypes when fixed by the source (synthetic)


def _typed(field: Any, kind: str, where: Path) -> tuple[Column, Column]:
    """(value, bad) of one source column: ``kind`` "int" -> bigint, "number" -> double; null for an
    empty cell, a null or NaN; ``bad``: a cell the Spark path does not read (see :mod:`reclora.data.spark_prepare`)."""
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
    what = (
        "ids and times as integers (integer columns, integral floats or plain integer text)"
        if kind == "int"
        else "ratings as numbers"
    )
    raise DataError(
        f"{where}: column {field.name!r} is {t.simpleString()}; data.engine spark reads {what}; "
        "use data.engine pandas for other forms (e.g. datetime timestamps)"
    )


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
    return (
        spark.read.option("header", True)
        .option("inferSchema", False)
        .option("mode", "FAILFAST")
        .option("escape", '"')
        .csv(path.resolve().as_uri())
    )


def read_source(spark: SparkSession, dataset: str, path: Path | None, params: Params, scratch: Path) -> Source:
    """The interactions of ``dataset`` (ml-25m, table, synthetic) under ``path`` as a lazy Spark frame with its
    checks (``params``: the run's, ``data.table`` and ``synthetic`` read; ``scratch``: where the synthetic set
    is written for Spark).
    Raises DataError for a missing file or a column that cannot hold ids, times or ratings."""
    from pyspark.sql import functions as F

    if dataset == "synthetic":
        tables = generate(**params.synthetic.to_dict())
        scratch.mkdir(parents=True, exist_ok=True)
        file = scratch / "synthetic-interactions.parquet"
        tables.interactions.assign(rid=np.arange(len(tables.interactions), dtype=np.int64)).to_parquet(
            file, index=False
        )
        raw = spark.read.parquet(file.resolve().as_uri())
        inter, checks = _canonical(raw, {c: c for c in CANONICAL}, file, rid=F.col("rid"))
        dtypes = {c: str(t) for c, t in tables.interactions.dtypes.items()}
        return Source(inter, raw, checks, file, lambda _ids: tables.items, lambda _derived: tables.users, dtypes)
    assert path is not None
    if dataset == "ml-25m":
        file = need_file(path, "ratings.csv")
        raw = _read_csv(spark, file)
        names = {"user_id": "userId", "item_id": "movieId", "rating": "rating", "timestamp": "timestamp"}
        inter, checks = _canonical(raw, names, file)
        return Source(inter, raw, checks, file, lambda _ids: ml25m_items(path), lambda derived: derived())
    spec = params.data.table.to_dict()
    stem = spec.get("interactions", "interactions")
    src = table_source_columns(spec)
    file = need_table_file(path, stem)
    if file.suffix == ".parquet":  # a file, or a directory of part files: one part after the other, in
        parts = [spark.read.parquet(f.resolve().as_uri()) for f in parquet_parts(file)]  # the pandas loader's order
        raw = parts[0]
        for part in parts[1:]:  # union keeps the parts' partitions in order: the row ids follow the parts
            raw = raw.unionByName(part)
    else:
        raw = _read_csv(spark, file)
    inter, checks = _canonical(raw, {c: src[c] for c in CANONICAL}, file)
    return Source(
        inter,
        raw,
        checks,
        file,
        lambda ids: table_items(path, spec, ids),
        lambda derived: table_users(path, spec, derived),
    )


def check_source_file(dataset: str, path: Path | None, table: TableSection) -> None:
    """DataError when the interactions file :func:`read_source` would read is missing, or its header repeats a column,
    or the table mapping (params ``data.table``) is ambiguous for it (checked before Spark starts, as the pandas
    loaders check them)."""
    if dataset == "ml-25m" and path is not None:
        csv_header(need_file(path, "ratings.csv"))
    if dataset == "table" and path is not None:
        file = need_table_file(path, table.interactions)
        columns = parquet_columns(file) if file.suffix == ".parquet" else csv_header(file)
        check_mapping(columns, file, table_source_columns(table.to_dict()), CANONICAL)


@contextlib.contextmanager
def spark_errors(where: Path) -> Iterator[None]:
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
            raise DataError(
                f"{where}: a line does not have the header's fields (wrong number of fields or an "
                f"unclosed quote): {bad_line.group(1).strip()[:200]!r}"
            ) from None
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        raise DataError(f"{where}: cannot parse ({type(e).__name__}: {first[:300]})") from None


def interaction_stats(inter: DataFrame, threshold: float, checks: bool) -> dict[str, int]:
    """rows, distinct users, positives (rating >= threshold), nulls per id/time column (+ bad cells)."""
    from pyspark.sql import functions as F

    aggs = [
        F.count(F.lit(1)).alias("rows"),
        F.countDistinct("user_id").alias("users"),
        F.sum(F.coalesce(F.col("rating") >= threshold, F.lit(False)).cast("long")).alias("positives"),
    ]
    aggs += [F.sum(F.col(c).isNull().cast("long")).alias(f"null_{c}") for c in ("user_id", "item_id", "timestamp")]
    if checks:
        aggs += [F.sum(F.col(f"_bad_{c}").cast("long")).alias(f"bad_{c}") for c in CANONICAL]
    row = inter.agg(*aggs).collect()[0].asDict()
    return {k: int(v or 0) for k, v in row.items()}


def refuse_bad_cells(src: Source, stats: dict[str, int]) -> None:
    """DataError naming the file, the source column and up to three examples when :func:`interaction_stats`
    (with ``checks``) counted cells of a canonical column that the Spark path does not read."""
    for c in CANONICAL:
        if stats.get(f"bad_{c}"):
            bad, name = src.checks[c]
            examples = [r[0] for r in src.raw.where(bad).select(f"`{name}`").limit(3).collect()]
            need = (
                "numbers"
                if c == "rating"
                else (
                    "ids and times as integers: integer or integral float columns, or text of plain integers "
                    "such as 42 (text such as '7.0' or '1e3' needs data.engine pandas)"
                )
            )
            raise refuse(src.where, name, need, examples)
