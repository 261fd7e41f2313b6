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

from collections.abc import Sequence

import numpy as np
import pandas as pd

from reclora.data.schema import SPLITS


def sort_order(major: np.ndarray, middle: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """Stable order of rows by (major, middle, minor): exactly ``np.lexsort((minor, middle, major))``.

    Integer arrays of one length n; returns int64 row indices [n]. When the ranges of ``major`` and
    ``middle`` fit in 63 bits together (ids x unix seconds do), one stable sort of a packed
    (major, middle) key plus a lexsort of only the rows whose packed keys tie (same user and
    second), instead of lexsort's three passes: about 3x faster at 25M rows; else np.lexsort.
    """
    n = len(major)
    if not (len(middle) == len(minor) == n):
        raise ValueError("sort_order: the three key arrays must have the same length")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    major, middle = np.asarray(major, np.int64), np.asarray(middle, np.int64)
    lo_a, lo_b = int(major.min()), int(middle.min())
    bits_b = (int(middle.max()) - lo_b).bit_length()
    if (int(major.max()) - lo_a).bit_length() + bits_b > 63:
        return np.lexsort((minor, middle, major))
    key = ((major - lo_a) << bits_b) | (middle - lo_b)
    order = np.argsort(key, kind="stable")
    key = key[order]
    tie = key[1:] == key[:-1]
    del key
    if tie.any():  # rows sharing (major, middle): order each run by minor, stably
        in_run = np.r_[tie, False] | np.r_[False, tie]
        run = np.cumsum(in_run & ~np.r_[False, tie])[in_run]
        rows = order[in_run]
        order[in_run] = rows[np.lexsort((np.asarray(minor)[rows], run))]
    return order.astype(np.int64, copy=False)


def check_fractions(fractions: Sequence[float], shown: object = None) -> None:
    """ValueError unless ``fractions`` (train, valid, test) are three non-negative numbers summing to 1
    (within 1e-6); the message shows ``shown`` (default: ``fractions``), the value as the user gave it."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        got = fractions if shown is None else shown
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {got}")


def check_history(min_history: int, max_history: int) -> None:
    """ValueError unless ``min_history >= 0`` and ``max_history >= 1`` (counts of earlier events)."""
    if min_history < 0 or max_history < 1:
        raise ValueError("min_history must be >= 0 and max_history >= 1")


def split_cuts(n: int, fractions: Sequence[float]) -> tuple[int, int]:
    """Where valid and test begin among ``n`` events in global time order: ranks below ``round(n * f0)``
    are train, below ``round(n * (f0 + f1))`` valid, the rest test."""
    return int(round(n * fractions[0])), int(round(n * (fractions[0] + fractions[1])))


def assign_splits(inter: pd.DataFrame, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> np.ndarray:
    """Split name per interaction row, by rank in global time order."""
    check_fractions(fractions)
    order = np.lexsort((inter["item_id"].to_numpy(), inter["user_id"].to_numpy(), inter["timestamp"].to_numpy()))
    n = len(inter)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    c1, c2 = split_cuts(n, fractions)
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
    check_history(min_history, max_history)
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
    return {split: out[out["split"] == split].drop(columns="split").reset_index(drop=True) for split in SPLITS}


# ----------------------------------------------------------------------------------------------
# The layout that scales: every event stored once, samples as an index into it
EVENT_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
SPLIT_CODES = {"train": 0, "valid": 1, "test": 2}


def split_codes(
    inter: pd.DataFrame, fractions: Sequence[float] = (0.8, 0.1, 0.1), order: np.ndarray | None = None
) -> np.ndarray:
    """Split per interaction row as int8 codes (0 train, 1 valid, 2 test); same cut as :func:`assign_splits`.
    ``order``: the rows' global time order (:func:`sort_order` of timestamp, user, item) if known."""
    check_fractions(fractions)
    if order is None:
        order = sort_order(inter["timestamp"].to_numpy(), inter["user_id"].to_numpy(), inter["item_id"].to_numpy())
    n = len(inter)
    c1, c2 = split_cuts(n, fractions)
    code = np.empty(n, dtype=np.int8)
    code[order[:c1]] = 0
    code[order[c1:c2]] = 1
    code[order[c2:]] = 2
    return code


def build_sample_index(
    inter: pd.DataFrame,
    threshold: float,
    min_history: int = 5,
    max_history: int = 100,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    repeat_is_same_event: bool = False,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The scalable form of :func:`build_samples`: ``(events, index by split)``.

    ``events``: the interactions (columns EVENT_COLUMNS) sorted by (user_id, timestamp, item_id), each
    stored once; a user's events are one contiguous block, oldest first.
    ``index[split]``: one row per sample (columns ``schema.SAMPLE_INDEX_COLUMNS``), in the same order
    as :func:`build_samples`; its history is ``events[history_start : history_start + history_length]``
    (all strictly earlier than ``timestamp``), so nothing is copied per sample. ``event_pos`` is the
    target's own row in ``events``. Memory: O(events) numpy arrays, no Python loop over samples.
    """
    check_history(min_history, max_history)
    users = inter["user_id"].to_numpy(np.int64)
    ts = inter["timestamp"].to_numpy(np.int64)
    items = inter["item_id"].to_numpy(np.int64)
    t_order = sort_order(ts, users, items)  # global time order: the split, and the index's row order
    code = split_codes(inter, fractions, t_order)
    n = len(t_order)
    t_rank = np.empty(n, dtype=np.int64)
    t_rank[t_order] = np.arange(n, dtype=np.int64)
    del t_order
    order = sort_order(users, ts, items)  # stable: = sort_values([user, timestamp, item], kind="stable")
    users, ts, items, code, t_rank = users[order], ts[order], items[order], code[order], t_rank[order]
    ratings = inter["rating"].to_numpy(np.float64)[order]
    del order
    # frames take the fresh arrays as they are (copy=False: no block consolidation, no second copy)
    events = pd.DataFrame({"user_id": users, "item_id": items, "rating": ratings, "timestamp": ts}, copy=False)
    dup = events.duplicated(["user_id", "item_id"], keep="first").to_numpy() if repeat_is_same_event else None
    ar = np.arange(n, dtype=np.int64)
    new_user = np.r_[True, users[1:] != users[:-1]] if n else np.zeros(0, bool)
    block_start = np.maximum.accumulate(np.where(new_user, ar, 0)) if n else ar
    new_time = new_user | np.r_[True, ts[1:] != ts[:-1]] if n else new_user
    first_same_time = np.maximum.accumulate(np.where(new_time, ar, 0)) if n else ar
    del ar, new_user, new_time
    n_hist = first_same_time - block_start  # events of the user strictly before this one's timestamp
    del first_same_time
    keep = n_hist >= max(min_history, 1)
    if dup is not None:
        keep &= ~dup
    # the kept events in global time order (timestamp, user, item): their time ranks are distinct
    # integers below n, so the order is a scan of a length-n table, not another sort
    slot = np.full(n, -1, dtype=np.int64)
    slot[t_rank[keep]] = np.flatnonzero(keep)
    del t_rank, keep
    rows = slot[slot >= 0]  # event positions of the samples, in time order
    del slot
    split = code[rows]
    out = {}
    for name, c in SPLIT_CODES.items():  # each split's frame built once from the arrays (no full-index copy)
        r = rows[split == c]
        h = n_hist[r]
        length = np.minimum(h, max_history)
        out[name] = pd.DataFrame(
            {
                "user_id": users[r],
                "item_id": items[r],
                "rating": ratings[r],
                "timestamp": ts[r],
                "label": (ratings[r] >= threshold).astype("int8"),
                "n_history": h,
                "event_pos": r,
                "history_start": block_start[r] + h - length,
                "history_length": length,
            },
            copy=False,
        )
    return events, out


def history_rows(index: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(flat event rows, per-sample offsets [n + 1]) of the histories of ``index`` rows, oldest first."""
    starts = index["history_start"].to_numpy(np.int64)
    lens = index["history_length"].to_numpy(np.int64)
    offsets = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    rows = np.repeat(starts - offsets[:-1], lens) + np.arange(offsets[-1], dtype=np.int64)
    return rows, offsets


def materialize_histories(events: pd.DataFrame, index: pd.DataFrame) -> pd.DataFrame:
    """The old sample frame (``schema.SAMPLE_COLUMNS``: hist_item_ids/hist_ratings/hist_timestamps as
    object columns of numpy arrays) for the given index rows, sliced from ``events``. Memory grows with
    ``len(index)`` times the history length: call it on the rows you need (a batch, the LLM's sample)."""
    import pyarrow as pa

    rows, offsets = history_rows(index)
    out = index[["user_id", "item_id", "rating", "timestamp", "label", "n_history"]].reset_index(drop=True)
    off = pa.array(offsets, pa.int64())
    for col, name in (("item_id", "hist_item_ids"), ("rating", "hist_ratings"), ("timestamp", "hist_timestamps")):
        values = events[col].to_numpy()[rows]
        lists = pa.LargeListArray.from_arrays(off, pa.array(values))
        out[name] = pd.Series(lists.to_pandas(), dtype=object) if len(out) else pd.Series([], dtype=object)
    return out
