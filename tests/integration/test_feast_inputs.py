"""Feast as the one source of the shared user and item features: training reads them offline
(get_historical_features), serving online, both through reclora.features.inputs.model_inputs.
Real Feast (file offline store, SQLite online store), ML-100K-format fixture files."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from helpers import small_tables, write_ml100k

from reclora.crm import CRMFeaturizer
from reclora.features import features_stage, materialize, open_feature_store
from reclora.features.definitions import PROFILE_TEXT, TIMESTAMP_FIELD, USER_PROFILE_FILE
from reclora.features.inputs import (
    historical_view,
    model_inputs,
    offline_feature_frames,
    online_feature_frames,
    read_model_inputs,
    training_inputs,
)
from reclora.prompts import build_prompts, profile_text


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory):
    from reclora.config import deep_merge, load_params
    from reclora.data import prepare, read_prepared
    from reclora.stages import retrieve_stage

    root = tmp_path_factory.mktemp("feast_inputs")
    raw = write_ml100k(small_tables(seed=5, n_users=30, n_items=50), root / "raw")
    params = deep_merge(
        load_params(),
        {
            "retrieval": {"mode": "recent", "k_long": 8, "k_short": 3},
            "crm": {"max_epochs": 2, "embed_dim": 8, "mlp": [16, 8]},
        },
    )
    prepare("ml-100k", raw, root / "prepared", params)
    features_stage(root / "prepared", root / "features", params=params)
    retrieve_stage(root / "prepared", root / "retrieved", params, mode="recent", progress=False)
    tables, _, _ = read_prepared(root / "prepared")
    from reclora.retrieval.layout import open_retrieved

    split = open_retrieved(root / "retrieved")["train"]
    train = split.iloc[np.arange(len(split))]  # materialized: histories and retrieved lists
    return root, params, tables, train


def test_training_inputs_reproduce_the_prepared_tables(ml100k):
    """Through Feast, the CRM featurizer and the prompts get exactly what the tables gave them."""
    root, _, tables, train = ml100k
    mi = training_inputs(root / "features", train, tables.users["user_id"], tables.items["item_id"])
    assert mi.attributes == [c for c in tables.users.columns if c != "user_id"]  # age, gender, occupation, zip
    assert len(mi.users) == len(tables.users) and len(mi.items) == len(tables.items)
    got = mi.items.set_index("item_id")
    want = tables.items.set_index("item_id")
    assert (got["title"] == want.loc[got.index, "title"]).all() and (
        got["genres"] == want.loc[got.index, "genres"]
    ).all()
    # the featurizer fitted on Feast's features equals the one fitted on the tables, field by field
    kw = {"max_len": 8, "hist_items_col": "long_item_ids", "hist_ratings_col": "long_ratings"}
    from_feast = CRMFeaturizer.fit(train, mi.items, mi.crm_users(), **kw).to_dict()
    from_tables = CRMFeaturizer.fit(train, tables.items, tables.users, **kw).to_dict()
    assert from_feast["fields"] and {f["name"] for f in from_feast["fields"]} >= {"age", "gender", "occupation"}
    assert from_feast == from_tables
    # the prompts: the profile sentence is Feast's profile_text, the titles Feast's item titles
    some = train.head(40)
    p_feast = build_prompts(some, mi.items, mi.users, history_col="short_item_ids", ratings_col="short_ratings")
    p_tables = build_prompts(
        some, tables.items, tables.users, history_col="short_item_ids", ratings_col="short_ratings"
    )
    assert p_feast == p_tables and all(p.startswith("The user is a") for p in p_feast)
    # what the features stage wrote (its join on every sample row) is what the training stages read
    written = read_model_inputs(root / "features")
    pd.testing.assert_frame_equal(written.users, mi.users)
    pd.testing.assert_frame_equal(written.items, mi.items)
    assert read_model_inputs(root / "prepared") is None


def test_shared_features_builds_the_sample_keys_only_for_a_join(ml100k, tmp_path):
    """The training stages pass the sample keys as a function: with the features stage's
    model_inputs/ it is never called; without them (an older store) it is, and the join gives the same inputs."""
    from reclora.features.inputs import MODEL_INPUTS_DIR
    from reclora.stages import shared_features

    root, _, tables, train = ml100k
    calls = []

    def keys():
        calls.append(1)
        return train[["user_id", "item_id", "timestamp"]]

    items, crm_users, users = shared_features(root / "features", tables, keys)
    assert calls == []
    old = tmp_path / "features"
    shutil.copytree(root / "features", old)
    shutil.rmtree(old / MODEL_INPUTS_DIR)
    items2, crm_users2, users2 = shared_features(old, tables, keys)
    assert calls == [1]
    pd.testing.assert_frame_equal(items, items2)
    pd.testing.assert_frame_equal(crm_users, crm_users2)
    pd.testing.assert_frame_equal(users, users2)


def test_crm_stage_results_unchanged_through_feast(ml100k, tmp_path):
    from reclora.stages import crm_stage

    root, params, _, _ = ml100k
    a = crm_stage(root / "prepared", root / "retrieved", tmp_path / "tables", params, progress=False)
    b = crm_stage(
        root / "prepared",
        root / "retrieved",
        tmp_path / "feast",
        params,
        progress=False,
        feature_store=root / "features",
    )
    assert a["test"] == b["test"] and a["valid_auc_by_epoch"] == b["valid_auc_by_epoch"]
    pa_, pb = (pd.read_parquet(tmp_path / d / "predictions.parquet") for d in ("tables", "feast"))
    np.testing.assert_array_equal(pa_["p"].to_numpy(), pb["p"].to_numpy())


def test_offline_features_equal_online_features_at_the_same_time(ml100k, tmp_path):
    """A user whose occupation changes at T2: at T1 < T2 and at T3 > T2 the training path
    (get_historical_features at T) and the serving path (online store materialized up to T) give
    equal model inputs, and they differ between T1 and T3."""
    root, _, tables, train = ml100k
    feat = tmp_path / "features"
    shutil.copytree(root / "features", feat)
    src = feat / "sources" / USER_PROFILE_FILE
    prof = pd.read_parquet(src)
    uid = int(train["user_id"].iloc[0])
    old = prof[prof["user_id"] == uid].iloc[0]
    new_occ = next(o for o in prof["occupation"].dropna().unique() if o != old["occupation"])
    t1, t2, t3 = (int(train["timestamp"].quantile(q)) for q in (0.2, 0.5, 0.9))
    changed = old.copy()
    changed["occupation"] = new_occ
    changed[TIMESTAMP_FIELD] = pd.Timestamp(t2, unit="s", tz="UTC")
    changed[PROFILE_TEXT] = profile_text({"age": old["age"], "gender": old["gender"], "occupation": new_occ})
    pd.concat([prof, changed.to_frame().T.astype(prof.dtypes.to_dict())], ignore_index=True).to_parquet(
        src, index=False
    )

    store = open_feature_store(feat / "repo")
    users = [uid, *[int(u) for u in tables.users["user_id"].iloc[:4] if int(u) != uid]]
    items = [int(i) for i in tables.items["item_id"].iloc[:6]]
    seen = {}
    for t in (t1, t3):
        materialize(store, end=t)  # the online store as of t
        online = model_inputs(*online_feature_frames(store, users, items))
        offline = model_inputs(
            historical_view(store, pd.DataFrame({"user_id": users, TIMESTAMP_FIELD: t}), "user_profile", "user_id"),
            historical_view(store, pd.DataFrame({"item_id": items, TIMESTAMP_FIELD: t}), "item_metadata", "item_id"),
        )
        pd.testing.assert_frame_equal(offline.users, online.users)
        pd.testing.assert_frame_equal(offline.items, online.items)
        seen[t] = offline.users.set_index("user_id").loc[uid]
    assert seen[t1]["occupation"] == old["occupation"] and seen[t3]["occupation"] == new_occ
    assert seen[t3][PROFILE_TEXT].endswith(f"{new_occ}.") and seen[t1][PROFILE_TEXT] != seen[t3][PROFILE_TEXT]

    # per-sample rows: a sample before T2 gets the old profile, a later one the new (point in time)
    rows = pd.DataFrame({"user_id": [uid, uid], "item_id": items[:2], "timestamp": [t1, t3]})
    uf, _ = offline_feature_frames(store, rows)
    by_t = uf.set_index(TIMESTAMP_FIELD)["occupation"]
    assert list(by_t.sort_index()) == [old["occupation"], new_occ]


def test_model_inputs_types_and_unknown_entities():
    """Entities Feast knows nothing of are dropped; numbers become float64, text object, latest row wins."""
    uf = pd.DataFrame(
        {
            "user_id": [1, 1, 2, 3],
            TIMESTAMP_FIELD: pd.to_datetime([10, 20, 10, 10], unit="s", utc=True),
            "age": [30, 31, None, None],
            "gender": ["M", "M", None, "F"],
            PROFILE_TEXT: ["a", "b", None, "c"],
        }
    )
    uf.loc[2, [PROFILE_TEXT]] = None  # user 2: nothing known
    itf = pd.DataFrame({"item_id": [5, 6], "title": ["X", None], "genres": ["A|B", None]})
    mi = model_inputs(uf, itf)
    assert list(mi.users["user_id"]) == [1, 3]
    assert mi.users["age"].dtype == np.float64 and mi.users.loc[0, "age"] == 31.0 and np.isnan(mi.users.loc[1, "age"])
    assert list(mi.users[PROFILE_TEXT]) == ["b", "c"] and mi.attributes == ["age", "gender"]
    assert list(mi.items["item_id"]) == [5] and list(mi.crm_users().columns) == ["user_id", "age", "gender"]
