r"""Launching data-parallel ranks of the LLM stage, and the torchrun entry point (``python -m reclora.launch``).

This module sits above :mod:`reclora.stages`; the low-level rank/device/collective helpers the
trainer uses are in :mod:`reclora.few2many.distributed`.

Launch N ranks of the LLM stage on one node (N GPUs with NCCL, else N CPU processes with gloo)::

    python -m torch.distributed.run --standalone --nnodes 1 --nproc_per_node N \
        -m reclora.launch llm --kind reclora --data D --retrieved R --crm C --out O

which is what ``launch(N, ["llm", ...])`` runs (``command`` builds it). ``launch(..., local=True)``
starts the ranks itself with a rendezvous store bound to 127.0.0.1 only (torchrun's binds all
interfaces): what :func:`train_llm` (the pipeline's training step) uses for the ranks of its own
pod, and what tests and CPU runs on a shared machine use. Across nodes, a Kubeflow Trainer
TrainJob runs ``torchrun -m reclora.launch llm ...`` on every node (:mod:`reclora.trainjob`); then
``--data``/``--retrieved``/``--crm``/``--out`` may be object-store URIs.
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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist

from reclora.config import Params, as_params
from reclora.few2many.distributed import barrier, init_from_env, is_main, shutdown

WORKER_MODULE = "reclora.launch"


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
    nproc: int,
    args: Sequence[str],
    module: str | None,
    env: dict[str, str],
    timeout: float | None,
    log_dir: str | Path | None,
    check: bool,
) -> int:
    if nproc < 1:
        raise ValueError("nproc must be >= 1")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    # the store owns (and closes) the pre-bound socket: it listens on loopback only
    store = dist.TCPStore(
        "127.0.0.1",
        port,
        world_size=nproc,
        is_master=True,
        wait_for_workers=False,
        timeout=datetime.timedelta(seconds=timeout or 1800),
        master_listen_fd=sock.detach(),
        use_libuv=True,
    )
    logs = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="reclora-dist-"))
    logs.mkdir(parents=True, exist_ok=True)
    base = {
        **env,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": str(nproc),
        "LOCAL_WORLD_SIZE": str(nproc),
        "GROUP_RANK": "0",
        "TORCHELASTIC_USE_AGENT_STORE": "True",
    }
    base.setdefault("GLOO_SOCKET_IFNAME", "lo")
    from reclora.hardware import THREAD_VARS, thread_count

    per_rank = str(thread_count(ranks=nproc)[0])  # the CPU quota shared by the ranks (a worker sets its own too)
    base.update(dict.fromkeys(THREAD_VARS, per_rank))
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
def _localize(src: str | Path | None, tmp: Path, name: str) -> str | None:
    """A local directory for ``src``: itself when local, else downloaded from the object store into ``tmp/name``."""
    from reclora import storage

    if src is None or not storage.is_remote(str(src)):
        return None if src is None else str(src)
    return str(storage.download_dir(str(src), tmp / name))


def run_llm_stage(
    kind: str,
    data_dir: str | Path,
    retrieved_dir: str | Path,
    crm_dir: str | Path | None,
    out_dir: str | Path,
    params: Params | Mapping[str, Any],
    gate: str = "crm",
    model_path: str | None = None,
    progress: bool = True,
    checkpoint_uri: str | None = None,
    feature_store: str | Path | None = None,
) -> dict[str, Any]:
    """``reclora.stages.llm_stage`` on every rank of the process group (data-parallel training).

    Every rank trains (and loads the checkpoint when resuming); only rank 0 writes ``out_dir``.
    Inputs and ``out_dir`` may be fsspec URIs (a TrainJob node has no pipeline volume): inputs
    are downloaded per rank, the output is written locally and uploaded by rank 0. ``params``: the run's
    params (a :class:`~reclora.config.Params` or its mapping); ``feature_store``: the features stage's output.
    """
    from reclora import storage
    from reclora.stages import llm_stage

    init_from_env()
    with tempfile.TemporaryDirectory(prefix="reclora-rank-") as t:
        tmp = Path(t)
        data, ret = _localize(data_dir, tmp, "data"), _localize(retrieved_dir, tmp, "retrieved")
        crm = _localize(crm_dir, tmp, "crm")
        store = _localize(feature_store, tmp, "feature_store")
        model_path = storage.fetch_model(model_path)
        out = tmp / "out" / "adapter" if storage.is_remote(str(out_dir)) else Path(out_dir)
        # llm_stage writes its output on rank 0 only and holds the other ranks at a barrier
        summary = llm_stage(
            kind,
            data,
            ret,
            crm,
            out,
            params,
            gate=gate,
            model_path=model_path,
            progress=progress and is_main(),
            checkpoint_uri=checkpoint_uri,
            feature_store=store,
        )
        if is_main() and out != Path(out_dir):
            storage.upload_dir(out, str(out_dir))
        barrier()
    return summary


def train_llm(
    nproc: int,
    kind: str,
    data_dir: str | Path,
    retrieved_dir: str | Path,
    crm_dir: str | Path | None,
    out_dir: str | Path,
    params: Params | Mapping[str, Any],
    gate: str = "crm",
    model_path: str | None = None,
    checkpoint_uri: str | None = None,
    progress: bool = False,
    timeout: float | None = None,
    feature_store: str | Path | None = None,
) -> dict[str, Any]:
    """The LLM stage with ``nproc`` data-parallel ranks on this node; returns rank 0's summary.

    ``nproc`` <= 1: in this process. Otherwise ``nproc`` worker processes (one per GPU with NCCL,
    CPU processes with gloo) through :func:`launch` with a loopback rendezvous, handed ``params`` (a
    :class:`~reclora.config.Params` or its mapping) as a JSON file; their output is
    identical to one process training the same global batches. Raises RuntimeError (with the
    ranks' log tails) when a rank fails.
    """
    from reclora.storage import fetch_model

    params = as_params(params)
    model_path = fetch_model(model_path)  # a model in a bucket: downloaded once, before any rank starts
    if int(nproc) <= 1:
        from reclora.stages import llm_stage

        return llm_stage(
            kind,
            data_dir,
            retrieved_dir,
            crm_dir,
            out_dir,
            params,
            gate=gate,
            model_path=model_path,
            progress=progress,
            checkpoint_uri=checkpoint_uri,
            feature_store=feature_store,
        )
    with tempfile.TemporaryDirectory(prefix="reclora-launch-") as t:
        pfile, sfile = Path(t) / "params.json", Path(t) / "summary.json"
        pfile.write_text(json.dumps(params.to_dict(), default=str))
        args = [
            "llm",
            "--kind",
            kind,
            "--data",
            str(data_dir),
            "--retrieved",
            str(retrieved_dir),
            "--out",
            str(out_dir),
            "--gate",
            gate,
            "--params",
            str(pfile),
            "--summary",
            str(sfile),
        ]
        if crm_dir is not None:
            args += ["--crm", str(crm_dir)]
        if model_path:
            args += ["--model-path", str(model_path)]
        if feature_store is not None:
            args += ["--feature-store", str(feature_store)]
        if checkpoint_uri:
            args += ["--checkpoint-uri", checkpoint_uri]
        if not progress:
            args.append("--no-progress")
        launch(int(nproc), args, local=True, timeout=timeout)
        return json.loads(sfile.read_text())


def _load_params(args: argparse.Namespace) -> dict[str, Any]:
    """The rank's params, loaded once here and checked (:func:`reclora.config.validated`): ``--params`` (the
    whole params as JSON, as :func:`train_llm` writes them, or a YAML params file merged over the packaged
    defaults as every ``--params`` is) or params.yaml with ``--profile``, then ``--overrides`` (JSON).
    Raises ConfigError naming the key of a bad one."""
    from reclora.config import deep_merge, load_params, load_params_with, validated
    from reclora.io import loads_json

    overrides = loads_json(args.overrides) if args.overrides else None
    if args.params:
        if args.params.endswith(".json"):
            base = loads_json(Path(args.params).read_text())
        else:
            base = load_params(args.params)
        return validated(deep_merge(base, overrides))
    return validated(load_params_with(overrides, args.profile))


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m reclora.launch``."""
    ap = argparse.ArgumentParser(prog=f"python -m {WORKER_MODULE}", description="one rank of data-parallel training")
    sub = ap.add_subparsers(dest="cmd", required=True)
    llm = sub.add_parser("llm", help="the LLM stage (Few2Many LoRA / RecLoRA)")
    llm.add_argument("--kind", required=True, choices=["lora", "reclora"])
    llm.add_argument("--data", required=True, help="prepared data directory (or object-store URI)")
    llm.add_argument("--retrieved", required=True, help="retrieve stage output (or object-store URI)")
    llm.add_argument("--crm", default=None, help="CRM stage output (RecLoRA; or object-store URI)")
    llm.add_argument("--out", required=True, help="output directory or object-store URI (written by rank 0)")
    llm.add_argument("--gate", default="crm")
    llm.add_argument("--feature-store", default=None, help="features stage output (Feast; or object-store URI)")
    llm.add_argument("--features", dest="feature_store", default=None, help=argparse.SUPPRESS)  # its old name
    llm.add_argument("--model-path", default=None)
    llm.add_argument("--params", default=None, help="a params file (YAML or JSON) instead of params.yaml")
    llm.add_argument("--profile", default=None, help="a profile of params.yaml")
    llm.add_argument("--overrides", default=None, help="JSON merged over the params")
    llm.add_argument("--checkpoint-uri", default=None, help="fsspec URI the checkpoints are mirrored to (resume)")
    llm.add_argument("--summary", default=None, help="also write rank 0's summary JSON to this file")
    llm.add_argument("--no-progress", action="store_true")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m reclora.launch llm ...``: one rank of data-parallel LLM training (under torchrun).
    Its threads: the CPU quota shared by the ranks of this node (``LOCAL_WORLD_SIZE``)."""
    from reclora.hardware import setup_process

    args = parser().parse_args(argv)
    setup_process()
    params = _load_params(args)  # checked before the process group forms
    init_from_env()
    try:
        s = run_llm_stage(
            args.kind,
            args.data,
            args.retrieved,
            args.crm,
            args.out,
            params,
            gate=args.gate,
            model_path=args.model_path,
            progress=not args.no_progress,
            checkpoint_uri=args.checkpoint_uri,
            feature_store=args.feature_store,
        )
        if is_main():
            print(json.dumps(s, default=str))
            if args.summary:
                Path(args.summary).write_text(json.dumps(s, default=str))
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
