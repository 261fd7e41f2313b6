"""KFP component of the features step on Spark: wraps :func:`reclora.spark.features_on_spark` (the
features stage run by a SparkApplication) and logs the summary the application wrote."""

from kfp.dsl import Dataset, Input, Metrics, Output


def features_spark(
    data: Input[Dataset], profile: str, overrides: dict, feature_store: Output[Dataset], stats: Output[Metrics]
):
    """The features step beyond one machine: a SparkApplication (Kubeflow Spark Operator) runs the Feast
    sources, `feast apply`, materialization and the point-in-time joins on Spark (Feast's Spark offline
    store); this step creates it, waits for it, and reports the stage summary it wrote."""
    from reclora.hardware import setup_process

    setup_process()  # threads from the pod's CPU limit; a step given a GPU torch cannot use stops here

    from reclora.config import load_params_with, validated
    from reclora.spark import features_on_spark

    s = features_on_spark(data.uri, feature_store.uri, validated(load_params_with(overrides, profile or None)))
    for k, v in s.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            stats.log_metric(k, v)
