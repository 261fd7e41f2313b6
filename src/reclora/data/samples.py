"""CTR samples: label, strictly-earlier history, and the 8:1:1 split by global time.

For every interaction (the *target*), the sample carries the user's
interactions with a timestamp strictly before the target's (ties at the same
second are not history), the most recent ``max_history`` of them, oldest
first. Samples with fewer than ``min_history`` earlier interactions are
dropped. The split cuts the interactions ordered by (timestamp, user_id,
item_id) at 80% and 90%, so every valid/test event is at or after every train
event and no sample ever sees a later event in its history.

Where time is only the row order of the raw file (``repeat_is_same_event``,
GoodBooks-10K), a repeated (user, item) pair is the same event recorded twice:
the later copy gets no sample, so no sample carries its own answer in its
history (the validation gate names the repeated pairs).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from reclora.data.schema import SPLITS


def assign_splits(inter: pd.DataFrame, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> np.ndarray:
    """Split name per interaction row, by rank in global time order."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    order = np.lexsort((inter["item_id"].to_numpy(), inter["user_id"].to_numpy(), inter["timestamp"].to_numpy()))
    n = len(inter)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    c1 = int(round(n * fractions[0]))
    c2 = int(round(n * (fractions[0] + fractions[1])))
    return np.where(rank < c1, "train", np.where(rank < c2, "valid", "test"))


def build_samples(
    inter: pd.DataFrame,
    threshold: float,
    min_history: int = 5,
    max_history: int = 100,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    repeat_is_same_event: bool = False,
) -> dict[str, pd.DataFrame]:
    """Build the train/valid/test CTR samples (columns of schema.SAMPLE_COLUMNS) from canonical interactions.

    ``repeat_is_same_event``: drop the samples of a (user, item) pair's later copies (time is row order).
    """
    if min_history < 0 or max_history < 1:
        raise ValueError("min_history must be >= 0 and max_history >= 1")
    df = inter[["user_id", "item_id", "rating", "timestamp"]].copy()
    df["split"] = assign_splits(df, fractions)
    df = df.sort_values(["user_id", "timestamp", "item_id"], kind="stable").reset_index(drop=True)

    users = df["user_id"].to_numpy()
    ts = df["timestamp"].to_numpy()
    items = df["item_id"].to_numpy()
    ratings = df["rating"].to_numpy()
    # boundaries of each user's block in the sorted frame
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(df)]
    n_hist = np.empty(len(df), dtype=np.int64)
    for s, e in zip(starts, ends):
        # strictly earlier: count of the user's events with timestamp < this one
        n_hist[s:e] = np.searchsorted(ts[s:e], ts[s:e], side="left")
    block_start = np.repeat(starts, ends - starts)

    keep = n_hist >= max(min_history, 1)
    if repeat_is_same_event:
        keep &= ~df.duplicated(["user_id", "item_id"], keep="first").to_numpy()
    idx = np.flatnonzero(keep)
    lo = block_start[idx] + np.maximum(0, n_hist[idx] - max_history)
    hi = block_start[idx] + n_hist[idx]
    hist_items = [items[a:b] for a, b in zip(lo, hi)]
    hist_ratings = [ratings[a:b] for a, b in zip(lo, hi)]
    hist_ts = [ts[a:b] for a, b in zip(lo, hi)]

    out = df.loc[idx, ["user_id", "item_id", "rating", "timestamp", "split"]].reset_index(drop=True)
    out["label"] = (out["rating"] >= threshold).astype("int8")
    out["n_history"] = n_hist[idx]
    # object columns of arrays, also when there are no samples (an empty list would become float64)
    out["hist_item_ids"] = pd.Series(hist_items, dtype=object)
    out["hist_ratings"] = pd.Series(hist_ratings, dtype=object)
    out["hist_timestamps"] = pd.Series(hist_ts, dtype=object)
    out = out.sort_values(["timestamp", "user_id", "item_id"], kind="stable")
    return {
        split: out[out["split"] == split].drop(columns="split").reset_index(drop=True) for split in SPLITS
    }
