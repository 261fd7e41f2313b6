"""Threads from the CPU quota (fake cgroup v1/v2 files), the GPU check, what is recorded of the hardware,
and that every entry point sets the process up."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reclora import hardware as H
from reclora.errors import RecLoRAError


def _v2(root: Path, rel: str, limits: dict[str, str]) -> Path:
    """A fake cgroup v2 tree: cpu.max per relative directory; returns a fake /proc/self/cgroup."""
    (root / "cgroup.controllers").parent.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpu memory\n")
    for d, v in limits.items():
        (root / d).mkdir(parents=True, exist_ok=True)
        (root / d / "cpu.max").write_text(v + "\n")
    proc = root.parent / "proc-cgroup"
    proc.write_text(f"0::{rel}\n")
    return proc


def test_cgroup_v2_cpu_max_in_a_container(tmp_path):
    root = tmp_path / "cg"
    proc = _v2(root, "/", {".": "150000 100000"})  # a pod limited to 1.5 CPUs, cgroup namespace: "/"
    assert H.cpu_quota(root, proc) == 1.5
    (root / "cpu.max").write_text("max 100000\n")
    assert H.cpu_quota(root, proc) is None  # no limit


def test_cgroup_v2_the_smallest_limit_along_the_ancestors(tmp_path):
    root = tmp_path / "cg"
    proc = _v2(
        root,
        "/kubepods/pod1/ctr",
        {"kubepods": "800000 100000", "kubepods/pod1": "200000 100000", "kubepods/pod1/ctr": "max 100000"},
    )
    assert H.cpu_quota(root, proc) == 2.0


def test_cgroup_v1_cfs_quota(tmp_path):
    root = tmp_path / "cg"
    d = root / "cpu,cpuacct" / "docker" / "abc"
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text("300000\n")
    (d / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n")
    assert H.cpu_quota(root, proc) == 3.0
    (d / "cpu.cfs_quota_us").write_text("-1\n")  # unlimited
    assert H.cpu_quota(root, proc) is None


def test_no_cgroup_files_no_quota(tmp_path):
    assert H.cpu_quota(tmp_path / "none", tmp_path / "none-proc") is None


@pytest.fixture()
def restore_threads(monkeypatch):
    n = torch.get_num_threads()
    for k in (*H.THREAD_VARS, H.THREADS_ENV, "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    yield
    torch.set_num_threads(n)


def test_threads_follow_the_quota_not_the_node(tmp_path, monkeypatch, restore_threads):
    """A 64-core node, a container limited to 2.5 CPUs: 2 threads, torch's and OMP/MKL's; shared by 2 ranks: 1."""
    root = tmp_path / "cg"
    proc = _v2(root, "/", {".": "250000 100000"})
    monkeypatch.setattr(H, "affinity_cpus", lambda: 64)
    assert H.available_cpus(root, proc) == 2
    assert H.configure_threads(root=root, proc_cgroup=proc) == 2
    assert torch.get_num_threads() == 2 and all(os.environ[k] == "2" for k in H.THREAD_VARS)
    assert H.thread_count(root=root, proc_cgroup=proc) == (2, "cgroup CPU quota 2.5")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun's ranks on this node share the quota
    assert H.configure_threads(root=root, proc_cgroup=proc) == 1 and torch.get_num_threads() == 1
    # below one CPU: still one thread; no quota: the affinity set
    (root / "cpu.max").write_text("50000 100000\n")
    assert H.thread_count(ranks=1, root=root, proc_cgroup=proc)[0] == 1
    (root / "cpu.max").write_text("max 100000\n")
    assert H.thread_count(ranks=1, root=root, proc_cgroup=proc) == (64, "CPU affinity (64)")
    assert H.thread_count(ranks=3, root=root, proc_cgroup=proc)[0] == 21


def test_an_explicit_thread_count_wins(tmp_path, monkeypatch, restore_threads):
    root = tmp_path / "cg"
    proc = _v2(root, "/", {".": "200000 100000"})
    monkeypatch.setenv(H.THREADS_ENV, "1")
    assert H.configure_threads(root=root, proc_cgroup=proc) == 1 and torch.get_num_threads() == 1
    for bad in ("0", "two", "-3"):
        monkeypatch.setenv(H.THREADS_ENV, bad)
        with pytest.raises(RecLoRAError, match=H.THREADS_ENV):
            H.thread_count(root=root, proc_cgroup=proc)


def test_local_ranks_share_the_quota(tmp_path, monkeypatch, restore_threads):
    """reclora.launch's local ranks get the per-rank share in OMP_NUM_THREADS/MKL_NUM_THREADS."""
    from reclora import launch

    monkeypatch.setattr(H, "_cpus", lambda *a: (4, "test"))
    script = tmp_path / "w.py"
    script.write_text(
        "import os, sys\nopen(sys.argv[1] + '/' + os.environ['RANK'], 'w').write("
        "os.environ['OMP_NUM_THREADS'] + ' ' + os.environ['MKL_NUM_THREADS'])\n"
    )
    launch.launch(2, [str(script), str(tmp_path)], module=None, local=True, timeout=60)
    assert (tmp_path / "0").read_text() == (tmp_path / "1").read_text() == "2 2"


