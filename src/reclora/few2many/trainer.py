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

from reclora.few2many.adapters import AdapterModel
from reclora.few2many.checkpoint import load_checkpoint, save_checkpoint
from reclora.llm.model import chat_prompt, yes_no_token_ids


LOSSES = ("yes_no", "full_vocab")


@dataclass
class TrainConfig:
    lr: float = 1e-3
    batch_size: int = 8
    grad_accum: int = 1
    epochs: int = 1
    max_steps: int = 0  # 0 = epochs * ceil(n / (batch_size * grad_accum))
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_length: int = 384
    bf16: bool = True
    seed: int = 0
    checkpoint_every: int = 20  # optimizer steps; 0 = never
    max_grad_norm: float = 1.0
    loss: str = "yes_no"  # yes_no: CE over the (Yes, No) logits, the readout's own log-loss | full_vocab

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"train.loss must be one of {LOSSES}, got {self.loss!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def sample_few(n_total: int, n: int, seed: int) -> np.ndarray:
    """Seeded uniform sample (sorted indices) of ``n`` of ``n_total`` rows: the Few2Many subset."""
    if n <= 0 or n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, size=n, replace=False))


def encode(tokenizer: Any, prompts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """Chat-template the prompts and tokenize them left-padded, truncating from the left."""
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    texts = [chat_prompt(tokenizer, p) for p in prompts]
    return tokenizer(
        texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length, add_special_tokens=False
    )


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def _batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


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
) -> dict[str, Any]:
    """Train; with ``out_dir`` it checkpoints every ``cfg.checkpoint_every`` steps and resumes from there.

    Returns {"steps", "samples_seen", "loss" (per step), "seconds", "samples_per_s", "resumed_from"}
    (+ "world_size" when data-parallel). ``stop_after`` ends the run after that many optimizer steps
    (for tests of resumption). ``distributed``: None = data-parallel when a process group of more than
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
    ddp = _distributed(distributed)
    if ddp:
        from reclora.few2many import distributed as D

        rank, world, main = D.rank(), D.world(), D.is_main()
        if D.device().type == "cuda" and next(model.module.parameters()).device.type == "cpu":
            model.module.to(D.device())  # NCCL reduces CUDA tensors: each rank trains on its own GPU
    else:
        rank, world, main = 0, 1, True
    device = next(model.module.parameters()).device
    answer_ids, targets = _answer_targets(tokenizer, labels, cfg.loss)
    sig = torch.as_tensor(np.asarray(signals, dtype=np.float32)) if signals is not None else None

    torch.manual_seed(cfg.seed)
    named = dict(model.named_trainable_parameters())
    params = list(named.values())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    micro = cfg.batch_size
    per_epoch = math.ceil(len(prompts) / (micro * cfg.grad_accum))
    total = cfg.max_steps or per_epoch * cfg.epochs
    warm = max(1, int(cfg.warmup_ratio * total))

    def lr_at(step: int) -> float:
        return cfg.lr * (step + 1) / warm if step < warm else cfg.lr * max(0.0, (total - step) / max(1, total - warm))

    step, losses, resumed = 0, [], None
    if out_dir is not None:
        st = load_checkpoint(Path(out_dir), named, opt)
        if st is not None:
            step, losses, resumed = st["step"], st["loss"], st["step"]
    if ddp:
        # every rank must start from the same step with the same weights
        if not D.same_on_all_ranks(step):
            raise RuntimeError(f"ranks resume from different steps (this rank: {step}); is {out_dir} shared?")
        with torch.no_grad():
            for p in params:
                D.broadcast_(p.data)

    def micro_batches() -> Iterator[np.ndarray]:
        epoch = 0
        while True:
            yield from _batches(len(prompts), micro, cfg.seed, epoch)
            epoch += 1

    stream = micro_batches()
    for _ in range(step * cfg.grad_accum):  # skip what the resumed run already consumed
        next(stream)

    model.train(True)
    t0 = time.perf_counter()
    seen = 0
    bar = tqdm(total=total, initial=step, desc=f"train {model.kind}", disable=not (progress and main), unit="step")
    while step < total:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        if ddp:
            torch.manual_seed(_step_seed(cfg.seed, step, rank))
        for _ in range(cfg.grad_accum):
            idx = next(stream)
            if ddp:
                seen += len(idx)
                step_loss += _shard_backward(
                    model, tokenizer, prompts, targets, answer_ids, sig, idx, rank, world, cfg, device
                )
                continue
            enc = encode(tokenizer, [prompts[i] for i in idx], cfg.max_length)
            s = sig[idx].to(device) if sig is not None else None
            with _autocast(device, cfg.bf16):
                logits = model.answer_logits(enc["input_ids"].to(device), enc["attention_mask"].to(device), s, answer_ids)
            loss = torch.nn.functional.cross_entropy(logits, targets[idx].to(device)) / cfg.grad_accum
            loss.backward()
            step_loss += loss.item()
            seen += len(idx)
        if ddp:
            step_loss = _all_reduce_grads(params, step_loss)
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        step += 1
        losses.append(round(step_loss, 5))
        rate = seen / max(1e-9, time.perf_counter() - t0)
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-10:]):.4f}", samples_s=f"{rate:.1f}")
        if (
            main and out_dir is not None and cfg.checkpoint_every
            and (step % cfg.checkpoint_every == 0 or step == total)
        ):  # fmt: skip
            state = {"step": step, "loss": losses, "config": asdict(cfg)} | ({"world_size": world} if ddp else {})
            save_checkpoint(Path(out_dir), named, opt, state)
        if stop_after is not None and step >= stop_after:
            break
    bar.close()
    model.train(False)
    if ddp:
        D.barrier()  # rank 0's last checkpoint is written before any rank moves on
    secs = time.perf_counter() - t0
    out = {
        "steps": step,
        "total_steps": total,
        "samples_seen": seen,
        "loss": losses,
        "seconds": round(secs, 2),
        "samples_per_s": round(seen / max(secs, 1e-9), 3),
        "resumed_from": resumed,
    }
    if ddp:
        out["world_size"] = world
    return out


def _shard_backward(
    model: AdapterModel, tokenizer: Any, prompts: Sequence[str], targets: torch.Tensor,
    answer_ids: tuple[int, int] | None, sig: torch.Tensor | None, idx: np.ndarray, rank: int, world: int, cfg: TrainConfig, device: torch.device,
) -> float:  # fmt: skip
    """Backward of this rank's contiguous share of the global batch ``idx``; returns its loss share.

    The loss is the shard's summed cross-entropy over the *global* batch size, so the sum over
    ranks is the single-process mean loss (and gradient). A rank with an empty share adds nothing.
    """
    part = np.array_split(idx, world)[rank]
    if len(part) == 0:
        return 0.0
    enc = encode(tokenizer, [prompts[i] for i in part], cfg.max_length)
    s = sig[part].to(device) if sig is not None else None
    with _autocast(device, cfg.bf16):
        logits = model.answer_logits(enc["input_ids"].to(device), enc["attention_mask"].to(device), s, answer_ids)
    ce = torch.nn.functional.cross_entropy(logits, targets[part].to(device), reduction="sum")
    loss = ce / (len(idx) * cfg.grad_accum)
    loss.backward()
    return loss.item()


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
    bf16: bool = True,
    progress: bool = True,
    distributed: bool | None = None,
) -> np.ndarray:
    """p(Yes) per prompt. Prompts are batched by length to waste little on padding.

    Data-parallel (``distributed`` as in ``train_adapter``): every rank scores every world-th
    batch and all get all the probabilities, so every rank must call it.
    """
    ddp = _distributed(distributed)
    if ddp:
        from reclora.few2many import distributed as D

        rank, world, main = D.rank(), D.world(), D.is_main()
    else:
        rank, world, main = 0, 1, True
    model.train(False)
    device = next(model.module.parameters()).device
    yes, no = yes_no_token_ids(tokenizer)
    order = np.argsort([len(p) for p in prompts], kind="stable")
    sig = torch.as_tensor(np.asarray(signals, dtype=np.float32)) if signals is not None else None
    out = np.zeros(len(prompts), dtype=np.float64) if ddp else np.empty(len(prompts), dtype=np.float64)
    starts = range(0, len(prompts), batch_size)
    for b, i in enumerate(tqdm(starts, desc=f"predict {model.kind}", disable=not (progress and main), unit="batch")):
        if b % world != rank:
            continue
        idx = order[i : i + batch_size]
        enc = encode(tokenizer, [prompts[j] for j in idx], max_length)
        s = sig[idx].to(device) if sig is not None else None
        with _autocast(device, bf16):
            pair = model.answer_logits(enc["input_ids"].to(device), enc["attention_mask"].to(device), s, (yes, no))
        out[idx] = torch.softmax(pair, -1)[:, 0].cpu().numpy()
    if ddp:
        t = torch.from_numpy(out)
        D.all_reduce_sum_(t)  # each row was filled by exactly one rank
        out = t.numpy()
    return out
