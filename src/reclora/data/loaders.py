"""Loaders from each raw format to the canonical tables (see schema.py).

Every loader returns ``Tables(interactions, items, users)`` with canonical
column names and dtypes. Loaders reject *structural* problems (missing files,
wrong column counts, unparsable numbers) with a :class:`DataError` naming the
file; *value* problems (out-of-range ratings, empty titles, duplicates, future
timestamps) are kept so the Great Expectations gate can name them.

Ids and times are read exactly or refused: a value that is not an exact integer
within the 64-bit range (``2.9``, ``inf``, ``nan``, ``1e30``, 2**64) is a
:class:`DataError` naming the file, the column and an example, never truncated
or wrapped. An empty cell is a null the gate names. Datetime columns of the
generic table are converted by their own unit and zone (naive = UTC) to unix
seconds (sub-second parts are floored). Raw text is decoded as UTF-8, falling
back to latin-1 per file only where UTF-8 fails (the MovieLens ``.dat`` and
``u.item`` releases are latin-1).

Nothing is guessed or cut: a header that repeats a column name, a ``data.table.columns`` mapping
that collides with a column of the file or maps two columns to one, and a line whose number of
fields differs from the header's are refused naming the file (and the line); every text cell
(titles, genres, user attributes) is kept exactly as written, surrounding spaces and control
characters included (lines end only at ``\n``, or ``\r\n`` in the headerless formats).
A parquet "file" may be a directory of part files (what Spark, Hive and Dask write, with
``_SUCCESS`` beside them): it is read as one data set, part files in natural name order.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from reclora.errors import DataError

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip


# where the order of a user's events comes from: real timestamps, or the row order of the raw file
# (GoodBooks-10K has no times; there a repeated (user, item) pair is the same event twice)
TIME_SOURCES = ("timestamp", "row_order")


@dataclass
class Tables:
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    time_source: str = "timestamp"


def _need(path: Path, *names: str) -> Path:
    """Return the first existing file among ``names`` in ``path`` or raise a clear DataError."""
    if not path.is_dir():
        raise DataError(f"data directory not found: {path}")
    for n in names:
        if (path / n).is_file():
            return path / n
    raise DataError(f"{path}: missing {' or '.join(names)}")


def decode_text(path: Path) -> str:
    """The text of ``path``: UTF-8 when it decodes as UTF-8, else latin-1 (every byte is valid latin-1)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a headerless text file. A line ends at ``\n`` only; in a file whose every line
    ends with ``\r\n`` (Windows line ends) that ``\r`` goes too. Every other character, control characters
    and ``str.splitlines``' other breaks (``\r``, ``\x1c``, ``\x85``, ``\u2028``) included, is part of the
    line. Empty lines at the end are skipped; an empty line before the last record is a DataError (a line
    break inside a value would otherwise cut it silently)."""
    lines = decode_text(path).split("\n")
    while lines and lines[-1] in ("", "\r"):
        lines.pop()  # the final line end(s)
    crlf = bool(lines) and all(ln.endswith("\r") for ln in lines)
    for n, line in enumerate(lines, 1):
        if crlf:
            line = line[:-1]
        if not line:
            raise DataError(f"{path}: line {n} is empty (a line break inside a value?); remove it or fix the value before it")
        yield n, line


def _read_sep(path: Path, sep: str, names: list[str]) -> pd.DataFrame:
    """Read a headerless ``sep``-separated file (``\t``, ``|``, ``::``; all cells as str, exactly as written).

    Raises DataError naming the file and the line when a line has another number of fields, or (``::``)
    holds a run of colons that could split two ways (a value that starts or ends with ``:``)."""
    odd_run = re.compile(rf"(?:{re.escape(sep[0])})+") if len(sep) > 1 and len(set(sep)) == 1 else None
    rows = []
    for n, line in _lines(path):
        row = line.split(sep)
        if len(row) != len(names):
            raise DataError(f"{path}: line {n} has {len(row)} fields, expected {len(names)} "
                            f"({sep!r}-separated: {', '.join(names)}): {line[:120]!r}")
        if odd_run is not None and any(len(m) > len(sep) and len(m) % len(sep) for m in odd_run.findall(line)):
            raise DataError(f"{path}: line {n} is ambiguous: a run of {sep[0]!r} longer than the {sep!r} separator "
                            f"(a value that starts or ends with {sep[0]!r}) splits two ways: {line[:120]!r}")
        rows.append(row)
    return pd.DataFrame(rows, columns=names, dtype=object)


def check_columns(names: list[str], where: Path) -> None:
    """DataError naming ``where`` and the column when a header repeats a column name (never guess which copy)."""
    counts = Counter(names)
    dup = [n for n, c in counts.items() if c > 1]
    if dup:
        shown = ", ".join(f"{n!r} ({counts[n]} times)" for n in dup)
        raise DataError(f"{where}: the header repeats column {shown}; a repeated column is ambiguous: rename or "
                        f"drop the extra copies (columns: {', '.join(map(repr, names))})")


def csv_header(path: Path) -> list[str]:
    """The column names of a CSV file's header (first record; UTF-8, else latin-1; a BOM dropped), checked by
    :func:`check_columns`. Reads only the start of the file."""
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        text = head[: e.start].decode("utf-8") if e.start > len(head) - 4 else head.decode("latin-1")
    names = next(csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline="")), [])
    if not names:
        raise DataError(f"{path}: empty file (no header)")
    check_columns(names, path)
    return names


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# a decimal number in ASCII (what Decimal may parse exactly); no inf/nan, no unicode digits
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def _exact_int(text: str) -> int | None:
    """The integer ``text`` denotes exactly (``"7"``, ``"7.0"``, ``"7e2"``) within int64, else None."""
    if not _DECIMAL.fullmatch(text):
        return None
    d = Decimal(text)
    if d.is_zero():
        return 0
    if d.adjusted() > 18 or d != d.to_integral_value():  # adjusted() first: never build a 10**30 integer
        return None
    i = int(d)
    return i if INT64_MIN <= i <= INT64_MAX else None


def _with_nulls(values: np.ndarray, null: np.ndarray) -> pd.Series:
    """int64 ``values`` as a series: ``int64``, or ``Int64`` with nulls where ``null`` (kept for the gate)."""
    out = pd.Series(np.where(null, 0, values).astype("int64"))
    if null.any():
        out = out.astype("Int64")
        out[null] = pd.NA
    return out


def _refuse(where: Path, col: str, what: str, examples: list[Any]) -> DataError:
    shown = ", ".join(repr(str(e)) for e in examples[:3])
    return DataError(f"{where}: column {col!r} must hold {what}, e.g. got {shown}")


def exact_int64(values: pd.Series, where: Path, col: str, what: str = "ids") -> pd.Series:
    """Read ``values`` (text or numbers) as exact 64-bit integers.

    Returns an ``int64`` series, or ``Int64`` with nulls where cells are empty/null
    (kept so the validation gate names them). Raises :class:`DataError` naming
    ``where``, ``col`` and up to three examples for any value that is not an
    exact integer in [-2**63, 2**63 - 1]: fractions, inf, nan, words, booleans,
    datetimes, 1e30. ``what`` words the requirement ("ids", "unix seconds").
    """
    need = f"{what} as exact integers (whole numbers within the 64-bit range)"
    s = values.reset_index(drop=True)
    kind = s.dtype.kind
    if kind in "iu":  # numpy or nullable integers: exact already, only uint64 may exceed int64
        bad = s.notna() & (s > INT64_MAX) if kind == "u" else pd.Series(False, index=s.index)
        if bad.any():
            raise _refuse(where, col, need, s[bad].tolist())
        return s.astype("Int64" if s.isna().any() else "int64")
    if kind == "f":  # NaN is a null (parquet nulls arrive as NaN); inf and fractions are refused
        v = s.to_numpy(dtype="float64", na_value=np.nan)
        null = np.isnan(v)
        with np.errstate(invalid="ignore"):
            ok = null | (np.isfinite(v) & (np.floor(v) == v) & (v >= -(2.0**63)) & (v < 2.0**63))
        if not ok.all():
            raise _refuse(where, col, need, s[~ok].tolist())
        return _with_nulls(v, null)
    if kind != "O" and not isinstance(s.dtype, pd.StringDtype):
        raise _refuse(where, col, need, [f"{s.dtype} values"])
    if pd.api.types.infer_dtype(s, skipna=False) == "string":  # fast path: all plain int64 literals
        num = pd.to_numeric(s, errors="coerce")  # int64 only when every value is one (spaces allowed)
        if num.dtype == np.int64:
            return num.astype("int64")
    null = s.isna()
    booleans = s.map(lambda v: isinstance(v, (bool, np.bool_)))  # str(True) is not an id either
    if booleans.any():
        raise _refuse(where, col, need, s[booleans].tolist())
    text = s.where(null, s.astype(str).str.strip())
    empty = null | (text == "")
    vals = text[~empty]
    num = pd.to_numeric(vals, errors="coerce")
    if num.dtype != np.int64:  # something is not a plain int64 literal: decide value by value, exactly
        exact = {u: _exact_int(u) for u in pd.unique(vals)}
        bad = vals.map(exact).isna()
        if bad.any():
            raise _refuse(where, col, need, list(dict.fromkeys(vals[bad].tolist())))
        num = vals.map(exact).astype("int64")
    full = np.zeros(len(s), dtype="int64")
    full[~empty.to_numpy()] = num.to_numpy(dtype="int64")
    return _with_nulls(full, empty.to_numpy())


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _datetime_seconds(v: Any) -> int | None:
    """Unix seconds (floored) of an ISO 8601 string or a date/datetime object, naive = UTC; None if neither.

    Each value is parsed on its own (``datetime.fromisoformat``), so every value keeps its own offset
    (pandas' vectorized ISO parser applies an earlier value's offset to a later naive one)."""
    if isinstance(v, str):
        try:
            v = dt.datetime.fromisoformat(v.strip())
        except ValueError:
            return None
    if isinstance(v, dt.date) and not isinstance(v, dt.datetime):
        v = dt.datetime(v.year, v.month, v.day)
    if not isinstance(v, dt.datetime):
        return None
    when = v if v.tzinfo is not None else v.replace(tzinfo=dt.timezone.utc)
    secs = (when - _EPOCH) // dt.timedelta(seconds=1)
    return secs if INT64_MIN <= secs <= INT64_MAX else None


def unix_seconds(values: pd.Series, where: Path, col: str) -> pd.Series:
    """Event times as exact unix seconds (int64, or Int64 with nulls for empty cells).

    Accepts integers (already unix seconds, read exactly as by :func:`exact_int64`),
    datetime columns of any unit (s, ms, us, ns) naive (= UTC) or zone-aware, and
    text that is all integers or all ISO 8601 datetimes (each with its own offset,
    or naive = UTC). Sub-second parts are floored. Raises :class:`DataError`
    naming the column and an example for anything else.
    """
    s = values.reset_index(drop=True)
    if not isinstance(s.dtype, pd.DatetimeTZDtype) and s.dtype.kind != "M":
        try:
            return exact_int64(s, where, col, "unix seconds")
        except DataError:
            if s.dtype.kind != "O" and not isinstance(s.dtype, pd.StringDtype):
                raise
            # text that is not all integers: then every value must be a datetime
        empty = s.isna() | s.map(lambda v: isinstance(v, str) and not v.strip())
        secs = {v: _datetime_seconds(v) for v in pd.unique(s[~empty])}
        bad = [v for v, x in secs.items() if x is None]
        if bad:
            raise _refuse(where, col, "unix seconds (integers) or ISO 8601 datetimes, one kind per column", bad)
        full = np.zeros(len(s), dtype="int64")
        full[~empty.to_numpy()] = s[~empty].map(secs).to_numpy(dtype="int64")
        return _with_nulls(full, empty.to_numpy())
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    # numpy floors to the second whatever the unit; NaT becomes a null
    return _with_nulls(s.to_numpy().astype("datetime64[s]").astype("int64"), s.isna().to_numpy())


def _to_float(df: pd.DataFrame, col: str, where: Path, name: str | None = None) -> pd.Series:
    """A numeric column as float64 (ratings); nulls and out-of-range values are kept for the gate."""
    raw = df[col].reset_index(drop=True)
    if raw.dtype.kind in "iuf":
        return raw.astype("float64")
    s = pd.to_numeric(raw.astype(str) if raw.dtype.kind == "b" else raw, errors="coerce")  # spaces allowed
    missing = s.isna()
    if missing.any():  # an empty cell is a null for the gate; anything else that is not a number is refused
        bad = missing & raw.notna() & (raw.astype(str).str.strip() != "")
        if bad.any():
            raise _refuse(where, name or col, "numbers", raw[bad].tolist())
    return s.astype("float64")


def _ids(df: pd.DataFrame, col: str, where: Path, name: str | None = None) -> pd.Series:
    return exact_int64(df[col], where, name or col)


def _canonical_interactions(
    df: pd.DataFrame, where: Path, names: dict[str, str] | None = None, timestamps: bool = False
) -> pd.DataFrame:
    """The four canonical columns, read exactly; ``names`` maps canonical -> source column (for errors).

    ``timestamps``: the time column may hold datetimes (generic tables); else it must be unix seconds.
    """
    n = names or {}
    ts = (unix_seconds if timestamps else lambda v, w, c: exact_int64(v, w, c, "unix seconds"))(
        df["timestamp"], where, n.get("timestamp", "timestamp")
    )
    out = pd.DataFrame(
        {
            "user_id": _ids(df, "user_id", where, n.get("user_id")),
            "item_id": _ids(df, "item_id", where, n.get("item_id")),
            "rating": _to_float(df, "rating", where, n.get("rating")),
            "timestamp": ts,
        }
    )
    return out.reset_index(drop=True)


def _users_from_interactions(inter: pd.DataFrame) -> pd.DataFrame:
    ids = np.sort(inter["user_id"].dropna().unique())
    return pd.DataFrame({"user_id": ids.astype("int64")})


def load_ml100k(path: str | Path) -> Tables:
    """MovieLens-100K: u.data (tab), u.item and u.user ('|'; UTF-8, else latin-1 as released)."""
    path = Path(path)
    inter = _read_sep(_need(path, "u.data"), "\t", ["user_id", "item_id", "rating", "timestamp"])
    inter = _canonical_interactions(inter, path / "u.data")
    item_cols = ["item_id", "title", "release_date", "video_release_date", "url", *ML100K_GENRES]
    items = _read_sep(_need(path, "u.item"), "|", item_cols)
    flags = items[ML100K_GENRES].apply(pd.to_numeric, errors="coerce").fillna(0).astype(int).to_numpy()
    genres = ["|".join(g for g, f in zip(ML100K_GENRES, row) if f) for row in flags]
    items = pd.DataFrame(
        {
            "item_id": _ids(items, "item_id", path / "u.item"),
            "title": items["title"],
            "genres": genres,
            "release_date": items["release_date"],
        }
    )
    users = _read_sep(_need(path, "u.user"), "|", ["user_id", "age", "gender", "occupation", "zip"])
    users = pd.DataFrame(
        {
            "user_id": _ids(users, "user_id", path / "u.user"),
            "age": exact_int64(users["age"], path / "u.user", "age", "ages"),
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
    """MovieLens-1M: ratings.dat, movies.dat, users.dat ('::'-separated; UTF-8, else latin-1 as released)."""
    path = Path(path)
    inter = _read_sep(_need(path, "ratings.dat"), "::", ["user_id", "item_id", "rating", "timestamp"])
    inter = _canonical_interactions(inter, path / "ratings.dat")
    items = _read_sep(_need(path, "movies.dat"), "::", ["item_id", "title", "genres"])
    items["item_id"] = _ids(items, "item_id", path / "movies.dat")
    users = _read_sep(_need(path, "users.dat"), "::", ["user_id", "gender", "age", "occupation", "zip"])
    occ = exact_int64(users["occupation"], path / "users.dat", "occupation", "occupation codes")
    users = pd.DataFrame(
        {
            "user_id": _ids(users, "user_id", path / "users.dat"),
            "age": exact_int64(users["age"], path / "users.dat", "age", "ages"),
            "gender": users["gender"],
            "occupation": [
                ML1M_OCCUPATIONS[o] if not pd.isna(o) and 0 <= o < len(ML1M_OCCUPATIONS) else "other" for o in occ
            ],
        }
    )
    return Tables(inter, items, users)


def _read_csv(path: Path, usecols: list[str]) -> pd.DataFrame:
    """A CSV with a header, every cell as str exactly as written (no type guessing: ids and times are parsed
    exactly later; quoted fields may hold separators, quotes and line breaks). Python's csv module: for the
    files that hold text (titles, genres, attributes). Raises DataError naming the file for a repeated or
    missing column and naming the line for a record whose number of fields differs from the header's."""
    text = decode_text(path).removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[list[str]] = []
    try:
        header = next(reader, [])
        if not header:
            raise DataError(f"{path}: empty file (no header)")
        check_columns(header, path)
        missing = [c for c in usecols if c not in header]
        if missing:
            raise DataError(f"{path}: missing columns {missing} (has {header})")
        for row in reader:
            if len(row) != len(header):
                if not row:
                    continue  # an empty line is no record
                raise DataError(f"{path}: line {reader.line_num} has {len(row)} fields, expected {len(header)} "
                                f"(the header's); a line break or separator inside a value must be quoted: {row[:6]!r}")
            rows.append(row)
    except csv.Error as e:
        raise DataError(f"{path}: line {reader.line_num}: cannot parse ({e})") from e
    return pd.DataFrame(rows, columns=header, dtype=object) if rows else pd.DataFrame({c: pd.Series(dtype=object) for c in header})


