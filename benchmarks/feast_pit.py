"""Point-in-time join through Feast at a few million sample rows: wall time and peak RSS per offline store.

A benchmark, never a test. Usage (run it niced on a shared machine)::

    nice -n 19 .venv/bin/python benchmarks/feast_pit.py --rows 1000000,3000000 --stores file,duckdb \
        --out benchmarks/feast-pit.json [--max-rss-gb 9]

For each size: a synthetic data set (reclora.data.synthetic, ~100 events per user) is written as
prepared tables, its Feast sources built and applied once per store; then, in a fresh child process
per (size, store), Feast's ``get_historical_features`` of the shared attribute views
(``user_profile`` on (user_id, t), ``item_metadata`` on (item_id, t)) for one entity row per event
(the training samples' rows) through ``reclora.features.inputs.offline_feature_frames``. The child's
peak RSS is sampled every 0.2 s (itself and its children) and it is killed above ``--max-rss-gb``
(recorded as ``killed``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
import pandas as pd
from reclora.features import open_feature_store
from reclora.features.inputs import offline_feature_frames
repo, samples, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = pd.read_parquet(samples)
store = open_feature_store(repo)
t0 = time.perf_counter()
uf, itf = offline_feature_frames(store, s, chunk_rows=chunk)
dt = time.perf_counter() - t0
ok = bool(uf["profile_text"].notna().all() and itf["title"].notna().all())
print(json.dumps({"seconds": round(dt, 2), "user_rows": len(uf), "item_rows": len(itf), "all_found": ok}))
"""


def _peak_rss(pid: int, limit_gb: float, proc: subprocess.Popen) -> tuple[float, bool]:
    import psutil

    peak, killed = 0.0, False
    p = psutil.Process(pid)
    while proc.poll() is None:
        try:
            rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
        except psutil.Error:
            break
        peak = max(peak, rss / 2**30)
        if peak > limit_gb:
            proc.kill()
            killed = True
            break
        time.sleep(0.2)
    return peak, killed


def main() -> int:
    """Run the benchmark from the command line; writes the results JSON to ``--out`` after each size, returns 0."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1000000,3000000", help="sample rows (events), comma-separated")
    ap.add_argument("--stores", default="file,duckdb")
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-rss-gb", type=float, default=9.0)
    ap.add_argument("--chunk-rows", type=int, default=0, help="entity rows per Feast request (0 = one request)")
    ap.add_argument("--work", default=None, help="scratch directory (default: a temporary one)")
    a = ap.parse_args()

    from reclora.data import schema
    from reclora.data.synthetic import generate
    from reclora.features import apply_feature_repo, build_feature_sources

    results: dict = {"machine": {"cpus": os.cpu_count()}, "chunk_rows": a.chunk_rows, "sizes": {}}
    work = Path(a.work or tempfile.mkdtemp(prefix="reclora-pit-"))
    for n in [int(x) for x in a.rows.split(",")]:
        users = max(n // 100, 100)
        t0 = time.perf_counter()
        t = generate(n_users=users, n_items=max(users // 4, 200), mean_interactions=100, min_interactions=10, seed=1)
        d = work / f"n{n}"
        (d / "prepared").mkdir(parents=True, exist_ok=True)
        t.interactions.to_parquet(d / "prepared" / schema.INTERACTIONS, index=False)
        t.items.to_parquet(d / "prepared" / schema.ITEMS, index=False)
        t.users.to_parquet(d / "prepared" / schema.USERS, index=False)
        samples = d / "samples.parquet"
        t.interactions[["user_id", "item_id", "timestamp"]].to_parquet(samples, index=False)
        build_feature_sources(d / "prepared", d / "sources", history_len=1)
        rows = len(t.interactions)
        del t
        entry = {"sample_rows": rows, "users": users, "setup_seconds": round(time.perf_counter() - t0, 1)}
        for store in a.stores.split(","):
            repo = d / f"repo-{store}"
            apply_feature_repo(repo, d / "sources", store_config={"offline_store": {"type": store}})
            proc = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(repo), str(samples), str(a.chunk_rows)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            peak, killed = _peak_rss(proc.pid, a.max_rss_gb, proc)
            out, err = proc.communicate()
            rec = {"peak_rss_gb": round(peak, 2), "killed": killed}
            if proc.returncode == 0:
                rec.update(json.loads(out.strip().splitlines()[-1]))
            else:
                rec["error"] = (err.strip().splitlines() or ["?"])[-1][:300]
            entry[store] = rec
            print(json.dumps({"rows": rows, "store": store, **rec}), flush=True)
        results["sizes"][str(rows)] = entry
        Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
