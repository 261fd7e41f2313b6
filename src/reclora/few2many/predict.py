"""Few2Many prediction: p(Yes) of prompts under a trained adapter, batched by length (data-parallel under
torchrun: every rank scores its share of the batches)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from reclora.few2many import distributed as D
from reclora.few2many.adapters import AdapterModel
from reclora.few2many.data import PromptSet
from reclora.llm.model import yes_no_token_ids
from reclora.precision import Precision, as_precision


def answer_logits(
    model: AdapterModel, batch: dict[str, Any], token_ids: Sequence[int] | None, readout: bool = True
) -> torch.Tensor:
    """The batch's answer logits (``model.answer_logits`` on a :meth:`PromptSet.batch`): fp32 [B, 2] over
    (Yes, No) for ``token_ids`` = (yes, no), [B, vocab] for None; ``readout`` applies the crm_residual readout."""
    return model.answer_logits(
        batch["input_ids"],
        batch["attention_mask"],
        batch["signal"],
        token_ids,
        lower=batch["lower"],
        anchor=batch["anchor"],
        readout=readout,
    )


@torch.no_grad()
def predict_set(
    model: AdapterModel,
    data: PromptSet,
    batch_size: int,
    precision: Precision | str,
    token_ids: Sequence[int],
    progress: bool = False,
    desc: str = "predict",
    rank: int = 0,
    world: int = 1,
) -> np.ndarray:
    """p(Yes) for the prompts of ``data`` (batched by length), eval mode. With ``world`` > 1 this rank
    scores every world-th batch and leaves 0 in the other rows (the caller sums over the ranks)."""
    was = model.module.training
    model.train(False)
    device = next(model.module.parameters()).device
    prec = as_precision(precision, device)
    order = np.argsort(data.lengths, kind="stable")
    out = np.zeros(len(data), dtype=np.float64)
    try:
        starts = range(0, len(order), batch_size)
        for b, i in enumerate(tqdm(starts, desc=desc, disable=not progress, unit="batch")):
            if b % world != rank:
                continue
            idx = order[i : i + batch_size]
            with prec.autocast(device):
                pair = answer_logits(model, data.batch(idx, device), token_ids)
            out[idx] = torch.softmax(pair, -1)[:, 0].cpu().numpy()
    finally:
        model.train(was)
    return out


@torch.no_grad()
def predict_adapter(
    model: AdapterModel,
    tokenizer: Any,
    prompts: Sequence[str],
    signals: np.ndarray | None = None,
    batch_size: int = 16,
    max_length: int = 384,
    precision: Precision | str = "auto",
    progress: bool = True,
    distributed: bool | None = None,
    anchors: np.ndarray | None = None,
    cache_dir: str | Path | None = None,
) -> np.ndarray:
    """p(Yes) per prompt [n], float64. Prompts are batched by length to waste little on padding.

    ``signals`` [n, signal_dim] (RecLoRA with the CRM gate), ``anchors`` [n] (the CRM logits, for the
    crm_residual readout). Data-parallel (``distributed`` as in ``train_adapter``): every rank scores
    every world-th batch and all get all the probabilities, so every rank must call it.
    ``cache_dir``: load (or compute and keep) the prompts' frozen-layer states there, so that several
    models on one base score the same prompts running only their adapted layers. ``precision``: a chosen
    :class:`~reclora.precision.Precision`, or auto | fp32 | bf16 | fp16 decided for the model's device
    (:func:`reclora.precision.choose`).
    """
    ddp = D.use_process_group(distributed)
    if ddp:
        rank, world, main = D.rank(), D.world(), D.is_main()
    else:
        rank, world, main = 0, 1, True
    if model.uses_anchor and anchors is None:
        raise ValueError("the crm_residual readout needs the CRM logits (anchors)")
    data = PromptSet(tokenizer, prompts, max_length, signals, anchors if model.uses_anchor else None)
    if cache_dir is not None:
        data.cache(model, batch_size, precision, progress and main, "cache frozen layers", cache_dir)
    out = predict_set(
        model,
        data,
        batch_size,
        precision,
        yes_no_token_ids(tokenizer),
        progress and main,
        f"predict {model.kind}",
        rank,
        world,
    )
    if ddp:
        t = torch.from_numpy(out)
        D.all_reduce_sum_(t)  # each row was filled by exactly one rank
        out = t.numpy()
    return out