def _read_csv_arrow(path: Path, usecols: list[str]) -> pd.DataFrame:
    """Like :func:`_read_csv` for large files without text (ratings): pyarrow's multi-threaded reader, every
    cell as text; a record with another number of fields than the header is a DataError quoting it."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    header = csv_header(path)
    missing = [c for c in usecols if c not in header]
    if missing:
        raise DataError(f"{path}: missing columns {missing} (has {header})")
    bad: list[Any] = []

    def invalid(row: Any) -> str:
        bad.append(row)
        return "skip"

    for encoding in ("utf8", "latin1"):
        bad.clear()
        try:
            table = pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(column_names=header, skip_rows=1, block_size=1 << 24, encoding=encoding),
                parse_options=pacsv.ParseOptions(invalid_row_handler=invalid),
                convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in header}, strings_can_be_null=False,
                                                     quoted_strings_can_be_null=False),
            )
            break
        except pa.ArrowInvalid as e:
            if "UTF8" in str(e) and encoding == "utf8":
                continue
            raise DataError(f"{path}: cannot parse ({str(e).splitlines()[0]})") from e
    if bad:
        r = bad[0]
        raise DataError(f"{path}: a line has {r.actual_columns} fields, expected {r.expected_columns} (the header's): "
                        f"{r.text[:120]!r}{f' ({len(bad)} such lines)' if len(bad) > 1 else ''}")
    return table.select(usecols or header).to_pandas()


def _plain_cells(col: Any, dtype: str) -> bool:
    """True when every cell of the Arrow string column is a plain decimal: ``^[0-9]+$`` for int64,
    ``^[0-9]+(\\.[0-9]+)?$`` for float64 (the cells the fast path takes as they are). Vectorized
    Arrow kernels, not a regex: 10x faster (1.8 s -> 0.15 s per column of 25M cells)."""
    import pyarrow.compute as pc

    if dtype == "float64":  # one optional '.', with digits on both sides
        digits = pc.ascii_is_decimal(pc.replace_substring(col, ".", "", max_replacements=1))
        ok = pc.and_(digits, pc.invert(pc.or_(pc.starts_with(col, "."), pc.ends_with(col, "."))))
    else:
        ok = pc.ascii_is_decimal(col)  # non-empty, ASCII digits only
    return pc.all(ok).as_py() is not False


def _read_typed_csv(path: Path, types: dict[str, str]) -> pd.DataFrame | None:
    """A large CSV with a header read by pyarrow's multi-threaded reader into typed columns (memory ~
    compact Arrow strings, then the numbers, never Python strings: 25M MovieLens ratings in about 1 GB).
    Only plain decimal cells take this path (:func:`_plain_cells`: pyarrow's own number parsing also accepts
    forms such as ``0x10`` that the exact parsers refuse). None when any cell is not plain, does not
    fit its type, or a column is missing: the caller falls back to the exact text path."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 24),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in types}, include_columns=list(types),
                strings_can_be_null=False, quoted_strings_can_be_null=False,
            ),
        )  # fmt: skip
        cols = {}
        for c, t in types.items():
            col = table.column(c)
            if col.null_count or not _plain_cells(col, t):
                return None
            cols[c] = pc.cast(col, pa.from_numpy_dtype(t))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowKeyError):
        return None
    return pa.table(cols).to_pandas()


