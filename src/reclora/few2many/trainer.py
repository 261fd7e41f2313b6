"""Few2Many training of an LLM adapter on CTR prompts, and p(Yes) prediction.

The LLM sees a small seeded uniform sample of the training split; RecLoRA also
gets each sample's CRM hidden vector h, which carries what the CRM learned from
all of the data. Loss: cross-entropy of the answer at the answer position, by default
over the two answer logits (train.loss: yes_no), which is exactly the log-loss of the
prediction p = softmax([logit_yes, logit_no])[0]; full_vocab is the TALLRec/ReLLa
next-token loss over the whole vocabulary. Readout logits are fp32 (see
``AdapterModel.answer_logits``).

Data-parallel: under torchrun (see ``reclora.few2many.distributed``) every rank takes its share
of each global batch, whose loss it scales by the global batch size, so the all-reduced (summed)
gradient is the single-process gradient of that batch; the optimizer then steps identically on
every rank. Only rank 0 writes checkpoints and shows progress.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from reclora.errors import ConfigError
from reclora.few2many.adapters import AdapterModel
from reclora.few2many.checkpoint import load_checkpoint, load_checkpoint_tensors, save_checkpoint
from reclora.llm.model import chat_prompt, yes_no_token_ids
from reclora.precision import Precision, as_precision


LOSSES = ("yes_no", "full_vocab")


@dataclass
class TrainConfig:
    """Few2Many training settings (params.yaml ``train``).

    epochs / patience: passes over the sample; after each the validation subset's AUC is measured
    (when validation data is given) and the best weights are kept; training stops after
    ``patience`` epochs without a gain (0 = run every epoch). bucket: length-bucketed batches (little
    padding). cache_lower: compute the frozen layers below the first adapted one once per sample.
    lr_ratio_b: learning-rate multiplier of the LoRA B matrices (LoRA+, Hayou et al. 2024);
    gate_lr_mult: multiplier for the gates and the crm_residual readout scale.
    text_loss_weight (crm_residual readout only): weight of the text path's own Yes/No log-loss,
    added to the anchored readout's. The anchored loss alone gives the adapter no gradient while
    s = 0 (d loss / d (yes - no) = s (p - y)), so without it the text path starts dead and s stays ~0.
    """

    lr: float = 1e-3
    batch_size: int = 8
    grad_accum: int = 1
    epochs: int = 1
    patience: int = 0
    max_steps: int = 0  # 0 = epochs * ceil(n / (batch_size * grad_accum))
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_length: int = 384
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (see reclora.precision); resolved on the training device
    seed: int = 0
    checkpoint_every: int = 20  # optimizer steps; 0 = never
    max_grad_norm: float = 1.0
    loss: str = "yes_no"  # yes_no: CE over the (Yes, No) logits, the readout's own log-loss | full_vocab
    bucket: bool = True
    cache_lower: bool = True
    lr_ratio_b: float = 1.0
    gate_lr_mult: float = 1.0
    text_loss_weight: float = 0.0

    def __post_init__(self) -> None:
        """Raises ConfigError (a ValueError) naming the setting and its value."""
        if self.loss not in LOSSES:
            raise ConfigError(f"train.loss must be one of {LOSSES}, got {self.loss!r}")
        from reclora.precision import PRECISIONS

        if self.precision not in PRECISIONS:
            raise ConfigError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("batch_size", "grad_accum", "epochs"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)!r}")
        if int(self.patience) < 0:
            raise ConfigError(f"train.patience must be >= 0, got {self.patience!r}")
        positive = ("lr", "lr_ratio_b", "gate_lr_mult")
        for name in (*positive, "text_loss_weight", "weight_decay", "warmup_ratio", "max_grad_norm"):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not ok or (v <= 0 if name in positive else v < 0):  # NaN and inf included: never a silent no-op
                raise ConfigError(f"train.{name} must be a finite number {'>' if name in positive else '>='} 0, got {v!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """From a ``train`` params section (unknown keys ignored; an older file's ``bf16: true|false``
        is read as ``precision: bf16|fp32``, see :func:`reclora.precision.requested_precision`)."""
        from reclora.precision import requested_precision

        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names} | {"precision": requested_precision(d)})


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


def length_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int, bucket: bool = True) -> list[np.ndarray]:
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


def _step_seed(seed: int, step: int, rank: int) -> int:
    """The RNG seed of one rank for one optimizer step (data-parallel runs: dropout differs per rank
    yet a resumed run draws exactly what an uninterrupted one would)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _answer_targets(tokenizer: Any, labels: np.ndarray, loss: str) -> tuple[tuple[int, int] | None, torch.Tensor]:
    """(vocabulary rows the loss reads, class targets): yes_no -> ((yes, no), 0 for Yes / 1 for No);
    full_vocab -> (None, the Yes or No token id)."""
    yes, no = yes_no_token_ids(tokenizer)
    if loss == "yes_no":
        return (yes, no), torch.from_numpy(np.where(labels == 1, 0, 1))
    return None, torch.from_numpy(np.where(labels == 1, yes, no))


