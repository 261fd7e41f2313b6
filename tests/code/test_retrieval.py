"""Retrieval on the event store: top-K by relevance kept in time order, recent mode, no leakage,
the target's own rating never in its prompt, the embedding cache key, and the stage's stored positions."""

import numpy as np
import pandas as pd
import pytest
from helpers import small_tables
from safetensors.numpy import save_file

from reclora.config import load_params
from reclora.data import build_sample_index, prepare
from reclora.data.schema import SPLITS
from reclora.prompts import build_prompts
from reclora.retrieval import embedding_cache_key, item_texts, load_or_embed_items, retrieve, retrieve_positions
from reclora.retrieval.layout import open_retrieved
from reclora.retrieval.retriever import materialize_retrieved
from reclora.stages import retrieve_stage


def _unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_relevance_keeps_the_top_k_in_time_order():
    # item 100 is the target; items 1..6 have cosine 0.1, 0.9, 0.2, 0.8, 0.7, 0.3 to it
    cos = {1: 0.1, 2: 0.9, 3: 0.2, 4: 0.8, 5: 0.7, 6: 0.3}
    ids = np.array([100, *cos], dtype=np.int64)
    emb = _unit([[1, 0]] + [[c, np.sqrt(1 - c * c)] for c in cos.values()])
    events = np.array([1, 2, 3, 4, 5, 6], dtype=np.int64)  # one user's history, oldest first
    lp, sp = retrieve_positions([0], [6], np.array([100]), events, 3, 2, "relevance", ids, emb)
    assert lp.dtype == np.int16 and lp.tolist() == [[1, 3, 4]]  # items 2, 4, 5 (the best 3), in time order
    assert sp.tolist() == [[1, 3]]  # items 2 and 4
    # k larger than the history: everything, in time order, -1 padded
    lp, _ = retrieve_positions([2], [3], np.array([100]), events, 5, 1, "relevance", ids, emb)
    assert lp.tolist() == [[0, 1, 2, -1, -1]]  # positions from history_start=2: items 3, 4, 5
    # an item without an embedding ranks last but stays eligible
    unknown = np.array([1, 999, 2], dtype=np.int64)
    lp, _ = retrieve_positions([0], [3], np.array([100]), unknown, 2, 1, "relevance", ids, emb)
    assert lp.tolist() == [[0, 2]]
    lp, _ = retrieve_positions([0], [3], np.array([100]), unknown, 3, 1, "relevance", ids, emb)
    assert lp.tolist() == [[0, 1, 2]]


def test_recent_mode_keeps_the_last_k():
    events = np.arange(10, 30, dtype=np.int64)
    lp, sp = retrieve_positions([0, 5, 7], [5, 8, 0], np.array([1, 2, 3]), events, 3, 1, "recent")
    assert lp.tolist() == [[2, 3, 4], [5, 6, 7], [-1, -1, -1]]
    assert sp.tolist() == [[4], [7], [-1]]


@pytest.mark.parametrize("mode", ["relevance", "recent"])
def test_only_empty_histories(mode):
    # a serving request whose history holds nothing earlier than the target
    df = pd.DataFrame(
        {"item_id": [1, 2], "hist_item_ids": [np.zeros(0, np.int64)] * 2, "hist_ratings": [np.zeros(0)] * 2}
    )
    out = retrieve(df, 3, 2, mode, np.array([1, 2]), _unit([[1, 0], [0, 1]]))
    assert [len(x) for x in out["long_item_ids"]] == [0, 0] and [len(x) for x in out["short_ratings"]] == [0, 0]