def load_ml25m(path: str | Path) -> Tables:
    """MovieLens CSV releases (25M, 20M, latest, latest-small): ratings.csv + movies.csv."""
    path = Path(path)
    csv_header(_need(path, "ratings.csv"))  # a repeated column is refused before either reader picks a copy
    ratings = _read_typed_csv(path / "ratings.csv", {"userId": "int64", "movieId": "int64", "rating": "float64", "timestamp": "int64"})
    if ratings is None:  # not plainly typed: read every cell as text, so the exact parsers name the bad values
        ratings = _read_csv_arrow(path / "ratings.csv", ["userId", "movieId", "rating", "timestamp"])
    ratings = ratings.rename(columns={"userId": "user_id", "movieId": "item_id"})
    inter = _canonical_interactions(ratings, path / "ratings.csv", {"user_id": "userId", "item_id": "movieId"})
    return Tables(inter, ml25m_items(path), _users_from_interactions(inter))


def ml25m_items(path: str | Path) -> pd.DataFrame:
    """The items table of a MovieLens CSV release (movies.csv): item_id, title, genres ("" for none)."""
    path = Path(path)
    movies = _read_csv(_need(path, "movies.csv"), ["movieId", "title", "genres"])
    return pd.DataFrame(
        {
            "item_id": _ids(movies, "movieId", path / "movies.csv"),
            "title": movies["title"],
            "genres": movies["genres"].replace("(no genres listed)", ""),
        }
    )


