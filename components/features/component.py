"""KFP component of the features step: wraps :func:`reclora.features.features_stage` (Feast sources,
``feast apply``, the online store, the training join and the point-in-time check) and logs its summary."""

from kfp.dsl import Dataset, Input, Metrics, Output


def features(
    data: Input[Dataset], profile: str, overrides: dict, feature_store: Output[Dataset], stats: Output[Metrics]
):
    """Feast: write the feature sources, `feast apply`, materialize the SQLite online store, join the
    shared features on every sample row (training's model inputs) and check point-in-time correctness."""
    from reclora.hardware import setup_process

    setup_process()  # threads from the pod's CPU limit; a step given a GPU torch cannot use stops here

    from reclora.config import load_params_with, validated
    from reclora.features import features_stage

    s = features_stage(data.path, feature_store.path, params=validated(load_params_with(overrides, profile or None)))
    for k, v in s.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            stats.log_metric(k, v)
    open(stats.path, "w").write(str(dict(stats.metadata)))  # a file, so the step can be cached
