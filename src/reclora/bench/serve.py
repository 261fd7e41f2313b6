"""A bounded load test of a running `reclora serve` (loopback only), from the calling process.

    bench_serve(url, out, requests=2000, duration_s=120, concurrency=4, batch=8, ...)

Two phases of the same batch size (candidates per request): ``single_user`` (one user with
``batch`` candidates) and ``mixed_users`` (``batch`` users with one candidate each, so one forward
holds rows of many users). Each phase stops by itself after ``requests`` requests or
``duration_s`` seconds, whichever comes first, and reports requests/s, rows/s, p50/p95/p99
latency (ms) and the error count. The JSON goes to ``out``. Against a `reclora serve` it also reads
``GET /reclora/info`` before and after, for the tokens per row, the FLOPs per row and the roofline
ratio at the server's precision (``serve``), its precision and its hardware.

    bench_serve_precisions(model, out, precisions=("auto", "bf16"), ...)

serves ``model`` itself once per precision (one server at a time, loopback, stopped by PID) and runs
the same load test against each in one run: the forced-bf16 vs auto comparison.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from reclora.errors import ConfigError


def _check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ConfigError(f"bench_serve only targets a local server (127.0.0.1/localhost/::1), not {host!r}")


def _payloads(kind: str, batch: int, users: Sequence[int], items: Sequence[int], n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if kind == "single_user":
            u = int(rng.choice(users))
            c = rng.choice(items, size=min(batch, len(items)), replace=False)
            inst = [{"user_id": u, "candidates": [int(x) for x in c]}]
        else:
            us = rng.choice(users, size=batch, replace=len(users) < batch)
            inst = [{"user_id": int(u), "candidates": [int(rng.choice(items))]} for u in us]
        out.append({"instances": inst})
    return out


def _phase(url: str, payloads: list[dict], duration_s: float, concurrency: int, timeout_s: float) -> dict[str, Any]:
    import httpx

    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    nxt = iter(range(len(payloads)))
    deadline = time.perf_counter() + duration_s

    def worker() -> None:
        with httpx.Client(timeout=timeout_s, trust_env=False) as c:
            while time.perf_counter() < deadline:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                t = time.perf_counter()
                try:
                    r = c.post(url, json=payloads[i])
                    ok = r.status_code == 200
                    msg = f"HTTP {r.status_code}: {r.text[:200]}"
                except httpx.HTTPError as e:
                    ok, msg = False, f"{type(e).__name__}: {e}"
                dt = time.perf_counter() - t
                with lock:
                    if ok:
                        lat.append(dt)
                    else:
                        errors.append(msg)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, concurrency))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    done = len(lat) + len(errors)
    ms = np.asarray(lat) * 1000.0
    pct = {f"p{q}_ms": (round(float(np.percentile(ms, q)), 2) if len(ms) else None) for q in (50, 95, 99)}
    rows = sum(sum(len(i["candidates"]) for i in p["instances"]) for p in payloads[:done])
    return {
        "requests": done,
        "ok": len(lat),
        "errors": len(errors),
        "first_errors": errors[:3],
        "seconds": round(wall, 3),
        "requests_per_s": round(done / wall, 3) if wall else None,
        "rows_per_s": round(rows / wall, 3) if wall else None,
        "mean_ms": round(float(ms.mean()), 2) if len(ms) else None,
        **pct,
        "stopped_by": "count" if done >= len(payloads) else "time",
    }


def _healthy(base: str, timeout_s: float) -> bool:
    import httpx

    try:
        with httpx.Client(timeout=timeout_s, trust_env=False) as c:
            return all(c.get(f"{base}/v2/health/{k}").status_code == 200 for k in ("live", "ready"))
    except httpx.HTTPError:
        return False


def _info(url: str, timeout_s: float) -> dict[str, Any] | None:
    """The server's ``GET /reclora/info`` (precision, hardware, base model dimensions, rows scored), or None."""
    import httpx

    try:
        with httpx.Client(timeout=timeout_s, trust_env=False) as c:
            r = c.get(f"{url.rstrip('/')}/reclora/info")
        return r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def _roofline(before: dict[str, Any], after: dict[str, Any] | None, phases: dict[str, Any]) -> dict[str, Any]:
    """Tokens per row, FLOPs per row, rows/s and ``roofline_ratio`` = rows/s x FLOPs per row / the matmul
    peak at the server's precision, measured here (same machine: loopback only) on the server's threads
    while the server is idle. Rows/s: the best phase."""
    from types import SimpleNamespace

    import torch

    from reclora.bench.speed import forward_flops, matmul_peak

    if after is None:
        return {"error": "the server did not answer GET /reclora/info after the load test"}
    d = {k: after["stats"][k] - before["stats"][k] for k in ("rows", "tokens", "tokens_squared")}
    dims = SimpleNamespace(**after["base_model"])
    rows = max(1, d["rows"])
    flops_row = forward_flops(dims, d["rows"], d["tokens"], d["tokens_squared"]) / rows
    prec = after["precision"]["chosen"]
    threads = int(after["hardware"].get("threads") or torch.get_num_threads())
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        peak = matmul_peak(prec)
    finally:
        torch.set_num_threads(old)
    best = max((p for p in phases.values() if p.get("rows_per_s")), key=lambda p: p["rows_per_s"], default=None)
    rps = best["rows_per_s"] if best else 0.0
    return {
        "precision": prec,
        "threads": threads,
        "rows_scored": d["rows"],
        "tokens_per_row": round(d["tokens"] / rows, 2),
        "flops_per_row": flops_row,
        "rows_per_s": rps,
        "matmul_peak_gflops": round(peak, 2),
        "roofline_ratio": round(rps * flops_row / (peak * 1e9), 4) if peak > 0 else None,
    }


