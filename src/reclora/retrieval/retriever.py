"""Top-K relevant earlier behaviours per sample, put back in time order, vectorized over chunks.

For a sample with history h_1..h_L (oldest first) and target t, relevance is the
cosine similarity of the item text embeddings e(h_i) . e(t). The K most
relevant are kept in their original time order. The CRM gets K_long of them
(ID modality), the prompt K_short (text modality). ``mode="recent"`` keeps the
K most recent instead (the fallback and the ablation). Items without an
embedding (unknown to the catalogue) rank last.

The core, :func:`retrieve_positions`, works on the event store + sample index layout
(reclora.data.samples): a sample's history is ``events[history_start : history_start +
history_length]`` and what is stored per sample is only the chosen *positions* in it
(int16 offsets from ``history_start``, ascending = time order, -1 padding at the end),
computed ``chunk`` samples at a time with numpy (memory O(chunk x max_history x dim)).
:func:`materialize_retrieved` turns positions back into the item id / rating lists for the
rows a caller needs; :func:`retrieve` keeps the frame-in, frame-out form (serving, small data).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RETRIEVED_COLUMNS = ("long_item_ids", "long_ratings", "short_item_ids", "short_ratings")
POSITION_COLUMNS = ("long_pos", "short_pos")
POSITION_DTYPE = np.int16  # offsets into a history of at most max_history (<= 32767) events


def _check(mode: str, k_long: int, k_short: int, item_ids: np.ndarray | None, embeddings: np.ndarray | None) -> None:
    if mode not in ("relevance", "recent"):
        raise ValueError(f"retrieval mode must be 'relevance' or 'recent', got {mode!r}")
    if k_long < 1 or k_short < 1:
        raise ValueError("k_long and k_short must be >= 1")
    if mode == "relevance" and (item_ids is None or embeddings is None):
        raise ValueError("relevance retrieval needs item_ids and embeddings")


class _Embeddings:
    """Row of each item id in the embedding matrix (last row: zeros, for unknown items)."""

    def __init__(self, item_ids: np.ndarray, embeddings: np.ndarray) -> None:
        ids = np.asarray(item_ids, dtype=np.int64)
        self.order = np.argsort(ids, kind="stable")
        self.sorted = ids[self.order]
        self.unknown = len(ids)
        # float64: relevance scores must not depend on how samples are batched. A float32 dot product's
        # rounding (about d x 6e-8 for unit vectors) changes with the einsum's shapes, and it is larger than the
        # 1e-9 recency tie-break, so a chunk of 512 samples and one served request could pick different
        # items among (near-)equal scores; in float64 it is about d x 1e-16, far below the tie-break.
        emb = np.asarray(embeddings, dtype=np.float64)
        self.matrix = np.vstack([emb, np.zeros((1, emb.shape[1]), np.float64)])

    def rows(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if len(self.sorted) == 0:
            return np.full(ids.shape, self.unknown, dtype=np.int64)
        p = np.minimum(np.searchsorted(self.sorted, ids), len(self.sorted) - 1)
        return np.where(self.sorted[p] == ids, self.order[p], self.unknown).astype(np.int64)


def _top_positions(scores: np.ndarray, valid: np.ndarray, k: int) -> np.ndarray:
    """[n, k] positions of the k best-scoring valid entries per row, ascending, -1 padded at the end."""
    n, width = scores.shape
    out = np.full((n, k), -1, dtype=POSITION_DTYPE)
    k_eff = min(k, width)
    if k_eff == 0 or n == 0:
        return out
    s = np.where(valid, scores, -np.inf)
    top = (
        np.argpartition(-s, k_eff - 1, axis=1)[:, :k_eff]
        if k_eff < width
        else np.broadcast_to(np.arange(width), (n, width))
    )
    top = np.where(np.take_along_axis(valid, top, axis=1), top, width)  # invalid -> past the end
    top = np.sort(top, axis=1)
    out[:, :k_eff] = np.where(top < width, top, -1)
    return out


def retrieve_positions(
    history_start: np.ndarray,
    history_length: np.ndarray,
    target_item_ids: np.ndarray,
    event_item_ids: np.ndarray,
    k_long: int,
    k_short: int,
    mode: str = "relevance",
    item_ids: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    chunk: int = 512,
    event_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Chosen history positions per sample: ``(long_pos [n, k_long], short_pos [n, k_short])`` int16.

    Sample i's history is ``event_item_ids[history_start[i] : history_start[i] + history_length[i]]``
    (oldest first, all strictly earlier than its target). Position p means that history's p-th event;
    each row is ascending (time order) with -1 padding after the chosen ones. ``event_rows``: the
    embedding row of every event (precomputed by the caller for many calls; else derived here).
    Raises ValueError on a bad mode, k < 1, or relevance without embeddings.
    """
    _check(mode, k_long, k_short, item_ids, embeddings)
    starts = np.asarray(history_start, dtype=np.int64)
    lens = np.asarray(history_length, dtype=np.int64)
    n = len(starts)
    if len(lens) and int(lens.max()) > np.iinfo(POSITION_DTYPE).max:
        raise ValueError(f"histories longer than {np.iinfo(POSITION_DTYPE).max} events cannot be indexed")
    long_pos = np.full((n, k_long), -1, dtype=POSITION_DTYPE)
    short_pos = np.full((n, k_short), -1, dtype=POSITION_DTYPE)
    if mode == "recent" or not lens.any():  # the last min(k, length) positions, directly: no scores needed
        return _recent(lens, k_long), _recent(lens, k_short)
    emb = _Embeddings(item_ids, embeddings)
    if emb is not None and event_rows is None:
        event_rows = emb.rows(event_item_ids)
    for a in range(0, n, chunk):
        s, ln = starts[a : a + chunk], lens[a : a + chunk]
        width = max(int(ln.max()) if len(ln) else 0, 1)
        pos = np.arange(width, dtype=np.int64)
        valid = pos[None, :] < ln[:, None]
        rows = np.where(valid, s[:, None] + pos[None, :], 0)
        h_idx = event_rows[rows]
        t_idx = emb.rows(np.asarray(target_item_ids[a : a + chunk]))
        scores = np.einsum("nld,nd->nl", emb.matrix[h_idx], emb.matrix[t_idx], optimize=True)
        scores[h_idx == emb.unknown] = -1e9  # unknown items rank last but stay eligible
        scores += pos * 1e-9  # ties (e.g. identical texts) break toward the more recent behaviour
        long_pos[a : a + chunk] = _top_positions(scores, valid, k_long)
        short_pos[a : a + chunk] = _top_positions(scores, valid, k_short)
    return long_pos, short_pos