def _distributed(flag: bool | None) -> bool:
    if flag is False:
        return False
    from reclora.few2many import distributed as D

    return D.init_from_env()


class PromptSet:
    """Tokenized prompts with their per-sample inputs, and (optionally) cached frozen-layer states.

    ``batch(idx)`` -> (input_ids or None, attention_mask, lower or None, signal, anchor) for the model.
    ``cache(model)`` runs the layers below ``model.first_layer`` once per prompt (batched by length)
    and keeps each prompt's unpadded [len, D] state, so later passes run only the adapted layers.
    """

    def __init__(
        self, tokenizer: Any, prompts: Sequence[str], max_length: int,
        signals: np.ndarray | None = None, anchors: np.ndarray | None = None,
    ) -> None:  # fmt: skip
        n = len(prompts)
        for name, a in (("signals", signals), ("anchors", anchors)):
            if a is not None and len(a) != n:
                raise ValueError(f"{name} has {len(a)} rows for {n} prompts")
        self.ids = tokenize(tokenizer, prompts, max_length)
        self.lengths = [len(x) for x in self.ids]
        self.pad_id = _pad_id(tokenizer)
        self.signals = torch.as_tensor(np.asarray(signals, dtype=np.float32)) if signals is not None else None
        self.anchors = torch.as_tensor(np.asarray(anchors, dtype=np.float32).reshape(-1)) if anchors is not None else None
        self.lower: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def cache(
        self, model: AdapterModel, batch_size: int, precision: "Precision | str" = "auto", progress: bool = False,
        desc: str = "cache", store: str | Path | None = None,
    ) -> None:  # fmt: skip
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
            from safetensors.torch import save_file

            import os
            import tempfile

            f.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=f.parent, prefix=f".{f.name}.", suffix=".tmp")  # concurrent writers: own files
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
            weights = ",".join(f"{w.name}:{w.stat().st_size}:{w.stat().st_mtime_ns}" for w in sorted(Path(name).glob("*.safetensors")))
        h = hashlib.sha256(f"{name}|{cfg}|{weights}|{model.first_layer}|{precision}".encode())
        for x in self.ids:
            h.update(np.asarray(x, dtype=np.int64).tobytes() + b"|")
        return h.hexdigest()[:24]

    def batch(self, idx: np.ndarray, device: torch.device) -> dict[str, torch.Tensor | None]:
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


def _forward(model: AdapterModel, batch: dict[str, Any], token_ids: Sequence[int] | None, readout: bool = True) -> torch.Tensor:
    return model.answer_logits(
        batch["input_ids"], batch["attention_mask"], batch["signal"], token_ids, lower=batch["lower"],
        anchor=batch["anchor"], readout=readout,
    )  # fmt: skip


def _param_groups(named: dict[str, torch.nn.Parameter], cfg: TrainConfig) -> list[dict[str, Any]]:
    """Optimizer groups: LoRA B matrices at lr * lr_ratio_b (LoRA+), gates and the readout scale at
    lr * gate_lr_mult, everything else at lr. Each group remembers its multiplier."""
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for n, p in named.items():
        if ".gate." in n or n.startswith("readout."):
            mult = cfg.gate_lr_mult
        elif "lora_B" in n:
            mult = cfg.lr_ratio_b
        else:
            mult = 1.0
        groups.setdefault(float(mult), []).append(p)
    return [{"params": ps, "lr": cfg.lr * m, "lr_mult": m} for m, ps in sorted(groups.items())]


