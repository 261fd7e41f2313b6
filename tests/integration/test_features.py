"""The features stage against real Feast: real `apply` (registry file), real SQLite online store,
real point-in-time joins of the file offline store. Everything lives in tmp_path; small data."""

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
from reclora.features.definitions import HISTORY_FEATURES, PROFILE_TEXT
from reclora.features.store import features_py, store_config

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
        {"item_id": [10, 11, 12, 13], "title": ["Alpha (1990)", "Beta", "Gamma", "Delta"], "genres": ["A", "A|B", "", "C"]}
    ).to_parquet(data / "items.parquet", index=False)
    pd.DataFrame({"user_id": [1, 2]}).to_parquet(data / "users.parquet", index=False)
    src = build_feature_sources(data, root / "sources", history_len=2)
    store = apply_feature_repo(root / "repo", root / "sources")
    return store, src, root


def test_history_is_strictly_before_the_asked_time(toy_store):
    store, src, _ = toy_store
    assert src["history_rows"] == 4  # user 1: 3 seconds; user 2: 1 second
    asked = pd.DataFrame(
        {"user_id": [1, 1, 1, 1, 1, 1, 2, 2], "event_timestamp": [50, 100, 200, 250, 300, 301, 150, 151]},
        index=list("abcdefgh"),
    )
    got = historical_user_features(store, asked)
    assert list(got.index) == list("abcdefgh")  # same rows, same order
    assert list(got["user_id"]) == [1, 1, 1, 1, 1, 1, 2, 2]
    hist_ts = {k: _ids(v) for k, v in got["hist_timestamps"].items()}
    # before the first event, and at it: nothing
    assert hist_ts["a"] == [] and hist_ts["b"] == []
    assert got.loc[["a", "b"], "n_history"].isna().all()
    # at 200: only the event at 100; at 250 and at 300: 100 and 200, never the event at 300
    assert hist_ts["c"] == [100]
    assert hist_ts["d"] == [100, 200] and _ids(got.loc["d", "hist_item_ids"]) == [10, 11]
    assert list(got.loc["d", "hist_ratings"]) == [4.0, 3.0]
    assert hist_ts["e"] == [100, 200]
    assert all(300 not in hist_ts[k] for k in "abcde")
    # after 300: the last history_len=2 events, while n_history counts all 3
    assert hist_ts["f"] == [200, 300] and _ids(got.loc["f", "hist_item_ids"]) == [11, 12]
    assert int(got.loc["f", "n_history"]) == 3
    # events in the same second are not history for each other; one second later both are (by item id)
    assert hist_ts["g"] == [] and hist_ts["h"] == [150, 150]
    assert _ids(got.loc["h", "hist_item_ids"]) == [10, 13]
    # users with only user_id: the profile view still works (empty profile sentence)
    assert set(got[PROFILE_TEXT]) == {""}


def test_historical_accepts_datetimes_duplicates_and_chunks(toy_store):
    store, _, _ = toy_store
    asked = pd.DataFrame(
        {"user_id": [1, 2, 1, 1], "event_timestamp": pd.to_datetime([250, 151, 200, 250], unit="s", utc=True)}
    )
    whole = historical_user_features(store, asked)
    assert [_ids(v) for v in whole["hist_timestamps"]] == [[100, 200], [150, 150], [100], [100, 200]]
    chunked = historical_user_features(store, asked, max_join_rows=2)  # several Feast requests
    pd.testing.assert_frame_equal(chunked, whole)


def test_materialize_as_of_and_latest(toy_store):
    store, _, _ = toy_store
    materialize(store, end=250)  # the online store as of t=250
    on = online_user_features(store, [1])
    assert _ids(on.loc[0, "hist_timestamps"]) == [100, 200]
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


def test_training_features_only_hold_earlier_events(stage):
    from reclora.data import read_prepared

    root, summary = stage
    feats = pd.read_parquet(root / "features" / "training_features.parquet")
    samples = pd.concat(
        list(read_prepared(root / "prepared")[1].values()),  # histories sliced from the event store
        ignore_index=True,
    )
    assert len(samples) > 100
    assert summary["samples"] == len(samples) and summary["pit_leaks"] == 0 and summary["pit_mismatches"] == 0
    assert len(feats) == len(samples[["user_id", "timestamp"]].drop_duplicates())
    f = feats.set_index(["user_id", "timestamp"])
    for s in samples.itertuples(index=False):
        row = f.loc[(s.user_id, s.timestamp)]
        ts = np.asarray(row["hist_timestamps"], dtype=np.int64)
        assert (ts < s.timestamp).all(), (s.user_id, s.timestamp, ts)
        # history_len == max_history (100): Feast gives exactly the sample's own history
        assert list(ts) == list(s.hist_timestamps)
        assert list(row["hist_item_ids"]) == list(s.hist_item_ids)
        assert np.allclose(row["hist_ratings"], s.hist_ratings)
        assert int(row["n_history"]) == s.n_history
    # the synthetic users' attributes became profile features
    assert {"age", "gender", "occupation"} <= set(summary["profile_attributes"])
    assert feats[PROFILE_TEXT].str.startswith("The user is a").all()


def test_online_features_after_materialize(stage):
    root, _ = stage
    store = open_feature_store(root / "features" / "repo")  # the renamed-into-place repo still works
    hist = pd.read_parquet(root / "features" / "sources" / "user_history.parquet")
    latest = hist.sort_values("event_timestamp").groupby("user_id").tail(1).set_index("user_id")
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
    assert summary["store"] == {"provider": "local", "offline_store": "file", "online_store": "sqlite"}
    assert summary["features"]["user_history"] == [f"user_history:{f}" for f in HISTORY_FEATURES]
    summ = yaml.safe_load((root / "features" / "summary.json").read_text())
    assert summ["training_rows"] == summary["training_rows"]
    assert not list((root / "features").parent.glob(".features.tmp-*"))  # nothing half-written left


def test_checked_in_repo_matches_the_rendered_one():
    assert yaml.safe_load((REPO / "feature_repo" / "feature_store.yaml").read_text()) == store_config()
    assert (REPO / "feature_repo" / "features.py").read_text() == features_py()


def test_store_config_overrides_switch_backends():
    cfg = store_config(overrides={"online_store": {"type": "redis", "connection_string": "${REDIS_URL}"}})
    assert cfg["online_store"] == {"type": "redis", "connection_string": "${REDIS_URL}"}
    assert cfg["offline_store"] == {"type": "file"} and cfg["provider"] == "local"
    cfg = store_config("/var/feast/online.db", {"registry": "s3://bucket/registry.db"})
    assert cfg["online_store"]["path"] == "/var/feast/online.db" and cfg["registry"] == "s3://bucket/registry.db"


# --------------------------------------------------------------------------------------------
# (e) bad input


def test_missing_data_dir_is_a_data_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match=r"nope: prepared data directory not found .*reclora data prepare"):
        build_feature_sources(missing, tmp_path / "sources")
    with pytest.raises(DataError, match="prepared data directory not found"):
        features_stage(missing, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "sources").exists()
    (tmp_path / "half").mkdir()
    pd.DataFrame({"user_id": [1]}).to_parquet(tmp_path / "half" / "users.parquet")
    with pytest.raises(DataError, match=r"missing interactions.parquet, items.parquet"):
        build_feature_sources(tmp_path / "half", tmp_path / "sources")
    with pytest.raises(DataError, match="feature sources missing"):
        apply_feature_repo(tmp_path / "repo", tmp_path / "no-sources")
