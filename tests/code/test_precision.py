"""The precision policy per kind of device (torch's capability queries replaced), its real answers on this
machine and under an AVX2-only oneDNN/ATen, and the once-per-process choice."""

import os
import subprocess
import sys

import pytest
import torch

from reclora import precision as P
from reclora.errors import ConfigError
from reclora.precision import Capabilities, decide


def _no_probe():
    raise AssertionError("the probe must not run where torch's queries are conclusive")


CUDA_A100 = Capabilities(device="cuda", cuda_bf16=True, cuda_capability=(8, 0))
CUDA_T4 = Capabilities(device="cuda", cuda_bf16=False, cuda_capability=(7, 5))
CUDA_P100 = Capabilities(device="cuda", cuda_bf16=False, cuda_capability=(6, 0))
CPU_AMX = Capabilities(device="cpu", cpu_capability="AVX512", mkldnn_bf16=True, native_bf16=True)
CPU_AVX2 = Capabilities(device="cpu", cpu_capability="AVX2", mkldnn_bf16=False, native_bf16=False)
CPU_SKYLAKE_X = Capabilities(device="cpu", cpu_capability="AVX512", mkldnn_bf16=True, native_bf16=False)


@pytest.mark.parametrize(
    "caps, want",
    [
        (CUDA_A100, "bf16"),  # native bf16
        (CUDA_T4, "fp16"),  # no bf16: fp16 autocast (+ a gradient scaler in training)
        (CUDA_P100, "fp32"),  # no tensor cores
        (CPU_AMX, "bf16"),  # AMX / AVX512-BF16
        (CPU_AVX2, "fp32"),  # bf16 would be emulated (AMD EPYC before Zen 4, Intel before Cooper Lake)
    ],
)
def test_auto_per_device_kind_from_the_queries(caps, want):
    p = decide("auto", caps, probe=_no_probe)
    assert (p.name, p.requested, p.device) == (want, "auto", caps.device)
    assert p.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[want]
    assert p.reason and not p.probe


def test_fp16_has_a_gradient_scaler_and_the_others_none():
    fp16 = decide("auto", CUDA_T4, probe=_no_probe)
    assert fp16.grad_scaler("cpu").is_enabled()  # the device it runs on here: torch has fp16 autocast on the CPU
    for caps in (CUDA_A100, CPU_AMX, CPU_AVX2):
        assert not decide("auto", caps, probe=_no_probe).grad_scaler("cpu").is_enabled()


def test_where_the_queries_are_not_conclusive_a_probe_decides():
    """AVX-512 without native bf16 (oneDNN says bf16 is supported: it converts in software), or a limited
    ONEDNN_MAX_CPU_ISA: the timed probe decides, bf16 only when clearly faster."""
    calls = []

    def probe(speedup):
        def f():
            calls.append(speedup)
            return {"fp32_gflops": 100.0, "bf16_gflops": 100.0 * speedup, "speedup": speedup}

        return f

    slow = decide("auto", CPU_SKYLAKE_X, probe=probe(0.3))
    fast = decide("auto", CPU_SKYLAKE_X, probe=probe(2.5))
    limited = decide(
        "auto", Capabilities(device="cpu", mkldnn_bf16=True, native_bf16=True, isa_limited=True), probe=probe(1.0)
    )
    assert calls == [0.3, 2.5, 1.0]
    assert (slow.name, fast.name, limited.name) == ("fp32", "bf16", "fp32")
    assert slow.probe["speedup"] == 0.3 and "probe" in slow.reason and "ONEDNN_MAX_CPU_ISA" in limited.reason
    edge = decide("auto", CPU_SKYLAKE_X, probe=probe(P.PROBE_MIN_SPEEDUP))
    assert edge.name == "bf16"


@pytest.mark.parametrize("req", ["fp32", "bf16", "fp16"])
def test_an_explicit_precision_is_used_as_set_on_every_device(req):
    for caps in (CUDA_A100, CUDA_T4, CPU_AMX, CPU_AVX2, CPU_SKYLAKE_X):
        p = decide(req, caps, probe=_no_probe)
        assert (p.name, p.requested) == (req, req)


def test_unknown_names_are_config_errors():
    with pytest.raises(ConfigError, match="train.precision"):
        decide("fp8", CPU_AMX)
    with pytest.raises(ConfigError, match="train.precision"):
        P.choose("half", "cpu")


