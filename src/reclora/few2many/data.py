"""Few2Many's data: the seeded sample, chat-templated tokenizing, left padding, length-bucketed batches, and
:class:`PromptSet` (tokenized prompts with their CRM signals/anchors and cached frozen-layer states)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from reclora.few2many.adapters import AdapterModel
from reclora.llm.model import chat_prompt
from reclora.precision import Precision, as_precision


def sample_few(n_total: int, n: int, seed: int) -> np.ndarray:
    """Seeded uniform sample (sorted indices) of ``n`` of ``n_total`` rows: the Few2Many subset."""
    if n <= 0 or n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n, replace=False))


def encode(tokenizer: Any, prompts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """Chat-template the prompts and tokenize them left-padded, truncating from the left."""
    return pad_left(tokenize(tokenizer, prompts, max_length), _pad_id(tokenizer))


def tokenize(tokenizer: Any, prompts: Sequence[str], max_length: int) -> list[list[int]]:
    """Chat-templated token ids per prompt (unpadded), truncated from the left to ``max_length``."""
    tokenizer.truncation_side = "left"
    texts = [chat_prompt(tokenizer, p) for p in prompts]
    return tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=False)["input_ids"]


def _pad_id(tokenizer: Any) -> int:
    return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)


def pad_left(seqs: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """{"input_ids", "attention_mask"}: [B, max_len] left-padded (the answer slot is the last column)."""
    width = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, x in enumerate(seqs):
        if len(x):
            ids[i, width - len(x) :] = torch.as_tensor(x, dtype=torch.long)
            mask[i, width - len(x) :] = 1
    return {"input_ids": ids, "attention_mask": mask}


def length_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, bucket: bool = True
) -> list[np.ndarray]:
    """One epoch of batches (index arrays), seeded by (seed, epoch).

    Unbucketed: a random permutation cut into batches. Bucketed: the permutation is cut into pools
    of 32 batches, each pool sorted by length and cut into batches, and the batches shuffled; so a
    batch holds prompts of about one length (little padding) and every sample appears once.
    """
    rng = np.random.default_rng([seed, epoch])
    n = len(lengths)
    order = rng.permutation(n)
    if not bucket:
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    lens = np.asarray(lengths)
    pool = batch_size * 32
    out = []
    for i in range(0, n, pool):
        chunk = order[i : i + pool]
        chunk = chunk[np.argsort(lens[chunk], kind="stable")]
        out.extend(chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size))
    return [out[k] for k in rng.permutation(len(out))]


class PromptSet:
    """Tokenized prompts with their per-sample inputs, and (optionally) cached frozen-layer states.

    ``batch(idx)`` -> (input_ids or None, attention_mask, lower or None, signal, anchor) for the model.
    ``cache(model)`` runs the layers below ``model.first_layer`` once per prompt (batched by length)
    and keeps each prompt's unpadded [len, D] state, so later passes run only the adapted layers.
    """

    def __init__(
        self,
        tokenizer: Any,
        prompts: Sequence[str],
        max_length: int,
        signals: np.ndarray | None = None,
        anchors: np.ndarray | None = None,
    ) -> None:
        n = len(prompts)
        for name, a in (("signals", signals), ("anchors", anchors)):
            if a is not None and len(a) != n:
                raise ValueError(f"{name} has {len(a)} rows for {n} prompts")
        self.ids = tokenize(tokenizer, prompts, max_length)
        self.lengths = [len(x) for x in self.ids]
        self.pad_id = _pad_id(tokenizer)
        self.signals = torch.as_tensor(np.asarray(signals, dtype=np.float32)) if signals is not None else None
        self.anchors = (
            torch.as_tensor(np.asarray(anchors, dtype=np.float32).reshape(-1)) if anchors is not None else None
        )
        self.lower: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def cache(
        self,
        model: AdapterModel,
        batch_size: int,
        precision: Precision | str = "auto",
        progress: bool = False,
        desc: str = "cache",
        store: str | Path | None = None,
    ) -> None:
        """Compute (or, with ``store``, load if present) every prompt's frozen-layer state.

        ``precision``: a chosen :class:`~reclora.precision.Precision` or a ``train.precision`` name
        (resolved on the model's device). ``store``: a directory shared by runs on the same prompts
        (vanilla LoRA and RecLoRA of one benchmark or one pipeline, say): the states are saved there as
        safetensors under a key of the base model (its config and weight files), the first adapted
        layer, the precision the states were computed in and the token ids, and loaded by any later run
        with that key.
        """
        if model.first_layer == 0:
            return
        device = next(model.module.parameters()).device
        prec = as_precision(precision, device)
        f = None
        if store is not None:
            f = Path(store) / f"lower-{self._key(model, prec.name)}.safetensors"
            if f.is_file():
                from safetensors.torch import load_file

                t = load_file(str(f))
                self.lower = [t[str(i)] for i in range(len(self))]
                return
        order = np.argsort(self.lengths, kind="stable")
        lower: list[torch.Tensor | None] = [None] * len(self)
        was = model.module.training
        model.train(False)
        try:
            for i in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, unit="batch"):
                idx = order[i : i + batch_size]
                enc = pad_left([self.ids[j] for j in idx], self.pad_id)
                with prec.autocast(device):
                    h = model.lower_states(enc["input_ids"].to(device), enc["attention_mask"].to(device)).cpu()
                for row, j in enumerate(idx):
                    lower[j] = h[row, h.shape[1] - self.lengths[j] :].clone()
        finally:
            model.train(was)
        self.lower = lower  # type: ignore[assignment]
        if f is not None:
            import os
            import tempfile

            from safetensors.torch import save_file

            f.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(
                dir=f.parent, prefix=f".{f.name}.", suffix=".tmp"
            )  # concurrent writers: own files
            os.close(fd)
            try:
                save_file({str(i): t.contiguous() for i, t in enumerate(self.lower)}, tmp)
                os.replace(tmp, f)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)

    def _key(self, model: AdapterModel, precision: str) -> str:
        """The cache key: base model (name, config, weight files' names, sizes and times), first adapted
        layer, the precision (fp32 | bf16 | fp16) the states are computed in, and every prompt's token ids."""
        import hashlib

        from reclora.llm.layers import unwrap

        cfg = getattr(unwrap(model.module), "config", None)
        name = str(getattr(cfg, "_name_or_path", ""))
        weights = ""
        if name and Path(name).is_dir():
            weights = ",".join(
                f"{w.name}:{w.stat().st_size}:{w.stat().st_mtime_ns}" for w in sorted(Path(name).glob("*.safetensors"))
            )
        h = hashlib.sha256(f"{name}|{cfg}|{weights}|{model.first_layer}|{precision}".encode())
        for x in self.ids:
            h.update(np.asarray(x, dtype=np.int64).tobytes() + b"|")
        return h.hexdigest()[:24]

    def batch(self, idx: np.ndarray, device: torch.device) -> dict[str, torch.Tensor | None]:
        """The model inputs of prompts ``idx`` on ``device``: "attention_mask" [b, T] (left-padded);
        "input_ids" [b, T] when no states are cached, else None and "lower" [b, T, D] fp32 cached states
        (zeros in the padding); "signal" [b, signal_dim] and "anchor" [b], or None when the set has none."""
        enc = pad_left([self.ids[j] for j in idx], self.pad_id)
        mask = enc["attention_mask"].to(device)
        lower = None
        if self.lower is not None:
            width, dim = mask.shape[1], self.lower[idx[0]].shape[-1]
            lower = torch.zeros((len(idx), width, dim), dtype=torch.float32)
            for row, j in enumerate(idx):
                lower[row, width - self.lengths[j] :] = self.lower[j]
            lower = lower.to(device)
        return {
            "input_ids": None if lower is not None else enc["input_ids"].to(device),
            "attention_mask": mask,
            "lower": lower,
            "signal": self.signals[idx].to(device) if self.signals is not None else None,
            "anchor": self.anchors[idx].to(device) if self.anchors is not None else None,
        }
