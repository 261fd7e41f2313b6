"""Which floating-point precision the LLM runs in, chosen for the device it actually runs on.

``train.precision`` (params.yaml) is ``auto | fp32 | bf16 | fp16``; an older params file's
``train.bf16: true|false`` means ``bf16|fp32`` (see :func:`requested_precision`). ``auto`` picks:

    CUDA with native bf16 (compute capability >= 8.0)   bf16 autocast
    CUDA without it, with tensor cores (>= 7.0)         fp16 autocast (+ a gradient scaler in training)
    older CUDA devices                                  fp32
    CPU with native bf16 matmul (AMX or AVX512-BF16)    bf16 autocast
    any other CPU                                       fp32

On a CPU, torch's queries decide when they are conclusive: oneDNN without bf16 kernels (an
AVX2-only CPU, or ``ONEDNN_MAX_CPU_ISA`` below AVX-512) -> fp32; oneDNN bf16 with the AMX or
AVX512-BF16 instructions present -> bf16. ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is also
true on AVX-512 CPUs *without* native bf16 (Skylake-X, Cascade Lake: bf16 is converted in
software), and a limited ``ONEDNN_MAX_CPU_ISA`` hides what the flags say; there a short timed probe
(:func:`bf16_speedup_probe`: one small matmul in each precision, one thread, tens of ms, once per
process) decides: bf16 only when it is at least :data:`PROBE_MIN_SPEEDUP` times faster than fp32.

The choice is made once per process and device (cached) and said once on stderr. Everything that
runs the LLM takes it from here: training (and the frozen-layer cache key), prediction, the
diagnostics, the item embeddings, the benchmarks and the model server (which decides by its own
hardware, not by the precision recorded at training).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from reclora.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PROBE_MIN_SPEEDUP = 1.1  # bf16 must beat fp32 by this factor in the probe to be chosen where the queries cannot tell


@dataclass(frozen=True)
class Capabilities:
    """What torch reports about one device; replaced in tests to check the policy per kind of device.

    device: "cpu" or "cuda". cpu_capability: ``torch.backends.cpu.get_cpu_capability()`` ("AVX512",
    "AVX2", "DEFAULT", ...). mkldnn_bf16: oneDNN has bf16 kernels here (``_is_mkldnn_bf16_supported``;
    true on any AVX-512 CPU). native_bf16: the CPU has AMX-BF16 or AVX512-BF16 instructions.
    isa_limited: ``ONEDNN_MAX_CPU_ISA`` (or ``DNNL_MAX_CPU_ISA``) is set, so oneDNN may not use what
    the flags say. cuda_bf16: the GPU has native bf16 (``is_bf16_supported(including_emulation=False)``).
    cuda_capability: (major, minor).
    """

    device: str
    cpu_capability: str = ""
    mkldnn_bf16: bool = False
    native_bf16: bool = False
    isa_limited: bool = False
    cuda_bf16: bool = False
    cuda_capability: tuple[int, int] | None = None

    @classmethod
    def query(cls, device: torch.device | str) -> Capabilities:
        """The capabilities torch reports for ``device`` in this process."""
        dev = torch.device(device)
        if dev.type == "cuda":
            idx = dev.index if dev.index is not None else torch.cuda.current_device()
            return cls(
                device="cuda",
                cuda_capability=tuple(torch.cuda.get_device_capability(idx)),  # type: ignore[arg-type]
                cuda_bf16=bool(torch.cuda.is_bf16_supported(including_emulation=False)),
            )
        if dev.type != "cpu":
            return cls(device=dev.type)
        native = False
        for q in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
            fn = getattr(torch.cpu, q, None)
            native = native or bool(fn and fn())
        return cls(
            device="cpu",
            cpu_capability=str(torch.backends.cpu.get_cpu_capability()),
            mkldnn_bf16=bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
            native_bf16=native,
            isa_limited=bool(os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")),
        )


@dataclass(frozen=True)
class Precision:
    """A chosen precision: ``name`` (fp32 | bf16 | fp16) on ``device``, what was ``requested``
    (auto | fp32 | bf16 | fp16) and why (``reason``, one line)."""

    name: str
    requested: str
    device: str
    reason: str
    probe: dict[str, float] = field(default_factory=dict)

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype (None for fp32: no autocast)."""
        return DTYPES[self.name]

    def autocast(self, device: torch.device | str | None = None) -> Any:
        """``torch.autocast`` for this precision on ``device`` (default: the one it was chosen for);
        disabled for fp32."""
        dev = torch.device(device if device is not None else self.device).type
        if self.dtype is None:
            return torch.autocast(dev, enabled=False)
        return torch.autocast(dev, dtype=self.dtype)

    def grad_scaler(self, device: torch.device | str | None = None) -> torch.amp.GradScaler:
        """A gradient scaler for training: enabled for fp16 only (fp16's narrow range underflows small
        gradients; bf16 has fp32's range and needs none)."""
        dev = torch.device(device if device is not None else self.device).type
        return torch.amp.GradScaler(dev, enabled=self.name == "fp16")

    def as_dict(self) -> dict[str, Any]:
        """JSON-able record: {"chosen", "requested", "device", "reason"} (+ "probe" when one ran)."""
        d = {"chosen": self.name, "requested": self.requested, "device": self.device, "reason": self.reason}
        return d | ({"probe": dict(self.probe)} if self.probe else {})


