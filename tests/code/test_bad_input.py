"""Bad input the field actually sends (issue 10): ids and times read exactly or refused in every loader,
datetimes by their real unit and zone, repeated pairs where time is row order, empty splits, UTF-8 first.

The five handed cases run through the `reclora` command as a user would; the loaders are then checked
with generated hostile raw files (hypothesis): every value either loads as exactly what was written or
is refused with one line naming the file, the column and the value.
"""

from __future__ import annotations

import datetime as dt
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers import reclora, small_tables, write_bad_input_case, write_goodbooks, write_ml1m, write_ml25m, write_ml100k
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reclora.config import load_params
from reclora.data import load_dataset, prepare
from reclora.data.loaders import load_table
from reclora.data.samples import build_samples
from reclora.errors import DataError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ------------------------------------------------------------------ the handed cases, through the CLI
@pytest.fixture(scope="module")
def params_file(tmp_path_factory) -> Path:
    p = load_params()
    p["validation"]["min_interactions"] = 1  # a few rows must reach the gate
    f = tmp_path_factory.mktemp("params") / "params.yaml"
    f.write_text(yaml.safe_dump(p))
    return f


def _prepare(case: str, dataset: str, tmp: Path, params_file: Path):
    raw = write_bad_input_case(case, tmp / case)
    return reclora(
        "data",
        "prepare",
        "--dataset",
        dataset,
        "--path",
        str(raw),
        "--out",
        str(tmp / "out"),
        "--params",
        str(params_file),
    )


@pytest.mark.parametrize("case,column,value", [("float_id", "userId", "2.9"), ("inf_id", "userId", "inf")])
def test_fractional_or_infinite_id_is_refused_with_one_line(case, column, value, tmp_path, params_file):
    proc = _prepare(case, "ml-25m", tmp_path, params_file)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "ratings.csv" in lines[0] and f"'{column}'" in lines[0] and f"'{value}'" in lines[0]
    assert "exact integers" in lines[0]
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_parquet_timestamp_ms_gives_exact_unix_seconds(tmp_path, params_file):
    proc = _prepare("parquet_ts_ms", "table", tmp_path, params_file)
    assert proc.returncode == 0, proc.stderr
    assert pd.read_parquet(tmp_path / "out" / "interactions.parquet")["timestamp"].tolist() == [1709298000]


def test_goodbooks_repeated_pair_fails_the_gate_and_never_leaks(tmp_path, params_file):
    proc = _prepare("goodbooks_dup", "goodbooks-10k", tmp_path, params_file)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    samples = pd.concat([pd.read_parquet(out / "samples" / f"{s}.parquet") for s in ("train", "valid", "test")])
    # the later copy of (1, 1) had 5 earlier rows, its own first copy among them: no sample is built from it
    assert len(samples) == 0
    v = reclora("data", "validate", "--data", str(out), "--report", str(tmp_path / "rep"), "--params", str(params_file))
    assert v.returncode == 1, v.stderr
    assert "FAILED interactions.user_id,item_id: 2 of 6 rows repeat a (user_id, item_id) pair" in v.stderr
    assert "(e.g. (1, 1))" in v.stderr


def test_one_row_writes_typed_empty_splits_and_the_gate_says_why(tmp_path, params_file):
    proc = _prepare("one_row", "ml-25m", tmp_path, params_file)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    for split in ("train", "valid", "test"):
        sch = pq.read_schema(out / "samples" / f"{split}.parquet")
        assert sch.field("history_start").type == pa.int64() and sch.field("history_length").type == pa.int64()
        assert (
            sch.field("label").type == pa.int8()
            and pq.read_metadata(out / "samples" / f"{split}.parquet").num_rows == 0
        )
    rep = tmp_path / "rep"
    v = reclora("data", "validate", "--data", str(out), "--report", str(rep), "--params", str(params_file))
    assert v.returncode == 1, v.stderr
    for split in ("train", "valid", "test"):
        assert f"FAILED samples.split: split {split} has no samples" in v.stderr
    assert "Traceback" not in v.stderr
    assert (rep / "index.html").is_file() and (rep / "summary.json").is_file()


