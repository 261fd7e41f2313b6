"""CTR samples: labels, strictly-earlier histories, the drop rule, the time split, no leakage."""

import numpy as np
import pandas as pd
import pytest
from helpers import small_tables

from reclora.data import assign_splits, build_samples


def _inter(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]).astype(
        {"user_id": "int64", "item_id": "int64", "rating": "float64", "timestamp": "int64"}
    )


def test_history_is_strictly_earlier_and_ties_are_excluded():
    # user 1 rates items 1..8 at times 10..80, but items 5 and 6 share time 50
    rows = [(1, i, 5.0 if i % 2 else 2.0, t) for i, t in zip(range(1, 9), [10, 20, 30, 40, 50, 50, 70, 80])]
    s = build_samples(_inter(rows), threshold=4.0, min_history=3, max_history=100, fractions=(1.0, 0.0, 0.0))
    train = s["train"].set_index("item_id")
    # item 5 and item 6 (both at t=50) see exactly items 1-4, not each other
    assert train.loc[5, "hist_item_ids"].tolist() == [1, 2, 3, 4]
    assert train.loc[6, "hist_item_ids"].tolist() == [1, 2, 3, 4]
    assert train.loc[7, "hist_item_ids"].tolist() == [1, 2, 3, 4, 5, 6]
    assert train.loc[7, "n_history"] == 6
    # items 1-3 have fewer than 3 earlier interactions -> dropped
    assert sorted(train.index) == [4, 5, 6, 7, 8]
    # label = rating >= threshold
    assert train["label"].to_dict() == {4: 0, 5: 1, 6: 0, 7: 1, 8: 0}
    assert train.loc[8, "hist_ratings"].tolist() == [5.0, 2.0, 5.0, 2.0, 5.0, 2.0, 5.0]


def test_max_history_keeps_the_most_recent_in_time_order():
    rows = [(1, i, 4.0, 100 + i) for i in range(1, 21)]
    s = build_samples(_inter(rows), threshold=4.0, min_history=5, max_history=4, fractions=(1.0, 0.0, 0.0))
    last = s["train"].iloc[-1]
    assert last["item_id"] == 20 and last["n_history"] == 19
    assert last["hist_item_ids"].tolist() == [16, 17, 18, 19]
    assert last["hist_timestamps"].tolist() == [116, 117, 118, 119]


def test_split_is_by_global_time_8_1_1():
    t = small_tables(n_users=60)
    inter = t.interactions
    split = assign_splits(inter)
    n = len(inter)
    assert (split == "train").sum() == round(0.8 * n)
    assert (split == "valid").sum() == round(0.9 * n) - round(0.8 * n)
    ts = inter["timestamp"].to_numpy()
    assert ts[split == "train"].max() <= ts[split == "valid"].min()
    assert ts[split == "valid"].max() <= ts[split == "test"].min()


def test_no_future_interaction_leaks_into_any_history():
    """Brute force: each sample's history equals the user's events strictly before it (last N)."""
    t = small_tables(n_users=50)
    inter = t.interactions
    max_h = 15
    s = build_samples(inter, threshold=4.0, min_history=5, max_history=max_h)
    by_user = {u: g.sort_values(["timestamp", "item_id"]) for u, g in inter.groupby("user_id")}
    n_checked = 0
    for df in s.values():
        for r in df.itertuples():
            g = by_user[r.user_id]
            earlier = g[g["timestamp"] < r.timestamp]
            assert r.n_history == len(earlier) >= 5
            assert list(r.hist_item_ids) == earlier["item_id"].tolist()[-max_h:]
            assert max(r.hist_timestamps) < r.timestamp
            n_checked += 1
    # every interaction with >= 5 strictly earlier ones became exactly one sample
    expected = sum(
        int((g["timestamp"].to_numpy()[:, None] > g["timestamp"].to_numpy()[None, :]).sum(1).__ge__(5).sum())
        for g in by_user.values()
    )
    assert n_checked == expected


def test_splits_are_ordered_in_time_and_later_splits_use_earlier_history():
    t = small_tables(n_users=60)
    s = build_samples(t.interactions, threshold=4.0)
    assert s["train"]["timestamp"].max() <= s["valid"]["timestamp"].min()
    assert s["valid"]["timestamp"].max() <= s["test"]["timestamp"].min()
    # a test sample's history reaches back into the train period (lifelong history) ...
    train_end = s["train"]["timestamp"].max()
    assert any(min(h) <= train_end for h in s["test"]["hist_timestamps"])
    # ... but never to its own time or later
    assert all(max(h) < ts for h, ts in zip(s["test"]["hist_timestamps"], s["test"]["timestamp"]))


@pytest.mark.parametrize("bad", [(0.8, 0.1), (0.5, 0.5, 0.5), (-0.1, 0.6, 0.5)])
def test_bad_split_fractions(bad):
    with pytest.raises(ValueError, match="split fractions"):
        assign_splits(_inter([(1, 1, 4.0, 1)]), bad)


def test_labels_follow_the_threshold_on_half_stars():
    rows = [(1, i, r, i) for i, r in enumerate([3.0, 3.5, 4.0, 2.5, 5.0, 3.0, 3.5], start=1)]
    s = build_samples(_inter(rows), threshold=3.5, min_history=1, fractions=(1.0, 0.0, 0.0))
    assert s["train"]["label"].tolist() == [1, 1, 0, 1, 0, 1]
    assert np.issubdtype(s["train"]["label"].dtype, np.integer)
