"""The reclora-spark image (pipeline.spark.image) at lint level, without building it (the machine is
shared): its Dockerfile builds on the CPU image of params.yaml, installs the `spark` extra under the lock
and a Java 17 runtime, runs as uid 10001 with Spark's entry point; and that entry point (run here with
stand-ins for spark-submit and java) starts a Spark-on-Kubernetes driver and executor the way Spark's
pods call it."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_infra import DOCKER, REPO, UID, dockerfile, dockerignored, exec_form, kv_pairs, stages  # noqa: E402

ENTRYPOINT = DOCKER / "spark-entrypoint.sh"


def test_spark_dockerfile_builds_on_the_cpu_image_with_the_spark_extra():
    p = yaml.safe_load((REPO / "params.yaml").read_text())["pipeline"]
    instrs = dockerfile(DOCKER / "Dockerfile.spark")
    first = next(i for i, (instr, _) in enumerate(instrs) if instr == "FROM")
    args = {k: v for instr, rest in instrs[:first] if instr == "ARG" for k, v in kv_pairs(rest).items()}
    st = stages(instrs[first:])  # global ARGs before the first FROM
    assert args["BASE_IMAGE"] == p["cpu_image"], "the Spark image extends params.yaml's CPU image"
    assert [s["image"] for s in st] == ["${BASE_IMAGE}", "${BASE_IMAGE}"] and st[0]["name"] == "builder"
    builder = " ".join(r for i, r in st[0]["instrs"] if i == "RUN")
    assert (
        "['optional-dependencies']['spark']" in builder and "-c requirements.lock" in builder and "pip check" in builder
    )
    assert "spark-kubernetes_" in builder, "the build checks pyspark carries Spark's Kubernetes backend"
    final = st[-1]["instrs"]
    runs = " ".join(r for i, r in final if i == "RUN")
    assert "openjdk-17-jre-headless" in runs and "pip install" not in runs
    env = {k: v for i, r in final if i == "ENV" for k, v in kv_pairs(r).items()}
    assert env["SPARK_HOME"] == "/opt/venv/lib/python3.11/site-packages/pyspark" and env["JAVA_HOME"]
    assert p["spark"]["main_application_file"].removeprefix("local://").startswith(env["SPARK_HOME"].rsplit("/", 1)[0])
    users = [r for i, r in final if i == "USER"]
    assert users[-1] == f"{UID}:{UID}"
    assert exec_form(next(r for i, r in final if i == "ENTRYPOINT")) == ["/opt/reclora/spark-entrypoint.sh"]
    labels = {k: v for i, r in final if i == "LABEL" for k, v in kv_pairs(r).items()}
    assert labels["org.opencontainers.image.title"] == "reclora-spark"
    for i, r in (x for s in st for x in s["instrs"]):
        if i == "COPY" and not r.startswith("--from="):
            *srcs, _ = [t for t in shlex.split(r) if not t.startswith("--")]
            for src in srcs:
                assert (REPO / src).exists() and not dockerignored(src), src
    assert (DOCKER / "Dockerfile.spark.dockerignore").read_text() == (DOCKER / ".dockerignore").read_text()
    assert os.access(ENTRYPOINT, os.X_OK)
    subprocess.run(["bash", "-n", str(ENTRYPOINT)], check=True)


def test_make_images_builds_the_spark_image_after_the_cpu_image():
    script = (REPO / "scripts" / "images.sh").read_text()
    assert "cpu|gpu|spark|all" in script and 'build spark "$(param spark.image)"' in script
    assert script.index("build cpu") < script.index("build spark")
    assert "IMAGES=cpu|gpu|spark|all" in (REPO / "Makefile").read_text()


def _fake(d: Path, name: str) -> None:
    f = d / name
    f.write_text('#!/bin/sh\nprintf "%s\\n" "$0" "$@"\n')
    f.chmod(0o755)


def _entry(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    spark_home, bin_ = tmp_path / "spark", tmp_path / "bin"
    for d in (spark_home / "bin", bin_):
        d.mkdir(parents=True, exist_ok=True)
    _fake(spark_home / "bin", "spark-submit")
    _fake(bin_, "java")
    full = {"PATH": f"{bin_}:/usr/bin:/bin", "SPARK_HOME": str(spark_home), **env}
    return subprocess.run(["bash", str(ENTRYPOINT), *args], env=full, capture_output=True, text=True, timeout=30)


def test_the_driver_submits_in_client_mode_on_its_pod_address(tmp_path):
    r = _entry(
        tmp_path,
        "driver",
        "--properties-file",
        "/opt/spark/conf/spark.properties",
        "local:///app/job.py",
        "--work",
        "/workspace/x",
        SPARK_DRIVER_BIND_ADDRESS="10.1.2.3",
    )
    assert r.returncode == 0, r.stderr
    argv = r.stdout.splitlines()
    assert argv[0].endswith("/spark/bin/spark-submit")
    assert argv[1:3] == ["--deploy-mode", "client"] and "spark.driver.bindAddress=10.1.2.3" in argv
    assert argv[-5:] == [
        "--properties-file",
        "/opt/spark/conf/spark.properties",
        "local:///app/job.py",
        "--work",
        "/workspace/x",
    ]


def test_the_executor_starts_spark_s_kubernetes_backend_from_its_pod_variables(tmp_path):
    env = {
        "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@d:7078",
        "SPARK_EXECUTOR_ID": "3",
        "SPARK_EXECUTOR_CORES": "2",
        "SPARK_EXECUTOR_MEMORY": "8g",
        "SPARK_APPLICATION_ID": "spark-1",
        "SPARK_EXECUTOR_POD_IP": "10.0.0.9",
        "SPARK_EXECUTOR_POD_NAME": "ex-3",
        "SPARK_JAVA_OPT_0": "-Dspark.a=1 b",
        "SPARK_JAVA_OPT_1": "-Dspark.c=2",
    }
    r = _entry(tmp_path, "executor", **env)
    assert r.returncode == 0, r.stderr
    argv = r.stdout.splitlines()
    assert argv[1:5] == ["-Dspark.a=1 b", "-Dspark.c=2", "-Xms8g", "-Xmx8g"]
    main = argv.index("org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend")
    flags = dict(zip(argv[main + 1 :: 2], argv[main + 2 :: 2]))
    assert flags == {
        "--driver-url": env["SPARK_DRIVER_URL"],
        "--executor-id": "3",
        "--cores": "2",
        "--app-id": "spark-1",
        "--hostname": "10.0.0.9",
        "--resourceProfileId": "0",
        "--podName": "ex-3",
    }
    missing = _entry(tmp_path, "executor", **{k: v for k, v in env.items() if k != "SPARK_DRIVER_URL"})
    assert missing.returncode == 2 and "SPARK_DRIVER_URL" in missing.stderr
    other = _entry(tmp_path, "echo", "hello")
    assert other.returncode == 0 and other.stdout.strip() == "hello"
