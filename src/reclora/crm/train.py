"""Training, evaluation, inference and persistence of the CRM.

Featurization happens once per frame (vectorised numpy, see features.py); the
training loop only indexes pre-built tensors. Training is deterministic for a
given seed (model init, shuffling and dropout all draw from a forked, seeded
torch RNG, so the caller's global RNG state is left untouched).

Saved layout (``save_crm``; written atomically as one directory)::

    DIR/crm.safetensors     weights and lookup buffers (safetensors: no pickle)
    DIR/crm_config.json     {"format_version", "model": "DIN", "config": CRMConfig, ...}
    DIR/crm_features.json   the fitted CRMFeaturizer
    DIR/crm_history.json    per-epoch training history (when saved by train_crm)
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from reclora.crm.features import CRMFeaturizer
from reclora.crm.model import BATCH_KEYS, DIN, CRMConfig
from reclora.errors import DataError
from reclora.evaluation import ctr_metrics
from reclora.io import atomic_dir, read_json, write_json

WEIGHTS_NAME = "crm.safetensors"
CONFIG_NAME = "crm_config.json"
FEATURES_NAME = "crm_features.json"
HISTORY_NAME = "crm_history.json"
FORMAT_VERSION = 1
EVAL_BATCH_SIZE = 8192
TRANSFORM_CHUNK = 65536  # rows featurized at a time at inference (bounds memory on large frames)


# ---------------------------------------------------------------- utilities
@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """Use ``n`` torch intra-op threads inside the block (0 = leave as is), then restore."""
    if n <= 0 or n == torch.get_num_threads():
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _to_tensors(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(arrays[k])) for k in BATCH_KEYS}


def _labels(df: pd.DataFrame) -> np.ndarray:
    if "label" not in df.columns:
        raise DataError("CRM samples lack the 'label' column")
    y = pd.to_numeric(df["label"], errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(y).any() or not np.isin(y, (0.0, 1.0)).all():
        raise DataError("CRM labels must be 0/1 without missing values")
    return y.astype(np.float32)


def _chunks(featurizer: CRMFeaturizer, df: pd.DataFrame) -> Iterator[dict[str, torch.Tensor]]:
    for s in range(0, len(df), TRANSFORM_CHUNK):
        yield _to_tensors(featurizer.transform(df.iloc[s : s + TRANSFORM_CHUNK]))


@torch.no_grad()
def _run(model: DIN, tensors: Mapping[str, torch.Tensor], what: str, batch_size: int = EVAL_BATCH_SIZE) -> torch.Tensor:
    """Logits [n] (what="logits") or hidden vectors [n, H] (what="hidden"), batched, in eval mode."""
    was = model.training
    model.eval()
    try:
        n = len(tensors["user"])
        outs = []
        for s in range(0, n, batch_size):
            batch = {k: v[s : s + batch_size] for k, v in tensors.items()}
            outs.append(model(batch) if what == "logits" else model.hidden(batch))
        if outs:
            return torch.cat(outs)
        return torch.zeros((0,) if what == "logits" else (0, model.hidden_dim))
    finally:
        model.train(was)


# ---------------------------------------------------------------- inference
def predict(model: DIN, featurizer: CRMFeaturizer, df: pd.DataFrame, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """Click probabilities [n] float64 for the samples in ``df`` (no_grad, batched)."""
    with _threads(model.config.num_threads):
        parts = [torch.sigmoid(_run(model, t, "logits", batch_size)).double().numpy() for t in _chunks(featurizer, df)]
    return np.concatenate(parts) if parts else np.zeros(0)


def hidden_vectors(
    model: DIN, featurizer: CRMFeaturizer, df: pd.DataFrame, batch_size: int = EVAL_BATCH_SIZE
) -> np.ndarray:
    """The CRM's personal signal h per sample: [n, hidden_dim] float32 (no_grad, batched)."""
    with _threads(model.config.num_threads):
        parts = [_run(model, t, "hidden", batch_size).float().numpy() for t in _chunks(featurizer, df)]
    return np.concatenate(parts) if parts else np.zeros((0, model.hidden_dim), dtype=np.float32)


def signal_width(model: DIN, gate_input: str = "hidden") -> int:
    """Width of :func:`crm_signals` for ``gate_input`` (hidden: |h|, score: 1, hidden+score: |h| + 1)."""
    from reclora.lora.config import gate_signal_width

    return gate_signal_width(model.hidden_dim, gate_input)


