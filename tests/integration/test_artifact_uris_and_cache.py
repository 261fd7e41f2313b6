"""Artifact URIs as Kubeflow Pipelines hands them out, read by reclora.storage (minio:// against a real
S3 server, moto on 127.0.0.1; every scheme of kfp's RemotePrefix), and prepare's cache key: the source's
fingerprint changes with the data (local content, object ETags, a DVC commit), and a kfp.local run
prepares again after the data changed but serves an unchanged source from the cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import fsspec
import pytest
from helpers import BIN, small_tables, write_ml100k

from reclora import storage
from reclora.errors import DataError


def _s3():
    return fsspec.filesystem("s3", skip_instance_cache=True)


def test_minio_uris_of_the_kfp_launcher_are_read_as_s3_on_the_endpoint(s3_server, s3_bucket, tmp_path):
    _s3().pipe(f"{s3_bucket}/v2/artifacts/run/prepare/data/meta.json", b'{"rows": 3}')
    uri = f"minio://{s3_bucket}/v2/artifacts/run/prepare/data"
    got = storage.download_dir(uri, tmp_path / "data")
    assert (got / "meta.json").read_bytes() == b'{"rows": 3}'
    storage.upload_dir(got, f"minio://{s3_bucket}/copy")
    assert _s3().cat(f"{s3_bucket}/copy/meta.json") == b'{"rows": 3}'
    assert storage.is_remote(uri) and storage.exists(uri)


def test_every_kfp_artifact_scheme_is_understood_or_refused_clearly(monkeypatch):
    from kfp.dsl.types.artifact_types import RemotePrefix

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    for prefix in RemotePrefix:
        uri = f"{prefix.value}bucket/v2/artifacts/x"
        if prefix.name == "OCI":  # a container registry (KFP's image models), not an object store
            with pytest.raises(DataError, match="OCI image registry"):
                storage.filesystem(uri)
            continue
        fs, path = storage.filesystem(uri)
        assert path.rstrip("/").endswith("bucket/v2/artifacts/x"), (uri, path)
        if prefix.name == "MINIO":
            assert fs.protocol[0] == "s3" and fs.endpoint_url == "http://127.0.0.1:9"
    with pytest.raises(DataError, match=r"unknown storage scheme nosuch://"):
        storage.filesystem("nosuch://bucket/key")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    with pytest.raises(DataError, match="AWS_ENDPOINT_URL"):
        storage.download_dir("minio://mlpipeline/v2/artifacts/x", "/tmp/never")


# ------------------------------------------------------------------ the source's fingerprint
def test_fingerprint_of_a_local_source_follows_its_content(tmp_path):
    src = write_ml100k(small_tables(), tmp_path / "raw")
    a = storage.source_fingerprint(str(src))
    assert a == storage.source_fingerprint(str(src)) and a.startswith("md5:")
    os.utime(src / "u.data", (1, 1))  # touched, same bytes: same data, same key
    assert storage.source_fingerprint(str(src)) == a
    with open(src / "u.data", "a") as f:
        f.write("1\t1\t5\t881250949\n")
    assert storage.source_fingerprint(str(src)) != a
    assert storage.source_fingerprint("") == ""
    assert storage.source_fingerprint("/workspace/raw", unseen="run-7") == "unseen:run-7"
    with pytest.raises(DataError):
        storage.source_fingerprint(str(tmp_path / "missing"))


def test_fingerprint_of_a_bucket_follows_the_objects_etags(s3_server, s3_bucket):
    fs = _s3()
    fs.pipe(f"{s3_bucket}/raw/u.data", b"1\t2\t5\t100\n")
    fs.pipe(f"{s3_bucket}/raw/u.item", b"2|Movie|...\n")
    uri = f"s3://{s3_bucket}/raw"
    a = storage.source_fingerprint(uri)
    assert a == storage.source_fingerprint(uri)
    fs.pipe(f"{s3_bucket}/raw/u.data", b"1\t2\t4\t100\n")  # same size, new content: a new ETag
    b = storage.source_fingerprint(uri)
    assert b != a
    fs.pipe(f"{s3_bucket}/raw/extra.csv", b"x")
    assert storage.source_fingerprint(uri) not in (a, b)
    with pytest.raises(DataError, match="nothing there"):
        storage.source_fingerprint(f"s3://{s3_bucket}/nothing")


def test_fingerprint_of_a_dvc_reference_follows_its_commit_and_md5(tmp_path):
    work = tmp_path / "data-registry"
    work.mkdir()
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{BIN}:{os.environ['PATH']}")

    def run(*c):
        subprocess.run(c, cwd=work, env=env, check=True, capture_output=True, text=True, timeout=300)

    run("git", "init", "-q")
    run("git", "config", "user.email", "ci@example.invalid")
    run("git", "config", "user.name", "ci")
    run(str(BIN / "dvc"), "init", "-q")
    write_ml100k(small_tables(), work / "ml-100k")
    run(str(BIN / "dvc"), "add", "-q", "ml-100k")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "v1")
    ref = f"dvc+{work}#ml-100k"
    a = storage.source_fingerprint(ref)
    assert a.startswith("dvc:") and a.endswith(".dir"), a
    with open(work / "ml-100k" / "u.data", "a") as f:
        f.write("1\t1\t5\t881250949\n")
    run(str(BIN / "dvc"), "add", "-q", "ml-100k")
    run("git", "commit", "-qam", "v2")
    b = storage.source_fingerprint(ref)
    assert b != a and b.split(":")[-1] != a.split(":")[-1]
    with pytest.raises(DataError, match="DVC reference"):
        storage.source_fingerprint(f"dvc+{work}#no-such-path")


# ------------------------------------------------------------------ the cache in a real kfp.local run
def _run_prepare_pipeline(root: Path, source: Path, log: Path) -> str:
    """source_version -> prepare (the real components, cached as in the pipeline) under kfp.local, in a
    fresh process (kfp.local keeps state per process); returns what kfp logged."""
    code = f"""
import logging, sys
from kfp import dsl, local
from components import build_components
logging.basicConfig(level=logging.INFO, stream=sys.stdout)
c = build_components("cpu:1", "gpu:1")

@dsl.pipeline(name="prepare-cache")
def p(source_path: str):
    src = c.source_version(source_path=source_path, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
    src.set_caching_options(enable_caching=False)
    prep = c.prepare(dataset="ml-100k", source_path=source_path, version_tag="", profile="", overrides={{}},
                     source_fingerprint=src.output)
    prep.set_caching_options(enable_caching=True)

local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root={str(root)!r}, enable_caching=True)
p(source_path={str(source)!r})
"""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    log.write_text(out.stdout + out.stderr)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def test_kfp_local_prepares_again_when_the_data_changed_and_not_when_it_did_not(tmp_path):
    source = write_ml100k(small_tables(), tmp_path / "raw")
    root = tmp_path / "root"
    hit = "Task prepare cache hit"
    assert hit not in _run_prepare_pipeline(root, source, tmp_path / "1.log")
    assert hit in _run_prepare_pipeline(root, source, tmp_path / "2.log"), (
        "an unchanged source is served from the cache"
    )
    with open(source / "u.data", "a") as f:  # the same path, new data: last week's cache must not serve it
        f.write("1\t1\t5\t881250949\n")
    assert hit not in _run_prepare_pipeline(root, source, tmp_path / "3.log"), "changed data was served from the cache"
