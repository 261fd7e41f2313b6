"""KFP component of the prepare step: wraps :func:`reclora.data.prepare` (raw data -> canonical tables and
CTR samples) on a source fetched by :func:`reclora.storage.fetch_source`, and returns the data version
(:func:`reclora.data.dvc_hash` of the prepared directory)."""

from kfp.dsl import Dataset, Metrics, Output


def prepare(
    dataset: str,
    source_path: str,
    version_tag: str,
    profile: str,
    overrides: dict,
    data: Output[Dataset],
    stats: Output[Metrics],
    source_fingerprint: str = "",
) -> str:
    """Raw behaviour data -> canonical tables + train/valid/test CTR samples; returns the data version
    (DVC's md5 of the prepared directory, the same as `dvc.lock` would record). ``source_path``: a path in
    the pod, an object-store URI (s3://, gs://) or a DVC reference (dvc+<repository>#<path>[@<rev>]).
    ``source_fingerprint``: the source_version step's output (recorded; part of the step's cache key)."""
    from reclora.hardware import setup_process

    setup_process()  # threads from the pod's CPU limit; a step given a GPU torch cannot use stops here

    from reclora.config import load_params_with, validated
    from reclora.data import dvc_hash
    from reclora.data import prepare as run
    from reclora.storage import fetch_source

    params = validated(load_params_with(overrides, profile or None))  # checked before any work
    raw = fetch_source(source_path) if source_path else None
    s = run(dataset, raw, data.path, params)
    version = dvc_hash(data.path)["md5"]
    data.metadata.update(
        {
            "dataset": dataset,
            "source": source_path,
            "version_tag": version_tag,
            "data_version": version,
            "rows": s["rows"],
            "users": s["users"],
            "items": s["items"],
            "source_fingerprint": source_fingerprint,
        }
    )
    for k in ("rows", "users", "items", "positive_rate"):
        stats.log_metric(k, s[k])
    for split, n in s["samples"].items():
        stats.log_metric(f"samples_{split}", n)
    open(stats.path, "w").write(str(dict(stats.metadata)))  # a file, so the step can be cached
    return version