def test_frame_retrieve_equals_brute_force():
    rng = np.random.default_rng(0)
    ids = np.arange(1, 41, dtype=np.int64)
    emb = _unit(rng.normal(size=(40, 8)))
    rows = []
    for _ in range(200):
        n = int(rng.integers(0, 25))
        rows.append(
            {
                "item_id": int(rng.integers(1, 45)),
                "hist_item_ids": rng.integers(1, 45, n),
                "hist_ratings": rng.integers(1, 6, n).astype(float),
            }
        )
    df = pd.DataFrame(rows)
    out = retrieve(df, 7, 3, "relevance", ids, emb, chunk=16)
    look = {int(i): e for i, e in zip(ids, emb)}
    for r, got, got_r in zip(df.itertuples(), out["long_item_ids"], out["long_ratings"]):
        t = look.get(r.item_id, np.zeros(8, np.float32))
        s = [float(look[h] @ t) if h in look else -1e9 for h in r.hist_item_ids]
        best = sorted(range(len(s)), key=lambda i: -(s[i] + i * 1e-9))[:7]
        assert got.tolist() == [int(r.hist_item_ids[i]) for i in sorted(best)]
        assert got_r.tolist() == [float(r.hist_ratings[i]) for i in sorted(best)]


def test_the_choice_does_not_depend_on_how_samples_are_batched():
    """Served one request at a time or retrieved 512 samples to a chunk, a sample gets the same behaviours,
    also among equal scores (identical item texts: the tiny random LLM embeds most titles alike), where
    the most recent win. In float32 the dot product's rounding varies with the chunk's shapes by more than
    the 1e-9 tie-break and the choice flipped between the pipeline and the server."""
    rng = np.random.default_rng(3)
    base = _unit(rng.normal(size=64))
    # 30 items: groups of identical vectors and vectors a hair apart (1e-7), all close to one another
    emb = np.stack([base + (i % 3) * 1e-7 * np.eye(64)[i % 64] for i in range(30)]).astype(np.float32)
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    ids = np.arange(1, 31, dtype=np.int64)
    rows = []
    for _ in range(300):
        n = int(rng.integers(1, 60))
        rows.append(
            {
                "item_id": int(rng.integers(1, 31)),
                "hist_item_ids": rng.integers(1, 31, n),
                "hist_ratings": rng.integers(1, 6, n).astype(float),
            }
        )
    df = pd.DataFrame(rows)
    together = retrieve(df, 20, 6, "relevance", ids, emb, chunk=512)
    for i in range(0, len(df), 7):
        alone = retrieve(df.iloc[[i]].reset_index(drop=True), 20, 6, "relevance", ids, emb)
        for c in ("long_item_ids", "short_item_ids"):
            assert alone[c].iloc[0].tolist() == together[c].iloc[i].tolist(), (i, c)
    # exact ties: the most recent of the equal-scoring behaviours are kept
    same = np.repeat(base[None, :], 3, axis=0).astype(np.float32)
    lp, sp = retrieve_positions(
        [0], [5], np.array([1]), np.array([2, 3, 2, 3, 2]), 3, 2, "relevance", np.array([1, 2, 3]), same
    )
    assert lp.tolist() == [[2, 3, 4]] and sp.tolist() == [[3, 4]]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="mode"):
        retrieve_positions([0], [1], np.array([1]), np.array([1]), 1, 1, "random")
    with pytest.raises(ValueError, match="k_long"):
        retrieve_positions([0], [1], np.array([1]), np.array([1]), 0, 1, "recent")
    with pytest.raises(ValueError, match="embeddings"):
        retrieve_positions([0], [1], np.array([1]), np.array([1]), 1, 1, "relevance")


