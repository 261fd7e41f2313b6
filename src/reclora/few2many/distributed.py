"""Data-parallel Few2Many training on one node: process-group setup, launch helpers and a worker.

Under ``torchrun`` every rank runs the same program; :func:`reclora.few2many.train_adapter`
notices the process group (or creates it from torchrun's environment with :func:`init_from_env`),
splits each global batch across the ranks, all-reduces the gradients of the few trainable
tensors and steps the optimizer identically on every rank. Only rank 0 writes checkpoints.

Launch N ranks of the LLM stage (N GPUs with NCCL, else N CPU processes with gloo)::

    python -m torch.distributed.run --standalone --nnodes 1 --nproc_per_node N \\
        -m reclora.few2many.distributed llm --kind reclora --data D --retrieved R --crm C --out O

which is what ``launch(N, ["llm", ...])`` runs (``command`` builds it). ``launch(..., local=True)``
starts the ranks itself with a rendezvous store bound to 127.0.0.1 only (torchrun's binds all
interfaces): for tests and CPU runs on a shared machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist

WORKER_MODULE = "reclora.few2many.distributed"
_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


# ------------------------------------------------------------------ process group
def default_backend() -> str:
    """"nccl" when CUDA is available, else "gloo"."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def local_rank() -> int:
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


def active() -> bool:
    """A process group of more than one rank exists."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0, or the only process: the one that writes files and shows progress."""
    return rank() == 0