# ------------------------------------------------------------------ hostile cells in every loader
def _oracle(text: str) -> int | None | str:
    """What a raw id/time cell must load as: an int, None (empty = null for the gate) or "refuse"."""
    t = text.strip()
    if not t:
        return None
    if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", t, flags=re.ASCII):
        return "refuse"
    f = Fraction(t)
    return int(f) if f.denominator == 1 and INT64_MIN <= f <= INT64_MAX else "refuse"


# no separators, quotes or line breaks: the file keeps its shape, only the value is hostile
_SAFE = st.characters(blacklist_characters="\t\r\n,:|\"'", blacklist_categories=("Cs", "Cc", "Zl", "Zp"))
CELLS = st.one_of(
    st.integers(INT64_MIN - 5, INT64_MAX + 5).map(str),
    st.integers(-(2**80), 2**80).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.decimals(allow_nan=False, allow_infinity=False, places=2).map(str),
    st.sampled_from(
        [
            "",
            " ",
            "nan",
            "NaN",
            "inf",
            "-Infinity",
            "1e30",
            "2.9",
            "2.5",
            "7.0",
            "1e3",
            "+5",
            " 8 ",
            "0x10",
            "1_000",
            "\u0663",
            "True",
            "null",
            "None",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "1.0e1",
            ".5",
        ]
    ),
    st.text(_SAFE, max_size=6),
)

BASE = [(1, 10, 4.0, 978300000), (2, 20, 3.0, 978300060), (3, 30, 5.0, 978300120)]


def _write_rows(fmt: str, d: Path, rows: list[tuple[str, str, str, str]]) -> tuple[Path, dict[str, str]]:
    """Raw files in ``fmt`` with these (user, item, rating, timestamp) cells; returns (file, canon -> column)."""
    d.mkdir(parents=True, exist_ok=True)
    if fmt == "ml-100k":
        (d / "u.data").write_text("".join("\t".join(r) + "\n" for r in rows))
        (d / "u.item").write_text(
            "".join(f"{i}|T{i}|01-Jan-1995||u|" + "|".join(["0"] * 19) + "\n" for i in (10, 20, 30))
        )
        (d / "u.user").write_text("".join(f"{u}|30|M|other|1\n" for u in (1, 2, 3)))
        return d / "u.data", {c: c for c in ("user_id", "item_id", "timestamp")}
    if fmt == "ml-1m":
        (d / "ratings.dat").write_text("".join("::".join(r) + "\n" for r in rows))
        (d / "movies.dat").write_text("".join(f"{i}::T{i}::Drama\n" for i in (10, 20, 30)))
        (d / "users.dat").write_text("".join(f"{u}::M::30::1::1\n" for u in (1, 2, 3)))
        return d / "ratings.dat", {c: c for c in ("user_id", "item_id", "timestamp")}
    if fmt == "ml-25m":
        (d / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(",".join(r) + "\n" for r in rows))
        (d / "movies.csv").write_text(_movies_csv("movieId,title,genres"))
        return d / "ratings.csv", {"user_id": "userId", "item_id": "movieId", "timestamp": "timestamp"}
    if fmt == "goodbooks-10k":
        (d / "ratings.csv").write_text("user_id,book_id,rating\n" + "".join(",".join(r[:3]) + "\n" for r in rows))
        (d / "books.csv").write_text("book_id,title\n10,A\n20,B\n30,C\n")
        return d / "ratings.csv", {"user_id": "user_id", "item_id": "book_id"}
    assert fmt == "table"
    (d / "interactions.csv").write_text("uid,iid,stars,when\n" + "".join(",".join(r) + "\n" for r in rows))
    return d / "interactions.csv", {"user_id": "uid", "item_id": "iid", "timestamp": "when"}


