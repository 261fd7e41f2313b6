"""Real DVC: `dvc repro` runs the data stages, `dvc status` is clean, push/pull through a local remote."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reclora.data import dvc_hash

pytestmark = pytest.mark.slow


def _run(cmd, cwd, env, ok=True):
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if ok and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture()
def dvc_repo(repo, tmp_path):
    """A fresh git+dvc repository holding this project's dvc.yaml, params.yaml and sources."""
    work = tmp_path / "work"
    work.mkdir()
    for f in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(repo / f, work / f)
    shutil.copytree(repo / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(repo / "data" / "raw", work / "data" / "raw")  # the raw-data dependency (README only)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["synthetic"].update(n_users=80, n_items=120)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", DVC_NO_ANALYTICS="1")
    env.pop("RECLORA_PARAMS", None)
    dvc = str(Path(sys.executable).parent / "dvc")
    _run(["git", "init", "-q"], work, env)
    _run(["git", "config", "user.email", "ci@example.invalid"], work, env)
    _run(["git", "config", "user.name", "ci"], work, env)
    _run([dvc, "init", "-q"], work, env)
    _run([dvc, "remote", "add", "-d", "local", str(tmp_path / "remote")], work, env)
    return work, env, dvc


def test_repro_then_status_clean_push_pull(dvc_repo, tmp_path):
    work, env, dvc = dvc_repo
    out = _run([dvc, "repro"], work, env)
    assert "Running stage 'prepare'" in out.stdout and "Running stage 'validate'" in out.stdout
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    prepared_md5 = lock["stages"]["prepare"]["outs"][0]["md5"]
    assert prepared_md5.endswith(".dir")
    # the validate stage recorded the same data version DVC put in dvc.lock
    summary = yaml.safe_load((work / "reports/validation/summary.json").read_text())
    assert summary["success"] is True
    assert summary["data_version"]["md5"] == prepared_md5 == dvc_hash(work / "data/prepared")["md5"]

    status = _run([dvc, "status"], work, env)
    assert "Data and pipelines are up to date" in status.stdout
    again = _run([dvc, "repro"], work, env)
    assert "didn't change, skipping" in again.stdout

    # the data version travels through the remote
    _run([dvc, "push"], work, env)
    shutil.rmtree(work / "data/prepared")
    _run([dvc, "cache", "dir", str(tmp_path / "empty-cache")], work, env)
    _run([dvc, "pull"], work, env)
    assert dvc_hash(work / "data/prepared")["md5"] == prepared_md5


def test_changed_params_rerun_prepare(dvc_repo):
    work, env, dvc = dvc_repo
    _run([dvc, "repro"], work, env)
    first = yaml.safe_load((work / "dvc.lock").read_text())["stages"]["prepare"]["outs"][0]["md5"]
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["synthetic"]["seed"] = 99
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "changed" in _run([dvc, "status"], work, env).stdout
    _run([dvc, "repro"], work, env)
    second = yaml.safe_load((work / "dvc.lock").read_text())["stages"]["prepare"]["outs"][0]["md5"]
    assert first != second


def test_changed_raw_data_re_prepares(dvc_repo):
    """The raw files are a dependency of `prepare`: `dvc repro` prepares again when they change."""
    from helpers import small_tables, write_ml100k

    work, env, dvc = dvc_repo
    raw = write_ml100k(small_tables(), work / "data" / "raw" / "ml-100k")
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["data"].update(dataset="ml-100k", path="data/raw/ml-100k")
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run([dvc, "add", "data/raw/ml-100k"], work, env)  # raw data versioned by DVC, as the README says
    _run([dvc, "repro", "prepare"], work, env)
    lock = yaml.safe_load((work / "dvc.lock").read_text())["stages"]["prepare"]
    assert any(d["path"] == "data/raw/ml-100k" for d in lock["deps"])
    first = lock["outs"][0]["md5"]
    rows = json.loads((work / "data/prepared/meta.json").read_text())["rows"]
    assert "didn't change, skipping" in _run([dvc, "repro", "prepare"], work, env).stdout

    lines = (raw / "u.data").read_text().splitlines()
    (raw / "u.data").write_text("\n".join(lines[:-50]) + "\n")  # the newest export lost 50 ratings
    assert "changed deps" in _run([dvc, "status", "prepare"], work, env).stdout
    out = _run([dvc, "repro", "prepare"], work, env)
    assert "Running stage 'prepare'" in out.stdout
    second = yaml.safe_load((work / "dvc.lock").read_text())["stages"]["prepare"]["outs"][0]["md5"]
    assert second != first
    assert json.loads((work / "data/prepared/meta.json").read_text())["rows"] == rows - 50