def device() -> torch.device:
    """This rank's device: cuda:LOCAL_RANK with NCCL, else the CPU."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if active():
        dist.barrier()


def shutdown() -> None:
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


# ------------------------------------------------------------------ launching
def _target(args: Sequence[str], module: str | None) -> list[str]:
    return ["-m", module, *args] if module else list(args)


def command(nproc: int, args: Sequence[str], module: str | None = WORKER_MODULE) -> list[str]:
    """The torchrun command for ``nproc`` ranks on this node running ``python -m module args``.

    With ``module=None``, ``args[0]`` is a script path. Uses this interpreter's torch
    (``python -m torch.distributed.run`` is ``torchrun``).
    """
    if nproc < 1:
        raise ValueError("nproc must be >= 1")
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1"]
    return [*run, "--nproc_per_node", str(nproc), *_target(args, module)]


def launch(
    nproc: int,
    args: Sequence[str],
    module: str | None = WORKER_MODULE,
    *,
    local: bool = False,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    log_dir: str | Path | None = None,
    check: bool = True,
) -> int:
    """Run ``nproc`` ranks of ``python -m module args`` and wait; returns the exit code.

    ``local=False``: through torchrun (``command``). ``local=True``: this process hosts the
    rendezvous store on 127.0.0.1 and starts the ranks itself, with gloo on the loopback
    interface; ``log_dir`` then keeps each rank's output in ``rank<k>.log``.
    ``check`` raises RuntimeError on a non-zero exit.
    """
    full_env = {**os.environ, **(env or {})}
    if not local:
        cmd = command(nproc, args, module)
        code = subprocess.run(cmd, env=full_env, timeout=timeout).returncode
        if check and code != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed with exit code {code}")
        return code
    return _launch_local(nproc, args, module, full_env, timeout, log_dir, check)


def _launch_local(
    nproc: int, args: Sequence[str], module: str | None, env: dict[str, str],
    timeout: float | None, log_dir: str | Path | None, check: bool,
) -> int:  # fmt: skip
    if nproc < 1:
        raise ValueError("nproc must be >= 1")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    # the store owns (and closes) the pre-bound socket: it listens on loopback only
    store = dist.TCPStore(
        "127.0.0.1", port, world_size=nproc, is_master=True, wait_for_workers=False,
        timeout=datetime.timedelta(seconds=timeout or 1800), master_listen_fd=sock.detach(), use_libuv=True,
    )  # fmt: skip
    logs = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="reclora-dist-"))
    logs.mkdir(parents=True, exist_ok=True)
    base = {
        **env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(nproc),
        "LOCAL_WORLD_SIZE": str(nproc), "GROUP_RANK": "0", "TORCHELASTIC_USE_AGENT_STORE": "True",
    }  # fmt: skip
    base.setdefault("GLOO_SOCKET_IFNAME", "lo")
    base.setdefault("OMP_NUM_THREADS", "1")
    procs: list[subprocess.Popen] = []
    files = []
    try:
        for r in range(nproc):
            f = open(logs / f"rank{r}.log", "wb")
            files.append(f)
            e = base | {"RANK": str(r), "LOCAL_RANK": str(r)}
            procs.append(subprocess.Popen([sys.executable, *_target(args, module)], env=e, stdout=f, stderr=f))
        deadline = None if timeout is None else time.monotonic() + timeout
        code = 0
        while True:
            codes = [p.poll() for p in procs]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:
                code = failed[0]
                break
            if all(c == 0 for c in codes):
                break
            if deadline is not None and time.monotonic() > deadline:
                code = -9
                break
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in files:
            f.close()
        del store
    if check and code != 0:
        tails = "\n".join(
            f"--- rank {r} ---\n" + (logs / f"rank{r}.log").read_text(errors="replace")[-3000:] for r in range(nproc)
        )
        raise RuntimeError(f"distributed run failed (exit {code}; logs in {logs})\n{tails}")
    if log_dir is None and code == 0:
        shutil.rmtree(logs, ignore_errors=True)
    return code


# ------------------------------------------------------------------ worker
def run_llm_stage(
    kind: str,
    data_dir: str | Path,
    retrieved_dir: str | Path,
    crm_dir: str | Path | None,
    out_dir: str | Path,
    params: Mapping[str, Any] | None = None,
    gate: str = "crm",
    model_path: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """``reclora.stages.llm_stage`` on every rank of the process group (data-parallel training).

    Every rank trains (and loads the checkpoint when resuming); only rank 0 writes ``out_dir``.
    """
    from reclora.stages import llm_stage

    init_from_env()
    # llm_stage writes its output on rank 0 only and holds the other ranks at a barrier
    summary = llm_stage(
        kind, data_dir, retrieved_dir, crm_dir, out_dir, params,
        gate=gate, model_path=model_path, progress=progress and is_main(),
    )  # fmt: skip
    barrier()
    return summary


def _load_params(args: argparse.Namespace) -> dict[str, Any]:
    from reclora.config import deep_merge, load_params_with

    overrides = json.loads(args.overrides) if args.overrides else None
    if args.params:
        text = Path(args.params).read_text()
        if args.params.endswith(".json"):
            base = json.loads(text)
        else:
            import yaml

            base = yaml.safe_load(text)
        return deep_merge(base, overrides)
    return load_params_with(overrides, args.profile)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=f"python -m {WORKER_MODULE}", description="one rank of data-parallel training")
    sub = ap.add_subparsers(dest="cmd", required=True)
    llm = sub.add_parser("llm", help="the LLM stage (Few2Many LoRA / RecLoRA)")
    llm.add_argument("--kind", required=True, choices=["lora", "reclora"])
    llm.add_argument("--data", required=True, help="prepared data directory")
    llm.add_argument("--retrieved", required=True, help="retrieve stage output")
    llm.add_argument("--crm", default=None, help="CRM stage output (RecLoRA)")
    llm.add_argument("--out", required=True, help="output directory (written by rank 0)")
    llm.add_argument("--gate", default="crm")
    llm.add_argument("--model-path", default=None)
    llm.add_argument("--params", default=None, help="a params file (YAML or JSON) instead of params.yaml")
    llm.add_argument("--profile", default=None, help="a profile of params.yaml")
    llm.add_argument("--overrides", default=None, help="JSON merged over the params")
    llm.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    init_from_env()
    try:
        s = run_llm_stage(
            args.kind, args.data, args.retrieved, args.crm, args.out, _load_params(args),
            gate=args.gate, model_path=args.model_path, progress=not args.no_progress,
        )  # fmt: skip
        if is_main():
            print(json.dumps(s, default=str))
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
