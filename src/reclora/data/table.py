"""The generic table format (``data.dataset: table``): parquet or CSV tables of interactions, items and
users, their columns mapped onto the canonical ones by params ``data.table``.

The mapping must be unambiguous (:func:`check_mapping`); a misspelt key of ``data.table`` is a
ConfigError (:func:`table_source_columns`). The timestamp column may be unix seconds, a datetime column of
any unit and zone, or ISO 8601 text (:func:`reclora.data.cells.unix_seconds`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reclora.data.canonical import Tables, canonical_interactions, interaction_users
from reclora.data.cells import exact_int64
from reclora.data.files import read_csv, read_csv_arrow, read_parquet
from reclora.errors import DataError


def table_file(path: Path, stem: str) -> Path | None:
    """``stem``.parquet (a file, or a directory of part files) or ``stem``.csv in ``path``; None if neither."""
    p = path / f"{stem}.parquet"
    if p.is_file() or p.is_dir():
        return p
    p = path / f"{stem}.csv"
    return p if p.is_file() else None


def need_table_file(path: Path, stem: str) -> Path:
    """:func:`table_file`, or a DataError naming ``path`` and both names when neither exists."""
    p = table_file(path, stem)
    if p is None:
        raise DataError(f"{path}: missing {stem}.parquet or {stem}.csv")
    return p


def _read_table(path: Path, stem: str, required: bool = True, text: bool = True) -> tuple[pd.DataFrame, Path] | None:
    """``stem``.parquet (typed; a file or a directory of part files) or ``stem``.csv (every cell as str,
    parsed exactly later; ``text=False``: the fast reader for a table without text) and its path."""
    p = need_table_file(path, stem) if required else table_file(path, stem)
    if p is None:
        return None
    if p.suffix == ".parquet":
        return read_parquet(p), p
    return (read_csv(p, []) if text else read_csv_arrow(p, [])), p


INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
TABLE_KEYS = ("interactions", "items", "users", "columns")
TABLE_COLUMNS = (*INTERACTION_COLUMNS, "title", "genres")


def check_mapping(columns: list[str], where: Path, src: dict[str, str], canon: tuple[str, ...]) -> None:
    """Refuse a ``data.table.columns`` mapping that is ambiguous for a file with ``columns``: two canonical
    columns mapped to one source column, or a canonical name mapped elsewhere while the file has a column of
    that very name (which one is meant?). DataError naming the file and the mapping."""
    used = {c: src[c] for c in canon if src[c] in columns}
    by_source: dict[str, list[str]] = {}
    for c, s_ in used.items():
        by_source.setdefault(s_, []).append(c)
    for s_, cs in by_source.items():
        if len(cs) > 1:
            raise DataError(
                f"{where}: the mapping data.table.columns maps {' and '.join(cs)} to the same column {s_!r}; "
                "map each to its own column"
            )
    sources = set(used.values())
    for c in canon:
        s_ = src[c]
        if s_ != c and c in columns and c not in sources:
            has = "" if s_ in columns else f" (the file has no column {s_!r})"
            raise DataError(
                f"{where}: the mapping data.table.columns.{c} = {s_!r}{has} collides with the file's own "
                f"column {c!r}: which one is the {c} is ambiguous; drop or rename one of them, or map {c} to {c!r}"
            )


def _mapped(df: pd.DataFrame, where: Path, src: dict[str, str], canon: tuple[str, ...]) -> pd.DataFrame:
    """``df`` with the canonical columns renamed from their sources, after :func:`check_mapping`."""
    check_mapping(list(df.columns), where, src, canon)
    return df.rename(columns={src[c]: c for c in canon if src[c] in df.columns and src[c] != c})


def load_table(path: str | Path, spec: dict[str, Any]) -> Tables:
    """Generic parquet/CSV tables mapped onto the canonical columns by ``spec`` (params data.table).

    The timestamp column may be unix seconds (integers), a datetime column of any
    unit and zone, or ISO 8601 text (see :func:`unix_seconds`). A table may be a parquet file, a
    directory of parquet part files or a CSV file; the mapping must be unambiguous (:func:`check_mapping`).
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"data directory not found: {path}")
    src = table_source_columns(spec)
    found = _read_table(path, spec.get("interactions", "interactions"), text=False)
    assert found is not None
    inter, where = found
    missing = [s for c, s in src.items() if c in INTERACTION_COLUMNS and s not in inter]
    if missing:
        raise DataError(f"{where}: interactions table lacks columns {missing} (has {list(inter.columns)})")
    inter = _mapped(inter, where, src, INTERACTION_COLUMNS)[list(INTERACTION_COLUMNS)]
    inter = canonical_interactions(inter, where, src, timestamps=True)
    items = table_items(path, spec, lambda: np.sort(inter["item_id"].dropna().unique()))
    users = table_users(path, spec, lambda: interaction_users(inter))
    return Tables(inter, items, users)