def requested_precision(train: Mapping[str, Any] | None) -> str:
    """The precision a ``train`` params section asks for: ``precision`` (auto | fp32 | bf16 | fp16),
    default auto; an older file's ``bf16: true|false`` means bf16|fp32 where ``precision`` is absent
    or auto. Raises ConfigError for another value."""
    t = dict(train or {})
    p = t.get("precision", "auto")
    if p is None:
        p = "auto"
    if not isinstance(p, str) or p not in PRECISIONS:
        raise ConfigError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {p!r}")
    if p == "auto" and "bf16" in t:
        b = t["bf16"]
        if not isinstance(b, bool):
            raise ConfigError(f"train.bf16 (the older form of train.precision) must be true or false, got {b!r}")
        return "bf16" if b else "fp32"
    return p


def bf16_speedup_probe(m: int = 256, k: int = 512, n: int = 512, budget_s: float = 0.02) -> dict[str, float]:
    """Time one small linear layer ([m, k] fp32 input, [n, k] fp32 weight, as in the model) without
    autocast and under bf16 autocast on the CPU, on one thread, alternating, best of a few repetitions
    each within about ``budget_s`` seconds per precision (the first call of each, oneDNN's kernel
    creation, is not timed). Returns {"fp32_gflops", "bf16_gflops", "speedup"} (bf16 over fp32).
    Software bf16 runs several times slower than fp32; AMX or AVX512-BF16 several times faster."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g)
    ctx = {
        "fp32": lambda: torch.autocast("cpu", enabled=False),
        "bf16": lambda: torch.autocast("cpu", dtype=torch.bfloat16),
    }
    best = dict.fromkeys(ctx, float("inf"))
    spent = dict.fromkeys(ctx, 0.0)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for c in ctx.values():
                with c():
                    torch.nn.functional.linear(x, w)
            reps = 0
            while reps < 2 or (any(s < budget_s for s in spent.values()) and reps < 200):
                for name, c in ctx.items():
                    if reps >= 2 and spent[name] >= budget_s:
                        continue
                    with c():
                        t = time.perf_counter()
                        torch.nn.functional.linear(x, w)
                        dt = time.perf_counter() - t
                    spent[name] += dt
                    best[name] = min(best[name], dt)
                reps += 1
    finally:
        torch.set_num_threads(old)
    flops = 2.0 * m * k * n
    out = {f"{name}_gflops": round(flops / max(v, 1e-12) / 1e9, 3) for name, v in best.items()}
    out["speedup"] = round(best["fp32"] / max(best["bf16"], 1e-12), 3)
    return out


def decide(
    requested: str, caps: Capabilities, probe: Callable[[], Mapping[str, float]] = bf16_speedup_probe
) -> Precision:
    """The policy (no caching, no logging): ``requested`` on a device with ``caps``. ``probe`` is called
    only on a CPU where torch's queries are not conclusive (see the module docstring)."""
    if requested not in PRECISIONS:
        raise ConfigError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    dev = caps.device
    if requested != "auto":
        return Precision(requested, requested, dev, f"{requested} as set (train.precision)")
    if dev == "cuda":
        cc = ".".join(map(str, caps.cuda_capability)) if caps.cuda_capability else "?"
        if caps.cuda_bf16:
            return Precision("bf16", "auto", dev, f"CUDA device with native bf16 (compute capability {cc})")
        if caps.cuda_capability is not None and tuple(caps.cuda_capability) >= (7, 0):
            return Precision(
                "fp16",
                "auto",
                dev,
                f"CUDA device without native bf16 (compute capability {cc}): "
                "fp16 autocast, gradient scaler in training",
            )
        return Precision(
            "fp32", "auto", dev, f"CUDA device without bf16 or fp16 tensor cores (compute capability {cc})"
        )
    if dev != "cpu":
        return Precision("fp32", "auto", dev, f"device {dev}: no precision policy, fp32")
    isa = caps.cpu_capability or "?"
    if not caps.mkldnn_bf16:
        return Precision(
            "fp32",
            "auto",
            dev,
            f"CPU without bf16 matmul kernels (ATen {isa}, oneDNN bf16 unsupported): bf16 would be emulated",
        )
    if caps.native_bf16 and not caps.isa_limited:
        return Precision("bf16", "auto", dev, f"CPU with native bf16 matmul (AMX or AVX512-BF16; ATen {isa})")
    why = "ONEDNN_MAX_CPU_ISA is set" if caps.isa_limited else "AVX-512 without AMX or AVX512-BF16"
    r = dict(probe())
    s = float(r.get("speedup", 0.0))
    name = "bf16" if s >= PROBE_MIN_SPEEDUP else "fp32"
    return Precision(
        name,
        "auto",
        dev,
        f"CPU, {why}: bf16 matmul {s:.2f}x fp32's speed in a timed probe "
        f"({'>=' if name == 'bf16' else '<'} {PROBE_MIN_SPEEDUP}x)",
        r,
    )


