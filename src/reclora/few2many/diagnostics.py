"""Cheap diagnostics of the text path: what the frozen LLM's features hold, and where the answer mass is.

answer_states   final hidden state at the answer position for every prompt ([n, D], fp32)
linear_probe    logistic regression on those states: the ceiling of what the frozen text features
                hold about the label (fitted on the Few2Many sample, scored on the validation subset)
yes_no_mass     p(Yes) + p(No) over the whole vocabulary at the answer position: how much of the
                model's next-token belief the readout sees
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from reclora.few2many.adapters import AdapterModel
from reclora.few2many.data import PromptSet
from reclora.llm.model import yes_no_token_ids
from reclora.precision import Precision, as_precision


@torch.no_grad()
def answer_states(
    model: AdapterModel, data: PromptSet, batch_size: int = 16, precision: Precision | str = "auto"
) -> np.ndarray:
    """[n, D] fp32 final (normed) hidden states at the answer position, in ``data``'s order (eval mode).

    Uses ``data``'s cached frozen-layer states when it has them; runs in ``precision`` (see
    :func:`reclora.precision.as_precision`).
    """
    was = model.module.training
    model.train(False)
    device = next(model.module.parameters()).device
    prec = as_precision(precision, device)
    order = np.argsort(data.lengths, kind="stable")
    out: np.ndarray | None = None
    try:
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            b = data.batch(idx, device)
            with prec.autocast(device):
                h = (
                    model.answer_hidden(b["input_ids"], b["attention_mask"], b["signal"], b["lower"])
                    .float()
                    .cpu()
                    .numpy()
                )
            if out is None:
                out = np.empty((len(data), h.shape[1]), dtype=np.float32)
            out[idx] = h
    finally:
        model.train(was)
    return out if out is not None else np.empty((0, 0), dtype=np.float32)


def linear_probe(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, c: float = 1.0
) -> dict[str, float]:
    """Standardized logistic regression (L2, inverse strength ``c``) fitted on train, scored on test.

    Returns {"auc", "logloss", "train_auc"}; raises ValueError when a side has one class only.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(train_y)) < 2 or len(np.unique(test_y)) < 2:
        raise ValueError("linear probe: both labels must occur in the fitting and the scoring set")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    clf.fit(train_x, train_y)
    p = clf.predict_proba(test_x)[:, 1]
    return {
        "auc": round(float(roc_auc_score(test_y, p)), 6),
        "logloss": round(float(log_loss(test_y, np.clip(p, 1e-7, 1 - 1e-7))), 6),
        "train_auc": round(float(roc_auc_score(train_y, clf.predict_proba(train_x)[:, 1])), 6),
    }


@torch.no_grad()
def yes_no_mass(
    model: AdapterModel,
    tokenizer: Any,
    data: PromptSet,
    batch_size: int = 16,
    precision: Precision | str = "auto",
    states: np.ndarray | None = None,
) -> dict[str, float]:
    """p(Yes) + p(No) under the full next-token softmax at the answer position: mean, min and median.

    ``states``: the prompts' answer states from :func:`answer_states`, when already computed.
    """
    yes, no = yes_no_token_ids(tokenizer)
    h = answer_states(model, data, batch_size, precision) if states is None else states
    if not len(h):
        return {}
    logits = torch.nn.functional.linear(torch.from_numpy(h), model.output_head().weight.detach().float().cpu())
    prob = torch.softmax(logits, -1)
    m = (prob[:, yes] + prob[:, no]).numpy()
    return {"mean": round(float(m.mean()), 6), "min": round(float(m.min()), 6), "median": round(float(np.median(m)), 6)}


def diagnose(
    model: AdapterModel,
    tokenizer: Any,
    train: PromptSet,
    train_y: Sequence[int],
    valid: PromptSet,
    valid_y: Sequence[int],
    batch_size: int = 16,
    precision: Precision | str = "auto",
) -> dict[str, Any]:
    """Before training (the adapter is the identity at init, B = 0): the linear probe of the frozen
    features and the Yes+No mass of the base model, on the given prompt sets."""
    tr = answer_states(model, train, batch_size, precision)
    va = answer_states(model, valid, batch_size, precision)
    out: dict[str, Any] = {"yes_no_mass_base": yes_no_mass(model, tokenizer, valid, states=va)}
    try:
        out["linear_probe"] = linear_probe(tr, np.asarray(train_y), va, np.asarray(valid_y)) | {
            "fitted_on": int(len(tr)),
            "scored_on": int(len(va)),
        }
    except ValueError as e:
        out["linear_probe"] = {"error": str(e)}
    return out
