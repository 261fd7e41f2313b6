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

Long because: one job, the Few2Many training recipe (:class:`Few2ManyRecipe`: data, optimizer,
checkpoints, validation, the step and the loop, in torchtune's recipe shape) and its entry point.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from reclora.few2many import distributed as D
from reclora.few2many.adapters import AdapterModel
from reclora.few2many.checkpoint import load_checkpoint, load_checkpoint_tensors, save_checkpoint
from reclora.few2many.config import TrainConfig
from reclora.few2many.data import PromptSet, length_batches
from reclora.few2many.predict import answer_logits, predict_set
from reclora.llm.model import yes_no_token_ids
from reclora.precision import as_precision


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


def _auc(labels: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, p)) if len(np.unique(labels)) == 2 else float("nan")


BEST = "best"  # the best epoch's weights, kept in the checkpoint as best.safetensors


class Few2ManyRecipe:
    """One Few2Many training run of ``model`` (torchtune's recipe shape): the run's state lives on the instance.

        recipe = Few2ManyRecipe(model, tokenizer, cfg, out_dir)       # process group, device, precision
        recipe.setup_data(prompts, labels, signals, anchors, valid)   # PromptSets, cached frozen layers
        recipe.setup_optimizer()                                      # AdamW groups, grad scaler, schedule
        recipe.load_checkpoint()                                      # resume from out_dir, if any
        recipe.train()                                                # the loop; validates every epoch
        history = recipe.finish()                                     # best weights restored; the summary

    State: ``step`` (optimizer steps done), ``losses`` (per step), ``val_auc`` (per epoch), ``best``
    ({"auc", "epoch"}) and ``best_weights``, ``seen`` (samples this session), ``stopped`` (early stop),
    ``resumed`` (the step a checkpoint resumed from). Checkpoints: :meth:`save_checkpoint` (rank 0 writes,
    every ``cfg.checkpoint_every`` steps and at each epoch's end) and :meth:`load_checkpoint`.
    :func:`train_adapter` runs the whole recipe.
    """

    def __init__(
        self,
        model: AdapterModel,
        tokenizer: Any,
        cfg: TrainConfig,
        out_dir: str | Path | None = None,
        progress: bool = True,
        distributed: bool | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        """Join the process group when data-parallel (``distributed`` as in :func:`train_adapter`; a CUDA
        rank moves the model to its own GPU) and resolve ``cfg.precision`` on the model's device."""
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress, self.cache_dir = progress, cache_dir
        self.ddp = D.use_process_group(distributed)
        if self.ddp:
            self.rank, self.world, self.main = D.rank(), D.world(), D.is_main()
            if D.device().type == "cuda" and next(model.module.parameters()).device.type == "cpu":
                model.module.to(D.device())  # NCCL reduces CUDA tensors: each rank trains on its own GPU
        else:
            self.rank, self.world, self.main = 0, 1, True
        self.device = next(model.module.parameters()).device
        self.prec = as_precision(cfg.precision, self.device)
        self.step = 0
        self.resumed: int | None = None
        self.losses: list[float] = []
        self.val_auc: list[float] = []
        self.best: dict[str, Any] = {"auc": -math.inf, "epoch": None}
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.seen, self.stopped = 0, False
        self.diag: dict[str, Any] = {}
        self.val: PromptSet | None = None

    # ------------------------------------------------------------------ setup
    def setup_data(
        self,
        prompts: Sequence[str],
        labels: np.ndarray,
        signals: np.ndarray | None,
        anchors: np.ndarray | None = None,
        valid: dict[str, Any] | None = None,
        diagnostics: bool = False,
    ) -> None:
        """Tokenize the training (and validation) prompts, cache their frozen-layer states
        (``cfg.cache_lower``) and, with ``diagnostics`` and ``valid``, run the pre-training diagnostics."""
        cfg, model = self.cfg, self.model
        self.answer_ids, self.targets = _answer_targets(self.tokenizer, labels, cfg.loss)
        self.text_loss = model.uses_anchor and cfg.text_loss_weight > 0
        self.yes_no = yes_no_token_ids(self.tokenizer)
        t_cache = time.perf_counter()
        self.data = PromptSet(self.tokenizer, prompts, cfg.max_length, signals, anchors)
        if valid is not None:
            self.val = PromptSet(
                self.tokenizer, valid["prompts"], cfg.max_length, valid.get("signals"), valid.get("anchors")
            )
            self.val_labels = np.asarray(valid["labels"]).astype(np.int64)
        if cfg.cache_lower:
            self.data.cache(
                model, cfg.batch_size * 2, self.prec, self.progress and self.main, "cache frozen layers", self.cache_dir
            )
            if self.val is not None:
                self.val.cache(model, cfg.batch_size * 2, self.prec, False, store=self.cache_dir)
        self.cache_secs = time.perf_counter() - t_cache
        if diagnostics and self.val is not None:
            from reclora.few2many.diagnostics import diagnose

            self.diag = diagnose(
                model, self.tokenizer, self.data, labels, self.val, self.val_labels, cfg.batch_size * 2, self.prec
            )

    def setup_optimizer(self) -> None:
        """AdamW over the trainable parameters (seeded by ``cfg.seed``; LoRA+ and gate groups), the fp16 grad
        scaler, and the schedule: steps per epoch, total steps, warmup steps."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.named = dict(self.model.named_trainable_parameters())
        self.params = list(self.named.values())
        self.opt = torch.optim.AdamW(_param_groups(self.named, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = self.prec.grad_scaler(
            self.device
        )  # fp16 only: the loss is scaled up so small gradients do not underflow
        self.micro = cfg.batch_size
        n_micro = math.ceil(len(self.data) / self.micro)
        self.per_epoch = math.ceil(n_micro / cfg.grad_accum)
        self.total = cfg.max_steps or self.per_epoch * cfg.epochs
        self.warm = max(1, int(cfg.warmup_ratio * self.total))

    def lr_at(self, step: int) -> float:
        """The learning rate of optimizer step ``step``: linear warmup, then linear decay to 0 at the end."""
        cfg, warm, total = self.cfg, self.warm, self.total
        return cfg.lr * (step + 1) / warm if step < warm else cfg.lr * max(0.0, (total - step) / max(1, total - warm))

    # ------------------------------------------------------------------ checkpoints
    def load_checkpoint(self) -> None:
        """Resume from ``out_dir``'s checkpoint when there is one (step, losses, validation AUCs, best epoch,
        grad scaler, optimizer, weights and the best weights); data-parallel, every rank starts from rank 0's
        weights at the same step. Raises RuntimeError when the ranks found different checkpoints."""
        if self.out_dir is not None:
            st = load_checkpoint(self.out_dir, self.named, self.opt)
            if st is not None:
                self.step, self.losses, self.resumed = st["step"], st["loss"], st["step"]
                self.val_auc, self.best = st.get("valid_auc", []), st.get("best", self.best)
                if self.scaler.is_enabled() and st.get("grad_scaler"):
                    self.scaler.load_state_dict(st["grad_scaler"])
        if self.ddp:
            # every rank must start from the same step with the same weights
            if not D.same_on_all_ranks(self.step):
                raise RuntimeError(
                    f"ranks resume from different steps (this rank: {self.step}); is {self.out_dir} shared?"
                )
            with torch.no_grad():
                for p in self.params:
                    D.broadcast_(p.data)
        if self.out_dir is not None and self.resumed is not None:
            self.best_weights = load_checkpoint_tensors(self.out_dir, BEST)

    def save_checkpoint(self) -> None:
        """Rank 0 writes the run's state to ``out_dir`` (when there is one and ``cfg.checkpoint_every``)."""
        cfg = self.cfg
        if self.main and self.out_dir is not None and cfg.checkpoint_every:
            state = {
                "step": self.step,
                "loss": self.losses,
                "valid_auc": self.val_auc,
                "best": self.best,
                "config": asdict(cfg),
                "precision": self.prec.name,
            }
            if self.scaler.is_enabled():
                state["grad_scaler"] = self.scaler.state_dict()
            extra = {BEST: self.best_weights} if self.best_weights is not None else None
            save_checkpoint(
                self.out_dir, self.named, self.opt, state | ({"world_size": self.world} if self.ddp else {}), extra
            )

    # ------------------------------------------------------------------ evaluation
    def validate(self, epoch: int) -> bool:
        """Validate after ``epoch`` (0-based); keep the best weights; True = stop early."""
        val, cfg, best = self.val, self.cfg, self.best
        if val is None:
            return False
        auc = _auc(self.val_labels, predict_set(self.model, val, cfg.batch_size * 2, self.prec, self.yes_no))
        self.val_auc.append(round(auc, 6))
        if auc > best["auc"]:
            best.update(auc=auc, epoch=epoch + 1)
            self.best_weights = {n: p.detach().to("cpu", copy=True).contiguous() for n, p in self.named.items()}
        if self.progress and self.main:
            tqdm.write(f"epoch {epoch + 1}: valid AUC {auc:.4f} (best {best['auc']:.4f} at epoch {best['epoch']})")
        return bool(cfg.patience) and best["epoch"] is not None and epoch + 1 - best["epoch"] >= cfg.patience

    # ------------------------------------------------------------------ training
    def train_step(self, group: list[np.ndarray]) -> float:
        """One optimizer step over the micro-batches ``group`` (index arrays; data-parallel, this rank takes its
        share of each); returns the step's global mean loss."""
        cfg, model, device = self.cfg, self.model, self.device
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step) * g.get("lr_mult", 1.0)
        self.opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        if self.ddp:
            torch.manual_seed(_step_seed(cfg.seed, self.step, self.rank))
        n_step = sum(len(i) for i in group)
        for idx in group:
            part = np.array_split(idx, self.world)[self.rank] if self.ddp else idx
            self.seen += len(idx)
            if len(part) == 0:
                continue
            y, batch = self.targets[part].to(device), self.data.batch(part, device)
            with self.prec.autocast(device):
                logits = answer_logits(model, batch, self.answer_ids, readout=not self.text_loss)
            if self.text_loss:  # the anchored readout's loss + the text path's own
                anchored = model.anchored(logits, batch["anchor"])
                ce = torch.nn.functional.cross_entropy(anchored, y, reduction="sum")
                ce = ce + cfg.text_loss_weight * torch.nn.functional.cross_entropy(logits, y, reduction="sum")
            else:
                ce = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
            loss = ce / n_step  # sum over ranks and micro-batches = the mean over the step's samples
            self.scaler.scale(loss).backward()
            step_loss += loss.item()
        if self.ddp:
            step_loss = D.all_reduce_grads(self.params, step_loss)
        self.scaler.unscale_(
            self.opt
        )  # (a no-op but for fp16) the ranks' summed gradients are identical, so is the inf check
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
        self.scaler.step(self.opt)  # skips the step when an fp16 gradient overflowed
        self.scaler.update()
        return step_loss

    def train(self, stop_after: int | None = None) -> None:
        """The training loop from ``step`` to the total (or ``stop_after`` optimizer steps): seeded
        (length-bucketed) batches per epoch, validation and a checkpoint at each epoch's end, a checkpoint
        every ``cfg.checkpoint_every`` steps, early stopping after ``cfg.patience`` epochs without a gain."""
        cfg, per_epoch, total = self.cfg, self.per_epoch, self.total
        self.model.train(True)
        self.t0 = time.perf_counter()
        bar = tqdm(
            total=total,
            initial=self.step,
            desc=f"train {self.model.kind}",
            disable=not (self.progress and self.main),
            unit="step",
        )
        # an epoch boundary reached before the kill whose validation was not recorded yet
        step = self.step
        if step and step % per_epoch == 0 and len(self.val_auc) < step // per_epoch and self.val is not None:
            self.stopped = self.validate(step // per_epoch - 1)
            self.save_checkpoint()
        while self.step < total and not self.stopped:
            epoch, offset = divmod(self.step, per_epoch)
            batches = length_batches(self.data.lengths, self.micro, cfg.seed, epoch, cfg.bucket)
            steps = [batches[i : i + cfg.grad_accum] for i in range(0, len(batches), cfg.grad_accum)]
            for group in steps[offset:]:
                step_loss = self.train_step(group)
                self.step += 1
                self.losses.append(round(step_loss, 5))
                rate = self.seen / max(1e-9, time.perf_counter() - self.t0)
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(self.losses[-10:]):.4f}", samples_s=f"{rate:.1f}")
                if self.step % per_epoch == 0 or self.step == total:
                    self.stopped = self.validate(epoch)
                    self.save_checkpoint()
                elif cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if (stop_after is not None and self.step >= stop_after) or self.step >= total or self.stopped:
                    break
            if stop_after is not None and self.step >= stop_after:
                break
        bar.close()

    def finish(self) -> dict[str, Any]:
        """Restore the best epoch's weights (when the run reached its end), leave the model in eval mode, wait
        for every rank, and return the run's summary (see :func:`train_adapter`)."""
        cfg = self.cfg
        if self.best_weights is not None and (self.step >= self.total or self.stopped):
            with torch.no_grad():
                for n, p in self.named.items():
                    p.copy_(self.best_weights[n].to(p.device))
        self.model.train(False)
        if self.ddp:
            D.barrier()  # rank 0's last checkpoint is written before any rank moves on
        secs = time.perf_counter() - self.t0
        if self.diag:
            from reclora.few2many.diagnostics import yes_no_mass

            self.diag["yes_no_mass_trained"] = yes_no_mass(
                self.model, self.tokenizer, self.val, cfg.batch_size * 2, self.prec
            )
        out = {
            "steps": self.step,
            "total_steps": self.total,
            "epochs_run": math.ceil(self.step / self.per_epoch),
            "samples_seen": self.seen,
            "loss": self.losses,
            "valid_auc": self.val_auc,
            "best_epoch": self.best["epoch"],
            "stopped_early": self.stopped and self.step < self.total,
            "seconds": round(secs, 2),
            "cache_seconds": round(self.cache_secs, 2),
            "samples_per_s": round(self.seen / max(secs, 1e-9), 3),
            "resumed_from": self.resumed,
            "precision": self.prec.as_dict(),
        }
        if self.diag:
            out["diagnostics"] = self.diag
        if self.ddp:
            out["world_size"] = self.world
        return out


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
    recipe = Few2ManyRecipe(model, tokenizer, cfg, out_dir, progress, distributed, cache_dir)
    recipe.setup_data(prompts, labels, signals, anchors, valid, diagnostics)
    recipe.setup_optimizer()
    recipe.load_checkpoint()
    recipe.train(stop_after)
    return recipe.finish()
