from typing import NamedTuple

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output


def validate(
    data: Input[Dataset], profile: str, overrides: dict, report: Output[HTML], report_site: Output[Artifact],
    stats: Output[Metrics],
) -> NamedTuple("ValidationOutputs", [("passed", bool), ("data_version", str), ("failures", str)]):
    """Great Expectations gate: the Data Docs site, a pass flag and the data version (DVC md5)."""
    import shutil
    import sys
    from collections import namedtuple

    from reclora.config import load_params_with
    from reclora.data import dvc_hash
    from reclora.validation import validate_prepared

    params = load_params_with(overrides, profile or None)
    r = validate_prepared(data.path, report_site.path, params=params["validation"])
    shutil.copy(r.report_html, report.path)  # the site's overview page for the KFP UI
    version = dvc_hash(data.path)["md5"]
    for f in r.failures:
        print(f"FAILED {f['reason']}", file=sys.stderr)
    print(f"validation {'PASS' if r.success else 'FAIL'}; report: {r.report_html}")
    stats.log_metric("failed_expectations", len(r.failures))
    stats.log_metric("passed", int(r.success))
    report_site.metadata.update({"index": str(r.report_html), "data_version": version})
    out = namedtuple("ValidationOutputs", ["passed", "data_version", "failures"])
    return out(bool(r.success), version, "\n".join(f["reason"] for f in r.failures))
