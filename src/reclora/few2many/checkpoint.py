"""Training checkpoints as safetensors + JSON (no pickle): trainable weights, AdamW state, RNG (the CPU's
and every CUDA device's generator), step.

Checkpoints are written to a local directory (``save_checkpoint``/``load_checkpoint``). Inside
``with checkpoint_mirror(local_root, uri):`` every checkpoint saved under ``local_root`` is also
copied to the object store at ``uri`` (any fsspec URI), and entering the block restores the
latest mirrored checkpoint into ``local_root`` when the local one is missing: a training step
retried in a new pod (new, empty local disk) resumes from the bucket. Remote layout::

    <uri>/<path of the checkpoint under local_root>/
        LATEST                 the name of the complete copy (written last, one PUT)
        <seq>/                 trainable.safetensors, optimizer.safetensors, rng.safetensors, state.json

A copy is complete before LATEST names it, so a pod killed mid-upload leaves the previous one in use.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from reclora.io import atomic_dir, read_json

CKPT = "checkpoint"


def save_checkpoint(
    out_dir: Path,
    named_params: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    extra: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write OUT/checkpoint atomically (and mirror it when inside ``checkpoint_mirror``).

    ``extra``: more tensor sets kept with the checkpoint, each as ``<name>.safetensors`` (e.g. the
    best epoch's weights); read back with :func:`load_checkpoint_tensors`.
    """
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
        save_file(rng_states(), str(tmp / "rng.safetensors"))
        for name, tensors in (extra or {}).items():
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / f"{name}.safetensors"))
        (tmp / "state.json").write_text(json.dumps({**state, "param_names": names}, indent=2))
    _push(target, state)
    return target


def load_checkpoint_tensors(out_dir: Path, name: str) -> dict[str, torch.Tensor] | None:
    """A tensor set saved with the checkpoint in OUT (``extra`` of :func:`save_checkpoint`), or None."""
    f = Path(out_dir) / CKPT / f"{name}.safetensors"
    return load_file(str(f)) if f.is_file() else None


def load_checkpoint(
    out_dir: Path, named_params: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer
) -> dict[str, Any] | None:
    """Restore weights, optimizer and RNG from OUT/checkpoint; None when there is none."""
    d = Path(out_dir) / CKPT
    if not (d / "state.json").is_file():
        return None
    state = read_json(d / "state.json")
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
            # moments live where the parameter does (a GPU); AdamW keeps its step counter on the CPU
            s = {k: v if k == "step" else v.to(p.device) for k, v in s.items()}
            if s:
                optimizer.state[p] = s
    set_rng_states(load_file(str(d / "rng.safetensors")))
    return state


def rng_states() -> dict[str, torch.Tensor]:
    """The random generators' states: ``cpu``, and ``cuda:<i>`` for every CUDA device once CUDA is in use
    (dropout on a GPU draws from the device's generator, not the CPU's)."""
    out = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out.update({f"cuda:{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return out


def set_rng_states(states: dict[str, torch.Tensor]) -> None:
    """Restore :func:`rng_states`: the CPU generator, and each saved CUDA device's that this machine has."""
    torch.set_rng_state(states["cpu"])
    cuda = {int(k.split(":", 1)[1]): v for k, v in states.items() if k.startswith("cuda:")}
    if cuda and torch.cuda.is_available():
        for i in sorted(cuda):
            if i < torch.cuda.device_count():
                torch.cuda.set_rng_state(cuda[i], device=i)


# ------------------------------------------------------------------ object-store mirror
LATEST = "LATEST"
_MIRRORS: dict[Path, str] = {}  # local root -> remote URI, while a checkpoint_mirror block is open


def _mirror_for(path: Path) -> tuple[str, str] | None:
    """(remote URI of ``path``, its key under the mirror root) when ``path`` lies under a mirrored root."""
    path = path.resolve()
    for root, uri in _MIRRORS.items():
        if path == root or root in path.parents:
            rel = path.relative_to(root).as_posix()
            return (f"{uri.rstrip('/')}/{rel}" if rel != "." else uri.rstrip("/")), rel
    return None


def _push(target: Path, state: dict[str, Any]) -> None:
    m = _mirror_for(Path(target))
    if m is None:
        return
    from reclora import storage

    remote = m[0]
    step = state.get("step")
    seq = f"step-{int(step):09d}-{int(time.time() * 1000)}" if isinstance(step, int) else f"t-{int(time.time() * 1000)}"
    storage.upload_dir(target, f"{remote}/{seq}")
    fs, root = storage.filesystem(remote)
    root = root.rstrip("/")
    with fs.open(f"{root}/{LATEST}", "w") as f:  # one PUT: the new copy is complete before it is named
        f.write(seq)
    for d in fs.ls(root, detail=False):  # older copies are no longer needed
        name = d.rstrip("/").rsplit("/", 1)[-1]
        if name not in (seq, LATEST):
            with contextlib.suppress(FileNotFoundError):
                fs.rm(d, recursive=True)


def pull_checkpoints(uri: str, local_root: str | Path) -> list[str]:
    """Restore every mirrored checkpoint under ``uri`` into ``local_root`` where the local copy is missing.

    Returns the keys (paths under the root, e.g. ``checkpoint``) restored.
    """
    from reclora import storage

    fs, root = storage.filesystem(uri)
    root = root.rstrip("/")
    if not fs.exists(root):
        return []
    restored = []
    for f in sorted(fs.find(root)):
        if not f.endswith(f"/{LATEST}"):
            continue
        key_dir = f[: -len(LATEST) - 1]
        rel = key_dir[len(root) :].strip("/")
        local = Path(local_root) / rel if rel else Path(local_root)
        if (local / "state.json").is_file():
            continue
        with fs.open(f, "r") as fh:
            seq = fh.read().strip()
        storage.download_dir(f"{uri.rstrip('/')}/{rel + '/' if rel else ''}{seq}", local)
        restored.append(rel or ".")
    return restored


@contextlib.contextmanager
def checkpoint_mirror(local_root: str | Path, uri: str | None) -> Iterator[list[str]]:
    """Mirror checkpoints saved under ``local_root`` to ``uri`` for the duration of the block.

    On entry, the latest mirrored checkpoints are restored into ``local_root`` (by one process per
    node under torchrun; the others wait), so the trainer's own ``load_checkpoint`` resumes from
    them. Yields the keys restored. ``uri`` None or empty: no mirror, a plain block.
    """
    if not uri:
        yield []
        return
    from reclora.few2many import distributed as D

    root = Path(local_root).resolve()
    restored = pull_checkpoints(uri, root) if D.local_rank() == 0 else []
    D.barrier()
    _MIRRORS[root] = uri
    try:
        yield restored
    finally:
        _MIRRORS.pop(root, None)
