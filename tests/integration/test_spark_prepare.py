"""The prepare stage on Spark (local mode; pyspark + a JRE: the optional `spark` extra,
`pip install -e '.[spark]'`) writes the same prepared directory as the pandas path: the same tables,
event store and sample index (values, dtypes, schemas, row order, row groups) and the same meta.json.
Skipped without them.

The session runs on several shuffle partitions, without adaptive coalescing, and reads the CSV in
small splits, so the ranks across partitions and the row order across splits are exercised."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

pytest.importorskip("pyspark", reason="the optional spark extra (pyspark) is not installed")
if shutil.which("java") is None:
    pytest.skip("no Java runtime for Spark local mode", allow_module_level=True)

from reclora.config import deep_merge, load_params  # noqa: E402
from reclora.data import build_sample_index, prepare, schema  # noqa: E402
from reclora.data.spark_prepare import prepare_spark, spark_sample_index  # noqa: E402
from reclora.errors import DataError  # noqa: E402
from reclora.io import read_json  # noqa: E402

pytestmark = pytest.mark.slow

CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "5",
    "spark.sql.adaptive.coalescePartitions.enabled": "false",
    "spark.sql.files.maxPartitionBytes": "2048",
    "spark.sql.files.openCostInBytes": "0",
}
FILES = [schema.INTERACTIONS, schema.ITEMS, schema.USERS, schema.EVENTS] + [schema.split_path(s) for s in schema.SPLITS]


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master("local[2]").appName("reclora-test-prepare").config("spark.driver.memory", "1g")
    )
    for k, v in CONF.items():
        builder = builder.config(k, v)
    session = builder.getOrCreate()
    for k, v in CONF.items():  # also when a session of an earlier test module was picked up
        if k.startswith("spark.sql."):  # (the runtime settings)
            session.conf.set(k, v)
    yield session
    session.stop()


def assert_same_prepared(a, b) -> None:
    """Every file of two prepared directories: arrow schema (pandas metadata included), row groups, values."""
    for name in FILES:
        fa, fb = pq.ParquetFile(a / name), pq.ParquetFile(b / name)
        assert fa.schema_arrow.equals(fb.schema_arrow, check_metadata=True), (name, fa.schema_arrow, fb.schema_arrow)
        groups = [[f.metadata.row_group(i).num_rows for i in range(f.metadata.num_row_groups)] for f in (fa, fb)]
        assert groups[0] == groups[1], name
        pd.testing.assert_frame_equal(pd.read_parquet(a / name), pd.read_parquet(b / name), check_exact=True, obj=name)
    assert read_json(a / schema.META) == read_json(b / schema.META)
    assert sorted(p.name for p in a.rglob("*")) == sorted(p.name for p in b.rglob("*"))  # nothing else (no part files)


def _both(spark, tmp_path, dataset, path, params, **over):
    want = prepare(dataset, path, tmp_path / "pandas", params, **over)
    got = prepare_spark(dataset, path, tmp_path / "spark", params, spark=spark, **over)
    assert_same_prepared(tmp_path / "pandas", tmp_path / "spark")
    for s in (want, got):
        s.pop("seconds"), s.pop("out")
    assert got == want
    return got


def test_synthetic_data_prepares_the_same_on_spark(spark, tmp_path):
    params = deep_merge(
        load_params(),
        {"synthetic": {"n_users": 60, "n_items": 90, "mean_interactions": 30, "min_interactions": 8, "seed": 11}},
    )
    s = _both(spark, tmp_path, "synthetic", None, params)
    assert s["rows"] > 1500 and all(n > 50 for n in s["samples"].values())
    # and the user sample (max_users) draws the same users
    s = _both(spark, tmp_path / "sampled", "synthetic", None, params, max_users=17)
    assert s["users"] == 17 and pd.read_parquet(tmp_path / "sampled" / "spark" / schema.USERS).shape[0] == 17


def write_ratings_fixture(d, seed: int = 5):
    """MovieLens ratings.csv + movies.csv: rows in no particular order, many timestamp ties (within a user
    and across users), a user below min_history, repeated (user, item) pairs at other times, an exact
    duplicate row with another rating, and rows with an empty user id or timestamp."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, 31):
        n = int(rng.integers(6, 30))
        for _ in range(n):
            rows.append(
                (u, int(rng.integers(1, 40)), float(rng.integers(1, 11)) / 2, 1_000_000 + int(rng.integers(0, 25)) * 60)
            )
    rows += [(99, 3, 4.0, 1_000_000), (99, 4, 2.0, 1_000_060), (99, 5, 5.0, 1_000_120)]  # below min_history
    rows.append(rows[7][:2] + (0.5,) + rows[7][3:])  # the same (user, item, time) again, another rating
    order = rng.permutation(len(rows))
    lines = ["userId,movieId,rating,timestamp"] + [f"{u},{i},{r},{t}" for u, i, r, t in (rows[k] for k in order)]
    lines.insert(40, "7,12,4.5,")  # no time: kept in interactions, no sample
    lines.insert(80, ",12,3.0,1000300")  # no user
    d.mkdir(parents=True)
    (d / "ratings.csv").write_text("\n".join(lines) + "\n")
    movies = ["movieId,title,genres"] + [f'{i},"Movie {i}, The (19{50 + i})",Drama|Comedy' for i in range(1, 40)]
    movies.append("40,Nothing (2001),(no genres listed)")
    (d / "movies.csv").write_text("\n".join(movies) + "\n")
    return d


