"""The CRM (reclora.crm): featurization, DIN maths, training on learnable synthetic data, persistence."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open

from reclora.crm import (
    CONFIG_NAME,
    FEATURES_NAME,
    HISTORY_NAME,
    WEIGHTS_NAME,
    CRMConfig,
    CRMFeaturizer,
    crm_signals,
    evaluate_crm,
    hidden_vectors,
    load_crm,
    predict,
    save_crm,
    signal_width,
    train_crm,
)
from reclora.data import build_samples, generate
from reclora.errors import ConfigError, DataError
from reclora.evaluation import ctr_metrics

# small data needs smaller batches than the production default (1024) to take enough steps
# one torch thread: on a CPU shared with other jobs, two intra-op threads run ~10x slower here
FAST = dict(batch_size=128, lr=2e-3, max_epochs=8, patience=2, seed=0, num_threads=1)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def data():
    t = generate(n_users=150, n_items=200, mean_interactions=40, seed=1)
    s = build_samples(t.interactions, threshold=4.0)
    return t, s


@pytest.fixture(scope="module")
def trained(data):
    t, s = data
    model, fz, history = train_crm(s["train"], s["valid"], t.items, t.users, CRMConfig(**FAST), progress=False)
    return model, fz, history


def _batch(fz: CRMFeaturizer, df: pd.DataFrame) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in fz.transform(df).items()}


# ------------------------------------------------------------------ learning
def test_learns_synthetic_taste(data, trained):
    t, s = data
    model, fz, history = trained
    test = evaluate_crm(model, fz, s["test"])
    assert test["n"] == len(s["test"]) == 605
    # measured: test AUC 0.73, LogLoss 0.595 (global-mean predictor: 0.657)
    assert test["auc"] > 0.66
    base = ctr_metrics(s["test"]["label"].to_numpy(), np.full(len(s["test"]), s["train"]["label"].mean()))
    assert base["auc"] == 0.5
    assert test["logloss"] < base["logloss"] - 0.03
    assert 0.0 <= test["accuracy"] <= 1.0
    assert fz.field_names == ["age", "gender", "occupation"]
    assert fz.n_genres == 12


def test_early_stopping_restores_best_epoch(data, trained):
    t, s = data
    model, fz, history = trained
    epochs = history["epochs"]
    aucs = [e["valid_auc"] for e in epochs]
    best = history["best_epoch"]
    assert best == int(np.argmax(aucs)) + 1
    assert history["best_valid_auc"] == aucs[best - 1]
    # the returned model is the best epoch's, not the last one's
    assert evaluate_crm(model, fz, s["valid"])["auc"] == pytest.approx(aucs[best - 1], abs=1e-9)
    if history["stopped_early"]:
        assert len(epochs) == best + FAST["patience"]
        assert all(a <= aucs[best - 1] for a in aucs[best:])
    for e in epochs:
        assert set(e) >= {"epoch", "train_loss", "valid_auc", "valid_logloss", "seconds"}


def test_early_stopping_with_an_overfitting_learning_rate(data):
    t, s = data
    cfg = CRMConfig(batch_size=64, lr=2e-2, max_epochs=10, patience=1, seed=3, mlp=(32, 16), embed_dim=8)
    model, fz, history = train_crm(s["train"], s["valid"], t.items, t.users, cfg, progress=False)
    aucs = [e["valid_auc"] for e in history["epochs"]]
    assert history["stopped_early"] is True
    assert len(aucs) == history["best_epoch"] + 1 < 10
    assert aucs[-1] < aucs[history["best_epoch"] - 1]
    got = evaluate_crm(model, fz, s["valid"])["auc"]
    assert got == pytest.approx(aucs[history["best_epoch"] - 1], abs=1e-9)
    assert got != pytest.approx(aucs[-1], abs=1e-9)


def test_deterministic_with_seed(data):
    t, s = data
    train = s["train"].iloc[:1500]
    cfg = CRMConfig(batch_size=128, max_epochs=2, mlp=(64, 32), seed=5)
    state = torch.random.get_rng_state()
    m1, f1, h1 = train_crm(train, s["valid"], t.items, t.users, cfg, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone
    m2, f2, h2 = train_crm(train, s["valid"], t.items, t.users, cfg, progress=False)
    p1, p2 = predict(m1, f1, s["test"]), predict(m2, f2, s["test"])
    assert np.array_equal(p1, p2)
    assert [e["train_loss"] for e in h1["epochs"]] == [e["train_loss"] for e in h2["epochs"]]
    m3, f3, _ = train_crm(
        train, s["valid"], t.items, t.users, CRMConfig(**{**cfg.to_dict(), "seed": 6}), progress=False
    )
    assert not np.array_equal(p1, predict(m3, f3, s["test"]))


# -------------------------------------------------------------- model maths
def test_hidden_is_the_input_of_the_last_linear(data, trained):
    t, s = data
    model, fz, _ = trained
    assert model.hidden_dim == 256
    batch = _batch(fz, s["test"].iloc[:50])
    model.eval()
    with torch.no_grad():
        h = model.hidden(batch)
        logits = model(batch)
    assert h.shape == (50, 256) and h.dtype == torch.float32
    assert (h >= 0).all() and (h > 0).any()  # post-ReLU, not dead
    torch.testing.assert_close(logits, model.out(h).squeeze(-1), rtol=0, atol=0)
    torch.testing.assert_close(model.predict_proba(batch), torch.sigmoid(logits))
    hv = hidden_vectors(model, fz, s["test"].iloc[:50])
    assert hv.shape == (50, 256) and hv.dtype == np.float32
    np.testing.assert_allclose(hv, h.numpy(), rtol=1e-6, atol=1e-6)
    # what the gates read: h, the logit z, or both
    z = crm_signals(model, fz, s["test"].iloc[:50], "score")
    assert z.shape == (50, 1) and signal_width(model, "score") == 1 and signal_width(model, "hidden+score") == 257
    np.testing.assert_allclose(z[:, 0], logits.numpy(), rtol=1e-5, atol=1e-5)
    both = crm_signals(model, fz, s["test"].iloc[:50], "hidden+score")
    assert both.dtype == np.float32 and np.array_equal(both, np.hstack([hv, z]))
    assert np.array_equal(crm_signals(model, fz, s["test"].iloc[:50]), hv)
    # the probability API agrees with the batched inference path
    np.testing.assert_allclose(
        predict(model, fz, s["test"].iloc[:50]), torch.sigmoid(logits).numpy(), rtol=1e-6, atol=1e-7
    )


def test_attention_ignores_padding(data, trained):
    """Changing what sits in masked positions must not change the output."""
    t, s = data
    model, fz, _ = trained
    df = s["test"].iloc[:20].copy()
    df["hist_item_ids"] = [h[-5:] for h in df["hist_item_ids"]]
    df["hist_ratings"] = [r[-5:] for r in df["hist_ratings"]]
    batch = _batch(fz, df)
    longer = {k: v.clone() for k, v in batch.items()}
    assert batch["hist_items"].shape[1] == 5
    pad = 7
    longer["hist_items"] = torch.cat([batch["hist_items"], torch.randint(1, fz.n_items, (20, pad))], 1)
    longer["hist_ratings"] = torch.cat([batch["hist_ratings"], torch.randint(1, fz.n_ratings, (20, pad))], 1)
    longer["hist_mask"] = torch.cat([batch["hist_mask"], torch.zeros(20, pad, dtype=torch.bool)], 1)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(batch), model(longer), rtol=1e-5, atol=1e-5)


def test_softmax_attention_variant_runs(data):
    t, s = data
    cfg = CRMConfig(batch_size=256, max_epochs=1, mlp=(32, 16), attention_softmax=True)
    df = s["train"].iloc[:600].copy()
    df.loc[df.index[:3], "hist_item_ids"] = pd.Series([np.array([], dtype=np.int64)] * 3, index=df.index[:3])
    df.loc[df.index[:3], "hist_ratings"] = pd.Series([np.array([], dtype=np.float64)] * 3, index=df.index[:3])
    model, fz, _ = train_crm(df, None, t.items, t.users, cfg, progress=False)
    p = predict(model, fz, df)
    assert np.isfinite(p).all() and p.shape == (600,)
    assert hidden_vectors(model, fz, df).shape == (600, 16)


# ------------------------------------------------------------- featurization
def _hand_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [1, 2, 3],
            "item_id": [10, 11, 12],
            "label": [1, 0, 1],
            "hist_item_ids": [np.array([10, 11, 12, 13, 14, 15, 16]), np.array([12, 13]), np.array([], dtype=np.int64)],
            "hist_ratings": [np.array([1.0, 2, 3, 4, 5, 4, 3]), np.array([5.0, 1.0]), np.array([], dtype=np.float64)],
        }
    )


def test_featurizer_truncates_to_the_last_max_len_and_masks_padding():
    df = _hand_frame()
    items = pd.DataFrame({"item_id": np.arange(10, 17), "title": "x", "genres": ["A|B", "B", "", "C", "A", "B|C", "A"]})
    fz = CRMFeaturizer.fit(df, items, None, max_len=3)
    assert fz.item_ids.tolist() == list(range(10, 17))
    assert fz.rating_values.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    x = fz.transform(df)
    assert x["hist_items"].shape == (3, 3)
    # row 0: the last three of seven (14, 15, 16), oldest first; ratings 5, 4, 3
    assert x["hist_items"][0].tolist() == fz.item_index([14, 15, 16]).tolist() == [5, 6, 7]
    assert x["hist_ratings"][0].tolist() == [5, 4, 3]
    assert x["hist_mask"][0].tolist() == [True, True, True]
    # row 1: two entries, then padding (index 0, masked)
    assert x["hist_items"][1].tolist() == [3, 4, 0]
    assert x["hist_ratings"][1].tolist() == [5, 1, 0]
    assert x["hist_mask"][1].tolist() == [True, True, False]
    # row 2: empty history: all padding
    assert x["hist_items"][2].tolist() == [0, 0, 0] and not x["hist_mask"][2].any()
    assert x["user"].tolist() == [1, 2, 3] and x["item"].tolist() == [1, 2, 3]
    # width shrinks to the longest history when shorter than max_len
    assert fz.transform(df.iloc[1:])["hist_items"].shape == (2, 2)
    # genre table: 1/count per genre, unknown row 0 all zeros
    g = fz.genre_matrix()
    assert fz.genres == ["A", "B", "C"]
    assert g.shape == (8, 3) and not g[0].any()
    np.testing.assert_allclose(g[fz.item_index([10])[0]], [0.5, 0.5, 0.0])
    assert not g[fz.item_index([12])[0]].any()  # item with no genres
    # alternative history columns (the retriever's long_* columns)
    alt = df.rename(columns={"hist_item_ids": "long_item_ids", "hist_ratings": "long_ratings"})
    x2 = fz.transform(alt, hist_items_col="long_item_ids", hist_ratings_col="long_ratings")
    for k in x:
        assert np.array_equal(x[k], x2[k])
    # mismatched lengths are a data error, not a silent misalignment
    bad = df.copy()
    bad["hist_ratings"] = [np.array([1.0, 2, 3, 4, 5, 4, 3]), np.array([5.0]), np.array([])]
    with pytest.raises(DataError, match="different lengths"):
        fz.transform(bad)
    bad["hist_ratings"] = [1.0, 2.0, 3.0]
    with pytest.raises(DataError, match="must hold lists"):
        fz.transform(bad)


def test_unknown_ids_map_to_zero_and_predict(data, trained):
    t, s = data
    model, fz, _ = trained
    df = s["test"].iloc[:4].copy()
    df["user_id"] = [10**9, 10**9 + 1, int(s["train"]["user_id"].iloc[0]), 10**9 + 2]
    df["item_id"] = [10**9, int(s["train"]["item_id"].iloc[0]), 10**9 + 1, 10**9 + 3]
    df.at[df.index[0], "hist_item_ids"] = np.array([10**9 + 5, int(s["train"]["item_id"].iloc[1])])
    df.at[df.index[0], "hist_ratings"] = np.array([4.0, 2.0])
    x = fz.transform(df)
    assert x["user"].tolist()[:2] == [0, 0] and x["user"][2] > 0 and x["user"][3] == 0
    assert x["item"][0] == 0 and x["item"][1] > 0 and x["item"][2] == 0
    assert x["hist_items"][0, 0] == 0 and x["hist_mask"][0, 0]  # unknown but real entry: kept, id 0
    assert x["hist_items"][0, 1] > 0
    p = predict(model, fz, df)
    assert p.shape == (4,) and np.isfinite(p).all() and ((p > 0) & (p < 1)).all()
    # cold start: the unknown user's embedding is the zero padding row
    assert not model.user_emb.weight[0].any() and not model.item_emb.weight[0].any()


def test_catalogue_items_without_training_signal_have_zero_id_embeddings(data):
    t, s = data
    train = s["train"]
    items = pd.concat(
        [t.items, pd.DataFrame({"item_id": [9001], "title": ["New (2025)"], "genres": ["Drama|Comedy"]})],
        ignore_index=True,
    )
    cfg = CRMConfig(batch_size=512, max_epochs=1, mlp=(32, 16))
    model, fz, _ = train_crm(train.iloc[:800], None, items, t.users, cfg, progress=False)
    i = fz.item_index([9001])[0]
    assert i > 0 and not fz.item_seen[i - 1]
    assert not model.item_emb.weight[i].any()  # never trained: zero, like unknown
    assert fz.genre_matrix()[i].sum() == pytest.approx(1.0)  # ... but its genres still count


def test_users_with_only_ids_and_items_without_genres(data):
    t, s = data
    train = s["train"].iloc[:1000].rename(columns={"hist_item_ids": "long_item_ids", "hist_ratings": "long_ratings"})
    users = pd.DataFrame({"user_id": t.users["user_id"]})
    items = t.items[["item_id", "title"]]
    cfg = CRMConfig(
        batch_size=256, max_epochs=1, mlp=(32, 16), hist_items_col="long_item_ids", hist_ratings_col="long_ratings"
    )
    model, fz, history = train_crm(train, None, items, users, cfg, progress=False)
    assert fz.field_names == [] and fz.n_genres == 0
    assert history["n_valid"] == 0 and history["best_epoch"] == 1
    p = predict(model, fz, train.iloc[:10])
    assert p.shape == (10,) and np.isfinite(p).all()
    with pytest.raises(DataError, match="hist_item_ids"):
        fz.transform(s["test"].iloc[:3].drop(columns=["hist_item_ids"]), hist_items_col="hist_item_ids")


def test_user_fields_categorical_buckets_and_missing():
    users = pd.DataFrame(
        {
            "user_id": np.arange(1, 31),
            "age": np.arange(20, 50),  # 30 distinct numeric values -> quantile buckets
            "gender": ["F", "M", None] * 10,
            "zip": [f"{i:05d}" for i in range(30)],
        }
    )
    df = _hand_frame()
    fz = CRMFeaturizer.fit(df, None, users)
    names = {f["name"]: f for f in fz.fields}
    assert names["age"]["kind"] == "bucket" and names["gender"]["values"] == ["F", "M"]
    assert "zip" in names  # 30 values is still a usable category
    m = fz.user_field_matrix()
    assert m.shape == (31, 3) and (m[0] == np.cumsum([0] + fz.field_sizes[:-1])).all()  # unknown user: local 0s
    g = fz.field_names.index("gender")
    assert m[fz.user_index([3])[0], g] == sum(fz.field_sizes[:g])  # missing gender -> local 0
    many = pd.DataFrame({"user_id": np.arange(1, 302), "zip": [f"z{i}" for i in range(301)]})
    assert CRMFeaturizer.fit(df, None, many).field_names == []  # id-like column skipped


# --------------------------------------------------------------- persistence
def test_save_load_round_trip_is_exact_and_never_unpickles(data, trained, tmp_path, monkeypatch):
    t, s = data
    model, fz, history = trained
    out = save_crm(tmp_path / "crm", model, fz, history=history)
    assert sorted(p.name for p in out.iterdir()) == sorted([WEIGHTS_NAME, CONFIG_NAME, FEATURES_NAME, HISTORY_NAME])
    meta = json.loads((out / CONFIG_NAME).read_text())
    assert meta["model"] == "DIN" and meta["hidden_dim"] == 256 and meta["config"]["mlp"] == [512, 256]
    with safe_open(str(out / WEIGHTS_NAME), framework="pt") as f:
        assert "out.weight" in f.keys() and "item_genres" in f.keys()

    def boom(*a, **k):
        raise AssertionError("load_crm must not unpickle")

    monkeypatch.setattr(torch, "load", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    m2, f2 = load_crm(out)
    monkeypatch.undo()
    assert not m2.training
    assert np.array_equal(predict(model, fz, s["test"]), predict(m2, f2, s["test"]))
    assert np.array_equal(hidden_vectors(model, fz, s["test"]), hidden_vectors(m2, f2, s["test"]))
    assert f2.to_dict() == fz.to_dict()
    # saving again replaces the directory atomically (no stale files)
    (out / "stale.txt").write_text("x")
    save_crm(out, m2, f2)
    assert sorted(p.name for p in out.iterdir()) == sorted([WEIGHTS_NAME, CONFIG_NAME, FEATURES_NAME])
    with pytest.raises(DataError, match="not a saved CRM"):
        load_crm(tmp_path / "nothing")


def test_train_with_out_dir_saves_everything(data, tmp_path):
    t, s = data
    cfg = CRMConfig(batch_size=512, max_epochs=1, mlp=(32, 16))
    model, fz, history = train_crm(
        s["train"].iloc[:800], s["valid"], t.items, t.users, cfg, out_dir=tmp_path / "m", progress=False
    )
    saved = json.loads((tmp_path / "m" / HISTORY_NAME).read_text())
    assert saved["best_epoch"] == 1 and saved["config"]["mlp"] == [32, 16]
    m2, f2 = load_crm(tmp_path / "m")
    assert np.array_equal(predict(model, fz, s["test"]), predict(m2, f2, s["test"]))


# -------------------------------------------------------------------- config
def test_config_round_trip_and_validation():
    cfg = CRMConfig()
    assert (cfg.embed_dim, cfg.mlp, cfg.dropout, cfg.max_len, cfg.batch_size) == (32, (512, 256), 0.2, 60, 1024)
    assert cfg.hidden_dim == 256
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert CRMConfig.from_dict(d) == cfg
    assert CRMConfig.from_dict({"mlp": [64, 32]}).mlp == (64, 32)
    with pytest.raises(ConfigError, match="unknown config keys"):
        CRMConfig.from_dict({"embed_dims": 8})
    for bad in ({"mlp": []}, {"dropout": 1.0}, {"embed_dim": 0}, {"lr": 0}, {"patience": -1}):
        with pytest.raises(ConfigError):
            CRMConfig(**bad)


def test_batch_item_rows_equal_the_whole_catalogue_table():
    """The forward pass takes the per-item work on the whole catalogue (small catalogues) or on the
    batch's own item rows (large ones): the same logits either way, and gradients reach only the
    rows the batch uses."""
    from reclora.crm.model import DIN, CRMConfig

    torch.manual_seed(0)
    n_items, n_genres = 40, 5
    genres = torch.rand(n_items, n_genres)
    genres[0] = 0
    model = DIN(
        CRMConfig(max_len=6),
        n_users=9,
        n_items=n_items,
        n_ratings=6,
        item_genres=genres / genres.sum(1, keepdim=True).clamp_min(1),
        user_fields=torch.zeros(9, 0, dtype=torch.long),
        n_field_values=0,
    ).eval()
    g = torch.Generator().manual_seed(1)
    small = {
        "user": torch.randint(1, 9, (2,), generator=g),
        "item": torch.randint(1, n_items, (2,), generator=g),
        "hist_items": torch.randint(0, n_items, (2, 6), generator=g),
        "hist_ratings": torch.randint(0, 6, (2, 6), generator=g),
    }
    small["hist_mask"] = small["hist_items"] > 0
    big = {k: v.repeat(20, *([1] * (v.dim() - 1))) for k, v in small.items()}  # 280 look-ups >= 4 x 40 items
    with torch.no_grad():
        rows = model(small)  # 14 look-ups < 4 x 40: the batch's own rows
        whole = model(big)[:2]  # the whole table
    assert torch.allclose(rows, whole, atol=1e-6)
    model.zero_grad()
    model(small).sum().backward()
    used = torch.zeros(n_items, dtype=torch.bool)
    used[torch.cat([small["item"], small["hist_items"].flatten()])] = True
    touched = model.item_emb.weight.grad.abs().sum(1) > 0
    assert not touched[~used].any() and touched[small["item"]].all()
