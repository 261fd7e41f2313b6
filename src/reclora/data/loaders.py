"""Loaders from each raw format to the canonical tables (see schema.py), and the registry of data sets.

Every loader returns ``Tables(interactions, items, users)`` with canonical
column names and dtypes. Loaders reject *structural* problems (missing files,
wrong column counts, unparsable numbers) with a :class:`DataError` naming the
file; *value* problems (out-of-range ratings, empty titles, duplicates, future
timestamps) are kept so the Great Expectations gate can name them.

The loaders by family of raw formats: :mod:`reclora.data.movielens` (100K, 1M and the CSV releases),
:mod:`reclora.data.goodbooks`, :mod:`reclora.data.table` (generic parquet/CSV tables mapped by params
``data.table``); what they share: :mod:`reclora.data.files` (raw text, CSV and parquet files, read
exactly), :mod:`reclora.data.cells` (ids, times and ratings read exactly or refused) and
:mod:`reclora.data.canonical` (:class:`Tables`). Their public names are importable from here too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from reclora.data.canonical import TIME_SOURCES, Tables
from reclora.data.cells import INT64_MAX, INT64_MIN, exact_int64, unix_seconds
from reclora.data.files import check_columns, csv_header, decode_text, parquet_columns, parquet_parts, read_parquet
from reclora.data.goodbooks import load_goodbooks
from reclora.data.movielens import ML1M_OCCUPATIONS, ML100K_GENRES, load_ml1m, load_ml25m, load_ml100k, ml25m_items
from reclora.data.table import (
    INTERACTION_COLUMNS,
    TABLE_COLUMNS,
    TABLE_KEYS,
    check_mapping,
    load_table,
    table_file,
    table_items,
    table_source_columns,
    table_users,
)

DATASETS = ("ml-100k", "ml-1m", "ml-25m", "goodbooks-10k", "synthetic", "table")

LOADERS: dict[str, Callable[[Path], Tables]] = {
    "ml-100k": load_ml100k,
    "ml-1m": load_ml1m,
    "ml-25m": load_ml25m,
    "goodbooks-10k": load_goodbooks,
}

__all__ = [
    "DATASETS",
    "INT64_MAX",
    "INT64_MIN",
    "INTERACTION_COLUMNS",
    "LOADERS",
    "ML100K_GENRES",
    "ML1M_OCCUPATIONS",
    "TABLE_COLUMNS",
    "TABLE_KEYS",
    "TIME_SOURCES",
    "Tables",
    "check_columns",
    "check_mapping",
    "csv_header",
    "decode_text",
    "exact_int64",
    "load_goodbooks",
    "load_ml100k",
    "load_ml1m",
    "load_ml25m",
    "load_table",
    "ml25m_items",
    "parquet_columns",
    "parquet_parts",
    "read_parquet",
    "table_file",
    "table_items",
    "table_source_columns",
    "table_users",
    "unix_seconds",
]
