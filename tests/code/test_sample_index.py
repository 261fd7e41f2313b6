"""The event store + sample index layout equals the old per-sample histories (build_samples), never leaks."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reclora.config import load_params
from reclora.data import (
    build_sample_index,
    build_samples,
    generate,
    materialize_histories,
    prepare,
    read_prepared,
    read_split,
)
from reclora.data.schema import SAMPLE_COLUMNS, SAMPLE_INDEX_COLUMNS, SPLITS


def _assert_same(old: dict, events: pd.DataFrame, index: dict) -> int:
    n = 0
    for split in SPLITS:
        new = materialize_histories(events, index[split])
        ref = old[split]
        assert list(new.columns) == list(SAMPLE_COLUMNS)
        assert len(new) == len(ref)
        for c in ("user_id", "item_id", "rating", "timestamp", "label", "n_history"):
            assert new[c].dtype == ref[c].dtype, c
            np.testing.assert_array_equal(new[c].to_numpy(), ref[c].to_numpy(), err_msg=c)
        for c in ("hist_item_ids", "hist_ratings", "hist_timestamps"):
            for a, b in zip(new[c], ref[c]):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=c)
                assert np.asarray(a).dtype == np.asarray(b).dtype
        n += len(new)
    return n


@pytest.mark.parametrize("max_history", [100, 7])
def test_index_layout_equals_old_samples_on_synthetic_data(max_history):
    inter = generate(n_users=60, n_items=80, mean_interactions=25, seed=3).interactions
    # ties at the same second (not history of each other) and a shuffled input order
    inter.loc[inter.index[::7], "timestamp"] = inter["timestamp"].shift(1).fillna(0).astype("int64")[::7]
    inter = inter.sample(frac=1.0, random_state=0).reset_index(drop=True)
    old = build_samples(inter, threshold=4.0, max_history=max_history)
    events, index = build_sample_index(inter, threshold=4.0, max_history=max_history)
    assert _assert_same(old, events, index) > 500
    # each event stored once, each user's block sorted by time
    assert len(events) == len(inter)
    assert (events.groupby("user_id")["timestamp"].diff().dropna() >= 0).all()
    assert events["user_id"].is_monotonic_increasing
    for split in SPLITS:
        ix = index[split]
        assert list(ix.columns) == list(SAMPLE_INDEX_COLUMNS)
        # the target's own row, and a history that ends before it and lies in the same user's block
        assert (events["item_id"].to_numpy()[ix["event_pos"]] == ix["item_id"]).all()
        assert (ix["history_start"] + ix["history_length"] <= ix["event_pos"]).all()
        assert (events["user_id"].to_numpy()[ix["history_start"]] == ix["user_id"]).all()


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5), st.integers(0, 6)), min_size=1, max_size=30
    ),
    row_order=st.booleans(),
    max_history=st.integers(1, 5),
)
def test_index_layout_equals_old_samples_and_never_leaks(rows, row_order, max_history):
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]).astype({"rating": "float64"})
    if row_order:
        inter["timestamp"] = np.arange(len(inter))
    kw = dict(threshold=4.0, min_history=1, max_history=max_history, repeat_is_same_event=row_order)
    old = build_samples(inter, **kw)
    events, index = build_sample_index(inter, **kw)
    _assert_same(old, events, index)
    for split in SPLITS:
        new = materialize_histories(events, index[split])
        for t, hts in zip(new["timestamp"], new["hist_timestamps"]):
            assert (np.asarray(hts) < t).all()  # no event at or after the target's time


def test_prepare_writes_the_event_store_and_reads_back_the_old_samples(tmp_path):
    params = load_params()
    params["synthetic"] = dict(params["synthetic"], n_users=40, n_items=60, mean_interactions=20)
    prepare("synthetic", None, tmp_path / "out", params)
    t = generate(**params["synthetic"])
    old = build_samples(t.interactions, threshold=4.0, max_history=params["data"]["max_history"])
    out = tmp_path / "out"
    assert pq.read_schema(out / "events.parquet").names == ["user_id", "item_id", "rating", "timestamp"]
    for split in SPLITS:
        names = pq.read_schema(out / "samples" / f"{split}.parquet").names
        assert names == list(SAMPLE_INDEX_COLUMNS)  # no per-sample history lists on disk
    _, samples, _ = read_prepared(out)
    events = pd.read_parquet(out / "events.parquet")
    _, index, _ = read_prepared(out, histories=False)
    assert _assert_same(old, events, index) == sum(len(s) for s in samples.values())
    for split in SPLITS:
        for c in ("hist_item_ids", "hist_timestamps"):
            for a, b in zip(samples[split][c], old[split][c]):
                np.testing.assert_array_equal(a, b)
        assert len(read_split(out, split, histories=False)) == len(old[split])


def test_ml25m_release_format_prepares_whole_without_max_users(tmp_path):
    from reclora.data.loaders import load_ml25m
    from reclora.data.synthetic import generate_ml25m_like, write_ml25m_csv

    t = generate_ml25m_like(20_000, seed=2)
    raw = write_ml25m_csv(t, tmp_path / "raw")
    head = (raw / "ratings.csv").read_text().splitlines()[:2]
    assert head[0] == "userId,movieId,rating,timestamp" and head[1].split(",")[2] in {
        f"{x / 2:.1f}" for x in range(1, 11)
    }
    assert (raw / "movies.csv").read_text().splitlines()[0] == "movieId,title,genres"
    loaded = load_ml25m(raw)  # the typed (pyarrow) reader
    assert loaded.interactions.dtypes.astype(str).to_dict() == {
        "user_id": "int64",
        "item_id": "int64",
        "rating": "float64",
        "timestamp": "int64",
    }
    params = load_params()
    params["data"] = dict(params["data"], max_users=0)
    summary = prepare("ml-25m", raw, tmp_path / "out", params)
    assert summary["users"] == len(t.users) and summary["rows"] == len(t.interactions)  # every user, no sampling
    old = build_samples(loaded.interactions, threshold=3.5)
    assert summary["samples"] == {s: len(old[s]) for s in SPLITS}
    # a bad cell falls back to the exact text reader, which names it
    text = (raw / "ratings.csv").read_text().splitlines()
    text[5] = "1.5," + text[5].split(",", 1)[1]
    (raw / "ratings.csv").write_text("\n".join(text) + "\n")
    from reclora.errors import DataError

    with pytest.raises(DataError, match="userId"):
        load_ml25m(raw)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(-3, 3), st.integers(-2, 2), st.integers(0, 3)), max_size=60),
    wide=st.booleans(),
)
def test_sort_order_is_lexsort(rows, wide):
    """The packed-key order equals np.lexsort (ties kept in input order), also when the key ranges
    are too wide to pack (the np.lexsort fallback) and with negative values."""
    from reclora.data.samples import sort_order

    a, b, c = (np.array([r[i] for r in rows], dtype=np.int64) for i in range(3))
    if wide and len(rows):
        a = a * (1 << 40)
        b = b * (1 << 30)
    np.testing.assert_array_equal(sort_order(a, b, c), np.lexsort((c, b, a)))
    assert sort_order(a, b, c).dtype == np.int64
    with pytest.raises(ValueError, match="same length"):
        sort_order(a, b, c[:-1] if len(c) else np.zeros(1, np.int64))
