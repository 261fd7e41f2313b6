import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("FEAST_USAGE", "False")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[1]
ML100K = REPO.parent / "shared" / "data" / "ml-100k"


@pytest.fixture(autouse=True)
def _no_cli_sets_left_over():
    """A CLI command run in-process remembers its ``--set`` items (reclora.config.set_cli_overrides) for every
    later params load of that process, as one command should; a test must not hand them to the next test."""
    yield
    from reclora.config import set_cli_overrides

    set_cli_overrides(None)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def ml100k_path() -> Path:
    """The real MovieLens-100K, read in place (never copied); tests using it skip without it."""
    if not (ML100K / "u.data").is_file():
        pytest.skip("real MovieLens-100K not present at ../shared/data/ml-100k")
    return ML100K


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """The fetched embedded default LLM (`make test` fetches it first)."""
    from reclora.config import load_params
    from reclora.llm.location import default_model_dir, is_fetched

    d = default_model_dir(load_params()["model"])
    if not is_fetched(d):
        pytest.fail(f"default model not fetched into {d}: run `reclora model fetch` (make test does)")
    return d


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A tiny random Llama with the real model's tokenizer is too slow to build per test; this one is
    built from a config with a small word-level tokenizer and saved once per session."""
    from helpers import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's standalone S3 server on 127.0.0.1 (a free port), started here and stopped by its PID.

    Sets the AWS_* variables s3fs, DVC and the pipeline steps read (as the cluster's Secret would) for
    the session; yields {"endpoint", "env"}. Tests create their own bucket (``s3_bucket``).
    """
    import socket
    import subprocess
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in S3_ENV}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start (exit {proc.poll()})") from None
                time.sleep(0.2)
        os.environ.update(env)
        yield {"endpoint": endpoint, "env": env}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture()
def s3_bucket(s3_server):
    """A new, empty bucket on the moto server: its name."""
    import uuid

    import fsspec

    name = f"reclora-{uuid.uuid4().hex[:10]}"
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir(name)
    return name