@torch.no_grad()
def _predict_set(model: AdapterModel, data: PromptSet, batch_size: int, precision: Precision | str, token_ids: Sequence[int],
                 progress: bool = False, desc: str = "predict", rank: int = 0, world: int = 1) -> np.ndarray:  # fmt: skip
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
                pair = _forward(model, data.batch(idx, device), token_ids)
            out[idx] = torch.softmax(pair, -1)[:, 0].cpu().numpy()
    finally:
        model.train(was)
    return out


def _auc(labels: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, p)) if len(np.unique(labels)) == 2 else float("nan")


BEST = "best"  # the best epoch's weights, kept in the checkpoint as best.safetensors


def train_adapter(
    model: AdapterModel,
    tokenizer: Any,
    prompts: Sequence[str],
    labels: np.ndarray,
    signals: np.ndarray | None,
    cfg: TrainConfig,
    out_dir: str | Path | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    distributed: bool | None = None,
    anchors: np.ndarray | None = None,
    valid: dict[str, Any] | None = None,
    diagnostics: bool = False,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train; with ``out_dir`` it checkpoints every ``cfg.checkpoint_every`` steps and resumes from there.

    ``anchors`` [n]: the CRM logit per sample (crm_residual readout). ``valid``: {"prompts", "labels",
    "signals", "anchors"} of a validation subset: after every epoch its AUC is measured, the best
    weights are kept (and restored at the end) and training stops after ``cfg.patience`` epochs
    without a gain. Returns {"steps", "samples_seen", "loss" (per step), "valid_auc" (per epoch),
    "best_epoch", "stopped_early", "seconds", "samples_per_s", "resumed_from", "cache_seconds"}
    (+ "world_size" when data-parallel). ``stop_after`` ends the run after that many optimizer steps
    (for tests of resumption). ``diagnostics`` (needs ``valid``): before training, a linear probe of the
    frozen features and the base model's Yes+No mass; after it, the trained model's Yes+No mass
    (see ``reclora.few2many.diagnostics``), under "diagnostics". ``cache_dir``: where cached frozen-layer
    states are shared between runs (see ``PromptSet.cache``). ``distributed``: None = data-parallel when a process group of more than
    one rank exists or torchrun's environment describes one; False = train alone regardless.
    Data-parallel, every rank must call this with the same arguments; ``out_dir`` must be shared
    (rank 0 writes the checkpoints, all ranks resume from them). ``samples_seen`` and the losses
    are global (all ranks).
    """
    labels = np.asarray(labels).astype(np.int64)
    if len(prompts) != len(labels) or (signals is not None and len(signals) != len(labels)):
        raise ValueError("prompts, labels and signals must have the same length")
    if model.uses_signal and signals is None:
        raise ValueError("RecLoRA training needs the CRM signals")
    if model.uses_anchor and (anchors is None or cfg.loss != "yes_no"):
        raise ValueError("the crm_residual readout needs the CRM logits (anchors) and train.loss yes_no")
    ddp = _distributed(distributed)
    if ddp:
        from reclora.few2many import distributed as D

        rank, world, main = D.rank(), D.world(), D.is_main()
        if D.device().type == "cuda" and next(model.module.parameters()).device.type == "cpu":
            model.module.to(D.device())  # NCCL reduces CUDA tensors: each rank trains on its own GPU
    else:
        rank, world, main = 0, 1, True
    device = next(model.module.parameters()).device
    prec = as_precision(cfg.precision, device)
    answer_ids, targets = _answer_targets(tokenizer, labels, cfg.loss)
    text_loss = model.uses_anchor and cfg.text_loss_weight > 0
    yes_no = yes_no_token_ids(tokenizer)
    t_cache = time.perf_counter()
    data = PromptSet(tokenizer, prompts, cfg.max_length, signals, anchors)
    val = None
    if valid is not None:
        val = PromptSet(tokenizer, valid["prompts"], cfg.max_length, valid.get("signals"), valid.get("anchors"))
        val_labels = np.asarray(valid["labels"]).astype(np.int64)
    if cfg.cache_lower:
        data.cache(model, cfg.batch_size * 2, prec, progress and main, "cache frozen layers", cache_dir)
        if val is not None:
            val.cache(model, cfg.batch_size * 2, prec, False, store=cache_dir)
    cache_secs = time.perf_counter() - t_cache
    diag: dict[str, Any] = {}
    if diagnostics and val is not None:
        from reclora.few2many.diagnostics import diagnose

        diag = diagnose(model, tokenizer, data, labels, val, val_labels, cfg.batch_size * 2, prec)

    torch.manual_seed(cfg.seed)
    named = dict(model.named_trainable_parameters())
    params = list(named.values())
    opt = torch.optim.AdamW(_param_groups(named, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = prec.grad_scaler(device)  # fp16 only: the loss is scaled up so small gradients do not underflow
    micro = cfg.batch_size
    n_micro = math.ceil(len(data) / micro)
    per_epoch = math.ceil(n_micro / cfg.grad_accum)
    total = cfg.max_steps or per_epoch * cfg.epochs
    warm = max(1, int(cfg.warmup_ratio * total))

    def lr_at(step: int) -> float:
        return cfg.lr * (step + 1) / warm if step < warm else cfg.lr * max(0.0, (total - step) / max(1, total - warm))

    step, losses, resumed = 0, [], None
    val_auc: list[float] = []
    best = {"auc": -math.inf, "epoch": None}
    if out_dir is not None:
        st = load_checkpoint(Path(out_dir), named, opt)
        if st is not None:
            step, losses, resumed = st["step"], st["loss"], st["step"]
            val_auc, best = st.get("valid_auc", []), st.get("best", best)
            if scaler.is_enabled() and st.get("grad_scaler"):
                scaler.load_state_dict(st["grad_scaler"])
    if ddp:
        # every rank must start from the same step with the same weights
        if not D.same_on_all_ranks(step):
            raise RuntimeError(f"ranks resume from different steps (this rank: {step}); is {out_dir} shared?")
        with torch.no_grad():
            for p in params:
                D.broadcast_(p.data)

    best_weights: dict[str, torch.Tensor] | None = None
    if out_dir is not None and resumed is not None:
        best_weights = load_checkpoint_tensors(Path(out_dir), BEST)

    def save_state() -> None:
        if main and out_dir is not None and cfg.checkpoint_every:
            state = {"step": step, "loss": losses, "valid_auc": val_auc, "best": best, "config": asdict(cfg),
                     "precision": prec.name}
            if scaler.is_enabled():
                state["grad_scaler"] = scaler.state_dict()
            extra = {BEST: best_weights} if best_weights is not None else None
            save_checkpoint(Path(out_dir), named, opt, state | ({"world_size": world} if ddp else {}), extra)

    def end_of_epoch(epoch: int) -> bool:
        """Validate after ``epoch`` (0-based); keep the best weights; True = stop early."""
        nonlocal best_weights
        if val is None:
            return False
        auc = _auc(val_labels, _predict_set(model, val, cfg.batch_size * 2, prec, yes_no))
        val_auc.append(round(auc, 6))
        if auc > best["auc"]:
            best.update(auc=auc, epoch=epoch + 1)
            best_weights = {n: p.detach().to("cpu", copy=True).contiguous() for n, p in named.items()}
        if progress and main:
            tqdm.write(f"epoch {epoch + 1}: valid AUC {auc:.4f} (best {best['auc']:.4f} at epoch {best['epoch']})")
        return bool(cfg.patience) and best["epoch"] is not None and epoch + 1 - best["epoch"] >= cfg.patience

    model.train(True)
    t0 = time.perf_counter()
    seen = 0
    stopped = False
    bar = tqdm(total=total, initial=step, desc=f"train {model.kind}", disable=not (progress and main), unit="step")
    # an epoch boundary reached before the kill whose validation was not recorded yet
    if step and step % per_epoch == 0 and len(val_auc) < step // per_epoch and val is not None:
        stopped = end_of_epoch(step // per_epoch - 1)
        save_state()
    while step < total and not stopped:
        epoch, offset = divmod(step, per_epoch)
        batches = length_batches(data.lengths, micro, cfg.seed, epoch, cfg.bucket)
        steps = [batches[i : i + cfg.grad_accum] for i in range(0, len(batches), cfg.grad_accum)]
        for group in steps[offset:]:
            for g in opt.param_groups:
                g["lr"] = lr_at(step) * g.get("lr_mult", 1.0)
            opt.zero_grad(set_to_none=True)
            step_loss = 0.0
            if ddp:
                torch.manual_seed(_step_seed(cfg.seed, step, rank))
            n_step = sum(len(i) for i in group)
            for idx in group:
                part = np.array_split(idx, world)[rank] if ddp else idx
                seen += len(idx)
                if len(part) == 0:
                    continue
                y, batch = targets[part].to(device), data.batch(part, device)
                with prec.autocast(device):
                    logits = _forward(model, batch, answer_ids, readout=not text_loss)
                if text_loss:  # the anchored readout's loss + the text path's own
                    anchored = model.anchored(logits, batch["anchor"])
                    ce = torch.nn.functional.cross_entropy(anchored, y, reduction="sum")
                    ce = ce + cfg.text_loss_weight * torch.nn.functional.cross_entropy(logits, y, reduction="sum")
                else:
                    ce = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
                loss = ce / n_step  # sum over ranks and micro-batches = the mean over the step's samples
                scaler.scale(loss).backward()
                step_loss += loss.item()
            if ddp:
                step_loss = _all_reduce_grads(params, step_loss)
            scaler.unscale_(opt)  # (a no-op but for fp16) the ranks' summed gradients are identical, so is the inf check
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            scaler.step(opt)  # skips the step when an fp16 gradient overflowed
            scaler.update()
            step += 1
            losses.append(round(step_loss, 5))
            rate = seen / max(1e-9, time.perf_counter() - t0)
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-10:]):.4f}", samples_s=f"{rate:.1f}")
            if step % per_epoch == 0 or step == total:
                stopped = end_of_epoch(epoch)
                save_state()
            elif cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                save_state()
            if (stop_after is not None and step >= stop_after) or step >= total or stopped:
                break
        if stop_after is not None and step >= stop_after:
            break
    bar.close()
    if best_weights is not None and (step >= total or stopped):
        with torch.no_grad():
            for n, p in named.items():
                p.copy_(best_weights[n].to(p.device))
    model.train(False)
    if ddp:
        D.barrier()  # rank 0's last checkpoint is written before any rank moves on
    secs = time.perf_counter() - t0
    if diag:
        from reclora.few2many.diagnostics import yes_no_mass

        diag["yes_no_mass_trained"] = yes_no_mass(model, tokenizer, val, cfg.batch_size * 2, prec)
    out = {
        "steps": step,
        "total_steps": total,
        "epochs_run": math.ceil(step / per_epoch),
        "samples_seen": seen,
        "loss": losses,
        "valid_auc": val_auc,
        "best_epoch": best["epoch"],
        "stopped_early": stopped and step < total,
        "seconds": round(secs, 2),
        "cache_seconds": round(cache_secs, 2),
        "samples_per_s": round(seen / max(secs, 1e-9), 3),
        "resumed_from": resumed,
        "precision": prec.as_dict(),
    }
    if diag:
        out["diagnostics"] = diag
    if ddp:
        out["world_size"] = world
    return out


def _all_reduce_grads(params: list[torch.nn.Parameter], loss_share: float) -> float:
    """Sum the trainable gradients and the loss over the ranks in one collective; returns the global loss.

    A parameter no rank computed a gradient for (an unused gate) keeps ``grad=None``, as alone,
    so the optimizer skips it as it would in a single process.
    """
    from reclora.few2many import distributed as D

    dev = params[0].device
    has = [p.grad is not None for p in params]
    flat = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
        + [torch.tensor([float(h) for h in has] + [loss_share], dtype=torch.float32, device=dev)]
    )
    D.all_reduce_sum_(flat)
    off, flags = 0, flat[-len(params) - 1 : -1].tolist()
    for p, flag in zip(params, flags):
        g = flat[off : off + p.numel()].view_as(p).to(p.dtype)
        off += p.numel()
        if flag == 0:
            p.grad = None
        elif p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)
    return float(flat[-1].item())


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
    ddp = _distributed(distributed)
    if ddp:
        from reclora.few2many import distributed as D

        rank, world, main = D.rank(), D.world(), D.is_main()
    else:
        rank, world, main = 0, 1, True
    if model.uses_anchor and anchors is None:
        raise ValueError("the crm_residual readout needs the CRM logits (anchors)")
    data = PromptSet(tokenizer, prompts, max_length, signals, anchors if model.uses_anchor else None)
    if cache_dir is not None:
        data.cache(model, batch_size, precision, progress and main, "cache frozen layers", cache_dir)
    out = _predict_set(model, data, batch_size, precision, yes_no_token_ids(tokenizer), progress and main,
                       f"predict {model.kind}", rank, world)  # fmt: skip
    if ddp:
        t = torch.from_numpy(out)
        D.all_reduce_sum_(t)  # each row was filled by exactly one rank
        out = t.numpy()
    return out