def test_movielens_csv_with_ties_and_nulls_prepares_the_same_on_spark(spark, tmp_path):
    raw = write_ratings_fixture(tmp_path / "ml")
    params = load_params()
    s = _both(spark, tmp_path / "a", "ml-25m", raw, params, min_history=3, max_history=4)
    inter = pd.read_parquet(tmp_path / "a" / "spark" / schema.INTERACTIONS)
    assert str(inter["user_id"].dtype) == "Int64" and inter["user_id"].isna().sum() == 1  # kept for the gate
    assert inter["timestamp"].isna().sum() == 1 and s["rows"] == len(inter)
    events = pd.read_parquet(tmp_path / "a" / "spark" / schema.EVENTS)
    assert len(events) == len(inter) - 2 and 99 in set(events["user_id"])
    idx = pd.concat([pd.read_parquet(tmp_path / "a" / "spark" / schema.split_path(x)) for x in schema.SPLITS])
    assert 99 not in set(idx["user_id"]) and (idx["history_length"] <= 4).all() and (idx["n_history"] > 4).any()
    assert events.duplicated(["user_id", "timestamp"]).any()  # ties within a user were there to break
    s = _both(spark, tmp_path / "b", "ml-25m", raw, params, max_users=12)  # the default history bounds, a user sample
    assert s["users"] == 12


def test_a_generic_parquet_table_prepares_the_same_on_spark(spark, tmp_path):
    rng = np.random.default_rng(2)
    n = 600
    raw = tmp_path / "raw"
    raw.mkdir()
    uid = rng.integers(1, 25, n).astype("float64")
    uid[5] = np.nan  # a null id (a float column, as pandas writes one with NaN)
    pd.DataFrame(
        {
            "uid": uid,
            "iid": rng.integers(100, 160, n),
            "stars": rng.integers(1, 6, n).astype("int32"),
            "ts": 1_600_000_000 + rng.integers(0, 50, n) * 3600,
        }
    ).to_parquet(raw / "interactions.parquet")
    params = deep_merge(
        load_params(),
        {"data": {"table": {"columns": {"user_id": "uid", "item_id": "iid", "rating": "stars", "timestamp": "ts"}}}},
    )
    _both(spark, tmp_path, "table", raw, params)  # no items/users files: both derived from the interactions


def test_a_parquet_directory_of_part_files_prepares_the_same_on_spark(spark, tmp_path):
    """What Spark, Hive and Dask write (issue 24): part files (Dask's unpadded names, so natural order
    matters), _SUCCESS beside them; many timestamp ties, so the row order across parts
    decides the event order. Both engines read it as one data set in the same order."""
    rng = np.random.default_rng(3)
    n = 500
    table = pd.DataFrame(
        {
            "user_id": rng.integers(1, 12, n),
            "item_id": rng.integers(1, 40, n),
            "rating": rng.integers(1, 6, n).astype("float64"),
            "timestamp": 1_600_000_000 + rng.integers(0, 8, n) * 60,
        }
    )
    d = tmp_path / "raw" / "interactions.parquet"
    d.mkdir(parents=True)
    cuts = [0, 40, 90, 200, 260, 330, 410, n]
    for k in range(len(cuts) - 1):
        table.iloc[cuts[k] : cuts[k + 1]].to_parquet(
            d / f"part.{k * 3}.parquet", index=False
        )  # part.0, part.3, ..., part.18
    (d / "_SUCCESS").write_text("")  # (no .crc files: Hadoop's local file system would verify them)
    _both(spark, tmp_path, "table", tmp_path / "raw", load_params())
    got = pd.read_parquet(tmp_path / "spark" / schema.INTERACTIONS)
    pd.testing.assert_frame_equal(got, table, check_dtype=False)  # the parts' rows, in the parts' natural order