def _movies_csv(header: str) -> str:
    return header + "\n10,A (1995),Drama\n20,B (1996),Drama\n30,C (1997),Drama\n"


TABLE_SPEC = {
    "interactions": "interactions",
    "items": "items",
    "users": "users",
    "columns": {"user_id": "uid", "item_id": "iid", "rating": "stars", "timestamp": "when"},
}


def _load(fmt: str, d: Path):
    return load_table(d, TABLE_SPEC) if fmt == "table" else load_dataset(fmt, d, load_params())


FORMATS = ("ml-100k", "ml-1m", "ml-25m", "goodbooks-10k", "table")


@pytest.mark.parametrize("fmt", FORMATS)
@PROPS
@given(data=st.data())
def test_every_loader_reads_ids_and_times_exactly_or_refuses(fmt, data, tmp_path_factory):
    cols = ["user_id", "item_id"] + ([] if fmt == "goodbooks-10k" else ["timestamp"])
    col = data.draw(st.sampled_from(cols), label="column")
    cell = data.draw(CELLS, label="cell")
    if fmt == "table" and col == "timestamp":  # text times may be ISO datetimes there: keep to numbers here
        cell = cell if _oracle(cell) != "refuse" or not re.search(r"\d{4}-", cell) else "x"
    rows = [[str(v) for v in r] for r in BASE]
    rows[1][("user_id", "item_id", "rating", "timestamp").index(col)] = cell
    d = tmp_path_factory.mktemp(fmt)
    path, names = _write_rows(fmt, d, [tuple(r) for r in rows])
    want = _oracle(cell)
    if want == "refuse":
        with pytest.raises(DataError) as err:
            _load(fmt, d)
        msg = str(err.value)
        assert "\n" not in msg and path.name in msg and f"'{names[col]}'" in msg, msg
        return
    inter = _load(fmt, d).interactions
    got = inter[col].tolist()
    expect = [r[("user_id", "item_id", "rating", "timestamp").index(col)] for r in BASE]
    expect[1] = want
    if col == "timestamp" and fmt == "goodbooks-10k":
        expect = [0, 1, 2]
    assert [None if pd.isna(v) else int(v) for v in got] == expect
    assert str(inter[col].dtype) == ("Int64" if want is None else "int64")


_PLAIN_RE = {"int64": r"[0-9]+", "float64": r"[0-9]+(\.[0-9]+)?"}


@PROPS
@given(
    cells=st.lists(
        st.one_of(CELLS, st.sampled_from([".", "1.", "1..2", "1.2.3", "..", "5.5", "12", "0.0"])), max_size=5
    ),
    dtype=st.sampled_from(["int64", "float64"]),
)
def test_the_csv_fast_path_takes_exactly_the_plain_decimal_cells(cells, dtype):
    """ML-25M's ratings.csv fast path (Arrow kernels) accepts the same cells as its regex definition."""
    from reclora.data.files import _plain_cells

    want = all(re.fullmatch(_PLAIN_RE[dtype], c, flags=re.ASCII) for c in cells)
    assert _plain_cells(pa.chunked_array([pa.array(cells, pa.string())]), dtype) is want


# ------------------------------------------------------------------ typed parquet columns (generic table)
def _table_dir(d: Path, **cols: pa.Array) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    n = len(next(iter(cols.values())))
    base = {
        "user_id": pa.array(range(1, n + 1), pa.int64()),
        "item_id": pa.array([7] * n, pa.int64()),
        "rating": pa.array([4.0] * n),
        "timestamp": pa.array([1_000_000_000] * n, pa.int64()),
    }
    pq.write_table(pa.table({**base, **cols}), d / "interactions.parquet")
    return d


SPEC = load_params()["data"]["table"]