def bench_serve(
    url: str,
    out: str | Path | None = None,
    requests: int = 2000,
    duration_s: float = 120.0,
    concurrency: int = 4,
    batch: int = 8,
    users: Sequence[int] | None = None,
    items: Sequence[int] | None = None,
    model: str = "reclora",
    timeout_s: float = 60.0,
    seed: int = 0,
    phases: Sequence[str] = ("single_user", "mixed_users"),
    single_requests: int | None = None,
) -> dict[str, Any]:
    """Load-test ``url`` (e.g. http://127.0.0.1:8080) with V1 requests; each phase bounded by count and time.

    ``users``/``items`` are the ids to draw from (default: users 1..50, items 1..50; unknown users
    are cold starts, which cost the same forward). ``single_requests``: another count for the
    single-user phase (its rate is the reference of the mixed/single throughput ratio; default
    ``requests``). After the phases the server's liveness and readiness are checked again. A `reclora
    serve` (``GET /reclora/info``) also gives ``serve`` (tokens per row, FLOPs per row, rows/s and
    ``roofline_ratio``, see :func:`_roofline`), ``precision`` and ``hardware``.
    """
    _check_loopback(url)
    if (
        requests < 1
        or duration_s <= 0
        or concurrency < 1
        or batch < 1
        or (single_requests is not None and single_requests < 1)
    ):
        raise ConfigError("requests, single_requests, duration_s, concurrency and batch must be positive")
    users = list(users) if users is not None else list(range(1, 51))
    items = list(items) if items is not None else list(range(1, 51))
    endpoint = f"{url.rstrip('/')}/v1/models/{model}:predict"
    counts = {"single_user": single_requests or requests, "mixed_users": requests}
    result: dict[str, Any] = {
        "url": endpoint,
        "requests_per_phase": {k: counts[k] for k in phases},
        "duration_s_per_phase": duration_s,
        "concurrency": concurrency,
        "batch": batch,
        "phases": {},
    }
    info_before = _info(url, timeout_s)  # None: a server without /reclora/info (no roofline figures)
    for i, kind in enumerate(phases):
        if kind not in ("single_user", "mixed_users"):
            raise ConfigError(f"unknown phase {kind!r}")
        pl = _payloads(kind, batch, users, items, counts[kind], seed + i)
        result["phases"][kind] = _phase(endpoint, pl, duration_s, concurrency, timeout_s)
    result["errors"] = sum(p["errors"] for p in result["phases"].values())
    ph = result["phases"]
    if "single_user" in ph and "mixed_users" in ph and ph["single_user"]["rows_per_s"]:
        result["mixed_vs_single_throughput"] = round(
            ph["mixed_users"]["rows_per_s"] / ph["single_user"]["rows_per_s"], 3
        )
    result["healthy_after"] = _healthy(url.rstrip("/"), timeout_s)
    if info_before is not None:
        result["serve"] = _roofline(info_before, _info(url, timeout_s), result["phases"])
        result["precision"] = info_before["precision"]
        result["hardware"] = info_before["hardware"]
    if out is not None:
        from reclora.io import write_json

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(out), result)
    return result


