"""A peer DIN from a maintained CTR library (DeepCTR-Torch), to show our CRM is a fair opponent.

The peer is trained on the same training samples, with the same fields and the same
encoding as our CRM: it reuses the CRM's fitted featurizer (user and item ids, the
users' attribute fields, item genres, the K_long retrieved history of items and their
ratings), the CRM's embedding size, MLP widths, learning rate, batch size and early
stopping on validation AUC, and is scored on the benchmark's evaluation subset.
Only the network is DeepCTR-Torch's ``DIN`` (Zhou et al., KDD 2018: attention of the
target item over the history items, Dice activations).

A benchmark-only extra: ``pip install -e '.[peer]'``. Without it :func:`peer_available`
is False and the quality benchmark leaves the row out (and says so).
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import numpy as np
import pandas as pd

from reclora.config import Params, as_params

if TYPE_CHECKING:
    from reclora.config.model_sections import CRMSection

PEER_NAME = "Peer DIN (DeepCTR-Torch)"


def _import_deepctr() -> Any:
    """Import deepctr_torch without its import-time call to pypi.org (a version check in a thread).

    The check is refused at once (no network request leaves), and its thread is waited for.
    """
    import requests

    before = set(threading.enumerate())

    def refuse(*_a: Any, **_kw: Any) -> Any:
        raise requests.ConnectionError("network disabled in reclora")

    with mock.patch.object(requests, "get", refuse), contextlib.redirect_stdout(io.StringIO()):
        import deepctr_torch  # noqa: F401
        from deepctr_torch import inputs, models

        for t in set(threading.enumerate()) - before:
            t.join(timeout=10)
    return inputs, models


def peer_available() -> bool:
    """True when the benchmark extra (deepctr-torch) is installed."""
    import importlib.util

    return importlib.util.find_spec("deepctr_torch") is not None


def _inputs(feat: Any, df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Samples -> DeepCTR-Torch's input dict, from our featurizer's indices (0 = padding/unknown)."""
    t = feat.transform(df)
    x: dict[str, np.ndarray] = {"user_id": t["user"], "item_id": t["item"]}
    fields = feat.user_field_values
    for j, name in enumerate(feat.field_names):
        col = np.zeros(len(df), dtype=np.int64)
        known = t["user"] > 0
        col[known] = fields[t["user"][known] - 1, j]
        x[f"user_{name}"] = col
    width = max([len(g) for g in feat.item_genres] + [1])
    genres = np.zeros((feat.n_items, width), dtype=np.int64)  # row = item index, 0 = unknown
    for i, gs in enumerate(feat.item_genres):
        genres[i + 1, : len(gs)] = np.asarray(gs, dtype=np.int64) + 1
    x["genres"] = genres[t["item"]]
    x["hist_item_id"] = t["hist_items"]
    x["hist_rating"] = t["hist_ratings"]
    x["seq_length"] = t["hist_mask"].sum(axis=1).astype(np.int64)
    return x


