"""The features stage against real Feast: real `apply` (registry file), real SQLite online store,
real point-in-time joins of the file (toy) and DuckDB (stage, params' default) offline stores. Everything lives in tmp_path; small data."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from reclora.errors import DataError
from reclora.features import (
    apply_feature_repo,
    build_feature_sources,
    features_stage,
    historical_user_features,
    materialize,
    online_item_features,
    online_user_features,
    open_feature_store,
)
from reclora.features.definitions import ACTIVITY_FEATURES, HISTORY_FEATURES, PROFILE_TEXT
from reclora.features.repo import render_feature_repo, store_config
from reclora.features.sources import activity_snapshots, history_snapshots
from reclora.features.stage import point_in_time_check

REPO = Path(__file__).resolve().parents[2]


def _ids(a) -> list[int]:
    return [] if a is None else [int(x) for x in a]


# --------------------------------------------------------------------------------------------
# (a) point in time, on a hand-made data set


@pytest.fixture(scope="module")
def toy_store(tmp_path_factory):
    """user 1: events at t=100, 200, 300; user 2: two events in the same second (150); users has
    only user_id. history_len=2, so the arrays are truncated while n_history counts everything."""
    root = tmp_path_factory.mktemp("toy")
    data = root / "prepared"
    data.mkdir()
    pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2],
            "item_id": [10, 11, 12, 13, 10],
            "rating": [4.0, 3.0, 5.0, 2.0, 4.5],
            "timestamp": [100, 200, 300, 150, 150],
        }
    ).to_parquet(data / "interactions.parquet", index=False)
    pd.DataFrame(
        {
            "item_id": [10, 11, 12, 13],
            "title": ["Alpha (1990)", "Beta", "Gamma", "Delta"],
            "genres": ["A", "A|B", "", "C"],
        }
    ).to_parquet(data / "items.parquet", index=False)
    pd.DataFrame({"user_id": [1, 2]}).to_parquet(data / "users.parquet", index=False)
    src = build_feature_sources(data, root / "sources", history_len=2)
    store = apply_feature_repo(root / "repo", root / "sources")
    return store, src, root


def test_activity_is_strictly_before_the_asked_time(toy_store):
    store, src, _ = toy_store
    assert src["activity_rows"] == 4  # user 1: 3 seconds; user 2: 1 second
    assert src["history_rows"] == 2  # one latest snapshot per user
    asked = pd.DataFrame(
        {"user_id": [1, 1, 1, 1, 1, 1, 2, 2], "event_timestamp": [50, 100, 200, 250, 300, 301, 150, 151]},
        index=list("abcdefgh"),
    )
    got = historical_user_features(store, asked)
    assert list(got.index) == list("abcdefgh")  # same rows, same order
    assert list(got["user_id"]) == [1, 1, 1, 1, 1, 1, 2, 2]
    n = got["n_history"].astype("float").fillna(0).astype(int)
    last = got["last_event_timestamp"].astype("float")
    # before the first event, and at it: nothing
    assert got.loc[["a", "b"], "n_history"].isna().all() and last[["a", "b"]].isna().all()
    # at 200: only the event at 100; at 250 and 300: 100 and 200, never the event at 300
    assert n["c"] == 1 and last["c"] == 100
    assert n["d"] == 2 and last["d"] == 200 and got.loc["d", "mean_rating"] == pytest.approx(3.5)
    assert n["e"] == 2 and last["e"] == 200
    assert n["f"] == 3 and last["f"] == 300 and got.loc["f", "mean_rating"] == pytest.approx(4.0)
    # events in the same second are not history for each other; one second later both are
    assert n["g"] == 0 and n["h"] == 2 and got.loc["h", "mean_rating"] == pytest.approx(3.25)
    # users with only user_id: the profile view still works (empty profile sentence)
    assert set(got[PROFILE_TEXT]) == {""}


def test_history_view_is_the_latest_snapshot_only(toy_store):
    store, _, _ = toy_store
    asked = pd.DataFrame({"user_id": [1, 1, 2], "event_timestamp": [300, 301, 151]})
    got = historical_user_features(store, asked, views=("user_history",))
    # before user 1's last event there is no row (nothing leaks); after it, the last history_len=2
    # events while n_history counts all 3; same-second events ordered by item id
    assert got.loc[0, "hist_item_ids"] is None and pd.isna(got.loc[0, "n_history"])
    assert _ids(got.loc[1, "hist_timestamps"]) == [200, 300] and _ids(got.loc[1, "hist_item_ids"]) == [11, 12]
    assert int(got.loc[1, "n_history"]) == 3 and list(got.loc[1, "hist_ratings"]) == [3.0, 5.0]
    assert _ids(got.loc[2, "hist_item_ids"]) == [10, 13]


def test_historical_accepts_datetimes_duplicates_and_chunks(toy_store):
    store, _, _ = toy_store
    asked = pd.DataFrame(
        {"user_id": [1, 2, 1, 1], "event_timestamp": pd.to_datetime([250, 151, 200, 250], unit="s", utc=True)}
    )
    whole = historical_user_features(store, asked)
    assert list(whole["last_event_timestamp"]) == [200, 150, 100, 200] and list(whole["n_history"]) == [2, 2, 1, 2]
    chunked = historical_user_features(store, asked, max_join_rows=2)  # several Feast requests
    pd.testing.assert_frame_equal(chunked, whole)


def test_activity_snapshots_match_a_plain_count():
    """The vectorized aggregates equal a per-row recount (random data with ties in a second)."""
    rng = np.random.default_rng(3)
    inter = pd.DataFrame(
        {
            "user_id": rng.integers(0, 20, 600),
            "item_id": rng.integers(0, 50, 600),
            "rating": rng.integers(1, 6, 600).astype(float),
            "timestamp": rng.integers(0, 80, 600),
        }
    )
    act = activity_snapshots(inter)
    assert len(act) == len(inter[["user_id", "timestamp"]].drop_duplicates())
    for r in act.sample(60, random_state=0).itertuples(index=False):
        seen = inter[(inter.user_id == r.user_id) & (inter.timestamp <= r.last_event_timestamp)]
        assert r.n_history == len(seen) and r.mean_rating == pytest.approx(seen.rating.mean(), rel=1e-6)
        assert r.event_timestamp == pd.Timestamp(r.last_event_timestamp + 1, unit="s", tz="UTC")
    hist = history_snapshots(inter, 5, latest_only=True).to_pandas()
    assert len(hist) == inter["user_id"].nunique()
    for r in hist.itertuples(index=False):
        mine = inter[inter.user_id == r.user_id].sort_values(["timestamp", "item_id"], kind="stable")
        assert list(r.hist_item_ids) == list(mine.item_id[-5:]) and r.n_history == len(mine)


def test_materialize_as_of_and_latest(toy_store):
    store, _, _ = toy_store
    materialize(store, end=250)  # the online store as of t=250: user 1's snapshot (stamped 301) not yet in
    on = online_user_features(store, [1, 2])
    assert on.loc[0, "hist_timestamps"] is None and _ids(on.loc[1, "hist_item_ids"]) == [10, 13]
    window = materialize(store)  # default: up to the latest event
    assert window["end"].startswith("1970-01-01T00:05:0")
    on = online_user_features(store, [1, 2])
    assert _ids(on.loc[0, "hist_timestamps"]) == [200, 300] and int(on.loc[0, "n_history"]) == 3
    assert _ids(on.loc[1, "hist_item_ids"]) == [10, 13]
    items = online_item_features(store, [12, 10])
    assert list(items["title"]) == ["Gamma", "Alpha (1990)"] and list(items["genres"]) == ["", "A"]


# --------------------------------------------------------------------------------------------
# the whole stage on a small synthetic prepared directory


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    from reclora.config import load_params
    from reclora.data import prepare

    root = tmp_path_factory.mktemp("stage")
    params = load_params()
    params["synthetic"].update(n_users=30, n_items=40, mean_interactions=20)
    prepare("synthetic", None, root / "prepared", params)
    summary = features_stage(root / "prepared", root / "features", params=params)
    return root, summary


def test_stage_checks_point_in_time_and_writes_model_inputs(stage):
    from reclora.data import read_prepared
    from reclora.features.inputs import model_inputs

    root, summary = stage
    samples = pd.concat(list(read_prepared(root / "prepared", histories=False)[1].values()), ignore_index=True)
    assert len(samples) > 100
    assert summary["samples"] == len(samples) and summary["pit_leaks"] == 0 and summary["pit_mismatches"] == 0
    keys = samples[["user_id", "timestamp"]].drop_duplicates()
    assert summary["pit_check_rows"] == len(keys)  # small data: every row checked
    feats = pd.read_parquet(root / "features" / "pit_check.parquet")
    m = samples.merge(feats, on=["user_id", "timestamp"], suffixes=("", "_feast"))
    assert len(m) == len(samples)
    assert (m["last_event_timestamp"] < m["timestamp"]).all()  # strictly earlier
    assert (m["n_history_feast"].astype(int) == m["n_history"]).all()
    # the model inputs are Feast's: every catalogue user and item, the synthetic users' attributes
    users = pd.read_parquet(root / "features" / "model_inputs" / "users.parquet")
    items = pd.read_parquet(root / "features" / "model_inputs" / "items.parquet")
    assert {"age", "gender", "occupation"} <= set(summary["profile_attributes"]) <= set(users.columns)
    assert users[PROFILE_TEXT].str.startswith("The user is a").all()
    prepared_items = pd.read_parquet(root / "prepared" / "items.parquet")
    assert len(items) == len(prepared_items) and len(users) == summary["users"]
    # chunked requests reduced per chunk give what one request gives
    store = open_feature_store(root / "features" / "repo")
    from reclora.features.inputs import offline_feature_frames

    one = model_inputs(*offline_feature_frames(store, samples, users["user_id"], items["item_id"]))
    many = model_inputs(
        *offline_feature_frames(store, samples, users["user_id"], items["item_id"], chunk_rows=97, latest_per_key=True)
    )
    pd.testing.assert_frame_equal(one.users, many.users)
    pd.testing.assert_frame_equal(one.items, many.items)
    pd.testing.assert_frame_equal(many.users.astype({c: users[c].dtype for c in users.columns}), users)


def test_pit_check_finds_a_leak_and_a_mismatch():
    samples = pd.DataFrame({"user_id": [1, 1, 2], "timestamp": [100, 200, 50], "n_history": [3, 4, 1]})
    feats = pd.DataFrame(
        {
            "user_id": [1, 1, 2],
            "timestamp": [100, 200, 50],
            "n_history": [3, 5, 1],
            "last_event_timestamp": [99, 150, 50],
        }
    )
    assert point_in_time_check(samples, feats) == {"leaks": 1, "mismatches": 1, "checked": 3}


def test_check_subset_is_seeded():
    from reclora.features.stage import _check_rows

    samples = pd.DataFrame({"user_id": np.arange(1000) % 7, "timestamp": np.arange(1000)})
    a, b = _check_rows(samples, 50, seed=1), _check_rows(samples, 50, seed=1)
    assert len(a) == 50 and a.equals(b) and not a.equals(_check_rows(samples, 50, seed=2))
    assert len(_check_rows(samples, 0, seed=1)) == 1000


def test_online_features_after_materialize(stage):
    root, _ = stage
    store = open_feature_store(root / "features" / "repo")  # the renamed-into-place repo still works
    hist = pd.read_parquet(root / "features" / "sources" / "user_history.parquet")
    assert hist["user_id"].is_unique  # one (the latest) snapshot per user
    latest = hist.set_index("user_id")
    users = [int(u) for u in latest.index[:5]]
    on = online_user_features(store, users)
    assert list(on["user_id"]) == users
    for _, r in on.iterrows():
        want = latest.loc[r["user_id"]]
        for name in ("hist_item_ids", "hist_timestamps"):
            assert _ids(r[name]) == _ids(want[name])
        assert np.allclose(r["hist_ratings"], want["hist_ratings"])
        assert int(r["n_history"]) == int(want["n_history"])
        assert isinstance(r["age"], (int, np.integer)) and r[PROFILE_TEXT].startswith("The user is a")
    items = pd.read_parquet(root / "prepared" / "items.parquet").head(7)
    got = online_item_features(store, items["item_id"])
    assert list(got["item_id"]) == list(items["item_id"])
    assert list(got["title"]) == list(items["title"]) and list(got["genres"]) == list(items["genres"])


def test_feast_apply_is_real(stage):
    root, summary = stage
    repo = root / "features" / "repo"
    registry, online = repo / "data" / "registry.db", repo / "data" / "online_store.db"
    assert registry.stat().st_size > 0 and online.stat().st_size > 0
    with sqlite3.connect(online) as con:
        tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
        n = con.execute("select count(*) from reclora_user_history").fetchone()[0]
    assert {"reclora_user_profile", "reclora_item_metadata", "reclora_user_history"} <= tables
    assert n > 0
    assert summary["store"] == {"provider": "local", "offline_store": "duckdb", "online_store": "sqlite"}
    assert summary["features"]["user_history"] == [f"user_history:{f}" for f in HISTORY_FEATURES]
    assert summary["features"]["user_activity"] == [f"user_activity:{f}" for f in ACTIVITY_FEATURES]
    summ = yaml.safe_load((root / "features" / "summary.json").read_text())
    assert summ["training_join_rows"] == summary["training_join_rows"] > 2 * summary["samples"]
    assert not list((root / "features").parent.glob(".features.tmp-*"))  # nothing half-written left


def test_checked_in_repo_matches_the_rendered_one(tmp_path):
    assert yaml.safe_load((REPO / "feature_repo" / "feature_store.yaml").read_text()) == store_config()
    repo, _ = render_feature_repo(tmp_path / "repo", tmp_path / "sources")
    assert (REPO / "feature_repo" / "features.py").read_bytes() == (repo / "features.py").read_bytes()


def test_store_config_overrides_switch_backends():
    cfg = store_config(overrides={"online_store": {"type": "redis", "connection_string": "${REDIS_URL}"}})
    assert cfg["online_store"] == {"type": "redis", "connection_string": "${REDIS_URL}"}
    assert cfg["offline_store"] == {"type": "file"} and cfg["provider"] == "local"
    cfg = store_config("/var/feast/online.db", {"registry": "s3://bucket/registry.db"})
    assert cfg["online_store"]["path"] == "/var/feast/online.db" and cfg["registry"] == "s3://bucket/registry.db"


# --------------------------------------------------------------------------------------------
# (e) bad input


def test_missing_data_dir_is_a_data_error(tmp_path):
    from reclora.config import load_params

    missing = tmp_path / "nope"
    with pytest.raises(DataError, match=r"nope: prepared data directory not found .*reclora data prepare"):
        build_feature_sources(missing, tmp_path / "sources")
    with pytest.raises(DataError, match="prepared data directory not found"):
        features_stage(missing, tmp_path / "out", params=load_params())
    assert not (tmp_path / "out").exists() and not (tmp_path / "sources").exists()
    (tmp_path / "half").mkdir()
    pd.DataFrame({"user_id": [1]}).to_parquet(tmp_path / "half" / "users.parquet")
    with pytest.raises(DataError, match=r"missing interactions.parquet, items.parquet"):
        build_feature_sources(tmp_path / "half", tmp_path / "sources")
    with pytest.raises(DataError, match="feature sources missing"):
        apply_feature_repo(tmp_path / "repo", tmp_path / "no-sources")


def test_event_order_check():
    from reclora.features.sources import _in_event_order

    df = pd.DataFrame({"user_id": [1, 1, 1, 2, 2], "timestamp": [5, 5, 7, 1, 1], "item_id": [3, 4, 1, 9, 9]})
    assert _in_event_order(df) and _in_event_order(df.iloc[:1])
    assert not _in_event_order(df.iloc[[1, 0, 2, 3, 4]])  # items out of order within a second
    assert not _in_event_order(df.iloc[[0, 1, 3, 2, 4]])  # users interleaved
    assert not _in_event_order(df.assign(timestamp=[5, 6, 5, 1, 1]))  # time goes back within a user