_CHOSEN: dict[tuple[str, str], Precision] = {}


def choose(
    requested: str | Mapping[str, Any] | None = "auto", device: torch.device | str | None = None, log: bool = True
) -> Precision:
    """The precision to run the LLM in on ``device`` (default: this process's training device, see
    :func:`reclora.few2many.distributed.device`), for ``requested`` (a name, or a ``train`` params
    section, see :func:`requested_precision`). Decided once per process and device, and said once
    on stderr (``log``). Raises ConfigError for an unknown name."""
    req = requested_precision(requested) if isinstance(requested, Mapping) or requested is None else str(requested)
    if req not in PRECISIONS:
        raise ConfigError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {req!r}")
    if device is None:
        from reclora.few2many.distributed import device as default_device

        device = default_device()
    dev = torch.device(device)
    key = (req, f"{dev.type}:{dev.index if dev.index is not None else ''}")
    if key not in _CHOSEN:
        _CHOSEN[key] = p = decide(req, Capabilities.query(dev))
        if log:
            print(f"[reclora] precision {p.name} on {dev.type} ({p.reason})", file=sys.stderr, flush=True)
    return _CHOSEN[key]


def as_precision(p: Precision | str | Mapping[str, Any] | None, device: torch.device | str | None = None) -> Precision:
    """``p`` as a Precision: itself, or :func:`choose` of a name / params section on ``device``."""
    return p if isinstance(p, Precision) else choose(p, device)
