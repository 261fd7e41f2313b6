"""Loaders, second round (issue 24): ambiguous columns refused, text kept byte for byte, parquet directories.

Kind 2: a header that repeats a column, in every loader's files, and a `table` column mapping that collides
with a column of the file (or maps two canonical columns to one) are refused naming the file and the column.
Kind 3: every text cell (titles, genres, user attributes) is stored exactly as written, control characters
included, or its line is refused naming the file and the line (generated text, every format).
Kind 4: a parquet "file" that is a directory of part files (Spark, Hive, Dask, with _SUCCESS) is one data
set in every format that takes parquet, in the parts' natural order, as a single file.
The handed cases (../shared/cases/bad-input-2: dup_header, parquet_part_dir) run through the CLI.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import reclora
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reclora.config import load_params
from reclora.data import load_dataset, prepare
from reclora.data.loaders import ML100K_GENRES, load_table
from reclora.errors import ConfigError, DataError

PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SPEC = {"interactions": "interactions", "items": "items", "users": "users", "columns": {}}
RATINGS = [(1, 10, 4.0, 978300000), (1, 20, 3.0, 978300060), (2, 10, 5.0, 978300120), (2, 30, 2.0, 978300180)]


def _csv(rows: list[list], header: list[str]) -> str:
    b = io.StringIO(newline="")
    w = csv.writer(b, lineterminator="\n", quoting=csv.QUOTE_ALL)
    w.writerow(header)
    w.writerows(rows)
    return b.getvalue()


def _params_file(d: Path) -> Path:
    import yaml

    p = load_params()
    p["validation"]["min_interactions"] = 1
    f = d / "params.yaml"
    f.write_text(yaml.safe_dump(p))
    return f


# ------------------------------------------------------------------ the handed cases, through the CLI
def test_dup_header_case_exits_2_naming_the_file_and_column(tmp_path):
    raw = tmp_path / "dup_header"
    raw.mkdir()
    (raw / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp,rating\n"
        + "".join(f"1,{i},5.0,{900000000 + 3600 * i},1.0\n" for i in range(2, 9))
    )
    (raw / "movies.csv").write_text("movieId,title,genres\n" + "".join(f"{i},M{i} (1995),Drama\n" for i in range(1, 9)))
    proc = reclora(
        "data",
        "prepare",
        "--dataset",
        "ml-25m",
        "--path",
        str(raw),
        "--out",
        str(tmp_path / "out"),
        "--params",
        str(_params_file(tmp_path)),
    )
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and "ratings.csv" in line and "repeats column 'rating' (2 times)" in line, line
    assert not (tmp_path / "out").exists()


def _write_parts(d: Path, table: pa.Table, cuts: list[int], names: list[str]) -> None:
    """``table`` split at ``cuts`` into part files named ``names`` (written in shuffled order), plus _SUCCESS
    and a Spark .crc file that must be skipped."""
    d.mkdir(parents=True)
    bounds = [0, *cuts, table.num_rows]
    order = np.random.default_rng(0).permutation(len(names))
    for k in order:  # the file system's listing order must not matter
        (d / names[k]).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.slice(bounds[k], bounds[k + 1] - bounds[k]), d / names[k])
    (d / "_SUCCESS").write_text("")
    first = d / names[0]
    (first.parent / f".{first.name}.crc").write_bytes(b"\x00crc")


def _interactions(n: int = 24) -> pa.Table:
    users = np.repeat([1, 2, 3], n // 3)
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "item_id": pa.array(np.arange(n) % 7 + 1, pa.int64()),
            "rating": pa.array((np.arange(n) % 5 + 1).astype(float)),
            # equal times for pairs of rows: the row order decides their event order
            "timestamp": pa.array(900000000 + 3600 * (np.arange(n) // 2), pa.int64()),
        }
    )


def test_parquet_part_dir_case_is_one_data_set_through_the_cli(tmp_path):
    raw = tmp_path / "parquet_part_dir"
    table = _interactions()
    _write_parts(raw / "interactions.parquet", table, [11], ["part-00000.parquet", "part-00001.parquet"])
    proc = reclora(
        "data",
        "prepare",
        "--dataset",
        "table",
        "--path",
        str(raw),
        "--out",
        str(tmp_path / "out"),
        "--params",
        str(_params_file(tmp_path)),
    )
    assert proc.returncode == 0, proc.stderr
    got = pd.read_parquet(tmp_path / "out" / "interactions.parquet")
    pd.testing.assert_frame_equal(got, table.to_pandas(), check_dtype=False)
    # the same prepared data as the single file gives
    single = tmp_path / "single"
    single.mkdir()
    pq.write_table(table, single / "interactions.parquet")
    prepare("table", single, tmp_path / "out-single", load_params())
    for name in ("interactions.parquet", "events.parquet", "samples/train.parquet", "samples/test.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "out" / name), pd.read_parquet(tmp_path / "out-single" / name)
        )


# ------------------------------------------------------------------ kind 4: every parquet table, natural order
@pytest.mark.parametrize("which", ["interactions", "items", "users"])
@pytest.mark.parametrize(
    "names",
    [
        ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"],  # Spark
        ["part.0.parquet", "part.2.parquet", "part.10.parquet"],  # Dask: natural order
        ["a/part-0.parquet", "b/part-0.parquet", "b/part-1.parquet"],
    ],
)  # nested folders
def test_every_parquet_table_may_be_a_directory_of_parts(which, names, tmp_path):
    tables = {
        "interactions": _interactions(),
        "items": pa.table(
            {"item_id": pa.array(range(1, 8), pa.int64()), "title": [f"T{i}" for i in range(1, 8)], "genres": ["g"] * 7}
        ),
        "users": pa.table({"user_id": pa.array([1, 2, 3], pa.int64()), "city": ["x", "y", "z"]}),
    }
    for name, t in tables.items():
        if name == which:
            _write_parts(tmp_path / f"{name}.parquet", t, [1, 2] if t.num_rows < 10 else [5, 13], names)
        else:
            pq.write_table(t, tmp_path / f"{name}.parquet")
    loaded = load_table(tmp_path, SPEC)
    got = {"interactions": loaded.interactions, "items": loaded.items, "users": loaded.users}[which]
    pd.testing.assert_frame_equal(got.reset_index(drop=True), tables[which].to_pandas(), check_dtype=False)


def test_hive_partition_folders_become_columns(tmp_path):
    d = tmp_path / "users.parquet"
    for city in ("berlin", "oslo"):
        (d / f"city={city}").mkdir(parents=True)
        pq.write_table(
            pa.table({"user_id": pa.array([1 if city == "berlin" else 2], pa.int64())}),
            d / f"city={city}" / "part-0.parquet",
        )
    pq.write_table(_interactions(), tmp_path / "interactions.parquet")
    users = load_table(tmp_path, SPEC).users
    assert users["user_id"].tolist() == [1, 2] and users["city"].astype(str).tolist() == ["berlin", "oslo"]


def test_a_parquet_directory_without_parts_is_refused(tmp_path):
    (tmp_path / "interactions.parquet").mkdir()
    (tmp_path / "interactions.parquet" / "_SUCCESS").write_text("")
    with pytest.raises(DataError, match="interactions.parquet: a parquet directory without part files"):
        load_table(tmp_path, SPEC)


# ------------------------------------------------------------------ kind 2: a repeated column in every loader's files
def _dup_csv(header: str, row: str, col: str) -> str:
    return f"{header},{col}\n" + "".join(f"{row},x\n" for _ in range(2))


# format -> {file: content with a repeated column}, the file and column the error must name
DUP_CASES = {
    "ml-25m ratings.csv": (
        "ml-25m",
        {
            "ratings.csv": _dup_csv("userId,movieId,rating,timestamp", "1,10,4.0,978300000", "movieId"),
            "movies.csv": "movieId,title,genres\n10,A,Drama\n",
        },
        "ratings.csv",
        "movieId",
    ),
    "ml-25m movies.csv": (
        "ml-25m",
        {
            "ratings.csv": "userId,movieId,rating,timestamp\n1,10,4.0,978300000\n",
            "movies.csv": "movieId,title,genres,title\n10,A,Drama,B\n",
        },
        "movies.csv",
        "title",
    ),
    "goodbooks ratings.csv": (
        "goodbooks-10k",
        {"ratings.csv": "user_id,book_id,rating,user_id\n1,10,4,2\n", "books.csv": "book_id,title\n10,A\n"},
        "ratings.csv",
        "user_id",
    ),
    "goodbooks books.csv": (
        "goodbooks-10k",
        {"ratings.csv": "user_id,book_id,rating\n1,10,4\n", "books.csv": "book_id,title,book_id\n10,A,11\n"},
        "books.csv",
        "book_id",
    ),
    "table interactions.csv": (
        "table",
        {"interactions.csv": "user_id,item_id,rating,timestamp,rating\n1,10,4,978300000,1\n"},
        "interactions.csv",
        "rating",
    ),
    "table items.csv": (
        "table",
        {
            "interactions.csv": "user_id,item_id,rating,timestamp\n1,10,4,978300000\n",
            "items.csv": "item_id,title,genres,genres\n10,A,x,y\n",
        },
        "items.csv",
        "genres",
    ),
    "table users.csv": (
        "table",
        {
            "interactions.csv": "user_id,item_id,rating,timestamp\n1,10,4,978300000\n",
            "users.csv": "user_id,age,age\n1,30,31\n",
        },
        "users.csv",
        "age",
    ),
}


def _dup_parquet(d: Path, name: str, cols: dict[str, list], dup: str, directory: bool) -> None:
    arrays = [pa.array(v) for v in cols.values()] + [pa.array(cols[dup])]
    table = pa.Table.from_arrays(arrays, names=[*cols, dup])
    if directory:
        (d / name).mkdir()
        pq.write_table(table, d / name / "part-0.parquet")
        (d / name / "_SUCCESS").write_text("")
    else:
        pq.write_table(table, d / name)


@pytest.mark.parametrize("case", list(DUP_CASES))
def test_a_repeated_column_is_refused_in_every_csv(case, tmp_path):
    fmt, files, where, col = DUP_CASES[case]
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(DataError) as err:
        load_table(tmp_path, SPEC) if fmt == "table" else load_dataset(fmt, tmp_path, load_params())
    msg = str(err.value)
    assert f"{where}: the header repeats column '{col}'" in msg and "\n" not in msg, msg


@pytest.mark.parametrize("directory", [False, True])
@pytest.mark.parametrize(
    "which,cols,dup",
    [
        ("interactions", {"user_id": [1], "item_id": [10], "rating": [4.0], "timestamp": [978300000]}, "user_id"),
        ("items", {"item_id": [10], "title": ["A"]}, "title"),
        ("users", {"user_id": [1], "age": [30]}, "user_id"),
    ],
)
def test_a_repeated_column_is_refused_in_every_parquet(which, cols, dup, directory, tmp_path):
    if which != "interactions":
        pq.write_table(
            pa.table({"user_id": [1], "item_id": [10], "rating": [4.0], "timestamp": [978300000]}),
            tmp_path / "interactions.parquet",
        )
    _dup_parquet(tmp_path, f"{which}.parquet", cols, dup, directory)
    with pytest.raises(DataError, match=rf"{which}.parquet.*repeats column '{dup}'"):
        load_table(tmp_path, SPEC)


@pytest.mark.parametrize("case", ["ml-25m ratings.csv", "table interactions.csv"])
def test_the_spark_engine_refuses_a_repeated_column_before_spark_starts(case, tmp_path):
    from reclora.data.spark_prepare import prepare_spark

    fmt, files, where, col = DUP_CASES[case]
    raw = tmp_path / "raw"
    raw.mkdir()
    for name, text in files.items():
        (raw / name).write_text(text)
    with pytest.raises(DataError, match=f"{where}: the header repeats column '{col}'"):
        prepare_spark(fmt, raw, tmp_path / "out", load_params(), spark=object())  # never used: refused first


# ------------------------------------------------------------------ kind 2: the table's column mapping
MAPPING_CASES = [
    # (file, its columns, data.table.columns, the words the error must hold)
    (
        "interactions.csv",
        ["uid", "user_id", "item_id", "rating", "timestamp"],
        {"user_id": "uid"},
        "data.table.columns.user_id = 'uid' collides with the file's own column 'user_id'",
    ),
    (
        "interactions.csv",
        ["id", "rating", "timestamp"],
        {"user_id": "id", "item_id": "id"},
        "maps user_id and item_id to the same column 'id'",
    ),
    (
        "items.csv",
        ["item_id", "movie", "title"],
        {"item_id": "movie"},
        "data.table.columns.item_id = 'movie' collides with the file's own column 'item_id'",
    ),
    (
        "items.csv",
        ["item_id", "name", "title"],
        {"title": "name"},
        "data.table.columns.title = 'name' collides with the file's own column 'title'",
    ),
    (
        "items.csv",
        ["item_id", "title", "genres"],
        {"genres": "tags"},
        "data.table.columns.genres = 'tags' (the file has no column 'tags') collides with the file's own column 'genres'",
    ),
    (
        "users.csv",
        ["user_id", "uid", "age"],
        {"user_id": "uid"},
        "data.table.columns.user_id = 'uid' collides with the file's own column 'user_id'",
    ),
]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("file,columns,mapping,words", MAPPING_CASES)
def test_a_colliding_or_ambiguous_mapping_is_refused(file, columns, mapping, words, fmt, tmp_path):
    inter = {
        mapping.get(c, c): v for c, v in {"user_id": 1, "item_id": 10, "rating": 4.0, "timestamp": 978300000}.items()
    }
    row = {
        c: {"uid": 1, "user_id": 1, "id": 1, "movie": 10, "item_id": 10, "rating": 4.0, "timestamp": 978300000}.get(
            c, "x"
        )
        for c in columns
    }
    stem = file.split(".")[0]
    frames = {"interactions": pd.DataFrame([inter]), stem: pd.DataFrame([row])}
    for name, df in frames.items():
        df.to_csv(tmp_path / f"{name}.csv", index=False) if fmt == "csv" else df.to_parquet(
            tmp_path / f"{name}.parquet"
        )
    with pytest.raises(DataError) as err:
        load_table(tmp_path, {**SPEC, "columns": mapping})
    assert f"{stem}.{fmt}: " in str(err.value) and words in str(err.value), str(err.value)


def test_a_mapping_that_swaps_names_is_not_a_collision(tmp_path):
    """`title` holds the ids and `name` the titles: mapped explicitly, each column is used once."""
    pd.DataFrame([{"user_id": 1, "title": 10, "rating": 4.0, "timestamp": 978300000}]).to_csv(
        tmp_path / "interactions.csv", index=False
    )
    pd.DataFrame({"title": [10], "name": ["Heat (1995)"]}).to_csv(tmp_path / "items.csv", index=False)
    items = load_table(tmp_path, {**SPEC, "columns": {"item_id": "title", "title": "name"}}).items
    assert items[["item_id", "title"]].to_dict("records") == [{"item_id": 10, "title": "Heat (1995)"}]


@pytest.mark.parametrize(
    "spec,words",
    [
        ({**SPEC, "columns": {"itemid": "movie"}}, "data.table.columns has unknown keys ['itemid']"),
        ({**SPEC, "intercations": "x"}, "data.table has unknown keys ['intercations']"),
        ({**SPEC, "columns": {"title": 3}}, "must name source columns"),
    ],
)
def test_unknown_table_keys_are_refused(spec, words, tmp_path):
    pd.DataFrame([{"user_id": 1, "item_id": 10, "rating": 4.0, "timestamp": 978300000}]).to_csv(
        tmp_path / "interactions.csv", index=False
    )
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        load_table(tmp_path, spec)


def test_the_spark_engine_refuses_a_colliding_mapping_before_spark_starts(tmp_path):
    from reclora.data.spark_prepare import prepare_spark

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "interactions.csv").write_text("uid,user_id,item_id,rating,timestamp\n1,1,10,4,978300000\n")
    p = load_params()
    p["data"]["table"]["columns"] = {"user_id": "uid"}
    with pytest.raises(DataError, match="interactions.csv: the mapping data.table.columns.user_id = 'uid' collides"):
        prepare_spark("table", raw, tmp_path / "out", p, spark=object())


# ------------------------------------------------------------------ kind 3: text byte for byte, in every format
# any character, control characters and unusual line breaks included (a surrogate cannot be encoded at all)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


def _oracle_sep(cells: list[str], sep: str, last: bool = False) -> bool:
    """Whether a headerless line of these cells can hold them exactly: no line end or separator inside, and
    (for '::') no run of colons the separator could split two ways: a cell after a separator must not start
    with ':' and a cell before one must not end with it (every cell here follows the line's id; with ``last``
    the final cell ends the line, where a trailing ':' is unambiguous)."""
    if any("\n" in c or sep in c for c in cells):
        return False
    if sep != "::":
        return True
    before_sep = cells[:-1] if last else cells
    return not (any(c.startswith(":") for c in cells) or any(c.endswith(":") for c in before_sep))


def _write_text_case(fmt: str, d: Path, title: str, genre: str, attr: str) -> tuple[Path, bool]:
    """Raw files of ``fmt`` whose item 10 has ``title``/``genre`` and user 1 ``attr``; (the text file, whether
    the format can hold them exactly)."""
    d.mkdir(parents=True, exist_ok=True)
    ratings = [[str(x) for x in r] for r in RATINGS]
    if fmt == "ml-100k":
        (d / "u.data").write_text("".join("\t".join(r) + "\n" for r in ratings))
        flags = "|".join("1" if g == "Drama" else "0" for g in ML100K_GENRES)
        (d / "u.item").write_text(
            f"10|{title}|01-Jan-1995||u|{flags}\n20|B|||u|{flags}\n30|C|||u|{flags}\n", encoding="utf-8"
        )
        (d / "u.user").write_text(f"1|30|M|{attr}|1\n2|40|F|other|2\n", encoding="utf-8")
        return d / "u.item", _oracle_sep([title, attr], "|")
    if fmt == "ml-1m":
        (d / "ratings.dat").write_text("".join("::".join(r) + "\n" for r in ratings))
        (d / "movies.dat").write_text(f"10::{title}::{genre}\n20::B::Drama\n30::C::Drama\n", encoding="utf-8")
        (d / "users.dat").write_text("1::M::30::1::1\n2::F::40::2::2\n")
        # genres is the last field: a trailing "\r" stays content (the file's other lines end in "\n" only)
        return d / "movies.dat", _oracle_sep([title, genre], "::", last=True)
    if fmt == "ml-25m":
        (d / "ratings.csv").write_text(_csv(ratings, ["userId", "movieId", "rating", "timestamp"]))
        (d / "movies.csv").write_text(
            _csv([["10", title, genre], ["20", "B", "Drama"], ["30", "C", "Drama"]], ["movieId", "title", "genres"]),
            encoding="utf-8",
        )
        return d / "movies.csv", genre != "(no genres listed)"
    if fmt == "goodbooks-10k":
        (d / "ratings.csv").write_text(_csv([r[:3] for r in ratings], ["user_id", "book_id", "rating"]))
        (d / "books.csv").write_text(
            _csv([["10", title, genre], ["20", "B", "x"], ["30", "C", "y"]], ["book_id", "title", "authors"]),
            encoding="utf-8",
        )
        return d / "books.csv", True  # (a blank title falls back to original_title, which this file has not)
    (d / "interactions.csv").write_text(_csv(ratings, ["user_id", "item_id", "rating", "timestamp"]))
    if fmt == "table-csv":
        (d / "items.csv").write_text(
            _csv([["10", title, genre], ["20", "B", "x"], ["30", "C", "y"]], ["item_id", "title", "genres"]),
            encoding="utf-8",
        )
        (d / "users.csv").write_text(_csv([["1", attr], ["2", "z"]], ["user_id", "city"]), encoding="utf-8")
        return d / "items.csv", True
    pd.DataFrame({"item_id": [10, 20, 30], "title": [title, "B", "C"], "genres": [genre, "x", "y"]}).to_parquet(
        d / "items.parquet"
    )
    pd.DataFrame({"user_id": [1, 2], "city": [attr, "z"]}).to_parquet(d / "users.parquet")
    return d / "items.parquet", True


TEXT_FORMATS = ["ml-100k", "ml-1m", "ml-25m", "goodbooks-10k", "table-csv", "table-parquet"]


def _load(fmt: str, d: Path):
    return load_table(d, SPEC) if fmt.startswith("table") else load_dataset(fmt, d, load_params())


def _check_text(fmt: str, items: pd.DataFrame, users: pd.DataFrame, title: str, genre: str, attr: str) -> None:
    items, users = items.set_index("item_id"), users.set_index("user_id")
    assert items.loc[10, "title"] == title  # the very characters, surrounding spaces and control characters too
    if fmt != "ml-100k":  # ML-100K's genres are flags
        assert items.loc[10, "genres"] == genre
    if fmt == "ml-100k":
        assert users.loc[1, "occupation"] == attr
    if fmt.startswith("table"):
        assert users.loc[1, "city"] == attr


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
@PROPS
@given(title=TEXT, genre=TEXT, attr=TEXT)
def test_text_is_read_byte_for_byte_or_the_line_is_refused(fmt, title, genre, attr, tmp_path_factory):
    d = tmp_path_factory.mktemp(fmt)
    where, holds = _write_text_case(fmt, d, title, genre, attr)
    if not holds:
        with pytest.raises(DataError) as err:
            _load(fmt, d)
        msg = str(err.value)  # names the file (u.item or u.user for ML-100K) and the line
        assert re.match(rf"{re.escape(str(d))}/({where.name}|u\.user): line \d+ ", msg) and "\n" not in msg, msg
        return
    t = _load(fmt, d)
    _check_text(fmt, t.items, t.users, title, genre, attr)


NASTY = (' \tLéon:\x00\x01\x1b[31m\x1c\x85\u2028\x7f "quoted" \r ', "Drama\x0bNoir ", " \x00writer\r\x0c ")


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
def test_text_is_stored_byte_for_byte_in_the_prepared_tables(fmt, tmp_path):
    title, genre, attr = NASTY
    if fmt in ("ml-100k", "ml-1m"):  # a headerless line holds no ':' next to '::' nor '|' inside a cell
        title = title.replace(":", ";")
    _, holds = _write_text_case(fmt, tmp_path / "raw", title, genre, attr)
    assert holds
    p = load_params()
    p["validation"]["min_interactions"] = 1
    prepare("table" if fmt.startswith("table") else fmt, tmp_path / "raw", tmp_path / "out", p, min_history=0)
    _check_text(
        fmt,
        pd.read_parquet(tmp_path / "out" / "items.parquet"),
        pd.read_parquet(tmp_path / "out" / "users.parquet"),
        title,
        genre,
        attr,
    )


@pytest.mark.parametrize(
    "fmt,file,text,line",
    [
        (
            "ml-25m",
            "movies.csv",
            "movieId,title,genres\n10,A,Drama\n20,Half\rline,Drama\n",
            3,
        ),  # an unquoted CR ends a CSV record
        ("ml-25m", "movies.csv", "movieId,title,genres\n10,A,Drama\n20,B\n", 3),  # a short line is never padded
        ("ml-25m", "movies.csv", "movieId,title,genres\n10,A,Drama,extra\n", 2),
        ("ml-1m", "movies.dat", "10::A::Drama\n20::Title:::Drama\n", 2),  # "Title:" then "::": splits two ways
        ("ml-1m", "movies.dat", "10::A::Drama\n20::B\n", 2),
        ("ml-100k", "u.user", "1|30|M|writer|1\n2|40|F|a|b|2\n", 2),
    ],
)
def test_a_line_that_cannot_hold_its_text_is_refused_naming_it(fmt, file, text, line, tmp_path):
    where, _ = _write_text_case(fmt, tmp_path, "A", "Drama", "writer")
    (tmp_path / file).write_text(text)
    with pytest.raises(DataError, match=rf"{file}: line {line} "):
        load_dataset(fmt, tmp_path, load_params())


def test_windows_line_ends_are_line_ends_in_headerless_files(tmp_path):
    _write_text_case("ml-1m", tmp_path, "A", "Drama", "x")
    (tmp_path / "movies.dat").write_bytes(b"10::Heat (1995)::Crime|Drama\r\n20::B::Drama\r\n30::C::Drama\r\n")
    items = load_dataset("ml-1m", tmp_path, load_params()).items.set_index("item_id")
    assert items.loc[10, "title"] == "Heat (1995)" and items.loc[10, "genres"] == "Crime|Drama"


def test_real_movielens_titles_keep_their_trailing_spaces(ml100k_path):
    items = load_dataset("ml-100k", ml100k_path, load_params()).items
    raw = (ml100k_path / "u.item").read_bytes().decode("latin-1").split("\n")
    titles = {int(r.split("|")[0]): r.split("|")[1] for r in raw if r}
    assert dict(zip(items["item_id"], items["title"])) == titles
    assert sum(t != t.strip() for t in titles.values()) == 3  # e.g. "Two Friends (1986) ", stored as written
