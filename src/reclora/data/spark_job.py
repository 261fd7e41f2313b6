"""The driver program of the Spark prepare step (``mainApplicationFile`` of its SparkApplication).

    spark-submit .../reclora/data/spark_job.py --dataset NAME --out URI --work DIR [--source URI]
        [--report URI] [--params JSON]

Fetches the raw data (``--source``: a local path, an object-store URI or a DVC reference, as the pandas
prepare step takes it; none for synthetic) onto ``--work`` (a volume the executors mount too), runs the
prepare stage on Spark (:func:`reclora.data.spark_prepare.prepare_spark`) into ``--work``, copies the
prepared directory to ``--out`` and writes ``--report`` (JSON: the stage summary plus
``data_version``, DVC's md5 of the prepared directory). ``--params``: JSON merged over params.yaml
(the step passes its ``data`` and ``synthetic`` sections). Prints the report as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    """The driver's command line (what the SparkApplication's ``arguments`` must satisfy)."""
    ap = argparse.ArgumentParser(prog="reclora-spark-prepare", description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--source", default="", help="raw data: path, object-store URI or dvc+<repo>#<path>[@<rev>]")
    ap.add_argument("--out", required=True, help="the prepared directory: a local path or an object-store URI")
    ap.add_argument("--work", required=True, help="a directory the driver and the executors share")
    ap.add_argument("--report", default="", help="where to write the summary + data_version (JSON; local or URI)")
    ap.add_argument("--params", default="{}", help="JSON merged over params.yaml")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Run the prepare stage on Spark; 0 on success (errors raise, the application fails)."""
    from reclora import storage
    from reclora.config import deep_merge, load_params, validated
    from reclora.data.spark_prepare import prepare_spark
    from reclora.data.version import dvc_hash

    a = build_parser().parse_args(argv)
    from reclora.io import loads_json

    params = validated(deep_merge(load_params(), loads_json(a.params)))  # checked once, before any work
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    raw = storage.fetch_source(a.source, work / "raw") if a.source else None
    local_out = work / "prepared" if storage.is_remote(a.out) else Path(a.out)
    summary = prepare_spark(a.dataset, raw, local_out, params)
    summary["source"] = a.source or None  # the source as given, not the work copy
    report = {**summary, "data_version": dvc_hash(local_out)["md5"]}
    if local_out != Path(a.out):
        storage.upload_dir(local_out, a.out)
        report["out"] = a.out
    if a.report:
        fs, path = storage.filesystem(a.report)
        with fs.open(path, "w") as f:
            json.dump(report, f, default=str)
    print(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
