"""KFP component of the validate step: wraps :func:`reclora.validation.validate_prepared` (the Great
Expectations data gate on the prepared directory) and returns whether the data passed."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output


def validate(
    data: Input[Dataset],
    profile: str,
    overrides: dict,
    report: Output[HTML],
    report_site: Output[Artifact],
    stats: Output[Metrics],
) -> bool:
    """Great Expectations gate: the Data Docs site (and its overview page for the KFP UI); True when the data passed.
    The pipeline runs nothing after it when it returns False."""
    from reclora.hardware import setup_process

    setup_process()  # threads from the pod's CPU limit; a step given a GPU torch cannot use stops here

    import shutil
    import sys

    from reclora.config import load_params_with, validated
    from reclora.validation import validate_prepared

    params = validated(load_params_with(overrides, profile or None))
    r = validate_prepared(data.path, report_site.path, params=params["validation"])
    shutil.copy(r.report_html, report.path)
    for f in r.failures:
        print(f"FAILED {f['reason']}", file=sys.stderr)
    print(f"validation {'PASS' if r.success else 'FAIL'}; report: {r.report_html}")
    stats.log_metric("failed_expectations", len(r.failures))
    stats.log_metric("passed", int(r.success))
    report_site.metadata.update({"index": str(r.report_html)})
    open(stats.path, "w").write(str(dict(stats.metadata)))  # a file, so the step can be cached
    return bool(r.success)