def _start_server(
    model: str, precision: str, ref: str, feature_store: str | None, threads: int | None, log: Path, timeout_s: float
) -> tuple[Any, str]:
    """Start ``python -m reclora.cli.serve`` on a free loopback port at ``precision``; (process, url) once ready.
    Raises RuntimeError with the log's tail when it exits or is not ready in ``timeout_s``."""
    import os
    import socket
    import subprocess
    import sys

    import httpx

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "reclora.cli.serve",
        "--model",
        str(model),
        "--ref",
        ref,
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--precision",
        precision,
    ]
    if feature_store:
        cmd += ["--feature-store", str(feature_store)]
    if threads:
        cmd += ["--threads", str(threads)]
    f = open(log, "w")
    proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ))
    f.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"reclora serve --precision {precision} exited ({proc.returncode}): {log.read_text()[-2000:]}"
            )
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2, trust_env=False).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            _stop(proc)
            raise RuntimeError(
                f"reclora serve --precision {precision} not ready in {timeout_s:.0f} s: {log.read_text()[-2000:]}"
            )
        time.sleep(0.5)


def _stop(proc: Any) -> None:
    """Stop a server this module started, by its PID (SIGTERM, then SIGKILL after 20 s)."""
    import subprocess

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bench_serve_precisions(
    model: str | Path,
    out: str | Path | None = None,
    precisions: Sequence[str] = ("auto", "bf16"),
    ref: str = "champion",
    feature_store: str | Path | None = None,
    threads: int | None = None,
    start_timeout_s: float = 300.0,
    **kw: Any,
) -> dict[str, Any]:
    """The same load test (:func:`bench_serve`, ``kw``) against `reclora serve --precision P` for each P in
    ``precisions``, one server at a time on 127.0.0.1 (started here, stopped by its PID before the next
    starts, so they never share the cores), in one run. Users and items are drawn from the version's own
    catalogue unless ``kw`` gives them. Returns {"runs": {P: bench_serve's result}, "serve": the first P's
    ``serve`` figures, "rows_per_s_ratio": {"<first>_over_<P>": ...}, "p50_ms": {P: {phase: ms}}}."""
    import tempfile

    import pandas as pd

    from reclora.precision import PRECISIONS
    from reclora.serving.predictor import resolve_version_dir

    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise ConfigError(f"precisions must be among {', '.join(PRECISIONS)}, got {list(precisions)}")
    vdir = resolve_version_dir(model, ref)
    if "items" not in kw:
        kw["items"] = pd.read_parquet(vdir / "items.parquet", columns=["item_id"])["item_id"].astype(int).tolist()
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="reclora-bench-serve-") as td:
        for prec in precisions:
            proc, url = _start_server(
                str(vdir),
                prec,
                ref,
                str(feature_store) if feature_store else None,
                threads,
                Path(td) / f"serve-{prec}.log",
                start_timeout_s,
            )
            try:
                runs[prec] = bench_serve(url, None, **kw)
            finally:
                _stop(proc)
    first = precisions[0]
    rps = {p: (r.get("serve") or {}).get("rows_per_s") for p, r in runs.items()}
    result: dict[str, Any] = {
        "benchmark": "serve",
        "model": str(vdir),
        "precisions": list(precisions),
        "runs": runs,
        "serve": runs[first].get("serve"),
        "precision": runs[first].get("precision"),
        "hardware": runs[first].get("hardware"),
        "rows_per_s_ratio": {
            f"{first}_over_{p}": round(rps[first] / rps[p], 3) for p in precisions[1:] if rps.get(first) and rps.get(p)
        },
        "p50_ms": {p: {k: ph["p50_ms"] for k, ph in r["phases"].items()} for p, r in runs.items()},
    }
    if out is not None:
        from reclora.io import write_json

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(out), result)
    return result
