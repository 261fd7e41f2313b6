"""The images for real: `scripts/images.sh cpu` (what `make images` runs) builds the CPU image with
the host's engine (docker, else podman; layers cached, so a warm rebuild takes seconds), the whole
pipeline runs with every component in the image (kfp.local.DockerRunner; podman's Docker API
started and stopped by the command), and the registered version is served from the image the way
the InferenceService runs it: non-root, read-only root filesystem, no capabilities, the version
read-only at /mnt/models, on loopback.

Runs wherever podman or a Docker engine works (`make test` installs podman where apt can);
skipped, with the reason, elsewhere. Cold (no base image, no layer cache) the image build takes
about 10 minutes on the 2-core CI machine; warm, the module takes about 3 minutes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import reclora
from test_local_pipeline import SMALL  # the same small pipeline profile

from reclora.config import load_params

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(3600)]

REPO = Path(__file__).resolve().parents[2]
STAGES = [
    "prepare",
    "validate",
    "retrieve",
    "features",
    "train-crm",
    "train-lora",
    "train-reclora",
    "evaluate",
    "register",
]
# every task of the run: the stages above plus the uncached step that fingerprints the source data
TASKS = ["source-version", *STAGES]


@pytest.fixture(scope="module")
def engine():
    from pipelines.containers import engine as find_engine
    from pipelines.containers import engine_env

    eng = find_engine()
    if eng is None:
        pytest.skip("no container engine: neither a Docker engine nor podman is available here")
    info = subprocess.run([eng, "info"], capture_output=True, text=True, env=engine_env(), timeout=60)
    if info.returncode != 0:
        pytest.skip(f"{eng} is installed but cannot run containers here: {info.stderr.strip()[-300:]}")
    return eng


@pytest.fixture(scope="module")
def cpu_image(engine):
    proc = subprocess.run(
        ["scripts/images.sh", "cpu"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3000,
        env=dict(os.environ, CONTAINER_ENGINE=engine),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    image = load_params()["pipeline"]["cpu_image"]
    assert f"built {image} in" in proc.stdout
    return image


@pytest.fixture(scope="module")
def docker_run(cpu_image, tiny_llama_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("containers")
    # training steps in the CPU image: this machine has no GPU and CI does not build the GPU image
    proc = reclora(
        "pipeline",
        "run",
        "--local",
        "--runner",
        "docker",
        "--model",
        str(tiny_llama_dir),
        "--pipeline-root",
        str(tmp / "root"),
        "--registry",
        str(tmp / "registry"),
        "--overrides",
        SMALL,
        "--set",
        f"pipeline.gpu_image={cpu_image}",
        timeout=1800,
    )
    return {"proc": proc, "tmp": tmp, "registry": tmp / "registry", "image": cpu_image}


def test_pipeline_runs_every_component_in_its_image(docker_run):
    proc = docker_run["proc"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert len(lines) < 25, proc.stdout  # one screen: a line per stage and the summary
    stage_lines = [line.split() for line in lines if line.split() and line.split()[0] in STAGES]
    # features and retrieve are independent: kfp.local may run them in either order
    assert sorted(s[0] for s in stage_lines) == sorted(STAGES) and all(s[1] == "ok" for s in stage_lines), proc.stdout
    assert "(docker runner)" in proc.stdout and "registered adapter: v0001" in proc.stdout
    log = Path(next(line.split(":", 1)[1].strip() for line in lines if line.startswith("full log:")))
    text = log.read_text()
    # every task ran in the image (kfp.local.DockerRunner says which it found), none in this process
    assert text.count(f"Found image '{docker_run['image']}'") == len(TASKS), text[-3000:]
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    finished = set(re.findall(r"Task '([a-z0-9-]+)' finished with status SUCCESS", plain))
    assert finished == set(TASKS), sorted(finished)
    manifest = json.loads((docker_run["registry"] / "reclora" / "versions" / "v0001" / "manifest.json").read_text())
    assert manifest["lineage"]["data_version"].endswith(".dir")
    # outputs belong to whoever ran the pipeline (the containers ran as the caller's uid:gid)
    assert all(p.stat().st_uid == os.getuid() for p in log.parent.rglob("*"))


def test_containerized_data_step_matches_the_library(docker_run, tmp_path):
    """The prepare component in the image writes byte-for-byte what the library writes here."""
    from reclora.config import load_params_with
    from reclora.data import dvc_hash, prepare

    assert docker_run["proc"].returncode == 0
    version = next(
        line.split(":", 1)[1].strip()
        for line in docker_run["proc"].stdout.splitlines()
        if line.startswith("data version:")
    )
    prepare("synthetic", None, tmp_path / "prepared", load_params_with(json.loads(SMALL), "small"))
    assert dvc_hash(tmp_path / "prepared")["md5"] == version


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(docker_run, engine):
    from pipelines.containers import engine_env

    assert docker_run["proc"].returncode == 0
    version = docker_run["registry"] / "reclora" / "versions" / "v0001"
    base = json.loads((version / "manifest.json").read_text())["base_model"]
    # pytest's directories (and the tiny model's safetensors) are private to their owner; the server runs as uid 1000
    os.chmod(base, 0o755)
    for f in Path(base).iterdir():
        os.chmod(f, 0o644)
    port = _free_port()
    # as the InferenceService runs it (infra/k8s): its command, non-root, read-only root, no
    # capabilities, writable paths on tmpfs (emptyDirs there), the version where KServe's storage
    # initializer puts it; the base model read-only where the manifest says (baked in the image for
    # the default model)
    cmd = [
        engine,
        "run",
        "-d",
        "--read-only",
        "--user",
        "1000:1000",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--tmpfs",
        "/tmp",
        "--tmpfs",
        "/var/cache/reclora",
        "--tmpfs",
        "/opt/reclora/cache/embeddings",
        "-v",
        f"{version}:/mnt/models:ro",
        "-v",
        f"{base}:{base}:ro",
        "-p",
        f"127.0.0.1:{port}:8080",
        docker_run["image"],
        "reclora",
        "serve",
        "--model",
        "/mnt/models",
        "--port",
        "8080",
        "--host",
        "0.0.0.0",
    ]
    # the container runs on this CPU as this process sees it: limits on its instruction set (e.g. the AVX2-only
    # emulation of docs/precision.md) apply inside too, so both sides choose the same precision and kernels
    for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS"):
        if os.environ.get(k):
            at = cmd.index(docker_run["image"])
            cmd[at:at] = ["-e", f"{k}={os.environ[k]}"]
    if engine == "podman":
        cmd.insert(3, "--no-healthcheck")  # its timer needs systemd; the test probes the same URLs itself
    cid = subprocess.run(cmd, capture_output=True, text=True, env=engine_env(), check=True).stdout.strip()
    url = f"http://127.0.0.1:{port}"

    def logs() -> str:
        out = subprocess.run([engine, "logs", cid], capture_output=True, text=True, env=engine_env())
        return (out.stdout + out.stderr)[-3000:]

    try:
        deadline = time.time() + 180
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            state = subprocess.run(
                [engine, "inspect", "-f", "{{.State.Running}}", cid], capture_output=True, text=True, env=engine_env()
            ).stdout.strip()
            assert state == "true", logs()
            assert time.time() < deadline, "server not ready in 180 s\n" + logs()
            time.sleep(1)
        yield {"url": url, "cid": cid, "version": version, "base": base}
    finally:
        subprocess.run([engine, "rm", "-f", "-t", "5", cid], capture_output=True, env=engine_env())


def test_serving_container_is_non_root_read_only_and_answers_v1_and_v2(served, engine):
    from pipelines.containers import engine_env
    from reclora.serving import RecLoRAPredictor

    def exec_(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([engine, "exec", served["cid"], *args], capture_output=True, text=True, env=engine_env())

    assert exec_("id", "-u").stdout.strip() == "1000"
    assert exec_("touch", "/app/x").returncode != 0  # read-only root filesystem
    assert exec_("touch", "/mnt/models/x").returncode != 0  # the version is mounted read-only
    assert exec_("grep", "CapEff", "/proc/1/status").stdout.split()[-1] == "0000000000000000"  # no capabilities

    with httpx.Client(base_url=served["url"], timeout=60, trust_env=False) as client:
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/models/reclora/ready").status_code == 200
        instances = [
            {
                "user_id": 100001,
                "candidates": [6, 5, 35],
                "history": [
                    {"item_id": 8, "rating": 5, "timestamp": 100},
                    {"item_id": 9, "rating": 2, "timestamp": 50},
                ],
            },
            {"user_id": 100002, "candidates": [7, 9]},
        ]
        v1 = client.post("/v1/models/reclora:predict", json={"instances": instances})
        assert v1.status_code == 200, v1.text
        body = {
            "inputs": [
                {"name": "user_id", "shape": [1], "datatype": "INT64", "data": [100002]},
                {"name": "candidates", "shape": [1, 2], "datatype": "INT64", "data": [7, 9]},
            ]
        }
        v2 = client.post("/v2/models/reclora/infer", json=body)
        assert v2.status_code == 200, v2.text

    preds = v1.json()["predictions"]
    assert [p["history_source"] for p in preds] == ["request", "none"]
    assert [sorted(x["item_id"] for x in p["scores"]) for p in preds] == [[5, 6, 35], [7, 9]]
    out = {o["name"]: o for o in v2.json()["outputs"]}
    assert out["p_click"]["shape"] == [1, 2] and out["cold_start"]["data"] == [True]

    # the container scores what the same version scores in this process
    local = RecLoRAPredictor(str(served["version"]), name="reclora", base_model=served["base"])
    local.load()
    with httpx.Client(base_url=served["url"], timeout=60, trust_env=False) as client:
        chosen = client.get("/reclora/info").json()["precision"]["chosen"]
    assert chosen == local.precision.name  # the same CPU: the same choice (the scores below need it)
    # fp32: two processes differ only in summation order (~1e-6 on a probability); bf16/fp16 autocast: in
    # rounding too (their thread splits may differ), bounded by a quarter (the most dp/dlogit is) of one
    # bf16 rounding (2^-8) of a logit of order 1
    atol = 1e-5 if chosen == "fp32" else 0.25 * 2.0**-8
    ref = local.predict_instances(instances)["predictions"]
    for p, q in zip(preds, ref):
        got = {x["item_id"]: x["p_click"] for x in p["scores"]}
        want = {x["item_id"]: x["p_click"] for x in q["scores"]}
        assert all(0.0 < x < 1.0 for x in got.values())
        np.testing.assert_allclose([got[k] for k in want], list(want.values()), atol=atol)
    # V2 scored the cold-start user alone: compare with the same single-user batch here
    alone = local.predict_instances([{"user_id": 100002, "candidates": [7, 9]}])["predictions"][0]["scores"]
    want = {x["item_id"]: x["p_click"] for x in alone}
    np.testing.assert_allclose(out["p_click"]["data"], [want[7], want[9]], atol=atol)