def _recent(lens: np.ndarray, k: int) -> np.ndarray:
    """[n, k]: positions max(len - k, 0) .. len - 1 per row, -1 padded (lengths <= the int16 maximum,
    as retrieve_positions checks; computed in int16, which is 3-4x faster than int64 here)."""
    lens = np.asarray(lens, dtype=np.int64)
    dt = POSITION_DTYPE if k <= np.iinfo(POSITION_DTYPE).max else np.int64
    j = np.arange(k, dtype=dt)[None, :]
    pos = np.maximum(lens - k, 0).astype(dt)[:, None] + j
    return np.where(j < np.minimum(lens, k).astype(dt)[:, None], pos, dt(-1)).astype(POSITION_DTYPE, copy=False)


def positions_to_rows(history_start: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(event rows [n, k] (0 where padded), mask [n, k]) of chosen positions."""
    mask = positions >= 0
    rows = np.where(mask, np.asarray(history_start, dtype=np.int64)[:, None] + positions.astype(np.int64), 0)
    return rows, mask


def _lists(values: np.ndarray, mask: np.ndarray) -> pd.Series:
    import pyarrow as pa

    lens = mask.sum(axis=1)
    off = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=off[1:])
    flat = values[mask]  # row-major: each row's chosen entries in position (= time) order
    if len(lens) == 0:
        return pd.Series([], dtype=object)
    return pd.Series(pa.LargeListArray.from_arrays(pa.array(off), pa.array(flat)).to_pandas(), dtype=object)


def materialize_retrieved(
    events: pd.DataFrame, history_start: np.ndarray, long_pos: np.ndarray, short_pos: np.ndarray
) -> dict[str, pd.Series]:
    """The RETRIEVED_COLUMNS (item id and rating lists, oldest first) of the given samples, from the event
    store (columns item_id, rating) and their chosen positions. Memory O(n x (k_long + k_short))."""
    # one padding row, so that padded positions (row 0) can be gathered even from an empty store
    items = np.r_[events["item_id"].to_numpy(np.int64), 0]
    ratings = np.r_[events["rating"].to_numpy(np.float64), np.nan]
    out = {}
    for prefix, p in (("long", long_pos), ("short", short_pos)):
        rows, mask = positions_to_rows(history_start, np.asarray(p))
        out[f"{prefix}_item_ids"] = _lists(items[rows], mask)
        out[f"{prefix}_ratings"] = _lists(ratings[rows], mask)
    return out


def _flatten(col: pd.Series, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    arrays = [np.asarray(x if x is not None else [], dtype=dtype) for x in col]
    lens = np.fromiter((len(x) for x in arrays), dtype=np.int64, count=len(arrays))
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=dtype)
    return flat, lens


def retrieve(
    samples: pd.DataFrame,
    k_long: int,
    k_short: int,
    mode: str = "relevance",
    item_ids: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    chunk: int = 512,
) -> pd.DataFrame:
    """Return a copy of ``samples`` (with ``hist_item_ids``/``hist_ratings`` list columns) with the
    long_/short_ item id and rating list columns added. Same selection as :func:`retrieve_positions`
    (the histories are laid out as a small event store first)."""
    _check(mode, k_long, k_short, item_ids, embeddings)
    items, lens = _flatten(samples["hist_item_ids"], np.int64)
    ratings, rlens = _flatten(samples["hist_ratings"], np.float64)
    if not np.array_equal(lens, rlens):
        raise ValueError("hist_item_ids and hist_ratings differ in length")
    starts = np.cumsum(lens) - lens
    long_pos, short_pos = retrieve_positions(
        starts, lens, samples["item_id"].to_numpy(), items, k_long, k_short, mode, item_ids, embeddings, chunk
    )
    out = samples.copy()
    for c, v in materialize_retrieved(
        pd.DataFrame({"item_id": items, "rating": ratings}), starts, long_pos, short_pos
    ).items():
        out[c] = v.to_numpy()
    return out
