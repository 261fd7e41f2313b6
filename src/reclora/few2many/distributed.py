"""Data-parallel Few2Many training: the process group, this rank, its device and the collectives.

Under ``torchrun`` every rank runs the same program; :func:`reclora.few2many.train_adapter`
notices the process group (or creates it from torchrun's environment with :func:`init_from_env`),
splits each global batch across the ranks, all-reduces the gradients of the few trainable
tensors and steps the optimizer identically on every rank. Only rank 0 writes checkpoints.

This module only holds the low-level helpers the trainer uses. Launching ranks and the torchrun
entry point of the LLM stage live above the stages, in :mod:`reclora.launch`.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


# ------------------------------------------------------------------ process group
def default_backend() -> str:
    """The process group backend: "nccl" when CUDA is available, else "gloo"."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def local_rank() -> int:
    """This process's GPU index on its node: torchrun's LOCAL_RANK (0 when unset)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env(timeout_s: float | None = None) -> bool:
    """Initialise torch.distributed from torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT).

    A no-op when the group already exists or the environment describes a single process.
    Returns whether a process group of more than one rank is active.
    """
    if not dist.is_available():
        return False
    if dist.is_initialized():
        return dist.get_world_size() > 1
    if any(k not in os.environ for k in _ENV) or int(os.environ["WORLD_SIZE"]) <= 1:
        return False
    backend = default_backend()
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    timeout_s = timeout_s or float(os.environ.get("RECLORA_DIST_TIMEOUT", "0")) or None
    kw: dict[str, Any] = {"timeout": datetime.timedelta(seconds=timeout_s)} if timeout_s else {}
    dist.init_process_group(backend, init_method="env://", **kw)
    return dist.get_world_size() > 1


def use_process_group(flag: bool | None) -> bool:
    """Whether a trainer or predictor runs data-parallel: None = when a process group of more than one rank
    exists or torchrun's environment describes one (initialised here, :func:`init_from_env`); False = alone."""
    if flag is False:
        return False
    return init_from_env()


def active() -> bool:
    """A process group of more than one rank exists."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0, or the only process: the one that writes files and shows progress."""
    return rank() == 0


def device() -> torch.device:
    """This rank's device: cuda:LOCAL_RANK with NCCL; a single process (no process group) gets the
    current GPU when CUDA is available (a one-GPU training pod); else the CPU."""
    if dist.is_available() and dist.is_initialized():
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait until every rank gets here (a no-op without a process group of more than one rank)."""
    if active():
        dist.barrier()


def shutdown() -> None:
    """Destroy the process group when one is initialised (a no-op otherwise)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _comm_tensor(t: torch.Tensor) -> torch.Tensor:
    return t.to(device()) if dist.get_backend() == "nccl" and t.device.type != "cuda" else t


def all_reduce_sum_(t: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (moved to the GPU and back for NCCL when needed)."""
    if active():
        c = _comm_tensor(t)
        dist.all_reduce(c, op=dist.ReduceOp.SUM)
        if c is not t:
            t.copy_(c)
    return t


def broadcast_(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """In place: every rank gets rank ``src``'s values."""
    if active():
        c = _comm_tensor(t)
        dist.broadcast(c, src)
        if c is not t:
            t.copy_(c)
    return t


def same_on_all_ranks(value: int) -> bool:
    """Whether every rank passed the same integer (True without a process group)."""
    if not active():
        return True
    t = _comm_tensor(torch.tensor([value, -value], dtype=torch.int64))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t[0]) == -int(t[1])


def all_reduce_grads(params: list[torch.nn.Parameter], loss_share: float) -> float:
    """Sum the trainable gradients and the loss over the ranks in one collective; returns the global loss.

    A parameter no rank computed a gradient for (an unused gate) keeps ``grad=None``, as alone,
    so the optimizer skips it as it would in a single process.
    """
    dev = params[0].device
    has = [p.grad is not None for p in params]
    flat = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
        + [torch.tensor([float(h) for h in has] + [loss_share], dtype=torch.float32, device=dev)]
    )
    all_reduce_sum_(flat)
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
