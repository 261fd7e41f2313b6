"""The machine a step runs on: its CPU quota and thread count, what it records of the hardware, and
the check that a step given a GPU can use it.

    cpu_quota(root)          CPUs the container may use: cgroup v2 ``cpu.max``, else v1
                             ``cpu.cfs_quota_us / cpu.cfs_period_us`` (None = no limit)
    available_cpus(root)     min(quota rounded down, at least 1; the CPU affinity set)
    configure_threads()      torch's intra-op threads (and OMP/MKL for what starts later) from that,
                             shared among the ranks on this node; every entry point calls it
                             (through :func:`setup_process`)
    hardware_info()          CPU model and flags, threads, GPUs: what summaries and bench JSON record
    check_gpu()              a step given a GPU (``NVIDIA_VISIBLE_DEVICES``) where torch sees no CUDA
                             device fails at once, naming the driver and CUDA versions

Without a quota torch would start one thread per core of the *node* (64 or more on a large node)
inside a container limited to 2 CPUs, and the quota then throttles them. ``RECLORA_THREADS=N``
sets the count explicitly (it wins over the quota; ``reclora serve --threads`` too).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

from reclora.errors import RecLoRAError

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
THREADS_ENV = "RECLORA_THREADS"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_fp16", "fma")


class GPUUnavailable(RecLoRAError):
    """A step was given a GPU but torch cannot use it."""


# ------------------------------------------------------------------ CPU quota
def _cgroup_paths(proc_cgroup: Path) -> dict[str, str]:
    """{controller (or "" for cgroup v2): path} from /proc/self/cgroup ("N:ctrl1,ctrl2:/path" lines)."""
    out: dict[str, str] = {}
    try:
        text = proc_cgroup.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, ctrls, path = parts
        for c in ctrls.split(",") if ctrls else [""]:
            out[c] = path
    return out


def _ancestors(root: Path, rel: str) -> list[Path]:
    """root/rel and each of its parents up to root (a limit on any of them applies)."""
    parts = [p for p in rel.strip("/").split("/") if p and p != ".."]
    return [root.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _read(f: Path) -> str | None:
    try:
        return f.read_text().strip()
    except OSError:
        return None


def cpu_quota(
    root: str | os.PathLike[str] = CGROUP_ROOT, proc_cgroup: str | os.PathLike[str] = PROC_CGROUP
) -> float | None:
    """The CPU limit of this process's cgroup in CPUs (e.g. 2.0 for ``cpu.max`` = "200000 100000"),
    the smallest along its ancestors; None when there is none ("max", -1) or no cgroup file is readable.

    cgroup v2: ``<root>/<path>/cpu.max``; v1: ``<root>/cpu,cpuacct/<path>/cpu.cfs_quota_us`` and
    ``cpu.cfs_period_us`` (also under ``cpu/``). ``<path>`` comes from ``proc_cgroup``
    (/proc/self/cgroup); inside a container's cgroup namespace it is "/", so ``root`` itself is read.
    """
    root, paths = Path(root), _cgroup_paths(Path(proc_cgroup))
    limits: list[float] = []
    if (root / "cgroup.controllers").exists() or (root / "cpu.max").exists() or "" in paths:
        for d in _ancestors(root, paths.get("", "/")):
            v = _read(d / "cpu.max")
            if not v:
                continue
            quota, _, period = v.partition(" ")
            if quota != "max":
                try:
                    q, p = float(quota), float(period or 100000)
                except ValueError:
                    continue
                if q > 0 and p > 0:
                    limits.append(q / p)
    if not limits:  # cgroup v1
        rel = paths.get("cpu", paths.get("cpuacct", "/"))
        for mount in ("cpu,cpuacct", "cpu", "cpuacct,cpu"):
            base = root / mount
            if not base.is_dir():
                continue
            for d in _ancestors(base, rel):
                q, p = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
                try:
                    qf, pf = float(q or -1), float(p or 0)
                except ValueError:
                    continue
                if qf > 0 and pf > 0:
                    limits.append(qf / pf)
            break
    return min(limits) if limits else None


def affinity_cpus() -> int:
    """CPUs this process may run on (its affinity set; os.cpu_count() where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpus(root: str | os.PathLike[str], proc_cgroup: str | os.PathLike[str]) -> tuple[int, str]:
    aff = affinity_cpus()
    q = cpu_quota(root, proc_cgroup)
    if q is not None and max(1, math.floor(q + 1e-9)) < aff:
        return max(1, math.floor(q + 1e-9)), f"cgroup CPU quota {q:g}"
    return aff, f"CPU affinity ({aff})"


def available_cpus(
    root: str | os.PathLike[str] = CGROUP_ROOT, proc_cgroup: str | os.PathLike[str] = PROC_CGROUP
) -> int:
    """CPUs this process can keep busy: the cgroup quota rounded down (at least 1), capped by the affinity set."""
    return _cpus(root, proc_cgroup)[0]


_THREADS: dict[str, Any] = {}


def thread_count(
    ranks: int | None = None,
    root: str | os.PathLike[str] = CGROUP_ROOT,
    proc_cgroup: str | os.PathLike[str] = PROC_CGROUP,
) -> tuple[int, str]:
    """(threads per process, where the number came from): ``RECLORA_THREADS`` if set, else the CPUs
    available (:func:`available_cpus`) shared among ``ranks`` processes on this node (default: torchrun's
    ``LOCAL_WORLD_SIZE``, else 1), at least 1. Raises RecLoRAError for a bad ``RECLORA_THREADS``."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if raw:
        try:
            n = int(raw)
        except ValueError:
            n = 0
        if n < 1:
            raise RecLoRAError(f"{THREADS_ENV} must be a positive integer, got {raw!r}")
        return n, THREADS_ENV
    if ranks is None:
        try:
            ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        except ValueError:
            ranks = 1
    cpus, src = _cpus(root, proc_cgroup)
    if ranks > 1:
        src += f" / {ranks} ranks"
    return max(1, cpus // ranks), src


def configure_threads(
    ranks: int | None = None,
    root: str | os.PathLike[str] = CGROUP_ROOT,
    proc_cgroup: str | os.PathLike[str] = PROC_CGROUP,
) -> int:
    """Set this process's threads from :func:`thread_count`: torch's intra-op threads when torch is
    imported (else it reads ``OMP_NUM_THREADS`` when it is), and ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``,
    ``OPENBLAS_NUM_THREADS`` for this process's libraries and the processes it starts. Returns the count."""
    n, src = thread_count(ranks, root, proc_cgroup)
    for k in THREAD_VARS:
        os.environ[k] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(n)
    _THREADS.update(threads=n, source=src)
    return n


def setup_process(ranks: int | None = None) -> int:
    """What every entry point (the CLI, each KFP component, the model server, a torchrun worker) does
    first: threads from the CPU quota (:func:`configure_threads`) and, where the step was given a GPU,
    the check that torch can use it (:func:`check_gpu`). Returns the thread count."""
    n = configure_threads(ranks)
    check_gpu()
    return n


# ------------------------------------------------------------------ GPU
def gpu_requested(env: dict[str, str] | None = None) -> str | None:
    """The devices a container was given (``NVIDIA_VISIBLE_DEVICES``: "all", indexes or UUIDs), or None
    when it was given none (unset, "", "void", "none")."""
    v = (env if env is not None else os.environ).get("NVIDIA_VISIBLE_DEVICES", "").strip()
    return None if v.lower() in ("", "void", "none") else v


def nvidia_driver_version(proc_file: str | os.PathLike[str] = "/proc/driver/nvidia/version") -> str | None:
    """The NVIDIA kernel driver version (e.g. "535.104.05"), with the highest CUDA version it supports
    when libcuda can be loaded ("535.104.05 (CUDA <= 12.2)"); None when no driver is visible."""
    ver = None
    text = _read(Path(proc_file))
    if text:
        for tok in text.split():
            if tok.count(".") >= 1 and tok.replace(".", "").isdigit():
                ver = tok
                break
    cuda = None
    try:
        import ctypes

        lib = ctypes.CDLL("libcuda.so.1")
        v = ctypes.c_int(0)
        if lib.cuDriverGetVersion(ctypes.byref(v)) == 0 and v.value:
            cuda = f"{v.value // 1000}.{(v.value % 1000) // 10}"
    except (OSError, AttributeError):
        pass
    if ver is None and cuda is None:
        return None
    return f"{ver or 'unknown'}" + (f" (CUDA <= {cuda})" if cuda else "")


def check_gpu(env: dict[str, str] | None = None, cuda_available: bool | None = None, driver: str | None = None) -> None:
    """Raise GPUUnavailable when the container was given a GPU (:func:`gpu_requested`) but torch sees no
    CUDA device (a driver older than the image's CUDA build, a CPU build of torch, no device plugin):
    training would otherwise go on quietly on the CPU. The message names the driver and CUDA versions.
    ``cuda_available``/``driver`` replace torch's answer and the driver lookup (tests)."""
    given = gpu_requested(env)
    if given is None:
        return
    import torch

    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if cuda_available:
        return
    drv = driver if driver is not None else nvidia_driver_version()
    built = torch.version.cuda
    build = (
        f"torch {torch.__version__} built for CUDA {built}"
        if built
        else f"torch {torch.__version__} is a CPU-only build"
    )
    raise GPUUnavailable(
        f"this step was given a GPU (NVIDIA_VISIBLE_DEVICES={given}) but torch sees no CUDA device: "
        f"NVIDIA driver {drv or 'not found in the container'}; {build}. Use a node whose driver supports "
        f"that CUDA version (or an image built for the driver's), or run the step without a GPU."
    )


# ------------------------------------------------------------------ what ran
def cpu_model(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> tuple[str, list[str]]:
    """(CPU model name, the flags of :data:`CPU_FLAGS` it has) from /proc/cpuinfo; the platform's
    processor string and no flags elsewhere."""
    import platform

    text = _read(Path(cpuinfo)) or ""
    name, flags = "", set()
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key = key.strip()
        if key == "model name" and not name:
            name = val.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(val.split())
    return name or platform.processor() or platform.machine(), [f for f in CPU_FLAGS if f in flags]


def hardware_info() -> dict[str, Any]:
    """What ran: {"cpu": {"model", "flags" (of CPU_FLAGS), "aten_capability", "logical_cpus",
    "affinity_cpus", "cgroup_quota"}, "threads", "threads_source", "isa_env" (ATEN_CPU_CAPABILITY,
    ONEDNN_MAX_CPU_ISA, ... when set), "torch", "cuda" (the build's, or None), "gpus": [{"name",
    "capability", "memory_gb"}] (empty without CUDA)}."""
    import torch

    model, flags = cpu_model()
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            prop = torch.cuda.get_device_properties(i)
            gpus.append(
                {
                    "name": prop.name,
                    "capability": f"{prop.major}.{prop.minor}",
                    "memory_gb": round(prop.total_memory / 1024**3, 1),
                }
            )
    isa_env = {
        k: os.environ[k]
        for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
        if os.environ.get(k)
    }
    return {
        "cpu": {
            "model": model,
            "flags": flags,
            "aten_capability": str(torch.backends.cpu.get_cpu_capability()),
            "logical_cpus": os.cpu_count(),
            "affinity_cpus": affinity_cpus(),
            "cgroup_quota": cpu_quota(),
        },
        "threads": torch.get_num_threads(),
        "threads_source": _THREADS.get("source", "torch default"),
        **({"isa_env": isa_env} if isa_env else {}),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpus": gpus,
    }
