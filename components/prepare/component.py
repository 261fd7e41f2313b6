from kfp.dsl import Dataset, Metrics, Output


def prepare(dataset: str, source_path: str, version_tag: str, profile: str, overrides: dict, data: Output[Dataset],
            stats: Output[Metrics]):  # fmt: skip
    """Raw behaviour data -> canonical tables + train/valid/test CTR samples."""
    from reclora.config import load_params_with
    from reclora.data import prepare as run

    s = run(dataset, source_path or None, data.path, load_params_with(overrides, profile or None))
    data.metadata.update({"dataset": dataset, "version_tag": version_tag, "rows": s["rows"], "users": s["users"], "items": s["items"]})
    for k in ("rows", "users", "items", "positive_rate"):
        stats.log_metric(k, s[k])
    for split, n in s["samples"].items():
        stats.log_metric(f"samples_{split}", n)