@pytest.mark.parametrize("mode", ["relevance", "recent"])
def test_no_retrieved_behaviour_at_or_after_the_target_and_no_own_rating_in_the_prompt(mode):
    t = small_tables()
    inter = t.interactions.copy()
    inter.loc[inter.index[::5], "timestamp"] = inter["timestamp"].shift(1).fillna(0).astype("int64")[::5]  # ties
    events, index = build_sample_index(inter, threshold=4.0, min_history=1, max_history=30)
    rng = np.random.default_rng(1)
    ids = t.items["item_id"].to_numpy()
    emb = _unit(rng.normal(size=(len(ids), 16)))
    titles = dict(zip(t.items["item_id"], t.items["title"]))
    checked = 0
    for split in SPLITS:
        ix = index[split]
        lp, sp = retrieve_positions(
            ix["history_start"],
            ix["history_length"],
            ix["item_id"].to_numpy(),
            events["item_id"].to_numpy(),
            12,
            4,
            mode,
            ids,
            emb,
            chunk=64,
        )
        ev_ts = events["timestamp"].to_numpy()
        for pos in (lp, sp):
            rows = ix["history_start"].to_numpy()[:, None] + pos
            ok = pos >= 0
            assert (ev_ts[rows[ok]] < np.repeat(ix["timestamp"].to_numpy(), ok.sum(1))).all()
            assert not (rows[ok] == np.repeat(ix["event_pos"].to_numpy(), ok.sum(1))).any()  # never the target itself
            assert (ok.sum(1) == np.minimum(ix["history_length"], pos.shape[1])).all()
        lists = materialize_retrieved(events, ix["history_start"].to_numpy(), lp, sp)
        frame = ix.assign(**{k: v.to_numpy() for k, v in lists.items()})
        for prompt, iid, hist in zip(build_prompts(frame, t.items), frame["item_id"], frame["short_item_ids"]):
            history_part = prompt.split("Will the user like")[0]
            if iid not in set(hist.tolist()):  # the same item rated earlier may be history; the target event may not
                assert f"{titles[iid]} (" not in history_part
            checked += 1
    assert checked > 500


def test_embedding_cache_key_and_the_cache_is_used(tmp_path):
    t = small_tables()
    ids, texts = t.items["item_id"].to_numpy(), item_texts(t.items)
    key = embedding_cache_key(ids, texts, "model-a")
    assert len(key) == 32 and key == embedding_cache_key(ids, list(texts), "model-a")
    assert key != embedding_cache_key(ids, texts, "model-b")  # another model
    changed = list(texts)
    changed[3] = changed[3] + " "
    assert key != embedding_cache_key(ids, changed, "model-a")  # a changed title
    assert key != embedding_cache_key(ids[::-1], texts[::-1], "model-a")  # another order
    assert key == embedding_cache_key(ids, texts, "model-a", layers=0)  # 0 = all layers: the same key
    assert key != embedding_cache_key(ids, texts, "model-a", layers=6)  # the first 6 layers only
    # a model directory: its config.json is part of the identity
    m = tmp_path / "m"
    m.mkdir()
    (m / "config.json").write_text('{"hidden_size": 8}')
    k1 = embedding_cache_key(ids, texts, str(m))
    (m / "config.json").write_text('{"hidden_size": 16}')
    assert embedding_cache_key(ids, texts, str(m)) != k1
    assert key != embedding_cache_key(ids, texts, "model-a", precision="fp32")  # another precision
    # load_or_embed_items reads the cached file of the precision `auto` chooses on this machine (no model is
    # loaded: "model-a" does not exist)
    from reclora.precision import as_precision

    chosen = embedding_cache_key(ids, texts, "model-a", precision=as_precision("auto", "cpu").name)
    emb = np.arange(len(ids) * 4, dtype=np.float32).reshape(len(ids), 4)
    save_file({"item_ids": ids.astype(np.int64), "embeddings": emb}, str(tmp_path / f"{chosen}.safetensors"))
    got_ids, got = load_or_embed_items(t.items, "model-a", cache=tmp_path, progress=False)
    np.testing.assert_array_equal(got, emb)
    np.testing.assert_array_equal(got_ids, ids)


