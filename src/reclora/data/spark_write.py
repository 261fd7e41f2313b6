"""Spark's sorted part files -> the prepared layout's single parquet files: streamed in order (one row group
in memory), checked to be in order, written with the schemas (pandas metadata included) and row groups the
pandas path writes."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

# pq.write_table's default row group (what the pandas path writes for interactions and events)
TABLE_ROW_GROUP = 1024 * 1024


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


class Sink:
    """One parquet file written in row groups of exactly ``row_group`` rows (the last one shorter), as
    ``pq.write_table(table, row_group_size=row_group)`` writes a whole table; an empty file as it would."""

    def __init__(self, path: Path, target: pa.Schema, row_group: int, **options: Any):
        self.path, self.schema, self.rg, self.options = path, target, row_group, options
        self.writer: pq.ParquetWriter | None = None
        self.buf: list[pa.Table] = []
        self.pending = 0
        self.rows = 0

    def add(self, table: pa.Table) -> None:
        """Append ``table`` (its columns picked and cast to the sink's schema) and write every row group of
        ``row_group`` rows now complete."""
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
        """Write the last (shorter) row group and close the file; with no rows at all, write the empty table."""
        if self.pending:
            self._write(pa.concat_tables(self.buf))
        if self.writer is None:  # no rows at all
            pq.write_table(self.schema.empty_table(), self.path, row_group_size=self.rg, **self.options)
        else:
            self.writer.close()


def merge_parts(parts: Path, order: str, consume: Callable[[pa.Table], None], contiguous: bool) -> int:
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


def write_parts(df: DataFrame, d: Path) -> None:
    """Write ``df`` as Spark's parquet part files into the new directory ``d`` (fails if it exists)."""
    df.write.mode("error").parquet(d.resolve().as_uri())
