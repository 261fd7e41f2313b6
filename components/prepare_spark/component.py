"""KFP component of the prepare step on Spark (``data.engine: spark``): wraps
:func:`reclora.spark.prepare_on_spark` (the prepare stage run by a SparkApplication) and returns the data
version its driver reported."""

from kfp.dsl import Artifact, Dataset, Metrics, Output


def prepare_spark(
    dataset: str,
    source_path: str,
    version_tag: str,
    profile: str,
    overrides: dict,
    data: Output[Dataset],
    stats: Output[Metrics],
    report: Output[Artifact],
    source_fingerprint: str = "",
) -> str:
    """The prepare step beyond one machine (params ``data.engine: spark``): a SparkApplication (Kubeflow
    Spark Operator) builds the same prepared directory as the `prepare` step on Spark's executors and
    writes it to this step's ``data`` URI; this step creates it, waits for it, and reports the summary
    and the data version (DVC's md5 of the prepared directory) the driver wrote to ``report``.
    ``source_path``: an object-store URI, a DVC reference, or a path on the Spark work volume.
    ``source_fingerprint``: the source_version step's output (recorded; part of the step's cache key)."""
    from reclora.hardware import setup_process

    setup_process()  # threads from the pod's CPU limit; a step given a GPU torch cannot use stops here

    from reclora.config import load_params_with, validated
    from reclora.spark import prepare_on_spark

    params = validated(load_params_with(overrides, profile or None))
    s = prepare_on_spark(dataset, source_path, data.uri, report.uri, params)
    version = s["data_version"]
    data.metadata.update(
        {
            "dataset": dataset,
            "source": source_path,
            "version_tag": version_tag,
            "data_version": version,
            "rows": s["rows"],
            "users": s["users"],
            "items": s["items"],
            "engine": "spark",
            "source_fingerprint": source_fingerprint,
        }
    )
    for k in ("rows", "users", "items", "positive_rate"):
        stats.log_metric(k, s[k])
    for split, n in s["samples"].items():
        stats.log_metric(f"samples_{split}", n)
    open(stats.path, "w").write(str(dict(stats.metadata)))  # a file, so the step can be cached
    return version
