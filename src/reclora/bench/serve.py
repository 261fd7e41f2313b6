"""A bounded load test of a running `reclora serve` (loopback only), from the calling process.

    bench_serve(url, out, requests=2000, duration_s=120, concurrency=4, batch=8, ...)

Two phases of the same batch size (candidates per request): ``single_user`` (one user with
``batch`` candidates) and ``mixed_users`` (``batch`` users with one candidate each, so one forward
holds rows of many users). Each phase stops by itself after ``requests`` requests or
``duration_s`` seconds, whichever comes first, and reports requests/s, rows/s, p50/p95/p99
latency (ms) and the error count. The JSON goes to ``out``.
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from pathlib import Path
from typing import Any, Sequence
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
        "requests": done, "ok": len(lat), "errors": len(errors), "first_errors": errors[:3],
        "seconds": round(wall, 3), "requests_per_s": round(done / wall, 3) if wall else None,
        "rows_per_s": round(rows / wall, 3) if wall else None, "mean_ms": round(float(ms.mean()), 2) if len(ms) else None,
        **pct, "stopped_by": "count" if done >= len(payloads) else "time",
    }  # fmt: skip


def _healthy(base: str, timeout_s: float) -> bool:
    import httpx

    try:
        with httpx.Client(timeout=timeout_s, trust_env=False) as c:
            return all(c.get(f"{base}/v2/health/{k}").status_code == 200 for k in ("live", "ready"))
    except httpx.HTTPError:
        return False


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
    ``requests``). After the phases the server's liveness and readiness are checked again.
    """
    _check_loopback(url)
    if requests < 1 or duration_s <= 0 or concurrency < 1 or batch < 1 or (single_requests is not None and single_requests < 1):
        raise ConfigError("requests, single_requests, duration_s, concurrency and batch must be positive")
    users = list(users) if users is not None else list(range(1, 51))
    items = list(items) if items is not None else list(range(1, 51))
    endpoint = f"{url.rstrip('/')}/v1/models/{model}:predict"
    counts = {"single_user": single_requests or requests, "mixed_users": requests}
    result: dict[str, Any] = {"url": endpoint, "requests_per_phase": {k: counts[k] for k in phases},
                              "duration_s_per_phase": duration_s, "concurrency": concurrency, "batch": batch,
                              "phases": {}}  # fmt: skip
    for i, kind in enumerate(phases):
        if kind not in ("single_user", "mixed_users"):
            raise ConfigError(f"unknown phase {kind!r}")
        pl = _payloads(kind, batch, users, items, counts[kind], seed + i)
        result["phases"][kind] = _phase(endpoint, pl, duration_s, concurrency, timeout_s)
    result["errors"] = sum(p["errors"] for p in result["phases"].values())
    ph = result["phases"]
    if "single_user" in ph and "mixed_users" in ph and ph["single_user"]["rows_per_s"]:
        result["mixed_vs_single_throughput"] = round(ph["mixed_users"]["rows_per_s"] / ph["single_user"]["rows_per_s"], 3)
    result["healthy_after"] = _healthy(url.rstrip("/"), timeout_s)
    if out is not None:
        from reclora.io import write_json

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(out), result)
    return result
