"""The driver program of the Spark features step (``mainApplicationFile`` of the SparkApplication).

    spark-submit .../reclora/features/spark_job.py --data URI --out URI --work DIR [--features-params JSON]

Copies the prepared data (``--data``, a local directory or an object-store URI) into ``--work``
(a volume the executors mount too), runs the features stage there with Feast's Spark offline store
(``--features-params``: the params ``features`` section as JSON, merged over this image's params.yaml; its
``offline_store`` defaults to spark),
and copies the stage's output to ``--out``. Prints the stage summary as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from reclora.io import loads_json


def main(argv: Sequence[str] | None = None) -> int:
    """Run the features stage on Spark; 0 on success (errors raise, the application fails)."""
    from reclora import storage
    from reclora.config import load_params, validated
    from reclora.features.stage import features_stage

    ap = argparse.ArgumentParser(prog="reclora-spark-features", description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--features-params", default="{}", help="params features section (JSON)")
    a = ap.parse_args(argv)
    params = load_params()
    params["features"] = {**params["features"], "offline_store": "spark", **loads_json(a.features_params)}
    params = validated(params)  # checked once, before any work
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    data = storage.download_dir(a.data, work / "data") if storage.is_remote(a.data) else Path(a.data)
    local_out = work / "features" if storage.is_remote(a.out) else Path(a.out)
    summary = features_stage(data, local_out, params=params)
    if local_out != Path(a.out):
        storage.upload_dir(local_out, a.out)
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
