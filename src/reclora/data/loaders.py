"""Loaders from each raw format to the canonical tables (see schema.py).

Every loader returns ``Tables(interactions, items, users)`` with canonical
column names and dtypes. Loaders reject *structural* problems (missing files,
wrong column counts, unparsable numbers) with a :class:`DataError` naming the
file; *value* problems (out-of-range ratings, empty titles, duplicates, future
timestamps) are kept so the Great Expectations gate can name them.
"""

from __future__ import annotations


from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from reclora.errors import DataError

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip


@dataclass
class Tables:
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame


def _need(path: Path, *names: str) -> Path:
    """Return the first existing file among ``names`` in ``path`` or raise a clear DataError."""
    if not path.is_dir():
        raise DataError(f"data directory not found: {path}")
    for n in names:
        if (path / n).is_file():
            return path / n
    raise DataError(f"{path}: missing {' or '.join(names)}")


def _read(path: Path, reader: Callable[..., pd.DataFrame], **kw: Any) -> pd.DataFrame:
    try:
        return reader(path, **kw)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        raise DataError(f"{path}: cannot parse ({type(e).__name__}: {str(e).splitlines()[0]})") from e


def _read_sep(path: Path, sep: str, names: list[str], encoding: str = "latin-1", **kw: Any) -> pd.DataFrame:
    """Read a headerless separated file whose separator may be multi-character (``::``)."""
    if len(sep) > 1:
        text = path.read_bytes().decode(encoding)
        rows = [line.split(sep) for line in text.splitlines() if line.strip()]
        bad = next((i for i, r in enumerate(rows) if len(r) != len(names)), None)
        if bad is not None:
            raise DataError(f"{path}: line {bad + 1} has {len(rows[bad])} fields, expected {len(names)}")
        return pd.DataFrame(rows, columns=names)
    df = _read(path, pd.read_csv, sep=sep, header=None, encoding=encoding, dtype=str,
               keep_default_na=False, quoting=3, **kw)  # fmt: skip
    if df.shape[1] != len(names):
        raise DataError(f"{path}: {df.shape[1]} columns, expected {len(names)}")
    df.columns = names
    return df


def _to_num(df: pd.DataFrame, col: str, dtype: str, where: Path) -> pd.Series:
    s = pd.to_numeric(df[col].astype(str).str.strip() if df[col].dtype == object else df[col], errors="coerce")
    bad = s.isna() & df[col].notna() & (df[col].astype(str).str.strip() != "")
    if bad.any():
        ex = df.loc[bad, col].astype(str).head(3).tolist()
        raise DataError(f"{where}: column {col!r} has non-numeric values, e.g. {ex}")
    if dtype.startswith("int"):
        if s.isna().any():
            return s.astype("Int64")  # keep nulls visible to the validation gate
        return s.astype(dtype)
    return s.astype(dtype)


def _canonical_interactions(df: pd.DataFrame, where: Path) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "user_id": _to_num(df, "user_id", "int64", where),
            "item_id": _to_num(df, "item_id", "int64", where),
            "rating": _to_num(df, "rating", "float64", where),
            "timestamp": _to_num(df, "timestamp", "int64", where),
        }
    )
    return out.reset_index(drop=True)


def _users_from_interactions(inter: pd.DataFrame) -> pd.DataFrame:
    ids = np.sort(inter["user_id"].dropna().unique())
    return pd.DataFrame({"user_id": ids.astype("int64")})


def load_ml100k(path: str | Path) -> Tables:
    """MovieLens-100K: u.data (tab), u.item and u.user ('|', latin-1)."""
    path = Path(path)
    inter = _read_sep(_need(path, "u.data"), "\t", ["user_id", "item_id", "rating", "timestamp"])
    inter = _canonical_interactions(inter, path / "u.data")
    item_cols = ["item_id", "title", "release_date", "video_release_date", "url", *ML100K_GENRES]
    items = _read_sep(_need(path, "u.item"), "|", item_cols)
    flags = items[ML100K_GENRES].apply(pd.to_numeric, errors="coerce").fillna(0).astype(int).to_numpy()
    genres = ["|".join(g for g, f in zip(ML100K_GENRES, row) if f) for row in flags]
    items = pd.DataFrame(
        {
            "item_id": _to_num(items, "item_id", "int64", path / "u.item"),
            "title": items["title"].str.strip(),
            "genres": genres,
            "release_date": items["release_date"],
        }
    )
    users = _read_sep(_need(path, "u.user"), "|", ["user_id", "age", "gender", "occupation", "zip"])
    users = pd.DataFrame(
        {
            "user_id": _to_num(users, "user_id", "int64", path / "u.user"),
            "age": _to_num(users, "age", "int64", path / "u.user"),
            "gender": users["gender"],
            "occupation": users["occupation"],
        }
    )
    return Tables(inter, items, users)


ML1M_OCCUPATIONS = [
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
]  # fmt: skip


def load_ml1m(path: str | Path) -> Tables:
    """MovieLens-1M: ratings.dat, movies.dat, users.dat ('::'-separated, latin-1)."""
    path = Path(path)
    inter = _read_sep(_need(path, "ratings.dat"), "::", ["user_id", "item_id", "rating", "timestamp"])
    inter = _canonical_interactions(inter, path / "ratings.dat")
    items = _read_sep(_need(path, "movies.dat"), "::", ["item_id", "title", "genres"])
    items["item_id"] = _to_num(items, "item_id", "int64", path / "movies.dat")
    items["title"] = items["title"].str.strip()
    users = _read_sep(_need(path, "users.dat"), "::", ["user_id", "gender", "age", "occupation", "zip"])
    occ = _to_num(users, "occupation", "int64", path / "users.dat")
    users = pd.DataFrame(
        {
            "user_id": _to_num(users, "user_id", "int64", path / "users.dat"),
            "age": _to_num(users, "age", "int64", path / "users.dat"),
            "gender": users["gender"],
            "occupation": [ML1M_OCCUPATIONS[o] if 0 <= o < len(ML1M_OCCUPATIONS) else "other" for o in occ],
        }
    )
    return Tables(inter, items, users)