@PROPS
@given(
    kind=st.sampled_from(["int64", "uint64", "float64", "string", "bool"]),
    values=st.lists(
        st.one_of(st.integers(-(2**64), 2**64), st.floats(allow_nan=True, allow_infinity=True), st.none()),
        min_size=1,
        max_size=4,
    ),
)
def test_typed_id_columns_load_exactly_or_refuse(kind, values, tmp_path_factory):
    def fits(v):
        if v is None:
            return True
        if kind == "uint64":
            return isinstance(v, int) and 0 <= v < 2**64
        if kind == "int64":
            return isinstance(v, int) and INT64_MIN <= v <= INT64_MAX
        return True

    values = [v for v in values if fits(v)] or [None]
    if kind == "bool":
        arr = pa.array([None if v is None else bool(v) for v in values], pa.bool_())
    elif kind == "string":
        arr = pa.array([None if v is None else str(v) for v in values], pa.string())
    elif kind == "float64":
        arr = pa.array([None if v is None else float(v) for v in values], pa.float64())
    else:
        arr = pa.array(values, getattr(pa, kind)())
    d = _table_dir(tmp_path_factory.mktemp("typed"), user_id=arr)
    written = arr.to_pylist()

    def want(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return None  # a null the gate names
        if isinstance(v, bool):
            return "refuse"
        if isinstance(v, str):
            return _oracle(v)
        if isinstance(v, float) and (not np.isfinite(v) or v != int(v)):
            return "refuse"
        return int(v) if INT64_MIN <= int(v) <= INT64_MAX else "refuse"

    expect = [want(v) for v in written]
    if kind == "bool" and any(e is not None for e in expect):
        expect = ["refuse"]
    if "refuse" in expect:
        with pytest.raises(DataError) as err:
            load_table(d, SPEC)
        assert "\n" not in str(err.value) and "'user_id'" in str(err.value) and "interactions.parquet" in str(err.value)
        return
    got = load_table(d, SPEC).interactions["user_id"].tolist()
    assert [None if pd.isna(v) else int(v) for v in got] == expect


UNITS = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
ZONES = [None, "UTC", "Europe/Berlin", "America/St_Johns", "Asia/Kathmandu", "+05:45", "-11:00"]


@PROPS
@given(
    secs=st.lists(st.integers(-(2**33), 2**33), min_size=1, max_size=3),
    frac=st.floats(0, 0.999999, allow_nan=False),
    unit=st.sampled_from(list(UNITS)),
    tz=st.sampled_from(ZONES),
)
def test_datetime_columns_give_exact_unix_seconds(secs, frac, unit, tz, tmp_path_factory):
    m = UNITS[unit]
    raw = [s * m + int(frac * m) for s in secs]  # an instant in the column's unit, sub-second part below 1 s
    d = _table_dir(tmp_path_factory.mktemp("dt"), timestamp=pa.array(raw, pa.timestamp(unit, tz=tz)))
    assert load_table(d, SPEC).interactions["timestamp"].tolist() == secs  # floored to the second


@PROPS
@given(
    rows=st.lists(
        st.tuples(st.integers(-6 * 10**9, 9 * 10**9), st.integers(-14 * 60, 14 * 60) | st.none()),
        min_size=1,
        max_size=4,
    ),
    sep=st.sampled_from(["T", " "]),
)
def test_iso_strings_with_per_value_offsets_give_exact_unix_seconds(rows, sep, tmp_path_factory):
    cells = []
    for s, off in rows:
        zone = dt.UTC if off is None else dt.timezone(dt.timedelta(minutes=off))
        when = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=s)
        text = when.astimezone(zone).isoformat(sep=sep)
        cells.append(text.replace("+00:00", "") if off is None else text)  # naive = UTC
    d = tmp_path_factory.mktemp("iso")
    lines = "".join(f"{i + 1},7,4.0,{c}\n" for i, c in enumerate(cells))
    (d / "interactions.csv").write_text("user_id,item_id,rating,timestamp\n" + lines)
    assert load_table(d, SPEC).interactions["timestamp"].tolist() == [s for s, _ in rows]