def test_retrieve_stage_stores_positions_and_materializes_the_old_lists(tmp_path):
    p = load_params()
    p["synthetic"] = dict(p["synthetic"], n_users=40, n_items=60, mean_interactions=20)
    prepare("synthetic", None, tmp_path / "prep", p)
    summary = retrieve_stage(tmp_path / "prep", tmp_path / "ret", p, mode="recent", progress=False)
    s = open_retrieved(tmp_path / "ret")
    assert {k: len(v) for k, v in s.items()} == summary["samples"]
    from reclora.data import read_prepared

    _, old, _ = read_prepared(tmp_path / "prep")
    for split in SPLITS:
        assert s[split].k_long == p["retrieval"]["k_long"]
        want = retrieve(old[split], p["retrieval"]["k_long"], p["retrieval"]["k_short"], "recent")
        rows = np.random.default_rng(0).permutation(len(want))[:200]
        got = s[split].iloc[rows]
        exp = want.iloc[rows].reset_index(drop=True)
        assert list(got["timestamp"]) == list(exp["timestamp"]) and list(got["user_id"]) == list(exp["user_id"])
        for c in ("hist_item_ids", "long_item_ids", "long_ratings", "short_item_ids", "short_ratings"):
            assert all(np.array_equal(a, b) for a, b in zip(got[c], exp[c])), c


def test_few2many_sample_and_eval_subset_come_from_their_own_splits(tmp_path):
    from reclora.few2many import sample_few
    from reclora.stages import eval_subset, read_samples

    p = load_params()
    p["synthetic"] = dict(p["synthetic"], n_users=40, n_items=60, mean_interactions=20)
    prepare("synthetic", None, tmp_path / "prep", p)
    retrieve_stage(tmp_path / "prep", tmp_path / "ret", p, mode="recent", progress=False)
    s = read_samples(tmp_path / "ret")  # what llm_stage reads
    few = s["train"].iloc[sample_few(len(s["train"]), 50, 0)].reset_index(drop=True)
    ev = eval_subset(s["test"], 40, 0)
    assert len(few) == 50 and len(ev) == 40
    key = ["user_id", "item_id", "timestamp"]
    train_keys = set(map(tuple, s["train"].index()[key].to_numpy().tolist()))
    test_keys = set(map(tuple, s["test"].index()[key].to_numpy().tolist()))
    assert set(map(tuple, few[key].to_numpy().tolist())) <= train_keys
    assert set(map(tuple, ev[key].to_numpy().tolist())) <= test_keys and not test_keys & train_keys
    assert few["timestamp"].max() <= ev["timestamp"].min()  # the time split: test never precedes train
    for df in (few, ev):  # the prompt's short history is strictly earlier than its target
        for t, items, hts, short in zip(
            df["timestamp"], df["hist_item_ids"], df["hist_timestamps"], df["short_item_ids"]
        ):
            assert (np.asarray(hts) < t).all() and set(short.tolist()) <= set(items.tolist())


def test_position_columns_round_trip_and_read_the_older_list_form():
    import pyarrow as pa

    from reclora.errors import DataError
    from reclora.retrieval.layout import positions_array, positions_column, positions_width

    rng = np.random.default_rng(3)
    p = rng.integers(-1, 32767, size=(1000, 7)).astype(np.int16)
    p[:, -2:] = -1
    col = positions_column(p)
    assert col.type == pa.binary(14) and positions_width(col.type) == 7 and len(col) == 1000
    np.testing.assert_array_equal(positions_array(col, 7), p)
    np.testing.assert_array_equal(positions_array(col.slice(10, 5), 7), p[10:15])  # an offset into the buffer
    chunked = pa.chunked_array([col.slice(0, 400), col.slice(400)])
    np.testing.assert_array_equal(positions_array(chunked, 7), p)
    got = positions_array(col, 7)
    got[0, 0] = 5  # a writable copy in native byte order
    assert got.dtype == np.int16 and col.to_pylist()[0] == p[0].astype("<i2").tobytes()
    old = pa.FixedSizeListArray.from_arrays(pa.array(p.reshape(-1)), 7)  # retrieved before the binary layout
    assert positions_width(old.type) == 7
    np.testing.assert_array_equal(positions_array(old, 7), p)
    with pytest.raises(DataError, match="7 positions per row, expected 6"):
        positions_array(col, 6)
    with pytest.raises(DataError, match="fixed_size_binary or fixed_size_list"):
        positions_width(pa.int64())
    with pytest.raises(DataError, match="null"):
        positions_array(pa.array([p[0].astype("<i2").tobytes(), None], type=pa.binary(14)), 7)
