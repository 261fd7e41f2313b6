"""The Great Expectations data gate, run for real on small prepared directories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reclora.config import section
from reclora.errors import ConfigError, DataError, ValidationFailed
from reclora.validation import ValidationResult, suites, validate_prepared

NOW = 1_720_000_000  # 2024-07-03; the fixture's events are in the first half of 2024
START = 1_704_067_200  # 2024-01-01
SUITES = ("reclora.interactions", "reclora.items", "reclora.users", "reclora.samples")


def make_tables(n_users: int = 20, n_items: int = 30, n_events: int = 200, seed: int = 0) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    users = pd.DataFrame({"user_id": np.arange(1, n_users + 1, dtype="int64"), "age": rng.integers(18, 70, n_users)})
    items = pd.DataFrame(
        {
            "item_id": np.arange(1, n_items + 1, dtype="int64"),
            "title": [f"Movie {i} ({1990 + i % 20})" for i in range(1, n_items + 1)],
            "genres": ["Drama|Comedy" if i % 3 else "" for i in range(1, n_items + 1)],
        }
    )
    # 10 events per user on distinct items, strictly increasing times
    per_user = n_events // n_users
    rows = []
    for u in range(1, n_users + 1):
        chosen = rng.choice(n_items, size=per_user, replace=False) + 1
        times = np.sort(rng.choice(180 * 86400, size=per_user, replace=False)) + START
        for it, ts in zip(chosen, times):
            rows.append((u, int(it), float(rng.integers(1, 6)), int(ts)))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]).astype(
        {"user_id": "int64", "item_id": "int64", "rating": "float64", "timestamp": "int64"}
    )
    return {"interactions": interactions, "items": items, "users": users}


def make_samples(interactions: pd.DataFrame, threshold: float = 4.0) -> dict[str, pd.DataFrame]:
    rows = []
    for _, g in interactions.sort_values(["user_id", "timestamp"]).groupby("user_id"):
        g = g.reset_index(drop=True)
        for k in range(1, len(g)):
            hist = g.iloc[:k]
            t = g.iloc[k]
            rows.append(
                {
                    "user_id": int(t.user_id),
                    "item_id": int(t.item_id),
                    "rating": float(t.rating),
                    "timestamp": int(t.timestamp),
                    "label": int(t.rating >= threshold),
                    "n_history": k,
                    "hist_item_ids": hist.item_id.astype(int).tolist(),
                    "hist_ratings": hist.rating.astype(float).tolist(),
                    "hist_timestamps": hist.timestamp.astype(int).tolist(),
                }
            )
    s = pd.DataFrame(rows).sort_values("timestamp", ignore_index=True)
    s["label"] = s["label"].astype("int8")
    s["n_history"] = s["n_history"].astype("int64")
    a, b = int(len(s) * 0.8), int(len(s) * 0.9)
    return {"train": s.iloc[:a], "valid": s.iloc[a:b], "test": s.iloc[b:]}


def write_prepared(
    out: Path, tables: dict[str, pd.DataFrame], samples: dict[str, pd.DataFrame] | None = None, dataset: str = "ml-100k"
) -> Path:
    (out / "samples").mkdir(parents=True, exist_ok=True)
    for name in ("interactions", "items", "users"):
        tables[name].to_parquet(out / f"{name}.parquet", index=False)
    samples = samples if samples is not None else make_samples(tables["interactions"])
    for split, df in samples.items():
        df.to_parquet(out / "samples" / f"{split}.parquet", index=False)
    meta = {"dataset": dataset, "label_threshold": 4.0, "counts": {"interactions": len(tables["interactions"])}}
    (out / "meta.json").write_text(json.dumps(meta))
    return out


@pytest.fixture
def params() -> dict:
    p = section("validation")
    p["min_interactions"] = 100  # the fixture is tiny
    return p


def run(tmp_path: Path, params: dict, tables=None, samples=None, **kw) -> ValidationResult:
    data = write_prepared(tmp_path / "prepared", tables or make_tables(), samples)
    return validate_prepared(data, tmp_path / "report", now=NOW, params=params, **kw)


def only(result: ValidationResult, table: str, expectation: str, column: str | None = None) -> dict:
    hits = [
        f
        for f in result.failures
        if f["table"] == table and f["expectation"] == expectation and (column is None or f["column"] == column)
    ]
    assert len(hits) == 1, result.failures
    return hits[0]


def test_clean_data_passes_and_writes_the_report(tmp_path, params, monkeypatch):
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "stale.txt").write_text("old run")

    result = run(tmp_path, params)

    assert result.success, result.failures
    assert result.failures == []
    assert result.report_html == tmp_path / "report" / "index.html"
    html = result.report_html.read_text()
    for name in SUITES:
        assert name in html
    assert list((tmp_path / "report" / "validations").rglob("*.html"))
    assert not (tmp_path / "report" / "stale.txt").exists()  # the report dir is replaced as a whole
    summary = json.loads(result.summary_json.read_text())
    assert summary["success"] is True
    assert summary["dataset"] == "ml-100k"
    assert summary["counts"]["interactions"] == 200
    assert summary["counts"]["items"] == 30 and summary["counts"]["users"] == 20
    assert sum(summary["counts"]["samples"].values()) == 180
    assert set(summary["tables"]) == {"interactions", "items", "users", "samples"}
    assert summary["statistics"]["unsuccessful_expectations"] == 0
    assert summary["statistics"]["evaluated_expectations"] > 30
    assert 0.2 < summary["tables"]["interactions"]["stats"]["positive_rate"] < 0.9
    # GE kept its project files out of the user's home and working directory
    assert list(cwd.iterdir()) == [] and list(home.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dirs left


def test_ratings_out_of_range(tmp_path, params):
    t = make_tables()
    t["interactions"].loc[[3, 50], "rating"] = [0.0, 9.0]
    result = run(tmp_path, params, t)
    assert not result.success
    f = only(result, "interactions", "expect_column_values_to_be_between", "rating")
    assert f["reason"] == "interactions.rating: 2 values outside [1, 5] (e.g. 0.0, 9.0)"
    summary = json.loads(result.summary_json.read_text())
    assert summary["success"] is False and f in summary["failures"]
    assert result.report_html.is_file()
    with pytest.raises(ValidationFailed, match="outside"):
        result.raise_for_failure()


def test_empty_title(tmp_path, params):
    t = make_tables()
    t["items"].loc[4, "title"] = "   "
    result = run(tmp_path, params, t)
    f = only(result, "items", "expect_column_values_to_not_match_regex", "title")
    assert "1 value empty or whitespace-only" in f["reason"] and "'   '" in f["reason"]
    assert [x["table"] for x in result.failures] == ["items"]


def test_duplicated_events(tmp_path, params):
    t = make_tables()
    i = t["interactions"]
    t["interactions"] = pd.concat([i, i.iloc[10:15]], ignore_index=True)
    result = run(tmp_path, params, t, samples=make_samples(i))
    f = only(result, "interactions", "expect_compound_columns_to_be_unique")
    assert f["column"] == "user_id,item_id,timestamp"
    assert "10 of 205 rows repeat an event (same user_id, item_id, timestamp)" in f["reason"]
    u, it, ts = (int(i.iloc[10][c]) for c in ("user_id", "item_id", "timestamp"))
    assert f"(e.g. ({u}, {it}, {ts})" in f["reason"]


def test_future_timestamp(tmp_path, params):
    t = make_tables()
    t["interactions"].loc[7, "timestamp"] = NOW + 10 * 86400
    result = run(tmp_path, params, t)
    f = only(result, "interactions", "expect_column_max_to_be_between", "timestamp")
    assert str(NOW + 10 * 86400) in f["reason"] and f"<= now + 86400 s = {NOW + 86400}" in f["reason"]
    assert len(result.failures) == 1


def test_unknown_item(tmp_path, params):
    t = make_tables()
    t["interactions"].loc[[0, 1], "item_id"] = 999
    result = run(tmp_path, params, t)
    f = only(result, "interactions", "expect_column_values_to_be_in_set", "item_id")
    assert f["reason"].startswith("interactions.item_id: 2 values not in items.item_id (e.g. 999)")


def test_unknown_user_with_a_large_id_set(tmp_path, params, monkeypatch):
    # beyond MAX_VALUE_SET ids the check moves to a derived column of the ids not found
    monkeypatch.setattr(suites, "MAX_VALUE_SET", 10)
    t = make_tables()
    t["interactions"].loc[[0, 1, 2], "user_id"] = 77
    result = run(tmp_path, params, t)
    f = only(result, "interactions", "expect_column_values_to_be_null", "user_id")
    assert f["reason"] == "interactions.user_id: 3 values not in users.user_id (e.g. 77)"
    assert len(result.failures) == 1


def test_null_user_id(tmp_path, params):
    t = make_tables()
    t["interactions"]["user_id"] = t["interactions"]["user_id"].astype("Int64")
    t["interactions"].loc[5, "user_id"] = pd.NA
    result = run(tmp_path, params, t)
    f = only(result, "interactions", "expect_column_values_to_not_be_null", "user_id")
    assert f["reason"] == "interactions.user_id: 1 null value (expected none) (e.g. rows 5)"
    assert len(result.failures) == 1


def test_bad_samples(tmp_path, params):
    t = make_tables()
    s = make_samples(t["interactions"])
    test = s["test"].copy()
    test.iloc[0, test.columns.get_loc("label")] = 2
    test.iloc[1, test.columns.get_loc("n_history")] = 0
    test.at[test.index[2], "hist_ratings"] = test.at[test.index[2], "hist_ratings"][:-1]
    s["test"] = test
    result = run(tmp_path, params, t, samples=s)
    assert {f["table"] for f in result.failures} == {"samples"}
    label = only(result, "samples", "expect_column_values_to_be_in_set", "label")
    assert "1 value not in {0, 1} (e.g. 2) in split test" in label["reason"]
    assert "below 1 (e.g. 0)" in only(result, "samples", "expect_column_values_to_be_between", "n_history")["reason"]
    assert (
        "len(hist_ratings) != len(hist_item_ids)"
        in only(result, "samples", "expect_column_pair_values_to_be_equal", "hist_ratings")["reason"]
    )


def test_positive_rate_and_row_count_bounds(tmp_path, params):
    params = dict(params, positive_rate=[0.95, 1.0], min_interactions=1000)
    result = run(tmp_path, params)
    rate = only(result, "interactions", "expect_column_proportion_of_non_null_values_to_be_between", "rating")
    assert "positive rate (share of rating >= 4)" in rate["reason"] and "within [0.95, 1]" in rate["reason"]
    rows = only(result, "interactions", "expect_table_row_count_to_be_between")
    assert rows["reason"] == "interactions: row count is 200, expected within [1000, 50000000]"


def test_timestamp_before_the_lower_bound(tmp_path, params):
    t = make_tables()
    t["interactions"].loc[3, "timestamp"] = 631152000  # 1990-01-01, before the bundled data sets' era
    result = run(tmp_path, params, t)
    f = only(result, "interactions", "expect_column_min_to_be_between", "timestamp")
    assert "earliest timestamp is 631152000 (1990-01-01" in f["reason"]
    assert ">= 788918400 (1995-01-01 00:00:00 UTC, validation.min_timestamp)" in f["reason"]
    assert len(result.failures) == 1
    # configurable: an epoch bound (the generic table's default) lets the same data pass
    relaxed = dict(params, min_timestamp={**params["min_timestamp"], "ml-100k": 0})
    assert run(tmp_path / "relaxed", relaxed, t).success
    with pytest.raises(ConfigError, match=r"validation.min_timestamp.ml-100k must be a date"):
        run(tmp_path / "bad", dict(params, min_timestamp={"ml-100k": "the nineties"}), t)
    with pytest.raises(ConfigError, match="min_timestamp has no entry for dataset 'ml-100k'"):
        run(tmp_path / "none", dict(params, min_timestamp={"table": 0}), t)


def test_missing_inputs_raise_data_error(tmp_path, params):
    with pytest.raises(DataError, match="not found"):
        validate_prepared(tmp_path / "nope", tmp_path / "report", params=params)
    data = write_prepared(tmp_path / "prepared", make_tables())
    (data / "samples" / "valid.parquet").unlink()
    with pytest.raises(DataError, match=r"valid\.parquet: not found"):
        validate_prepared(data, tmp_path / "report", params=params)
    t = make_tables()
    t["items"] = t["items"].drop(columns=["title"])
    data = write_prepared(tmp_path / "prepared2", t)
    with pytest.raises(DataError, match=r"items\.parquet: missing required column\(s\) title"):
        validate_prepared(data, tmp_path / "report", params=params)
    assert not (tmp_path / "report").exists()
    data = write_prepared(tmp_path / "prepared3", make_tables())
    with pytest.raises(ConfigError, match="contains the input --data"):
        validate_prepared(data, data.parent, params=params)
    with pytest.raises(ConfigError, match="no entry for dataset 'ml-100k'"):
        validate_prepared(data, tmp_path / "report", params=dict(params, rating_range={"ml-1m": [1, 5]}))
    assert data.is_dir()
