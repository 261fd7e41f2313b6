"""The CRM on the event store + retrieved-position layout: streaming batches, streaming training,
streaming inference, and data-parallel training on several ranks.

A batch is built when it is needed: the retrieved split's row groups (reclora.retrieval.layout) give
each sample's user, target, label, ``history_start`` and ``long_pos``; the history's item ids and
ratings are gathered from the event store (one numpy array each) and turned into the featurizer's
indices. Nothing holds a featurized copy of the data set: memory is the event store, a shuffle
buffer of ``buffer_groups`` row groups and the model, whatever the number of samples.

Order: each epoch shuffles the order of the row groups (seeded by ``seed`` and the epoch) and the
rows inside each buffer. With R ranks every rank reads the same global batches (the same seed) and
takes the rows ``rank::R`` of each, as torch's DistributedSampler does with indices; the loss of a
rank is its rows' sum divided by the global batch size, so the gradients DDP averages are exactly the
single-process gradients of the global batch (up to float summation order).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from reclora.crm.features import MAX_RATING_VALUES, CRMFeaturizer
from reclora.crm.model import DIN, CRMConfig
from reclora.errors import DataError
from reclora.evaluation import ctr_metrics
from reclora.retrieval.layout import positions_array
from reclora.retrieval.retriever import positions_to_rows

BUFFER_GROUPS = 8  # row groups (of up to 65,536 samples) shuffled together
_READ_COLUMNS = ["user_id", "item_id", "label", "history_start", "long_pos"]
RATING_SAMPLE = 2_000_000  # ratings kept to fit quantile buckets when the rating scale is fine-grained


# ------------------------------------------------------------------ featurizing arrays
def featurize(
    featurizer: CRMFeaturizer,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    hist_items: np.ndarray,
    hist_ratings: np.ndarray,
    hist_mask: np.ndarray,
) -> dict[str, np.ndarray]:
    """Arrays -> the model's batch (user [N], item [N], hist_items/hist_ratings [N, L] int64, hist_mask [N, L]).

    ``hist_*`` [N, K]: each row's entries oldest first, left-aligned, ``hist_mask`` marking real ones. As
    CRMFeaturizer.transform: the last ``max_len`` entries are kept; L = min(max_len, longest row) >= 1.
    """
    mask = np.asarray(hist_mask, dtype=bool)
    lens = mask.sum(1)
    n = len(user_ids)
    width = int(max(1, min(featurizer.max_len, int(lens.max()) if n else 0)))
    drop = np.maximum(lens - featurizer.max_len, 0)
    cols = np.minimum(drop[:, None] + np.arange(width)[None, :], max(mask.shape[1] - 1, 0))
    keep = np.arange(width)[None, :] < np.minimum(lens, featurizer.max_len)[:, None]
    if mask.shape[1] == 0:
        hi = np.zeros((n, width), np.int64)
        hr = np.zeros((n, width), np.float64)
    else:
        hi = np.take_along_axis(np.asarray(hist_items), cols, 1)
        hr = np.take_along_axis(np.asarray(hist_ratings, dtype=np.float64), cols, 1)
    return {
        "user": featurizer.user_index(np.asarray(user_ids, dtype=np.int64)),
        "item": featurizer.item_index(np.asarray(item_ids, dtype=np.int64)),
        "hist_items": np.where(keep, featurizer.item_index(hi), 0),
        "hist_ratings": np.where(keep, featurizer.rating_index(hr), 0),
        "hist_mask": keep,
    }


class EventArrays:
    """The event store's item ids and ratings as numpy arrays (what history gathering reads)."""

    def __init__(self, events: pd.DataFrame) -> None:
        self.item_id = events["item_id"].to_numpy(np.int64)
        self.rating = events["rating"].to_numpy(np.float64)

    def gather(self, history_start: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(item ids [n, k], ratings [n, k], mask [n, k]) of chosen positions (-1 = padding)."""
        rows, mask = positions_to_rows(history_start, positions)
        return self.item_id[rows], self.rating[rows], mask


def _table_arrays(t: Any, k: int) -> dict[str, np.ndarray]:
    return {
        "user_id": t.column("user_id").to_numpy(),
        "item_id": t.column("item_id").to_numpy(),
        "label": t.column("label").to_numpy().astype(np.float32),
        "history_start": t.column("history_start").to_numpy(),
        "long_pos": positions_array(t.column("long_pos"), k),
    }


# ------------------------------------------------------------------ the streaming data set
class StreamingBatches(torch.utils.data.IterableDataset):
    """Batches of a retrieved split, built from the event store as they are read (module docstring).

    Yields ``(batch, labels)``: the model's tensors for this rank's rows and float32 labels, plus the
    global batch size under ``batch["n_global"]`` (a 0-d tensor). ``shuffle=False`` reads in file order
    (inference). Memory: ``buffer_groups`` row groups + one batch.
    """

    def __init__(
        self,
        split: Any,
        events: EventArrays,
        featurizer: CRMFeaturizer,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        buffer_groups: int = BUFFER_GROUPS,
    ) -> None:
        super().__init__()
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        self.split, self.events, self.featurizer = split, events, featurizer
        self.batch_size, self.shuffle, self.seed = int(batch_size), shuffle, int(seed)
        self.rank, self.world_size, self.buffer_groups = rank, world_size, max(1, int(buffer_groups))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """A new shuffle order per epoch (as DistributedSampler.set_epoch)."""
        self.epoch = int(epoch)

    def _buffers(self) -> Iterator[dict[str, np.ndarray]]:
        n_groups = self.split.num_row_groups
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n_groups) if self.shuffle and n_groups > self.buffer_groups else np.arange(n_groups)
        for a in range(0, n_groups, self.buffer_groups):
            parts = [
                _table_arrays(self.split.read_group(int(g), _READ_COLUMNS), self.split.k_long)
                for g in order[a : a + self.buffer_groups]
            ]
            buf = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            if self.shuffle:
                perm = (
                    self._whole_split_perm(len(buf["label"]))
                    if n_groups <= self.buffer_groups
                    else rng.permutation(len(buf["label"]))
                )
                buf = {k: v[perm] for k, v in buf.items()}
            yield buf

    def _whole_split_perm(self, n: int) -> np.ndarray:
        """The split fits one buffer: epoch e's order is the e-th torch.randperm(n) of a generator seeded
        with ``seed``, the order the in-memory trainer (crm.train.train_crm) used, so small data sets
        (MovieLens-100K) train on the same batches as before."""
        gen = torch.Generator().manual_seed(self.seed)
        for _ in range(max(self.epoch, 1) - 1):
            torch.randperm(n, generator=gen)
        return torch.randperm(n, generator=gen).numpy()

    def __iter__(self) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        carry: dict[str, np.ndarray] | None = None
        for buf in self._buffers():
            if carry is not None:  # a partial batch at a buffer's end is completed from the next buffer
                buf = {k: np.concatenate([carry[k], buf[k]]) for k in buf}
                carry = None
            n = len(buf["label"])
            full = n - n % self.batch_size
            if full < n:
                carry = {k: v[full:] for k, v in buf.items()}
            for s in range(0, full, self.batch_size):
                yield self._batch({k: v[s : s + self.batch_size] for k, v in buf.items()})
        if carry is not None and len(carry["label"]) >= self.world_size:
            yield self._batch(carry)

    def _batch(self, g: dict[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        n_global = len(g["label"])
        mine = {k: v[self.rank :: self.world_size] for k, v in g.items()}
        items, ratings, mask = self.events.gather(mine["history_start"], mine["long_pos"])
        arrays = featurize(self.featurizer, mine["user_id"], mine["item_id"], items, ratings, mask)
        batch = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
        batch["n_global"] = torch.tensor(n_global)
        return batch, torch.from_numpy(np.ascontiguousarray(mine["label"]))


# ------------------------------------------------------------------ fit, predict
def fit_featurizer(
    split: Any, events: EventArrays, items: pd.DataFrame | None, users: pd.DataFrame | None, max_len: int, seed: int = 0
) -> CRMFeaturizer:
    """CRMFeaturizer.fit on the training split, read one row group at a time: the same vocabularies
    as fitting on the materialized frame (users, targets and retrieved history items; the history
    rating values; for a fine-grained rating scale the quantiles of up to RATING_SAMPLE of them)."""
    users_seen, targets_seen = [], []
    used = np.zeros(len(events.item_id), dtype=bool)  # event rows some training history retrieved
    rating_sample: list[np.ndarray] = []
    kept = 0
    for t in split.batches(_READ_COLUMNS):
        a = _table_arrays(t, split.k_long)
        rows, m = positions_to_rows(a["history_start"], a["long_pos"])
        rows = rows[m]
        used[rows] = True  # a scatter per group; the unique item ids / ratings are taken once, below
        users_seen.append(np.unique(a["user_id"]))
        targets_seen.append(np.unique(a["item_id"]))
        if kept < RATING_SAMPLE:
            rating_sample.append(events.rating[rows[: RATING_SAMPLE - kept]])
            kept += len(rating_sample[-1])
    u = np.unique(np.concatenate(users_seen)) if users_seen else np.zeros(0, np.int64)
    i = np.unique(np.concatenate([*targets_seen, events.item_id[used]]))
    r = events.rating[used]
    rating_values = np.unique(np.round(r[np.isfinite(r)], 3))
    ratings = rating_values if len(rating_values) <= MAX_RATING_VALUES else np.concatenate(rating_sample)
    # the fitted vocabularies depend only on these sets: a frame of them is what fit() reads
    n = max(len(u), len(i), 1)
    summary = pd.DataFrame(
        {
            "user_id": np.resize(u, n) if len(u) else np.zeros(n, np.int64),
            "item_id": np.resize(i, n) if len(i) else np.zeros(n, np.int64),
            "hist_item_ids": [np.zeros(0, np.int64)] * n,
            "hist_ratings": [ratings] + [np.zeros(0)] * (n - 1),
        }
    )
    return CRMFeaturizer.fit(
        summary, items, users, max_len=max_len, hist_items_col="hist_item_ids", hist_ratings_col="hist_ratings"
    )


@torch.no_grad()
def predict_split(
    model: DIN, featurizer: CRMFeaturizer, split: Any, events: EventArrays, batch_size: int = 8192, what: str = "proba"
) -> np.ndarray:
    """Click probabilities [n] float64 (``what="proba"``) of a retrieved split in file order, streamed."""
    was = model.training
    model.eval()
    try:
        out = []
        for batch, _ in StreamingBatches(split, events, featurizer, batch_size, shuffle=False):
            batch.pop("n_global")
            out.append(torch.sigmoid(model(batch)).double().numpy())
        return np.concatenate(out) if out else np.zeros(0)
    finally:
        model.train(was)


# ------------------------------------------------------------------ training
def train_crm_streaming(
    train_split: Any,
    valid_split: Any | None,
    events: EventArrays,
    items: pd.DataFrame | None,
    users: pd.DataFrame | None,
    config: CRMConfig | Mapping[str, Any] | None = None,
    progress: bool = True,
    buffer_groups: int = BUFFER_GROUPS,
) -> tuple[DIN, CRMFeaturizer, dict[str, Any]]:
    """train_crm on the streaming layout: AdamW + BCE, early stopping on valid AUC, best epoch restored.

    Under an initialised torch.distributed group of R ranks the model is wrapped in DDP and each rank
    trains on its rows of every global batch (module docstring); every rank ends with the same weights.
    Returns ``(model, featurizer, history)``. Raises DataError without training samples.
    """
    import torch.distributed as dist

    cfg = config if isinstance(config, CRMConfig) else CRMConfig.from_dict(config)
    if len(train_split) == 0:
        raise DataError("CRM: no training samples")
    t_start = time.perf_counter()
    ddp = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    rank, world = (dist.get_rank(), dist.get_world_size()) if ddp else (0, 1)
    featurizer = fit_featurizer(train_split, events, items, users, cfg.max_len)
    has_valid = valid_split is not None and len(valid_split) > 0
    y_valid = valid_split.column("label").astype(np.float64) if has_valid else None
    data = StreamingBatches(train_split, events, featurizer, cfg.batch_size, True, cfg.seed, rank, world, buffer_groups)
    # its own generator: a DataLoader draws a base seed per epoch, which must not come from the global
    # RNG that the dropout masks use
    loader = torch.utils.data.DataLoader(
        data, batch_size=None, num_workers=0, generator=torch.Generator().manual_seed(cfg.seed)
    )
    from reclora.crm.train import EpochLog, _threads, crm_optimizer

    log = EpochLog(cfg.patience)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="sum")

    with torch.random.fork_rng(devices=[]), _threads(cfg.num_threads):
        torch.manual_seed(cfg.seed)
        model = DIN.from_featurizer(cfg, featurizer)
        # without user attributes the user-field table takes no part in the forward pass
        unused = not getattr(model, "n_fields", 0)
        net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=unused) if ddp else model
        opt = crm_optimizer(model, cfg)
        if rank:  # dropout masks: rank 0 (and a single process) continue the seeded stream, as train_crm
            torch.manual_seed(cfg.seed + rank)
        for epoch in range(1, cfg.max_epochs + 1):
            t0 = time.perf_counter()
            model.train()
            data.set_epoch(epoch)
            total, seen = 0.0, 0
            bar = tqdm(
                loader,
                desc=f"CRM epoch {epoch}/{cfg.max_epochs}",
                disable=not progress or rank != 0,
                leave=False,
                mininterval=0.5,
            )
            for batch, y in bar:
                n_global = int(batch.pop("n_global"))
                loss = loss_fn(net(batch), y) / n_global * world  # DDP averages over ranks: = the global mean
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * n_global / world
                seen += len(y)
            bar.close()
            train_seconds = time.perf_counter() - t0
            if ddp:
                t = torch.tensor([total, float(seen)], dtype=torch.float64)
                dist.all_reduce(t)
                total, seen = float(t[0]), int(t[1])
            rec: dict[str, Any] = {
                "epoch": epoch,
                "train_loss": total / max(seen, 1),
                "train_seconds": round(train_seconds, 3),
            }
            if has_valid:
                m = ctr_metrics(y_valid, predict_split(model, featurizer, valid_split, events))
                rec.update(valid_auc=m["auc"], valid_logloss=m["logloss"], valid_accuracy=m["accuracy"])
            if log.end_epoch(model, rec, t0, progress and rank == 0):
                break
        best = log.restore_best(model)
    model.eval()
    history: dict[str, Any] = {
        "epochs": log.epochs,
        "best_epoch": log.best_epoch,
        "best_valid_auc": best.get("valid_auc"),
        "best_valid_logloss": best.get("valid_logloss"),
        "stopped_early": log.stopped_early,
        "n_train": int(len(train_split)),
        "n_valid": int(len(valid_split)) if valid_split is not None else 0,
        "seconds": round(time.perf_counter() - t_start, 3),
        "config": cfg.to_dict(),
        "ranks": world,
        "train_samples_per_s": round(
            len(train_split) * len(log.epochs) / max(sum(e["train_seconds"] for e in log.epochs), 1e-9), 1
        ),
    }
    return model, featurizer, history


# ------------------------------------------------------------------ several ranks on one machine
def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it), for the gloo ranks' rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(rank: int, world: int, port: int, fn: Any, args: tuple, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        res = fn(*args)
        if rank == 0 and out:
            from reclora.io import write_json

            write_json(out, res)
    finally:
        dist.destroy_process_group()


def run_ranks(world: int, fn: Any, args: tuple = (), out: str = "") -> None:
    """Run ``fn(*args)`` on ``world`` gloo ranks on this machine (torch.multiprocessing, 127.0.0.1, a
    free port); rank 0's JSON-able return value is written to ``out``. Raises if a rank fails."""
    import torch.multiprocessing as mp

    mp.spawn(_rank_main, args=(world, free_port(), fn, args, out), nprocs=world, join=True)
