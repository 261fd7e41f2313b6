"""Everything that must outlive a pod, on an S3-compatible server (moto's standalone server on 127.0.0.1):
the registry (register, list, promote, rollback, with the KServe patch), a retried training step that
resumes from the bucket in a new pod, raw data from an s3:// URI and from a DVC reference, and
`dvc push`/`pull` to the bucket."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest
from helpers import BIN, FakeArtifact, llm_stage_inputs, small_tables, write_ml100k
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))
from test_registry import _scored, _with, art  # noqa: E402,F401  (the registry tests' fake stage outputs)

import reclora.few2many.checkpoint as ckpt_mod  # noqa: E402
from components.prepare.component import prepare as prepare_component  # noqa: E402
from components.train_llm.component import train_llm as train_llm_component  # noqa: E402
from reclora import storage  # noqa: E402
from reclora.registry import register_and_gate, verify  # noqa: E402

pytestmark = pytest.mark.slow  # a real S3-compatible server and real DVC


def _fs():
    return fsspec.filesystem("s3", skip_instance_cache=True)


def _cli(*args, env=None):
    p = subprocess.run(
        [str(BIN / "reclora"), *args], capture_output=True, text=True, timeout=300, env=dict(os.environ, **(env or {}))
    )
    return p


# ------------------------------------------------------------------ registry
def test_registry_on_s3_register_list_promote_rollback_and_the_kserve_patch(s3_bucket, art, tmp_path):
    uri = f"s3://{s3_bucket}/registry"
    r1 = register_and_gate(uri, **_with(art, 0.80, 0.50))
    # worse than the champion re-scored on the same samples: stays challenger
    r2 = register_and_gate(uri, **_with(art, 0.70, 0.60, champion=_scored("v0001", 0.80, 0.50, -0.15, 0.70)))
    assert (r1["version"], r1["promoted"]) == ("v0001", True)
    assert (r2["version"], r2["promoted"]) == ("v0002", False)
    # the objects are really in the bucket, manifest last, every file hash checks out
    keys = _fs().find(f"{s3_bucket}/registry/reclora/versions/v0001")
    assert any(k.endswith("manifest.json") for k in keys) and any(k.endswith("MODEL_CARD.md") for k in keys)
    v = verify(uri, "v0001")
    assert (v["ok"], v["problems"], v["path"]) == (True, [], f"s3://{s3_bucket}/registry/reclora/versions/v0001")

    out = _cli("registry", "list", "--uri", uri)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("v0001") and "champion" in lines[0] and "0.8000" in lines[0]
    assert lines[1].startswith("v0002") and "challenger" in lines[1]

    # dry run: nothing changes, the patch is printed
    out = _cli("registry", "promote", "v0002", "--uri", uri, "--deploy", "--dry-run")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    want = f"s3://{s3_bucket}/registry/reclora/versions/v0002"
    assert doc["deploy"]["patch"] == {"spec": {"predictor": {"model": {"storageUri": want}}}}
    assert doc["deploy"]["dry_run"] is True and doc["changed"] is False
    assert json.loads(_cli("registry", "show", "champion", "--uri", uri).stdout)["version"] == "v0001"

    # --deploy without Kubernetes API access: one error line, and the champion is left as it was
    out = _cli(
        "registry",
        "promote",
        "v0002",
        "--uri",
        uri,
        "--deploy",
        env={"KUBECONFIG": str(tmp_path / "no-kubeconfig"), "KUBERNETES_SERVICE_HOST": ""},
    )
    assert out.returncode == 2 and out.stderr.startswith("error: no Kubernetes API access"), out.stderr
    assert json.loads(_cli("registry", "show", "champion", "--uri", uri).stdout)["version"] == "v0001"

    out = _cli("registry", "promote", "v0002", "--uri", uri)
    assert out.returncode == 0 and json.loads(out.stdout)["previous"] == "v0001"
    assert json.loads(_cli("registry", "show", "champion", "--uri", uri).stdout)["version"] == "v0002"

    out = _cli("registry", "rollback", "--uri", uri, "--dry-run")
    assert json.loads(out.stdout)["deploy"]["storageUri"] == f"s3://{s3_bucket}/registry/reclora/versions/v0001"
    assert json.loads(_cli("registry", "show", "champion", "--uri", uri).stdout)["version"] == "v0002"
    out = _cli("registry", "rollback", "--uri", uri)
    assert out.returncode == 0 and json.loads(out.stdout)["version"] == "v0001"
    assert json.loads(_cli("registry", "show", "champion", "--uri", uri).stdout)["version"] == "v0001"
    # nothing left to roll back to: one error line, exit 2
    out = _cli("registry", "rollback", "--uri", uri)
    assert out.returncode == 2 and out.stderr.startswith("error:") and len(out.stderr.strip().splitlines()) == 1


def test_deploy_of_a_local_registry_without_storage_root_is_one_error_line(art, tmp_path):
    uri = str(tmp_path / "local-registry")
    register_and_gate(uri, **_with(art, 0.80, 0.50))
    out = _cli("registry", "promote", "v0001", "--uri", uri, "--deploy", "--dry-run")
    assert out.returncode == 2 and out.stderr.startswith("error:") and "storage_root" in out.stderr


# ------------------------------------------------------------------ a retried training step
class PodKilled(BaseException):
    """Stands for the pod dying (BaseException: nothing on the way may catch it)."""


def test_retried_training_step_resumes_from_the_bucket(s3_bucket, tiny_llama_dir, tmp_path, monkeypatch):
    data, ret, params = llm_stage_inputs(tmp_path / "inputs")
    base = f"s3://{s3_bucket}/checkpoints"

    def attempt(pod: str, model_path: str = str(tiny_llama_dir), **kw):
        adapter, stats = FakeArtifact(tmp_path / pod / "adapter"), FakeArtifact(tmp_path / pod / "stats")
        Path(adapter.path).parent.mkdir(parents=True)
        train_llm_component(
            kind="lora",
            data=FakeArtifact(data),
            retrieved=FakeArtifact(ret),
            crm=FakeArtifact(tmp_path / "none"),
            model_path=model_path,
            gate="crm",
            profile="",
            overrides=params,
            adapter=adapter,
            stats=stats,
            **kw,
        )
        return adapter, stats

    # attempt 1 in pod 1: killed right after its 2nd checkpoint reached the bucket
    real_push, pushes = ckpt_mod._push, []

    def push_then_die(target, state):
        real_push(target, state)
        pushes.append(state["step"])
        if len(pushes) == 2:
            raise PodKilled()

    monkeypatch.setattr(ckpt_mod, "_push", push_then_die)
    with pytest.raises(PodKilled):
        attempt("pod1", checkpoint_uri=base, run_id="run-7", task_name="train-llm")
    monkeypatch.setattr(ckpt_mod, "_push", real_push)
    prefix = f"{s3_bucket}/checkpoints/run-7/train-llm/checkpoint"
    latest = _fs().cat_file(f"{prefix}/LATEST").decode()
    assert latest.startswith("step-000000002-")
    assert json.loads(_fs().cat_file(f"{prefix}/{latest}/state.json"))["step"] == 2
    shutil.rmtree(tmp_path / "pod1")  # the retry runs in a new pod: nothing local survives

    # attempt 2 in pod 2 resumes at step 2 from the bucket
    adapter, stats = attempt("pod2", checkpoint_uri=base, run_id="run-7", task_name="train-llm")
    summary = json.loads((Path(adapter.path) / "metrics.json").read_text())
    assert summary["train"]["resumed_from"] == 2 and summary["train"]["steps"] == 6
    assert stats.metadata["train_samples"] == 24
    assert json.loads(_fs().cat_file(f"{prefix}/{_fs().cat_file(f'{prefix}/LATEST').decode()}/state.json"))["step"] == 6

    # the same result as one uninterrupted attempt without a checkpoint bucket, its base model read from a bucket
    storage.upload_dir(tiny_llama_dir, f"s3://{s3_bucket}/models/tiny")
    monkeypatch.setenv("RECLORA_MODEL_DOWNLOADS", str(tmp_path / "downloads"))
    ref, _ = attempt("pod3", model_path=f"s3://{s3_bucket}/models/tiny")
    assert len(list((tmp_path / "downloads").glob("remote-*/config.json"))) == 1
    a = load_file(next((Path(adapter.path) / "adapter").rglob("*.safetensors")).as_posix())
    b = load_file(next((Path(ref.path) / "adapter").rglob("*.safetensors")).as_posix())
    assert set(a) == set(b) and a
    for k in a:
        np.testing.assert_allclose(a[k].float().numpy(), b[k].float().numpy(), rtol=1e-4, atol=1e-6, err_msg=k)
    pa = pd.read_parquet(Path(adapter.path) / "predictions.parquet")["p"].to_numpy()
    pb = pd.read_parquet(Path(ref.path) / "predictions.parquet")["p"].to_numpy()
    np.testing.assert_allclose(pa, pb, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------ raw data in
def test_prepare_reads_raw_data_from_an_s3_uri(s3_bucket, tmp_path):
    raw = write_ml100k(small_tables(), tmp_path / "ml-100k")
    storage.upload_dir(raw, f"s3://{s3_bucket}/raw/ml-100k")
    out = FakeArtifact(tmp_path / "prepared")
    version = prepare_component(
        dataset="ml-100k",
        source_path=f"s3://{s3_bucket}/raw/ml-100k",
        version_tag="t",
        profile="",
        overrides={},
        data=out,
        stats=FakeArtifact(tmp_path / "stats.txt"),
    )
    local = FakeArtifact(tmp_path / "prepared-local")
    prepare_component(
        dataset="ml-100k",
        source_path=str(raw),
        version_tag="t",
        profile="",
        overrides={},
        data=local,
        stats=FakeArtifact(tmp_path / "stats2.txt"),
    )
    assert version.endswith(".dir") and out.metadata["rows"] == local.metadata["rows"] > 0
    assert out.metadata["source"] == f"s3://{s3_bucket}/raw/ml-100k"
    for f in (
        "interactions.parquet",
        "items.parquet",
        "users.parquet",
        "samples/train.parquet",
        "samples/test.parquet",
    ):
        pd.testing.assert_frame_equal(pd.read_parquet(Path(out.path) / f), pd.read_parquet(Path(local.path) / f))

    with pytest.raises(Exception, match="nothing there"):
        storage.fetch_source(f"s3://{s3_bucket}/raw/missing")


def _git_dvc_repo(work: Path, env: dict, s3_bucket: str, endpoint: str) -> str:
    dvc = str(BIN / "dvc")
    run = lambda *c: subprocess.run(c, cwd=work, env=env, check=True, capture_output=True, text=True, timeout=300)  # noqa: E731
    run("git", "init", "-q")
    run("git", "config", "user.email", "ci@example.invalid")
    run("git", "config", "user.name", "ci")
    run(dvc, "init", "-q")
    run(dvc, "remote", "add", "-d", "store", f"s3://{s3_bucket}/dvc")
    run(dvc, "remote", "modify", "store", "endpointurl", endpoint)
    return dvc


def test_dvc_push_pull_to_the_bucket_and_a_dvc_reference_as_source(s3_server, s3_bucket, tmp_path):
    work = tmp_path / "data-registry"
    work.mkdir()
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{BIN}:{os.environ['PATH']}")
    dvc = _git_dvc_repo(work, env, s3_bucket, s3_server["endpoint"])
    run = lambda *c: subprocess.run(c, cwd=work, env=env, check=True, capture_output=True, text=True, timeout=300)  # noqa: E731
    write_ml100k(small_tables(), work / "ml-100k")
    run(dvc, "add", "ml-100k")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "raw data")
    run(dvc, "push")
    assert _fs().find(f"{s3_bucket}/dvc/files/md5"), "dvc push wrote nothing to the bucket"

    want = {p.name: p.read_bytes() for p in (work / "ml-100k").iterdir()}
    shutil.rmtree(work / "ml-100k")
    shutil.rmtree(work / ".dvc" / "cache")
    run(dvc, "pull")
    assert {p.name: p.read_bytes() for p in (work / "ml-100k").iterdir()} == want

    # `dvc get` style: the prepare step takes dvc+<repository>#<path>, fetched through the S3 remote
    shutil.rmtree(work / ".dvc" / "cache")
    got = Path(storage.fetch_source(f"dvc+{work}#ml-100k", tmp_path / "fetched"))
    assert {p.name: p.read_bytes() for p in got.iterdir()} == want
    with pytest.raises(Exception, match="dvc get"):
        storage.fetch_source(f"dvc+{work}#no-such-path", tmp_path / "fetched2")