def load_goodbooks(path: str | Path) -> Tables:
    """GoodBooks-10K: ratings.csv (user_id, book_id, rating) + books.csv.

    The release has no timestamps; the row order of ratings.csv is used as the
    event order (timestamp = row number, ``time_source`` "row_order"), as is usual
    for this data set. A repeated (user, book) pair is then the same event twice:
    the gate refuses it and no sample is built from the later copy.
    """
    path = Path(path)
    header = csv_header(_need(path, "ratings.csv"))
    ratings = _read_csv_arrow(path / "ratings.csv", ["user_id", "book_id", "rating"] + (["timestamp"] if "timestamp" in header else []))
    time_source = "timestamp"
    if "timestamp" not in ratings.columns:
        ratings["timestamp"] = np.arange(len(ratings)).astype(str)
        time_source = "row_order"
    names = {"item_id": "book_id", "timestamp": "timestamp" if time_source == "timestamp" else "(row number)"}
    inter = _canonical_interactions(ratings.rename(columns={"book_id": "item_id"}), path / "ratings.csv", names)
    books = _read_csv(_need(path, "books.csv"), ["book_id", "title"])
    title = books["title"].where(books["title"].str.strip() != "", books.get("original_title", books["title"]))
    items = pd.DataFrame(
        {
            "item_id": _ids(books, "book_id", path / "books.csv"),
            "title": title,
            "genres": books["authors"] if "authors" in books.columns else "",
        }
    )
    return Tables(inter, items, _users_from_interactions(inter), time_source=time_source)


