"""Containers on this machine: the engine (a Docker engine, else podman), podman's Docker-compatible
API socket, and the kfp.local.DockerRunner that runs each component in its image the way the
cluster does (non-root where the host allows, read-only root filesystem, no capabilities)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONTAINERS_CONF = REPO / "infra" / "docker" / "containers.conf"
# writable paths of the images (infra/docker/Dockerfile.*): tmpfs in a local run, emptyDir on k8s
IMAGE_WRITABLE = ("/tmp", "/var/cache/reclora", "/opt/reclora/cache/embeddings")
IMAGE_PARAMS = "/app/params.yaml"


def _docker_engine_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def engine() -> str | None:
    """``docker`` where a Docker engine answers, else ``podman`` where installed, else None.
    ``CONTAINER_ENGINE`` forces one."""
    forced = os.environ.get("CONTAINER_ENGINE")
    if forced:
        return forced
    if _docker_engine_answers():
        return "docker"
    return "podman" if shutil.which("podman") else None


def engine_env() -> dict[str, str]:
    """The environment for the engine's CLI: CONTAINERS_CONF -> infra/docker/containers.conf
    (runc, capped ulimits) unless already set. A Docker engine ignores it."""
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return env


def image_exists(name: str, eng: str | None = None) -> bool:
    """Whether the image ``name`` is in the local store of ``eng`` (default :func:`engine`); False without an
    engine."""
    eng = eng or engine()
    if eng is None:
        return False
    cmd = [eng, "image", "exists", name] if eng == "podman" else [eng, "image", "inspect", name]
    return subprocess.run(cmd, capture_output=True, env=engine_env()).returncode == 0


@contextlib.contextmanager
def docker_api() -> Iterator[str]:
    """A Docker Engine API endpoint for the ``docker`` SDK; yields its URL (for DOCKER_HOST).

    With a Docker engine: its own (``DOCKER_HOST`` or the default socket). With podman: starts
    ``podman system service`` on a socket in a private temporary directory and stops it (by its
    PID) on exit. Raises ConfigError when no engine is available or the service does not answer.
    """
    import docker

    from reclora.errors import ConfigError

    eng = engine()
    if eng is None:
        raise ConfigError(
            "--runner docker needs a container engine: install docker or podman (apt-get install podman buildah runc)"
        )
    if eng == "docker":
        yield os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        return
    tmp = Path(tempfile.mkdtemp(prefix="reclora-podman-"))
    url = f"unix://{tmp / 'podman.sock'}"
    log = open(tmp / "service.log", "wb")
    proc = subprocess.Popen(
        ["podman", "system", "service", "--time=0", url],
        env=engine_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 30
        while True:
            try:
                client = docker.DockerClient(base_url=url, timeout=5)
                try:
                    client.ping()
                finally:
                    client.close()
                break
            except Exception as e:  # noqa: BLE001 - not up yet (socket missing, connection refused)
                if proc.poll() is not None or time.time() > deadline:
                    log.flush()
                    raise ConfigError(
                        f"podman system service did not answer on {url}: {e}; "
                        f"{(tmp / 'service.log').read_text()[-500:]}"
                    ) from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def run_args(
    binds: Sequence[str | os.PathLike[str] | None] = (), params: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """``containers.run`` arguments for kfp.local.DockerRunner.

    The restricted pod settings of infra/k8s (read-only root, no capabilities, no privilege escalation,
    no network) plus:

    - the caller's uid:gid, so outputs under the pipeline root belong to whoever ran the pipeline;
    - tmpfs on the images' writable paths (emptyDir volumes on the cluster);
    - ``binds``: existing local paths (registry, raw data, a base-model directory) at the same path;
    - ``params``: this run's params.yaml read-only over the image's /app/params.yaml, so the
      components read the same defaults as the subprocess runner.
    """
    from docker.types import Mount

    mounts = []
    seen: set[str] = set()
    for b in binds:
        if not b or "://" in str(b):
            continue
        path = Path(b).resolve()
        if path.exists() and str(path) not in seen:
            seen.add(str(path))
            mounts.append(Mount(target=str(path), source=str(path), type="bind"))
    if params:
        mounts.append(Mount(target=IMAGE_PARAMS, source=str(Path(params).resolve()), type="bind", read_only=True))
    return {
        "user": f"{os.getuid()}:{os.getgid()}",
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "network_mode": "none",
        "tmpfs": {p: "rw,mode=1777" for p in IMAGE_WRITABLE},
        "environment": {"HOME": "/tmp"},
        "mounts": mounts,
    }


@contextlib.contextmanager
def docker_runner(
    images: Sequence[str],
    pipeline_root: str | os.PathLike[str],
    binds: Sequence[str | os.PathLike[str] | None] = (),
    params: str | os.PathLike[str] | None = None,
) -> Iterator[Any]:
    """A kfp.local.DockerRunner for ``images`` (each must be built here: ``make images``), with the
    Docker API up for the duration (DOCKER_HOST set, then restored). Raises ConfigError for a
    missing image or engine."""
    from kfp import local

    from reclora.errors import ConfigError

    eng = engine()
    missing = [i for i in dict.fromkeys(images) if not image_exists(i, eng)]
    if missing:
        raise ConfigError(
            f"image{'s' if len(missing) > 1 else ''} not built here: {', '.join(missing)} (run `make images`)"
        )
    Path(pipeline_root).mkdir(parents=True, exist_ok=True)
    with docker_api() as url:
        before = os.environ.get("DOCKER_HOST")
        os.environ["DOCKER_HOST"] = url
        try:
            yield local.DockerRunner(**run_args(binds, params))
        finally:
            if before is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = before