def train_peer_din(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    score: pd.DataFrame,
    featurizer: Any,
    crm: CRMSection,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Train DeepCTR-Torch's DIN on ``train`` (early stopping on ``valid`` AUC), return p(click) for ``score``.

    ``featurizer``: the CRM's fitted :class:`reclora.crm.CRMFeaturizer` (same vocabularies and history
    width); ``crm``: the run's params ``crm`` section (embed_dim, mlp, dropout, lr, weight_decay,
    batch_size, max_epochs, patience, seed). Returns (probabilities [len(score)], training summary).
    """
    import torch
    from sklearn.metrics import roc_auc_score

    inputs, models = _import_deepctr()
    SparseFeat, VarLenSparseFeat = inputs.SparseFeat, inputs.VarLenSparseFeat
    d = crm.embed_dim
    xt, xv, xs = (_inputs(featurizer, df) for df in (train, valid, score))
    width = xt["hist_item_id"].shape[1]
    for x in (xv, xs):  # every split padded to the training width
        for k in ("hist_item_id", "hist_rating"):
            pad = np.zeros((len(x[k]), width), dtype=np.int64)
            w = min(width, x[k].shape[1])
            pad[:, :w] = x[k][:, :w]
            x[k] = pad
        x["seq_length"] = np.minimum(x["seq_length"], width)
    cols = [
        SparseFeat("user_id", featurizer.n_users, embedding_dim=d),
        SparseFeat("item_id", featurizer.n_items, embedding_dim=d),
    ]
    cols += [
        SparseFeat(f"user_{n}", s, embedding_dim=d) for n, s in zip(featurizer.field_names, featurizer.field_sizes)
    ]
    cols += [
        VarLenSparseFeat(SparseFeat("genres", featurizer.n_genres + 1, embedding_dim=d), xt["genres"].shape[1], "mean"),
        VarLenSparseFeat(
            SparseFeat("hist_item_id", featurizer.n_items, embedding_dim=d, embedding_name="item_id"),
            width,
            length_name="seq_length",
        ),
        VarLenSparseFeat(
            SparseFeat("hist_rating", featurizer.n_ratings, embedding_dim=d), width, "mean", length_name="seq_length"
        ),
    ]
    torch.manual_seed(crm.seed)
    model = models.DIN(
        cols, ["item_id"], dnn_hidden_units=tuple(crm.mlp), dnn_dropout=crm.dropout, seed=crm.seed, device="cpu"
    )
    model.compile(
        torch.optim.AdamW(model.parameters(), lr=crm.lr, weight_decay=crm.weight_decay), "binary_crossentropy"
    )
    yt, yv = train["label"].to_numpy().astype(np.float32), valid["label"].to_numpy()
    from reclora.crm.train import EpochLog

    log = EpochLog(crm.patience)  # the CRM's early stopping on validation AUC
    t0 = time.perf_counter()
    for epoch in range(1, crm.max_epochs + 1):
        model.fit(xt, yt, batch_size=crm.batch_size, epochs=1, verbose=0, shuffle=True)
        auc = float(roc_auc_score(yv, model.predict(xv, batch_size=4096).reshape(-1)))
        if log.end_epoch(model, {"epoch": epoch, "valid_auc": auc}, time.perf_counter(), progress=False):
            break
    best = log.restore_best(model)["valid_auc"]
    aucs = [round(e["valid_auc"], 6) for e in log.epochs]
    p = model.predict(xs, batch_size=4096).reshape(-1).astype(np.float64)
    return p, {
        "valid_auc_by_epoch": aucs,
        "best_valid_auc": round(best, 6),
        "seconds": round(time.perf_counter() - t0, 1),
        "library": f"deepctr-torch {_version()}",
    }


def _version() -> str:
    from importlib.metadata import version

    return version("deepctr-torch")


def peer_stage(
    data_dir: str | Path,
    retrieved_dir: str | Path,
    crm_dir: str | Path,
    out_dir: str | Path,
    params: Params | Mapping[str, Any],
) -> dict[str, Any]:
    """Train the peer DIN on the bench's samples and write its predictions for the evaluation
    subset (the same rows as the LLM runs) in the stages' layout (predictions.parquet, metrics.json).
    ``params``: the run's params (a :class:`~reclora.config.Params` or its mapping: ``crm``, ``train``'s
    evaluation subset)."""
    from reclora.crm import load_crm
    from reclora.evaluation import ctr_metrics
    from reclora.io import atomic_dir, write_json
    from reclora.stages import KEY, PREDICTIONS, eval_subset, read_samples

    s = read_samples(Path(retrieved_dir))
    _, feat = load_crm(Path(crm_dir) / "model")
    params = as_params(params)
    ev = eval_subset(s["test"], params.train.eval_samples, params.train.seed)
    train, valid = (
        s[k].iloc[np.arange(len(s[k]))] for k in ("train", "valid")
    )  # materialized: a benchmark of ML-100K size
    p, summary = train_peer_din(train, valid, ev, feat, params.crm)
    summary = {
        "model": PEER_NAME,
        "train_samples": int(len(train)),
        "eval": ctr_metrics(ev["label"].to_numpy(), p),
    } | summary
    with atomic_dir(Path(out_dir)) as tmp:
        ev[KEY + ["label"]].assign(p=p).to_parquet(tmp / PREDICTIONS, index=False)
        write_json(tmp / "metrics.json", summary)
    return summary