def test_a_gpu_step_without_cuda_fails_naming_the_versions():
    given = {"NVIDIA_VISIBLE_DEVICES": "GPU-3f2a"}
    with pytest.raises(H.GPUUnavailable) as e:
        H.check_gpu(given, cuda_available=False, driver="535.104.05 (CUDA <= 12.2)")
    msg = str(e.value)
    assert "NVIDIA_VISIBLE_DEVICES=GPU-3f2a" in msg and "535.104.05 (CUDA <= 12.2)" in msg and torch.__version__ in msg
    assert (f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build") in msg
    for none in (
        {},
        {"NVIDIA_VISIBLE_DEVICES": ""},
        {"NVIDIA_VISIBLE_DEVICES": "void"},
        {"NVIDIA_VISIBLE_DEVICES": "none"},
    ):
        H.check_gpu(none, cuda_available=False)  # not given a GPU: nothing to check
    H.check_gpu(given, cuda_available=True)  # torch sees it: fine


def test_driver_version_from_the_proc_file(tmp_path):
    f = tmp_path / "version"
    f.write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n"
        "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
    )
    assert H.nvidia_driver_version(f).startswith("535.104.05")
    missing = H.nvidia_driver_version(tmp_path / "missing")  # no driver here (else libcuda's CUDA version alone)
    assert missing is None or missing.startswith("unknown (CUDA <= ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_the_cli_stops_at_once_when_given_a_gpu_torch_cannot_see():
    env = dict(os.environ, NVIDIA_VISIBLE_DEVICES="0")
    r = subprocess.run(
        [str(Path(sys.executable).parent / "reclora"), "model", "info"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and r.stdout == ""
    assert (
        r.stderr.startswith("error: this step was given a GPU (NVIDIA_VISIBLE_DEVICES=0)")
        and "NVIDIA driver" in r.stderr
    )


def test_hardware_info_records_what_ran(restore_threads):
    torch.set_num_threads(1)
    hw = H.hardware_info()
    json.dumps(hw)
    model, flags = H.cpu_model()
    assert hw["cpu"]["model"] == model and hw["cpu"]["flags"] == flags and hw["threads"] == 1
    assert hw["torch"] == torch.__version__ and hw["cuda"] == torch.version.cuda
    assert hw["cpu"]["aten_capability"] == torch.backends.cpu.get_cpu_capability()
    assert hw["gpus"] == [] or all({"name", "capability"} <= set(g) for g in hw["gpus"])


def test_cpu_flags_from_cpuinfo(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse avx avx2 fma\n\n"
        "processor\t: 1\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse avx avx2 fma\n"
    )
    assert H.cpu_model(f) == ("AMD EPYC 7B12", ["avx2", "fma"])


def test_every_entry_point_sets_the_process_up():
    """The CLI (run_cli), the torchrun worker and the first statement of every KFP component body."""
    repo = Path(__file__).resolve().parents[2]
    for f in sorted((repo / "components").glob("*/component.py")):
        tree = ast.parse(f.read_text())
        fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef))
        body = [n for n in fn.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        imp, call = body[0], body[1]
        assert isinstance(imp, ast.ImportFrom) and imp.module == "reclora.hardware", f
        assert isinstance(call, ast.Expr) and ast.unparse(call) == "setup_process()", f


class _SetUp(Exception):
    pass


def test_the_cli_and_the_torchrun_worker_set_the_process_up_first(monkeypatch):
    from reclora import launch
    from reclora.cli.common import run_cli
    from reclora.cli.main import app

    def setup(ranks=None):
        raise _SetUp()

    monkeypatch.setattr(H, "setup_process", setup)
    with pytest.raises(_SetUp):  # before any stage runs
        launch.main(["llm", "--kind", "lora", "--data", "d", "--retrieved", "r", "--out", "o"])
    monkeypatch.setattr(H, "setup_process", lambda ranks=None: (_ for _ in ()).throw(H.GPUUnavailable("given a GPU")))
    assert run_cli(app, ["model", "info"], prog_name="reclora") == 2  # the check's error: one line, exit 2


def test_the_model_card_says_what_the_adapter_was_trained_on():
    from reclora.registry.card import render_model_card

    runtime = {
        "precision": {"chosen": "fp32", "requested": "auto", "device": "cpu", "reason": "CPU without bf16 matmul"},
        "hardware": {
            "cpu": {"model": "AMD EPYC 7B12", "flags": ["avx2", "fma"], "aten_capability": "AVX2"},
            "threads": 2,
            "threads_source": "cgroup CPU quota 2",
            "torch": "2.13.0",
            "cuda": None,
            "gpus": [],
        },
    }
    card = render_model_card({"name": "reclora", "version": "v0007", "runtime": runtime})
    assert "## Training hardware and precision" in card
    assert "| precision | fp32 (requested auto: CPU without bf16 matmul) |" in card
    assert "AMD EPYC 7B12; flags avx2, fma; ATen AVX2" in card and "| threads | 2 (cgroup CPU quota 2) |" in card
    assert "| GPU | none |" in card
    assert "Training hardware" not in render_model_card({"name": "reclora", "version": "v0001"})  # older versions
