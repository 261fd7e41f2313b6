"""Top-K relevant earlier behaviours per sample, put back in time order.

For a sample with history h_1..h_L (oldest first) and target t, relevance is the
cosine similarity of the item text embeddings e(h_i) . e(t). The K most
relevant are kept in their original time order. The CRM gets K_long of them
(ID modality), the prompt K_short (text modality). ``mode="recent"`` keeps the
K most recent instead (the fallback and the ablation). Items without an
embedding (unknown to the catalogue) rank last.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RETRIEVED_COLUMNS = ("long_item_ids", "long_ratings", "short_item_ids", "short_ratings")


def _pad(lists: pd.Series, fill: float, dtype: type) -> np.ndarray:
    n = len(lists)
    width = max((len(x) for x in lists), default=0)
    out = np.full((n, max(width, 1)), fill, dtype=dtype)
    for i, x in enumerate(lists):
        out[i, : len(x)] = x
    return out


def _select(order_scores: np.ndarray, valid: np.ndarray, k: int) -> list[np.ndarray]:
    """Per row: indices of the k best-scoring valid positions, ascending (= time order)."""
    scores = np.where(valid, order_scores, -np.inf)
    k_eff = min(k, scores.shape[1])
    top = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff] if k_eff > 0 else np.zeros((len(scores), 0), int)
    out = []
    for row, idx in enumerate(top):
        idx = idx[valid[row, idx]]
        out.append(np.sort(idx))
    return out


def retrieve(
    samples: pd.DataFrame,
    k_long: int,
    k_short: int,
    mode: str = "relevance",
    item_ids: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    chunk: int = 512,
) -> pd.DataFrame:
    """Return a copy of ``samples`` with long_/short_ item id and rating list columns added."""
    if mode not in ("relevance", "recent"):
        raise ValueError(f"retrieval mode must be 'relevance' or 'recent', got {mode!r}")
    if k_long < 1 or k_short < 1:
        raise ValueError("k_long and k_short must be >= 1")
    if mode == "relevance" and (item_ids is None or embeddings is None):
        raise ValueError("relevance retrieval needs item_ids and embeddings")
    out = samples.copy()
    cols: dict[str, list] = {c: [] for c in RETRIEVED_COLUMNS}
    if mode == "relevance":
        lookup = pd.Series(np.arange(len(item_ids)), index=item_ids)
        emb = np.vstack([embeddings, np.zeros((1, embeddings.shape[1]), np.float32)])  # last row: unknown
        unknown = len(item_ids)
    for start in range(0, len(samples), chunk):
        part = samples.iloc[start : start + chunk]
        hist = _pad(part["hist_item_ids"], -1, np.int64)
        rats = _pad(part["hist_ratings"], np.nan, np.float64)
        valid = hist >= 0
        if mode == "recent":
            # later positions score higher
            scores = np.broadcast_to(np.arange(hist.shape[1], dtype=np.float64), hist.shape).copy()
        else:
            h_idx = lookup.reindex(hist.ravel()).fillna(unknown).to_numpy(np.int64).reshape(hist.shape)
            t_idx = lookup.reindex(part["item_id"].to_numpy()).fillna(unknown).to_numpy(np.int64)
            scores = np.einsum("nld,nd->nl", emb[h_idx], emb[t_idx], optimize=True).astype(np.float64)
            scores[h_idx == unknown] = -1e9  # unknown items rank last but stay eligible
            # ties (e.g. identical texts) break toward the more recent behaviour
            scores += np.arange(hist.shape[1]) * 1e-9
        for k, prefix in ((k_long, "long"), (k_short, "short")):
            for row, idx in enumerate(_select(scores, valid, k)):
                cols[f"{prefix}_item_ids"].append(hist[row, idx])
                cols[f"{prefix}_ratings"].append(rats[row, idx])
    for c, v in cols.items():
        out[c] = v
    return out