def test_repeated_pairs_are_one_event_on_spark_as_in_pandas(spark):
    """``repeat_is_same_event`` (time is row order): the later copies of a (user, item) pair get no sample."""
    from pyspark.sql import functions as F

    rng = np.random.default_rng(4)
    n = 400
    inter = pd.DataFrame(
        {
            "user_id": rng.integers(1, 8, n),
            "item_id": rng.integers(1, 20, n),
            "rating": rng.integers(1, 6, n).astype("float64"),
            "timestamp": rng.integers(0, 60, n),
        }
    )
    events_pd, index_pd = build_sample_index(inter, 4.0, 3, 10, (0.7, 0.2, 0.1), repeat_is_same_event=True)
    src = spark.createDataFrame(inter.assign(rid=np.arange(n))).withColumn("rating", F.col("rating").cast("double"))
    events, samples, persisted = spark_sample_index(src, 4.0, 3, 10, (0.7, 0.2, 0.1), repeat_is_same_event=True)
    got_events = events.orderBy("event_pos").toPandas()
    assert (got_events["event_pos"] == np.arange(n)).all()
    pd.testing.assert_frame_equal(got_events[list(schema.EVENT_COLUMNS)], events_pd, check_dtype=False)
    got = samples.orderBy("t_rank").toPandas()
    for name, code in (("train", 0), ("valid", 1), ("test", 2)):
        part = got[got["split"] == code][list(schema.SAMPLE_INDEX_COLUMNS)].reset_index(drop=True)
        pd.testing.assert_frame_equal(part, index_pd[name], check_dtype=False, obj=name)
    dropped = len(inter) - sum(len(v) for v in index_pd.values())
    assert inter.duplicated(["user_id", "item_id"]).sum() > 0 and dropped > 0
    for df in persisted:
        df.unpersist()


def test_cells_the_spark_path_cannot_read_are_refused_and_nothing_is_written(spark, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier output")
    cases = {
        "userId,movieId,rating,timestamp\n1,1,4.0,978300000\n7.0,2,4.0,978300060\n": ("userId", "'7.0'"),
        "userId,movieId,rating,timestamp\n1,1,four,978300000\n": ("rating", "'four'"),
        "userId,movieId,rating,timestamp\n1,1,4.0,99999999999999999999\n": ("timestamp", "99999999999999999999"),
        "userId,movieId,rating,timestamp\n1,1,4.0,978300000\n1,2,4.0,978300060,extra\n": (
            "header's fields",
            "'1,2,4.0,978300060,extra'",
        ),
        "userId,movieId,rating\n1,1,4.0\n": ("lacks columns ['timestamp']", ""),
    }
    for i, (text, (what, example)) in enumerate(cases.items()):
        raw = tmp_path / f"raw{i}"
        raw.mkdir()
        (raw / "ratings.csv").write_text(text)
        (raw / "movies.csv").write_text("movieId,title,genres\n1,A (1999),Drama\n2,B (2000),Drama\n")
        with pytest.raises(DataError) as e:
            prepare_spark("ml-25m", raw, out, load_params(), spark=spark)
        assert what in str(e.value) and example in str(e.value) and "ratings.csv" in str(e.value), str(e.value)
        assert [p.name for p in out.iterdir()] == ["keep.txt"]  # the earlier output is untouched
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left behind
    raw = tmp_path / "dt"
    raw.mkdir()
    pd.DataFrame(
        {
            "user_id": [1],
            "item_id": [2],
            "rating": [4.0],
            "timestamp": pd.to_datetime(["2020-01-01"]).astype("datetime64[us]"),
        }
    ).to_parquet(raw / "interactions.parquet")
    with pytest.raises(DataError, match="'timestamp' is timestamp.*use data.engine pandas"):
        prepare_spark("table", raw, out, load_params(), spark=spark)


def test_the_driver_program_fetches_prepares_uploads_and_reports(spark, tmp_path):
    import fsspec

    from reclora import storage
    from reclora.data import dvc_hash, spark_job

    raw = write_ratings_fixture(tmp_path / "ml")
    root = f"memory://spark-job-{tmp_path.name}"
    storage.upload_dir(raw, f"{root}/raw")
    sections = {"data": {"min_history": 3}}
    rc = spark_job.main(
        [
            "--dataset",
            "ml-25m",
            "--source",
            f"{root}/raw",
            "--out",
            f"{root}/data",
            "--work",
            str(tmp_path / "work"),
            "--report",
            f"{root}/report.json",
            "--params",
            json.dumps(sections),
        ]
    )
    assert rc == 0
    with fsspec.open(f"{root}/report.json") as f:
        report = json.load(f)
    local = tmp_path / "work" / "prepared"
    assert report["data_version"] == dvc_hash(local)["md5"] and report["source"] == f"{root}/raw"
    back = storage.download_dir(f"{root}/data", tmp_path / "back")
    assert_same_prepared(local, back)
    want = prepare("ml-25m", tmp_path / "work" / "raw", tmp_path / "pandas", deep_merge(load_params(), sections))
    assert want["samples"] == report["samples"] and want["rows"] == report["rows"]
    assert_same_prepared(tmp_path / "pandas", local)