def test_choose_decides_once_per_process_and_device_and_says_so_once(monkeypatch, capsys):
    monkeypatch.setattr(P, "_CHOSEN", {})
    asked = []

    def query(device):
        asked.append(str(device))
        return CPU_AVX2

    monkeypatch.setattr(Capabilities, "query", staticmethod(query))
    a = P.choose("auto", "cpu")
    b = P.choose({"precision": "auto"}, "cpu")  # a train params section
    c = P.choose({"bf16": True}, "cpu")  # an older file's key
    assert a is b and a.name == "fp32" and c.name == "bf16"
    assert asked == ["cpu", "cpu"]  # auto once, bf16 once
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "[reclora] precision fp32 on cpu (" + a.reason + ")",
        "[reclora] precision bf16 on cpu (" + c.reason + ")",
    ]


def test_autocast_follows_the_choice():
    x, w = torch.randn(4, 8), torch.randn(3, 8)
    for caps, dtype in ((CPU_AMX, torch.bfloat16), (CPU_AVX2, torch.float32)):
        p = decide("auto", caps, probe=_no_probe)
        with p.autocast("cpu"):
            assert torch.nn.functional.linear(x, w).dtype == dtype
    with decide("fp16", CPU_AVX2).autocast("cpu"):
        assert torch.nn.functional.linear(x, w).dtype == torch.float16


def test_the_real_queries_on_this_machine_agree_with_its_flags():
    from reclora.hardware import cpu_model

    caps = Capabilities.query("cpu")
    flags = set(cpu_model()[1])
    if os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("ATEN_CPU_CAPABILITY"):
        pytest.skip("the ISA is limited by the environment")
    assert caps.native_bf16 == bool(flags & {"amx_bf16", "avx512_bf16"})
    if "avx512f" not in flags:
        assert not caps.mkldnn_bf16  # oneDNN's bf16 kernels need AVX-512 at least
        assert P.decide("auto", caps, probe=_no_probe).name == "fp32"
    elif caps.native_bf16:
        assert P.decide("auto", caps, probe=_no_probe).name == "bf16"


def _auto_in(env_extra):
    code = (
        "from reclora.precision import choose; import json; p = choose('auto', 'cpu', log=False); "
        "print(json.dumps(p.as_dict()))"
    )
    env = dict(os.environ, **env_extra)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    import json

    return json.loads(out.stdout.strip().splitlines()[-1])


def test_an_avx2_only_cpu_gets_fp32():
    """ATen and oneDNN limited to AVX2 (what an AMD EPYC before Zen 4 has): oneDNN has no bf16 kernels, so
    auto is fp32 without a probe, on any x86-64 CPU this runs on."""
    from reclora.hardware import cpu_model

    if "avx2" not in cpu_model()[1]:
        pytest.skip("not an AVX2 CPU")
    got = _auto_in({"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"})
    assert got["chosen"] == "fp32" and "probe" not in got and "oneDNN bf16 unsupported" in got["reason"]


def test_the_probe_runs_for_real_where_oneDNN_is_limited_below_native_bf16():
    """ONEDNN_MAX_CPU_ISA=AVX512_CORE on an AVX-512 CPU is a Skylake-X as oneDNN sees it: bf16 'supported'
    in software, so the timed probe decides (its outcome is a speed, not asserted; that it ran and was
    recorded is)."""
    from reclora.hardware import cpu_model

    if "avx512f" not in cpu_model()[1]:
        pytest.skip("not an AVX-512 CPU")
    got = _auto_in({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"})
    assert got["probe"]["fp32_gflops"] > 0 and got["probe"]["bf16_gflops"] > 0
    assert got["chosen"] == ("bf16" if got["probe"]["speedup"] >= P.PROBE_MIN_SPEEDUP else "fp32")


def test_serve_refuses_an_unknown_precision(monkeypatch, capsys, tmp_path):
    from reclora.cli.common import run_cli
    from reclora.cli.main import app
    from reclora.hardware import THREAD_VARS

    for k in THREAD_VARS:  # run_cli sets the process up: restored after
        monkeypatch.delenv(k, raising=False)
    n = torch.get_num_threads()
    try:
        assert run_cli(app, ["serve", "--model", str(tmp_path), "--precision", "fp8"], prog_name="reclora") == 2
        assert (
            run_cli(app, ["serve", "--model", str(tmp_path), "--set", "train.precision=half"], prog_name="reclora") == 2
        )
    finally:
        from reclora.config import set_cli_overrides

        set_cli_overrides(None)  # the --set items live for the process: none for the next test
        torch.set_num_threads(n)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: --precision must be one of auto, fp32, bf16, fp16, got 'fp8'"
    assert err[1] == "error: train.precision must be one of auto, fp32, bf16, fp16, got 'half'"
