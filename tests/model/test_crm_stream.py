"""The CRM on the streaming layout: same featurization as the frame path, every sample once per epoch,
bounded buffers, the stage end to end, and 2 gloo ranks equal to one process."""

import numpy as np
import pytest
import torch

from reclora.config import load_params
from reclora.crm import CRMConfig, CRMFeaturizer
from reclora.crm.stream import (
    EventArrays,
    StreamingBatches,
    featurize,
    fit_featurizer,
    predict_split,
    run_ranks,
    train_crm_streaming,
)
from reclora.data import prepare
from reclora.retrieval import layout
from reclora.retrieval.layout import open_retrieved
from reclora.stages import crm_stage, retrieve_stage

SMALL = dict(
    embed_dim=8,
    mlp=[32, 16],
    attention_hidden=[16],
    batch_size=64,
    lr=1e-2,
    max_epochs=2,
    patience=2,
    seed=0,
    num_threads=1,
    dropout=0.0,
    max_len=20,
    hist_items_col="long_item_ids",
    hist_ratings_col="long_ratings",
)


@pytest.fixture(scope="module")
def retrieved(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crm_stream")
    p = load_params()
    p["synthetic"] = dict(p["synthetic"], n_users=60, n_items=80, mean_interactions=20)
    p["retrieval"] = dict(p["retrieval"], k_long=20, k_short=5)
    prepare("synthetic", None, tmp / "prep", p)
    mp = pytest.MonkeyPatch()
    mp.setattr(layout, "ROW_GROUP", 100)  # many small row groups: the streaming paths are exercised
    retrieve_stage(tmp / "prep", tmp / "ret", p, mode="recent", progress=False)
    mp.undo()
    return tmp, p


def test_streaming_featurization_equals_the_frame_path(retrieved):
    tmp, _ = retrieved
    s = open_retrieved(tmp / "ret")
    train = s["train"].iloc[np.arange(len(s["train"]))]
    events = EventArrays(s["train"].events.frame)
    from reclora.data import read_prepared

    tables, _, _ = read_prepared(tmp / "prep", histories=False)
    for max_len in (20, 7):  # 7 < k_long: the last max_len entries are kept, as transform does
        ref = CRMFeaturizer.fit(
            train,
            tables.items,
            tables.users,
            max_len=max_len,
            hist_items_col="long_item_ids",
            hist_ratings_col="long_ratings",
        )
        got = fit_featurizer(s["train"], events, tables.items, tables.users, max_len)
        assert {k: v for k, v in got.to_dict().items() if not k.startswith("hist_")} == {
            k: v for k, v in ref.to_dict().items() if not k.startswith("hist_")
        }
        ix = s["train"].index()
        lp = np.vstack(ix["long_pos"].to_list())
        hi, hr, m = events.gather(ix["history_start"].to_numpy(), lp)
        a = featurize(got, ix["user_id"].to_numpy(), ix["item_id"].to_numpy(), hi, hr, m)
        b = ref.transform(train)
        for k in b:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_every_sample_once_per_epoch_in_bounded_buffers(retrieved):
    tmp, _ = retrieved
    s = open_retrieved(tmp / "ret")
    assert s["train"].num_row_groups > 5
    events = EventArrays(s["train"].events.frame)
    feat = fit_featurizer(s["train"], events, None, None, 20)
    n = len(s["train"])
    seen_orders = []
    for epoch in (1, 2):
        ds = StreamingBatches(s["train"], events, feat, batch_size=50, seed=0, buffer_groups=2)
        ds.set_epoch(epoch)
        users, sizes = [], []
        for batch, y in ds:
            sizes.append(int(batch["n_global"]))
            assert len(y) == int(batch["n_global"]) <= 50
            users.append(batch["user"].numpy())
        assert sum(sizes) == n and max(sizes) == 50
        seen_orders.append(np.concatenate(users))
        assert sorted(seen_orders[-1].tolist()) == sorted(feat.user_index(s["train"].column("user_id")).tolist())
    assert not np.array_equal(seen_orders[0], seen_orders[1])  # a new order per epoch
    # 2 ranks split every global batch: together they see exactly the single-process batches
    one = [(b["user"].numpy(), y.numpy()) for b, y in StreamingBatches(s["train"], events, feat, 50, seed=3)]
    r0 = [
        (b["user"].numpy(), y.numpy())
        for b, y in StreamingBatches(s["train"], events, feat, 50, seed=3, rank=0, world_size=2)
    ]
    r1 = [
        (b["user"].numpy(), y.numpy())
        for b, y in StreamingBatches(s["train"], events, feat, 50, seed=3, rank=1, world_size=2)
    ]
    assert len(one) == len(r0) == len(r1)
    for (u, _), (u0, _), (u1, _) in zip(one, r0, r1):
        np.testing.assert_array_equal(u[0::2], u0)
        np.testing.assert_array_equal(u[1::2], u1)


def test_crm_stage_streams_and_scores_the_test_split(retrieved, tmp_path):
    tmp, p = retrieved
    p = dict(p, crm={**p["crm"], **{k: v for k, v in SMALL.items() if k in p["crm"]}})  # the keys params crm has
    summary = crm_stage(tmp / "prep", tmp / "ret", tmp_path / "crm", p, progress=False)
    s = open_retrieved(tmp / "ret")
    assert summary["test"]["n"] == len(s["test"]) and 0.5 < summary["test"]["auc"] <= 1.0
    assert len(summary["valid_auc_by_epoch"]) == 2 and summary["ranks"] == 1
    import pandas as pd

    preds = pd.read_parquet(tmp_path / "crm" / "predictions.parquet")
    assert list(preds["timestamp"]) == list(s["test"].column("timestamp"))
    # the saved model reproduces the predictions through the frame path (crm_signals etc. keep working)
    from reclora.crm import load_crm, predict

    model, feat = load_crm(tmp_path / "crm" / "model")
    np.testing.assert_allclose(predict(model, feat, s["test"].iloc[np.arange(len(s["test"]))]), preds["p"], atol=1e-6)


def _train_two(tmp: str, cfg: dict) -> dict:
    import torch.distributed as dist

    torch.set_num_threads(1)
    s = open_retrieved(tmp + "/ret")
    events = EventArrays(s["train"].events.frame)
    model, feat, hist = train_crm_streaming(
        s["train"], s["valid"], events, None, None, CRMConfig(**cfg), progress=False
    )
    p = predict_split(model, feat, s["test"], events)
    return {
        "p": p.tolist(),
        "valid_auc": [e["valid_auc"] for e in hist["epochs"]],
        "rank": dist.get_rank(),
        "ranks": hist["ranks"],
    }


def test_two_gloo_ranks_equal_one_process(retrieved, tmp_path):
    tmp, _ = retrieved
    torch.set_num_threads(1)
    s = open_retrieved(tmp / "ret")
    events = EventArrays(s["train"].events.frame)
    model, feat, hist = train_crm_streaming(
        s["train"], s["valid"], events, None, None, CRMConfig(**SMALL), progress=False
    )
    one = predict_split(model, feat, s["test"], events)
    out = tmp_path / "two.json"
    run_ranks(2, _train_two, (str(tmp), SMALL), out=str(out))
    import json

    two = json.loads(out.read_text())
    assert two["ranks"] == 2 and two["rank"] == 0
    # the same global batches and the exact global-mean gradient: only float summation order differs
    # (gloo's all-reduce, half-batch matmuls), amplified a little by Adam over ~100 steps
    diff = np.abs(np.asarray(two["p"]) - one)
    print("max |p_2ranks - p_1process| =", diff.max())
    assert diff.max() < 1e-4, diff.max()
    np.testing.assert_allclose(two["valid_auc"], [e["valid_auc"] for e in hist["epochs"]], atol=1e-4)
    # training moved the predictions far more than that: the comparison is not of two untrained models
    torch.manual_seed(SMALL["seed"])
    from reclora.crm import DIN

    init = predict_split(DIN.from_featurizer(CRMConfig(**SMALL), feat), feat, s["test"], events)
    assert np.abs(one - init).max() > 100 * max(diff.max(), 1e-6)


def test_streaming_training_equals_the_in_memory_trainer_on_small_data(retrieved):
    """A split that fits one shuffle buffer trains on the same batches, in the same order, with the same
    dropout masks as crm.train.train_crm on the materialized frames: the same model up to float noise."""
    from reclora.crm import predict, train_crm

    tmp, _ = retrieved
    torch.set_num_threads(1)
    s = open_retrieved(tmp / "ret")
    events = EventArrays(s["train"].events.frame)
    cfg = CRMConfig(**{**SMALL, "dropout": 0.2})
    m1, f1, h1 = train_crm_streaming(
        s["train"], s["valid"], events, None, None, cfg, progress=False, buffer_groups=10**6
    )
    frames = {k: v.iloc[np.arange(len(v))] for k, v in s.items()}
    m2, f2, h2 = train_crm(frames["train"], frames["valid"], None, None, cfg, progress=False)
    p1 = predict_split(m1, f1, s["test"], events)
    p2 = predict(m2, f2, frames["test"])
    assert np.abs(p1 - p2).max() < 1e-4, np.abs(p1 - p2).max()
    assert [e["train_loss"] for e in h1["epochs"]] == pytest.approx([e["train_loss"] for e in h2["epochs"]], abs=1e-5)