def table_source_columns(spec: dict[str, Any]) -> dict[str, str]:
    """canonical column -> source column of a generic table (params data.table.columns; default: the same name).

    Raises ConfigError for a key of ``data.table`` or ``data.table.columns`` it does not know (a misspelt
    ``itemid`` would otherwise be ignored) or a source that is not a column name."""
    from reclora.errors import ConfigError

    unknown = sorted(set(spec) - set(TABLE_KEYS))
    if unknown:
        raise ConfigError(f"data.table has unknown keys {unknown} (known: {', '.join(TABLE_KEYS)})")
    cols: dict[str, str] = spec.get("columns") or {}
    if not isinstance(cols, dict):
        raise ConfigError(f"data.table.columns must map canonical columns to source columns, got {cols!r}")
    unknown = sorted(set(cols) - set(TABLE_COLUMNS))
    if unknown:
        raise ConfigError(f"data.table.columns has unknown keys {unknown} (known: {', '.join(TABLE_COLUMNS)})")
    bad = {k: v for k, v in cols.items() if not isinstance(v, str) or not v}
    if bad:
        raise ConfigError(f"data.table.columns must name source columns (text), got {bad}")
    return {canon: cols.get(canon, canon) for canon in TABLE_COLUMNS}


def table_items(path: str | Path, spec: dict[str, Any], item_ids: Callable[[], Any]) -> pd.DataFrame:
    """The items table of a generic table directory: ``items`` (parquet or CSV) mapped by ``spec``, else one
    row per interacted item (``item_ids()``: the sorted distinct item ids) titled "item <id>"."""
    path = Path(path)
    src = table_source_columns(spec)
    found = _read_table(path, spec.get("items", "items"), required=False)
    if found is None:
        ids = item_ids()
        items = pd.DataFrame({"item_id": ids, "title": [f"item {i}" for i in ids], "genres": ""})
    else:
        items, where = found
        items = _mapped(items, where, src, ("item_id", "title", "genres"))
        if "title" not in items or "item_id" not in items:
            raise DataError(
                f"{where}: items table lacks an item id or a title column ({src['item_id']!r}, {src['title']!r})"
            )
        if "genres" not in items:
            items["genres"] = ""
        items["item_id"] = exact_int64(items["item_id"], where, src["item_id"]).set_axis(items.index)
    return items


def table_users(
    path: str | Path, spec: dict[str, Any], users_from_interactions: Callable[[], pd.DataFrame]
) -> pd.DataFrame:
    """The users table of a generic table directory: ``users`` (parquet or CSV) mapped by ``spec``, else
    ``users_from_interactions()`` (one row per distinct user id, sorted)."""
    path = Path(path)
    src = table_source_columns(spec)
    found = _read_table(path, spec.get("users", "users"), required=False)
    if found is None:
        users = users_from_interactions()
    else:
        users, where = found
        users = _mapped(users, where, src, ("user_id",))
        if "user_id" not in users:
            raise DataError(f"{where}: users table lacks the user id column ({src['user_id']!r})")
        users["user_id"] = exact_int64(users["user_id"], where, src["user_id"]).set_axis(users.index)
    return users
