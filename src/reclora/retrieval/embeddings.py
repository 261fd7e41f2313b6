"""Item text embeddings: mean-pooled last hidden states of a language model, cached per catalogue.

The cache key is the SHA-256 of the model's identity and every item's text, so a
changed title or another model gives a new file; the cache is safetensors.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from reclora.config import cache_dir


def item_texts(items: pd.DataFrame) -> list[str]:
    """The text the retriever embeds for each item: its title and genres."""
    out = []
    for title, genres in zip(items["title"].astype(str), items["genres"].fillna("").astype(str)):
        g = ", ".join(x for x in genres.split("|") if x)
        out.append(f"{title}. Genres: {g}." if g else f"{title}.")
    return out


def _model_identity(model_path: str) -> str:
    p = Path(model_path)
    cfg = p / "config.json"
    weights = sorted(p.glob("*.safetensors"))
    if cfg.is_file():
        stat = "".join(f"{w.name}:{w.stat().st_size}" for w in weights)
        return f"{p.resolve()}|{cfg.read_text()}|{stat}"
    return model_path


@torch.no_grad()
def embed_texts(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    batch_size: int = 64,
    progress: bool = True,
    layers: int = 0,
    precision: Any = "auto",
) -> np.ndarray:
    """Mean-pooled last hidden state for each text, L2-normalised, float32 [n, d].

    Runs the decoder stack only (no LM head: no vocabulary projection is computed), on batches of
    texts of about one length (little padding); the result is in the order of ``texts``.
    ``layers`` > 0 runs only the first ``layers`` decoder layers (then the final norm): cost falls
    in proportion (params ``retrieval.embedding_layers``; 0, or at least the model's layer count,
    = all). ``precision``: a :class:`~reclora.precision.Precision` or auto | fp32 | bf16 | fp16, decided
    for the model's device (:func:`reclora.precision.as_precision`). ConfigError if ``layers`` is
    negative or the model has no Llama-style decoder.
    """
    from reclora.errors import ConfigError
    from reclora.llm.layers import decoder_stack
    from reclora.precision import as_precision

    decoder = decoder_stack(model)
    full = decoder.layers
    if layers < 0:
        raise ConfigError(f"retrieval.embedding_layers must be >= 0 (0 = all layers), got {layers}")
    if 0 < layers < len(full):
        decoder.layers = full[:layers]  # restored below
    tokenizer.padding_side = "right"
    device = next(model.parameters()).device
    prec = as_precision(precision, device)
    ids = tokenizer(texts, truncation=True, max_length=64)["input_ids"]
    order = np.argsort([len(x) for x in ids], kind="stable")
    out = np.empty((len(texts), decoder.config.hidden_size if hasattr(decoder, "config") else 0), dtype=np.float32)
    try:
        for i in tqdm(range(0, len(texts), batch_size), desc="embed items", disable=not progress, unit="batch"):
            idx = order[i : i + batch_size]
            enc = tokenizer.pad({"input_ids": [ids[j] for j in idx]}, return_tensors="pt")
            enc = {k: v.to(device) for k, v in enc.items()}
            with prec.autocast(device):
                hs = decoder(**enc).last_hidden_state.float()
            m = enc["attention_mask"].unsqueeze(-1).float()
            v = (hs * m).sum(1) / m.sum(1).clamp(min=1)
            out[idx] = torch.nn.functional.normalize(v, dim=-1).cpu().numpy()
    finally:
        tokenizer.padding_side = "left"
        decoder.layers = full
    return out


def embedding_cache_key(
    item_ids: np.ndarray, texts: list[str], model_path: str, layers: int = 0, precision: str = "bf16"
) -> str:
    """The cache file stem (32 hex chars): SHA-256 of the model's identity (its directory, config.json and
    weight file sizes, or the id as given), the layer count (when not all), the precision the embeddings
    are computed in (when not bf16, the one every earlier cache file was computed in) and every
    (item id, text) pair in order."""
    h = hashlib.sha256(_model_identity(model_path).encode())
    if layers:
        h.update(f"|layers={int(layers)}".encode())
    if precision != "bf16":
        h.update(f"|precision={precision}".encode())
    for i, t in zip(item_ids, texts):
        h.update(f"{i}\x1f{t}\x1e".encode())
    return h.hexdigest()[:32]


def load_or_embed_items(
    items: pd.DataFrame,
    model_path: str,
    batch_size: int = 64,
    cache: Path | None = None,
    progress: bool = True,
    layers: int = 0,
    precision: Any = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """(item_ids [n], embeddings [n, d]) for the catalogue, from the cache or computed once
    (``layers``, ``precision``: see :func:`embed_texts`; the precision is decided for the CPU)."""
    from safetensors.numpy import load_file, save_file

    from reclora.precision import as_precision

    prec = as_precision(precision, "cpu")
    texts = item_texts(items)
    ids = items["item_id"].to_numpy(dtype=np.int64)
    key = embedding_cache_key(ids, texts, model_path, layers, prec.name)
    path = (cache or cache_dir() / "embeddings") / f"{key}.safetensors"
    if path.is_file():
        d = load_file(str(path))
        return d["item_ids"], d["embeddings"]
    from reclora.llm import load_causal_lm

    model, tok = load_causal_lm(model_path)
    emb = embed_texts(model, tok, texts, batch_size=batch_size, progress=progress, layers=layers, precision=prec)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    save_file({"item_ids": ids, "embeddings": emb}, tmp)
    os.replace(tmp, path)
    return ids, emb