def _natural(rel: str) -> list[Any]:
    """Sort key of a relative path in natural order: ``part.2`` before ``part.10`` (Dask does not zero-pad)."""
    return [int(t) if i % 2 else t for i, t in enumerate(re.split(r"(\d+)", rel))]


def parquet_parts(p: Path) -> list[Path]:
    """The files of a parquet data set: ``p`` itself, or the part files under a directory ``p`` (recursively,
    Hive ``key=value`` folders included), names starting with ``.`` or ``_`` skipped (``_SUCCESS``,
    ``_metadata``, ``.crc`` files), in natural order of their paths: the data set's row order is the parts'
    order, then each part's own (as one file's). Raises DataError for a directory without part files."""
    if not p.is_dir():
        return [p]
    files = [f for f in p.rglob("*") if f.is_file() and not any(x.startswith((".", "_")) for x in f.relative_to(p).parts)]
    if not files:
        raise DataError(f"{p}: a parquet directory without part files (only hidden or '_' files such as _SUCCESS)")
    return sorted(files, key=lambda f: _natural(f.relative_to(p).as_posix()))


def _parquet_dataset(p: Path) -> Any:
    """A pyarrow dataset of :func:`parquet_parts` (Hive partition folders become columns); its columns checked."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    files = parquet_parts(p)
    try:
        for f in files[:1] if len(files) > 1 else files:  # a repeated column: refused before Arrow picks a copy
            check_columns(pq.read_schema(f).names, f if f != p else p)
        kw = {"partitioning": "hive", "partition_base_dir": str(p)} if p.is_dir() else {}
        dataset = ds.dataset([str(f) for f in files], format="parquet", **kw)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as e:
        raise DataError(f"{p}: cannot read as parquet ({type(e).__name__}: {str(e).splitlines()[0]})") from e
    check_columns(dataset.schema.names, p)
    return dataset


def parquet_columns(p: Path) -> list[str]:
    """The column names of a parquet file or directory of part files (checked for repeats)."""
    return list(_parquet_dataset(p).schema.names)


def read_parquet(p: Path) -> pd.DataFrame:
    """A parquet file, or a directory of part files read as one data set in :func:`parquet_parts`' order,
    as a DataFrame (types as written). Raises DataError naming ``p`` when it cannot be read."""
    import pyarrow as pa

    dataset = _parquet_dataset(p)
    try:
        table = dataset.to_table()  # fragments in the given order, each fragment's rows in order
        return table.to_pandas()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError, ValueError) as e:
        raise DataError(f"{p}: cannot read as parquet ({type(e).__name__}: {str(e).splitlines()[0]})") from e


def table_file(path: Path, stem: str) -> Path | None:
    """``stem``.parquet (a file, or a directory of part files) or ``stem``.csv in ``path``; None if neither."""
    p = path / f"{stem}.parquet"
    if p.is_file() or p.is_dir():
        return p
    p = path / f"{stem}.csv"
    return p if p.is_file() else None


def _read_table(path: Path, stem: str, required: bool = True, text: bool = True) -> tuple[pd.DataFrame, Path] | None:
    """``stem``.parquet (typed; a file or a directory of part files) or ``stem``.csv (every cell as str,
    parsed exactly later; ``text=False``: the fast reader for a table without text) and its path."""
    p = table_file(path, stem)
    if p is None:
        if required:
            raise DataError(f"{path}: missing {stem}.parquet or {stem}.csv")
        return None
    if p.suffix == ".parquet":
        return read_parquet(p), p
    return (_read_csv(p, []) if text else _read_csv_arrow(p, [])), p


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
            raise DataError(f"{where}: the mapping data.table.columns maps {' and '.join(cs)} to the same column {s_!r}; "
                            "map each to its own column")
    sources = set(used.values())
    for c in canon:
        s_ = src[c]
        if s_ != c and c in columns and c not in sources:
            has = "" if s_ in columns else f" (the file has no column {s_!r})"
            raise DataError(f"{where}: the mapping data.table.columns.{c} = {s_!r}{has} collides with the file's own "
                            f"column {c!r}: which one is the {c} is ambiguous; drop or rename one of them, or map {c} to {c!r}")


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
    inter = _canonical_interactions(inter, where, src, timestamps=True)
    items = table_items(path, spec, lambda: np.sort(inter["item_id"].dropna().unique()))
    users = table_users(path, spec, lambda: _users_from_interactions(inter))
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
            raise DataError(f"{where}: items table lacks an item id or a title column ({src['item_id']!r}, {src['title']!r})")
        if "genres" not in items:
            items["genres"] = ""
        items["item_id"] = exact_int64(items["item_id"], where, src["item_id"]).set_axis(items.index)
    return items


def table_users(path: str | Path, spec: dict[str, Any], users_from_interactions: Callable[[], pd.DataFrame]) -> pd.DataFrame:
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


DATASETS = ("ml-100k", "ml-1m", "ml-25m", "goodbooks-10k", "synthetic", "table")

LOADERS: dict[str, Callable[[Path], Tables]] = {
    "ml-100k": load_ml100k,
    "ml-1m": load_ml1m,
    "ml-25m": load_ml25m,
    "goodbooks-10k": load_goodbooks,
}