def test_mixed_integer_and_date_times_are_refused(tmp_path):
    (tmp_path / "interactions.csv").write_text("user_id,item_id,rating,timestamp\n1,7,4,1709298000\n2,7,4,2024-03-01\n")
    with pytest.raises(DataError, match=r"interactions.csv: column 'timestamp' must hold .* e.g. got '1709298000'"):
        load_table(tmp_path, SPEC)


# ------------------------------------------------------------------ no sample holds its own target event
def _assert_no_leak(samples: dict[str, pd.DataFrame], row_order: bool) -> int:
    n = 0
    for df in samples.values():
        for r in df.itertuples():
            hist = list(zip(r.hist_item_ids, r.hist_timestamps))
            assert all(t < r.timestamp for _, t in hist), r
            assert (r.item_id, r.timestamp) not in hist, r
            if row_order:  # a repeated pair is the same event twice
                assert r.item_id not in set(r.hist_item_ids), r
            n += 1
    return n


@pytest.mark.parametrize("fmt", FORMATS[:4] + ("synthetic",))
def test_no_sample_contains_its_own_target_event(fmt, tmp_path):
    src = small_tables(n_users=12, n_items=30)
    inter = src.interactions
    # an exact repeat of an event and the same item rated again later, for every user
    firsts = inter.sort_values("timestamp").groupby("user_id").head(1)
    again = firsts.assign(timestamp=firsts["timestamp"] + 10**6)
    src.interactions = pd.concat([inter, firsts, again], ignore_index=True)
    writers = {"ml-100k": write_ml100k, "ml-1m": write_ml1m, "ml-25m": write_ml25m, "goodbooks-10k": write_goodbooks}
    raw = writers[fmt](src, tmp_path / "raw") if fmt in writers else None
    params = load_params()
    summary = prepare(fmt, raw, tmp_path / "out", params, min_history=1)
    from reclora.data import read_prepared

    tables, samples, meta = read_prepared(tmp_path / "out")
    row_order = meta["time_source"] == "row_order"
    assert row_order == (fmt == "goodbooks-10k")
    assert _assert_no_leak(samples, row_order) == sum(summary["samples"].values()) > 100


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5), st.integers(0, 6)), min_size=1, max_size=30
    ),
    row_order=st.booleans(),
)
def test_build_samples_never_leaks(rows, row_order):
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]).astype({"rating": "float64"})
    if row_order:
        inter["timestamp"] = np.arange(len(inter))
    samples = build_samples(inter, threshold=4.0, min_history=1, repeat_is_same_event=row_order)
    _assert_no_leak(samples, row_order)
    for df in samples.values():
        assert df["hist_item_ids"].dtype == object and df["n_history"].dtype == np.int64


# ------------------------------------------------------------------ text: UTF-8 first, latin-1 where it fails
@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_movies_dat_is_read_as_utf8_first(encoding, tmp_path):
    src = small_tables()
    d = write_ml1m(src, tmp_path / "ml")
    movies = [f"{r.item_id}::{r.title}::{r.genres}" for r in src.items.itertuples()]
    (d / "movies.dat").write_bytes(("\n".join(movies) + "\n").encode(encoding))
    t = load_dataset("ml-1m", d, load_params())
    assert t.items.set_index("item_id").loc[1, "title"] == "Amélie (2001)"  # never "AmÃ©lie"
    d2 = write_ml100k(src, tmp_path / "ml100k")
    text = (d2 / "u.item").read_bytes().decode("latin-1")
    (d2 / "u.item").write_bytes(text.encode(encoding))
    assert load_dataset("ml-100k", d2, load_params()).items.set_index("item_id").loc[1, "title"] == "Amélie (2001)"