def crm_signals(model: DIN, featurizer: CRMFeaturizer, df: pd.DataFrame, gate_input: str = "hidden") -> np.ndarray:
    """What RecLoRA's gates read per sample, float32: h [n, H] ("hidden"), the CRM logit z [n, 1]
    ("score") or [h, z] [n, H + 1] ("hidden+score"). z is the CRM's own output on h (eval mode)."""
    signal_width(model, gate_input)  # refuses an unknown gate_input before any work
    h = hidden_vectors(model, featurizer, df)
    if gate_input == "hidden":
        return h
    with torch.no_grad():
        z = model.out(torch.from_numpy(h)).float().numpy()  # = forward() in eval mode (dropout is the identity)
    return z if gate_input == "score" else np.hstack([h, z]).astype(np.float32)


def evaluate_crm(model: DIN, featurizer: CRMFeaturizer, df: pd.DataFrame) -> dict[str, float]:
    """{"auc", "logloss", "accuracy", "n"} on labelled samples."""
    return ctr_metrics(_labels(df), predict(model, featurizer, df))


# ----------------------------------------------------------------- training


class EpochLog:
    """Per-epoch records of CRM training, the best epoch's weights and patience-based early stopping.

    The best epoch is the one with the highest valid AUC (minus valid LogLoss when AUC is undefined);
    without validation records the last epoch is the best. Shared by :func:`train_crm` and the
    streamed trainer (``reclora.crm.stream``).
    """

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.epochs: list[dict[str, Any]] = []
        self.best_score, self.best_epoch, self.best_state = -math.inf, 0, None
        self.stopped_early = False

    def end_epoch(self, model: torch.nn.Module, rec: dict[str, Any], t0: float, progress: bool) -> bool:
        """Record ``rec`` (epoch, train_loss[, valid_auc, valid_logloss, ...]; its wall seconds since
        ``t0`` are added), print one line when ``progress``, keep the weights of a new best epoch.
        Returns True when training should stop (``patience`` epochs without a better score)."""
        epoch = int(rec["epoch"])
        has_valid = "valid_auc" in rec
        if has_valid:
            score = rec["valid_auc"] if rec["valid_auc"] is not None else -rec["valid_logloss"]
        else:
            score = float(epoch)  # no validation: the last epoch is the best
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        self.epochs.append(rec)
        if progress:
            msg = f"CRM epoch {epoch}: train_loss={rec['train_loss']:.4f}"
            if has_valid:
                msg += f" valid_auc={rec['valid_auc']:.4f} valid_logloss={rec['valid_logloss']:.4f}"
            tqdm.write(msg + f" ({rec['seconds']:.1f}s)")
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            self.best_state = copy.deepcopy(model.state_dict())
        elif epoch - self.best_epoch >= self.patience:
            self.stopped_early = True
            return True
        return False

    def restore_best(self, model: torch.nn.Module) -> dict[str, Any]:
        """Load the best epoch's weights into ``model``; returns that epoch's record."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        return self.epochs[self.best_epoch - 1]


def crm_optimizer(model: torch.nn.Module, cfg: CRMConfig) -> torch.optim.Optimizer:
    """AdamW (lr, weight decay from ``cfg``) with the fused kernel: the embedding tables are dense
    parameters updated every step, so the step's cost grows with the vocabularies (ML-25M: 222k
    user and item rows x 32); fused, the step takes 7 ms there instead of 25 ms (same update rule)."""
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


def train_crm(
    train_df: pd.DataFrame,
    valid_df: pd.DataFrame | None,
    items: pd.DataFrame | None,
    users: pd.DataFrame | None,
    config: CRMConfig | Mapping[str, Any] | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[DIN, CRMFeaturizer, dict[str, Any]]:
    """Fit the featurizer and train the DIN with AdamW + BCE; early stopping on valid AUC.

    The best epoch's weights (by valid AUC; by valid LogLoss if AUC is undefined)
    are restored. Without validation samples all ``max_epochs`` run and the last
    weights are kept. Returns ``(model, featurizer, history)``; with ``out_dir``
    the model, featurizer and history are also saved there (atomically).
    """
    cfg = config if isinstance(config, CRMConfig) else CRMConfig.from_dict(config)
    if len(train_df) == 0:
        raise DataError("CRM: no training samples")
    t_start = time.perf_counter()
    featurizer = CRMFeaturizer.fit(
        train_df,
        items,
        users,
        max_len=cfg.max_len,
        hist_items_col=cfg.hist_items_col,
        hist_ratings_col=cfg.hist_ratings_col,
    )
    train_t = _to_tensors(featurizer.transform(train_df))
    y_train = torch.from_numpy(_labels(train_df))
    has_valid = valid_df is not None and len(valid_df) > 0
    if has_valid:
        valid_t = _to_tensors(featurizer.transform(valid_df))
        y_valid = _labels(valid_df)
    n = len(y_train)

    log = EpochLog(cfg.patience)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    with torch.random.fork_rng(devices=[]), _threads(cfg.num_threads):
        torch.manual_seed(cfg.seed)
        model = DIN.from_featurizer(cfg, featurizer)
        opt = crm_optimizer(model, cfg)
        gen = torch.Generator().manual_seed(cfg.seed)
        for epoch in range(1, cfg.max_epochs + 1):
            t0 = time.perf_counter()
            model.train()
            perm = torch.randperm(n, generator=gen)
            total, seen = 0.0, 0
            bar = tqdm(
                range(0, n, cfg.batch_size),
                desc=f"CRM epoch {epoch}/{cfg.max_epochs}",
                disable=not progress,
                leave=False,
                mininterval=0.5,
            )
            for s in bar:
                idx = perm[s : s + cfg.batch_size]
                batch = {k: v[idx] for k, v in train_t.items()}
                loss = loss_fn(model(batch), y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                seen += len(idx)
                bar.set_postfix(loss=f"{total / seen:.4f}", refresh=False)
            bar.close()
            rec: dict[str, Any] = {"epoch": epoch, "train_loss": total / max(seen, 1)}
            if has_valid:
                p = torch.sigmoid(_run(model, valid_t, "logits")).double().numpy()
                m = ctr_metrics(y_valid, p)
                rec.update(valid_auc=m["auc"], valid_logloss=m["logloss"], valid_accuracy=m["accuracy"])
            if log.end_epoch(model, rec, t0, progress):
                break
        best = log.restore_best(model)
    model.eval()
    history: dict[str, Any] = {
        "epochs": log.epochs,
        "best_epoch": log.best_epoch,
        "best_valid_auc": best.get("valid_auc"),
        "best_valid_logloss": best.get("valid_logloss"),
        "stopped_early": log.stopped_early,
        "n_train": int(n),
        "n_valid": int(len(valid_df)) if valid_df is not None else 0,
        "seconds": round(time.perf_counter() - t_start, 3),
        "config": cfg.to_dict(),
    }
    if out_dir is not None:
        save_crm(out_dir, model, featurizer, history=history)
    return model, featurizer, history


# -------------------------------------------------------------- persistence
def save_crm(
    directory: str | Path, model: DIN, featurizer: CRMFeaturizer, history: Mapping[str, Any] | None = None
) -> Path:
    """Write crm.safetensors + crm_config.json + crm_features.json (+ crm_history.json) as one atomic directory."""
    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {
        "format_version": FORMAT_VERSION,
        "model": "DIN",
        "config": model.config.to_dict(),
        "hidden_dim": model.hidden_dim,
        "n_users": featurizer.n_users,
        "n_items": featurizer.n_items,
        "n_genres": featurizer.n_genres,
        "user_fields": featurizer.field_names,
    }
    with atomic_dir(directory) as tmp:
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "model": "reclora-crm-din"})
        write_json(tmp / CONFIG_NAME, meta)
        featurizer.save(tmp / FEATURES_NAME)
        if history is not None:
            write_json(tmp / HISTORY_NAME, dict(history))
    return directory


def load_crm(directory: str | Path) -> tuple[DIN, CRMFeaturizer]:
    """Load a saved CRM (safetensors + JSON only, nothing is unpickled); the model is in eval mode."""
    directory = Path(directory)
    missing = [n for n in (WEIGHTS_NAME, CONFIG_NAME, FEATURES_NAME) if not (directory / n).is_file()]
    if missing:
        raise DataError(f"{directory}: not a saved CRM (missing {', '.join(missing)})")
    meta = read_json(directory / CONFIG_NAME)
    if meta.get("format_version") != FORMAT_VERSION or meta.get("model") != "DIN":
        raise DataError(
            f"{directory / CONFIG_NAME}: unsupported CRM format {meta.get('model')!r} v{meta.get('format_version')!r}"
        )
    cfg = CRMConfig.from_dict(meta["config"])
    featurizer = CRMFeaturizer.load(directory / FEATURES_NAME)
    model = DIN.from_featurizer(cfg, featurizer)
    model.load_state_dict(load_file(str(directory / WEIGHTS_NAME)), strict=True)
    model.eval()
    return model, featurizer
