"""Feast's Spark offline store in Spark local mode (pyspark + a JRE: the optional `spark` extra,
`pip install -e '.[spark]'`): the same point-in-time features as the file store. Skipped without them."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

pytest.importorskip("pyspark", reason="the optional spark extra (pyspark) is not installed")
if shutil.which("java") is None:
    pytest.skip("no Java runtime for Spark local mode", allow_module_level=True)

pytestmark = pytest.mark.slow

CONF = {
    "spark.master": "local[1]",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.driver.memory": "1g",
    "spark.sql.shuffle.partitions": "2",
}


def test_spark_store_gives_the_file_stores_point_in_time_features(tmp_path):
    from reclora.features import apply_feature_repo, build_feature_sources, historical_user_features
    from reclora.features.inputs import historical_view, model_inputs

    prep = tmp_path / "prepared"
    prep.mkdir()
    pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2],
            "item_id": [10, 11, 12, 13, 10],
            "rating": [4.0, 3.0, 5.0, 2.0, 4.5],
            "timestamp": [100, 200, 300, 150, 150],
        }
    ).to_parquet(prep / "interactions.parquet")
    pd.DataFrame(
        {"item_id": [10, 11, 12, 13], "title": ["A", "B", "C", "D"], "genres": ["x", "x|y", "", "z"]}
    ).to_parquet(prep / "items.parquet")
    pd.DataFrame({"user_id": [1, 2], "age": [20, 30], "gender": ["M", "F"]}).to_parquet(prep / "users.parquet")
    build_feature_sources(prep, tmp_path / "sources", history_len=2)
    stores = {
        "file": apply_feature_repo(tmp_path / "repo-file", tmp_path / "sources", store_config={}),
        "spark": apply_feature_repo(
            tmp_path / "repo-spark",
            tmp_path / "sources",
            store_config={"offline_store": {"type": "spark", "spark_conf": CONF}},
        ),
    }
    assert stores["spark"].config.offline_store.type == "spark"
    asked = pd.DataFrame({"user_id": [1, 1, 1, 2, 2], "event_timestamp": [50, 200, 301, 150, 151]})
    got = {k: historical_user_features(s, asked) for k, s in stores.items()}
    want = [None, 100, 300, None, 150]  # the latest event strictly earlier than the asked time
    for k in ("file", "spark"):
        assert [None if pd.isna(v) else int(v) for v in got[k]["last_event_timestamp"]] == want
    assert list(got["spark"]["n_history"].astype("float").fillna(0)) == [0, 1, 3, 0, 2]
    latest = {k: historical_user_features(s, asked, views=("user_history",)) for k, s in stores.items()}
    assert [None if v is None else list(v) for v in latest["spark"]["hist_item_ids"]] == [
        None,
        None,
        [11, 12],
        None,
        [10, 13],
    ]
    items = pd.DataFrame({"item_id": [10, 13, 12], "event_timestamp": 100})
    mi = {
        k: model_inputs(
            historical_view(s, asked, "user_profile", "user_id"), historical_view(s, items, "item_metadata", "item_id")
        )
        for k, s in stores.items()
    }
    pd.testing.assert_frame_equal(mi["spark"].users, mi["file"].users)
    pd.testing.assert_frame_equal(mi["spark"].items, mi["file"].items)
    assert list(mi["spark"].users["profile_text"]) == [
        "The user is a 20-year-old male.",
        "The user is a 30-year-old female.",
    ]
