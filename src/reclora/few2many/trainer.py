"""Few2Many training of an LLM adapter on CTR prompts, and p(Yes) prediction.

The LLM sees a small seeded uniform sample of the training split; RecLoRA also
gets each sample's CRM hidden vector h, which carries what the CRM learned from
all of the data. Loss: cross-entropy of the answer token ("Yes"/"No") at the
answer position; prediction: p = softmax([logit_yes, logit_no])[0].
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
) -> dict[str, Any]:
    """Train; with ``out_dir`` it checkpoints every ``cfg.checkpoint_every`` steps and resumes from there.

    Returns {"steps", "samples_seen", "loss" (per step), "seconds", "samples_per_s", "resumed_from"}.
    ``stop_after`` ends the run after that many optimizer steps (for tests of resumption).
    """
    labels = np.asarray(labels).astype(np.int64)
    if len(prompts) != len(labels) or (signals is not None and len(signals) != len(labels)):
        raise ValueError("prompts, labels and signals must have the same length")
    if model.uses_signal and signals is None:
        raise ValueError("RecLoRA training needs the CRM signals")
    device = next(model.module.parameters()).device
    yes, no = yes_no_token_ids(tokenizer)
    targets = torch.tensor(np.where(labels == 1, yes, no))
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
    bar = tqdm(total=total, initial=step, desc=f"train {model.kind}", disable=not progress, unit="step")
    while step < total:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for _ in range(cfg.grad_accum):
            idx = next(stream)
            enc = encode(tokenizer, [prompts[i] for i in idx], cfg.max_length)
            s = sig[idx].to(device) if sig is not None else None
            with _autocast(device, cfg.bf16):
                logits = model.last_logits(enc["input_ids"].to(device), enc["attention_mask"].to(device), s)
            loss = torch.nn.functional.cross_entropy(logits.float(), targets[idx].to(device)) / cfg.grad_accum
            loss.backward()
            step_loss += loss.item()
            seen += len(idx)
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        step += 1
        losses.append(round(step_loss, 5))
        rate = seen / max(1e-9, time.perf_counter() - t0)
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-10:]):.4f}", samples_s=f"{rate:.1f}")
        if out_dir is not None and cfg.checkpoint_every and (step % cfg.checkpoint_every == 0 or step == total):
            save_checkpoint(Path(out_dir), named, opt, {"step": step, "loss": losses, "config": asdict(cfg)})
        if stop_after is not None and step >= stop_after:
            break
    bar.close()
    model.train(False)
    secs = time.perf_counter() - t0
    return {
        "steps": step,
        "total_steps": total,
        "samples_seen": seen,
        "loss": losses,
        "seconds": round(secs, 2),
        "samples_per_s": round(seen / max(secs, 1e-9), 3),
        "resumed_from": resumed,
    }


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
) -> np.ndarray:
    """p(Yes) per prompt. Prompts are batched by length to waste little on padding."""
    model.train(False)
    device = next(model.module.parameters()).device
    yes, no = yes_no_token_ids(tokenizer)
    order = np.argsort([len(p) for p in prompts], kind="stable")
    sig = torch.as_tensor(np.asarray(signals, dtype=np.float32)) if signals is not None else None
    out = np.empty(len(prompts), dtype=np.float64)
    for i in tqdm(range(0, len(prompts), batch_size), desc=f"predict {model.kind}", disable=not progress, unit="batch"):
        idx = order[i : i + batch_size]
        enc = encode(tokenizer, [prompts[j] for j in idx], max_length)
        s = sig[idx].to(device) if sig is not None else None
        with _autocast(device, bf16):
            logits = model.last_logits(enc["input_ids"].to(device), enc["attention_mask"].to(device), s)
        pair = torch.stack([logits[:, yes], logits[:, no]], -1).float()
        out[idx] = torch.softmax(pair, -1)[:, 0].cpu().numpy()
    return out
