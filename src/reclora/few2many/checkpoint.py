"""Training checkpoints as safetensors + JSON (no pickle): trainable weights, AdamW state, RNG, step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from reclora.io import atomic_dir

CKPT = "checkpoint"


def save_checkpoint(
    out_dir: Path, named_params: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> Path:
    target = Path(out_dir) / CKPT
    weights = {n: p.detach().contiguous().clone() for n, p in named_params.items()}
    opt: dict[str, torch.Tensor] = {}
    names = list(named_params)
    index = {id(p): n for n, p in named_params.items()}
    for p, s in optimizer.state.items():
        n = index[id(p)]
        for k, v in s.items():
            opt[f"{n}::{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().contiguous().clone()
    with atomic_dir(target) as tmp:
        save_file(weights, str(tmp / "trainable.safetensors"))
        if opt:
            save_file(opt, str(tmp / "optimizer.safetensors"))
        save_file({"cpu": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps({**state, "param_names": names}, indent=2))
    return target


def load_checkpoint(
    out_dir: Path, named_params: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer
) -> dict[str, Any] | None:
    """Restore weights, optimizer and RNG from OUT/checkpoint; None when there is none."""
    d = Path(out_dir) / CKPT
    if not (d / "state.json").is_file():
        return None
    state = json.loads((d / "state.json").read_text())
    if state.get("param_names") != list(named_params):
        raise ValueError(f"{d}: checkpoint is for other trainable parameters; remove it to start over")
    weights = load_file(str(d / "trainable.safetensors"))
    with torch.no_grad():
        for n, p in named_params.items():
            p.copy_(weights[n])
    if (d / "optimizer.safetensors").is_file():
        opt = load_file(str(d / "optimizer.safetensors"))
        for n, p in named_params.items():
            s = {k.split("::", 1)[1]: v for k, v in opt.items() if k.split("::", 1)[0] == n}
            if s:
                optimizer.state[p] = s
    torch.set_rng_state(load_file(str(d / "rng.safetensors"))["cpu"])
    return state