def _read_csv(path: Path, usecols: list[str]) -> pd.DataFrame:
    df = _read(path, pd.read_csv, dtype=str, keep_default_na=False)
    missing = [c for c in usecols if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing} (has {list(df.columns)})")
    return df


def load_ml25m(path: str | Path) -> Tables:
    """MovieLens CSV releases (25M, 20M, latest, latest-small): ratings.csv + movies.csv."""
    path = Path(path)
    ratings = _read_csv(_need(path, "ratings.csv"), ["userId", "movieId", "rating", "timestamp"])
    ratings = ratings.rename(columns={"userId": "user_id", "movieId": "item_id"})
    inter = _canonical_interactions(ratings, path / "ratings.csv")
    movies = _read_csv(_need(path, "movies.csv"), ["movieId", "title", "genres"])
    items = pd.DataFrame(
        {
            "item_id": _to_num(movies, "movieId", "int64", path / "movies.csv"),
            "title": movies["title"].str.strip(),
            "genres": movies["genres"].replace("(no genres listed)", ""),
        }
    )
    return Tables(inter, items, _users_from_interactions(inter))


def load_goodbooks(path: str | Path) -> Tables:
    """GoodBooks-10K: ratings.csv (user_id, book_id, rating) + books.csv.

    The release has no timestamps; the row order of ratings.csv is used as the
    event order (timestamp = row number), as is usual for this data set.
    """
    path = Path(path)
    ratings = _read_csv(_need(path, "ratings.csv"), ["user_id", "book_id", "rating"])
    if "timestamp" not in ratings.columns:
        ratings["timestamp"] = np.arange(len(ratings)).astype(str)
    inter = _canonical_interactions(ratings.rename(columns={"book_id": "item_id"}), path / "ratings.csv")
    books = _read_csv(_need(path, "books.csv"), ["book_id", "title"])
    title = books["title"].where(books["title"].str.strip() != "", books.get("original_title", books["title"]))
    items = pd.DataFrame(
        {
            "item_id": _to_num(books, "book_id", "int64", path / "books.csv"),
            "title": title.str.strip(),
            "genres": books["authors"] if "authors" in books.columns else "",
        }
    )
    return Tables(inter, items, _users_from_interactions(inter))


def _read_table(path: Path, stem: str, required: bool = True) -> pd.DataFrame | None:
    for ext, reader in ((".parquet", pd.read_parquet), (".csv", pd.read_csv)):
        p = path / f"{stem}{ext}"
        if p.is_file():
            return _read(p, reader)
    if required:
        raise DataError(f"{path}: missing {stem}.parquet or {stem}.csv")
    return None


def load_table(path: str | Path, spec: dict[str, Any]) -> Tables:
    """Generic parquet/CSV tables mapped onto the canonical columns by ``spec`` (params data.table)."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"data directory not found: {path}")
    cols: dict[str, str] = spec.get("columns", {})
    src = {canon: cols.get(canon, canon) for canon in ("user_id", "item_id", "rating", "timestamp", "title", "genres")}
    inter = _read_table(path, spec.get("interactions", "interactions"))
    assert inter is not None
    missing = [s for c, s in src.items() if c in ("user_id", "item_id", "rating", "timestamp") and s not in inter]
    if missing:
        raise DataError(f"{path}: interactions table lacks columns {missing} (has {list(inter.columns)})")
    ts = inter[src["timestamp"]]
    if not pd.api.types.is_numeric_dtype(ts):
        parsed = pd.to_datetime(ts, errors="coerce", utc=True)
        if parsed.isna().any():
            raise DataError(f"{path}: column {src['timestamp']!r} is neither unix seconds nor a date")
        inter[src["timestamp"]] = parsed.astype("int64") // 10**9
    inter = _canonical_interactions(inter.rename(columns={v: k for k, v in src.items()}), path)
    items = _read_table(path, spec.get("items", "items"), required=False)
    if items is None:
        ids = np.sort(inter["item_id"].dropna().unique())
        items = pd.DataFrame({"item_id": ids, "title": [f"item {i}" for i in ids], "genres": ""})
    else:
        items = items.rename(columns={src["item_id"]: "item_id", src["title"]: "title", src["genres"]: "genres"})
        if "title" not in items:
            raise DataError(f"{path}: items table lacks a title column ({src['title']!r})")
        if "genres" not in items:
            items["genres"] = ""
        items["item_id"] = _to_num(items, "item_id", "int64", path)
    users = _read_table(path, spec.get("users", "users"), required=False)
    if users is None:
        users = _users_from_interactions(inter)
    else:
        users = users.rename(columns={src["user_id"]: "user_id"})
        users["user_id"] = _to_num(users, "user_id", "int64", path)
    return Tables(inter, items, users)


DATASETS = ("ml-100k", "ml-1m", "ml-25m", "goodbooks-10k", "synthetic", "table")

LOADERS: dict[str, Callable[[Path], Tables]] = {
    "ml-100k": load_ml100k,
    "ml-1m": load_ml1m,
    "ml-25m": load_ml25m,
    "goodbooks-10k": load_goodbooks,
}


