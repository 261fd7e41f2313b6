"""The prepare step beyond one machine, by configuration (no pyspark, no Kubernetes here): the switch
``data.engine``, the SparkApplication the Spark prepare step sends to the Kubeflow Spark Operator (the
real kubernetes client with its HTTP layer replaced by the recorder of test_kube_requests), the driver
program's command line, the component in the compiled pipeline, and the clear errors."""

import json
import sys
import uuid
from pathlib import Path

import fsspec
import pytest
import yaml

from reclora import spark
from reclora.cli import app
from reclora.cli.common import run_cli
from reclora.config import deep_merge, load_params
from reclora.data import spark_job
from reclora.data.spark_prepare import data_engine, prepare_spark, require_pyspark
from reclora.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_kube_requests import Recorder, spark_operator  # noqa: E402

BASE = "/apis/sparkoperator.k8s.io/v1beta2/namespaces/reclora/sparkapplications"


def _params(**data):
    p = load_params()
    return deep_merge(p, {"data": data, "pipeline": {"storage_secret": {"name": "reclora-object-store"}}})


def _report(uri, **extra):
    rep = {
        "rows": 1234,
        "users": 10,
        "items": 50,
        "positive_rate": 0.55,
        "samples": {"train": 800, "valid": 100, "test": 99},
        "data_version": "0123456789abcdef0123456789abcdef.dir",
        **extra,
    }
    with fsspec.open(uri, "w") as f:
        json.dump(rep, f)
    return rep


def test_the_engine_switch_defaults_to_pandas_and_refuses_unknown_engines():
    assert data_engine(load_params()) == "pandas"  # params.yaml's default
    assert data_engine(_params(engine="spark")) == "spark"
    with pytest.raises(ConfigError, match="data.engine must be one of pandas, spark, got 'dask'"):
        data_engine(_params(engine="dask"))
    for empty in ("", None):  # an empty value is refused, never a silent pandas
        with pytest.raises(ConfigError, match="data.engine must be one of pandas, spark"):
            data_engine(_params(engine=empty))


def test_a_missing_interactions_file_is_refused_before_spark_starts(tmp_path):
    """Without pyspark installed too: the file check comes before the session (and the JVM)."""
    from reclora.errors import DataError

    with pytest.raises(DataError, match="missing ratings.csv"):
        prepare_spark("ml-25m", tmp_path, tmp_path / "out", load_params())
    with pytest.raises(DataError, match="missing interactions.parquet or interactions.csv"):
        prepare_spark("table", tmp_path, tmp_path / "out", load_params())
    assert not (tmp_path / "out").exists()


def test_the_prepare_step_creates_its_application_and_returns_the_drivers_report():
    rec, naps = Recorder(spark_operator("SUBMITTED", "RUNNING", "COMPLETED")), []
    params = _params(engine="spark", min_history=7)
    root = f"memory://art-{uuid.uuid4().hex[:8]}/run-1/prepare-spark"
    out, report = f"{root}/data", f"{root}/report"
    want = _report(report)  # what the driver writes when it is done
    got = spark.prepare_on_spark("ml-25m", "s3://raw/ml-25m", out, report, params, api=rec.api, sleep=naps.append)
    assert got == want
    name = spark.application_name(out, "prepare")
    assert name.startswith("reclora-prepare-") and len(name) <= 63 and name != spark.application_name(out)
    assert [c[:2] for c in rec.calls] == [("POST", BASE)] + [("GET", f"{BASE}/{name}")] * 3 and len(naps) == 2
    body = rec.calls[0][3]
    sp, s = params["pipeline"]["spark"], body["spec"]
    assert body["kind"] == "SparkApplication" and body["metadata"]["name"] == name
    assert body["metadata"]["labels"]["app.kubernetes.io/component"] == "prepare"
    assert (s["type"], s["mode"], s["image"], s["sparkVersion"]) == (
        "Python",
        "cluster",
        sp["image"],
        sp["spark_version"],
    )
    assert s["mainApplicationFile"] == sp["prepare_application_file"]
    assert s["mainApplicationFile"].endswith("/reclora/data/spark_job.py")
    assert s["volumes"] == [{"name": "work", "persistentVolumeClaim": {"claimName": sp["work_claim"]}}]
    for role in ("driver", "executor"):
        assert s[role]["labels"]["app.kubernetes.io/component"] == "prepare"
        assert s[role]["volumeMounts"] == [{"name": "work", "mountPath": "/workspace"}]
        assert s[role]["serviceAccount"] == sp["service_account"]
        env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in s[role]["env"]}  # credentials by reference only
        assert env["AWS_ACCESS_KEY_ID"] == {
            "name": "reclora-object-store",
            "key": "AWS_ACCESS_KEY_ID",
            "optional": False,
        }
    assert (s["executor"]["instances"], s["executor"]["cores"], s["executor"]["memory"]) == (2, 2, "8g")
    assert s["sparkConf"] == {
        k: str(v) for k, v in params["data"]["spark_conf"].items()
    }  # the data section's, not features'
    # the driver program accepts exactly these arguments, and gets this run's data settings
    a = spark_job.build_parser().parse_args(s["arguments"])
    assert (a.dataset, a.source, a.out, a.report, a.work) == (
        "ml-25m",
        "s3://raw/ml-25m",
        out,
        report,
        f"/workspace/{name}",
    )
    driver_params = deep_merge(load_params(), json.loads(a.params))
    assert driver_params["data"]["min_history"] == 7 and driver_params["data"]["engine"] == "spark"
    assert driver_params["synthetic"] == params["synthetic"]


def test_a_failed_prepare_application_fails_the_step():
    failed = spark_operator("FAILED", error="executor lost")
    with pytest.raises(RuntimeError, match="executor lost"):
        spark.prepare_on_spark(
            "synthetic", "", "memory://a/d", "memory://a/r", _params(), api=Recorder(failed).api, sleep=lambda s: None
        )


def test_the_prepare_step_refuses_what_the_driver_pod_cannot_see():
    p = _params()
    with pytest.raises(ConfigError, match="object-store output URI"):
        spark.prepare_on_spark("synthetic", "", "/tmp/out", "memory://a/r", p, api=object())
    with pytest.raises(ConfigError, match="object-store report URI"):
        spark.prepare_on_spark("synthetic", "", "memory://a/d", "report.json", p, api=object())
    with pytest.raises(ConfigError, match="as its source"):
        spark.prepare_on_spark("ml-25m", "/home/me/ml-25m", "memory://a/d", "memory://a/r", p, api=object())
    with pytest.raises(ConfigError, match="prepare_application_file"):
        spark.prepare_on_spark(
            "ml-25m",
            "/workspace/raw/ml-25m",
            "memory://a/d",
            "memory://a/r",
            deep_merge(p, {"pipeline": {"spark": {"prepare_application_file": ""}}}),
            api=object(),
        )


def _compiled(tmp_path, monkeypatch, **over):
    from kfp import compiler

    import pipelines.pipeline as pl
    from reclora.config import load_params_with

    monkeypatch.setattr(pl, "load_params_with", lambda o, prof: deep_merge(load_params_with(o, prof), over))
    compiler.Compiler().compile(pl.build_pipeline(), str(tmp_path / "p.yaml"))
    ir = next(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))
    return ir, {k: json.dumps(e) for k, e in ir["deploymentSpec"]["executors"].items()}


def test_the_pipeline_picks_the_prepare_step_by_data_engine(tmp_path, monkeypatch):
    ir, execs = _compiled(tmp_path, monkeypatch)  # default: pandas, in the step's own pod
    assert any("import prepare as run" in e for e in execs.values())
    assert not any("prepare_on_spark" in e for e in execs.values())
    ir, execs = _compiled(tmp_path, monkeypatch, data={"engine": "spark"})
    assert any("prepare_on_spark" in e for e in execs.values())
    assert not any("import prepare as run" in e for e in execs.values())
    tasks = ir["root"]["dag"]["tasks"]
    prep = tasks["prepare-spark"]
    assert prep["taskInfo"]["name"] == "prepare data (Spark)" and prep["cachingOptions"]["enableCache"] is True
    outputs = ir["components"][prep["componentRef"]["name"]]["outputDefinitions"]
    assert {"data", "stats", "report"} <= set(outputs["artifacts"]) and "Output" in outputs["parameters"]
    # the later steps read the Spark step's outputs as they read the pandas step's
    validate = next(t for k, t in tasks.items() if k.startswith("validate"))
    assert validate["inputs"]["artifacts"]["data"]["taskOutputArtifact"]["producerTask"] == "prepare-spark"
    with pytest.raises(ConfigError, match="data.engine"):
        _compiled(tmp_path, monkeypatch, data={"engine": "dask"})


def test_without_pyspark_the_spark_engine_names_the_extra_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyspark", None)  # as on a machine without the `spark` extra
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[spark\]'"):
        require_pyspark()
    with pytest.raises(ConfigError, match="optional `spark` extra"):
        prepare_spark("synthetic", None, tmp_path / "out", load_params())
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []
    rc = run_cli(
        app,
        ["data", "prepare", "--dataset", "synthetic", "--out", str(tmp_path / "o"), "--engine", "spark"],
        prog_name="reclora",
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error:") and "pip install -e '.[spark]'" in err[-1]
    rc = run_cli(
        app,
        ["data", "prepare", "--dataset", "synthetic", "--out", str(tmp_path / "o"), "--engine", "dask"],
        prog_name="reclora",
    )
    assert rc == 2 and "data.engine must be one of" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_spark_engine_refuses_the_small_releases_before_starting_spark(tmp_path):
    for ds in ("ml-100k", "ml-1m", "goodbooks-10k"):
        with pytest.raises(ConfigError, match=f"{ds} is a small fixed release: use data.engine pandas"):
            prepare_spark(ds, tmp_path, tmp_path / "out", load_params())
    with pytest.raises(ConfigError, match="unknown dataset"):
        prepare_spark("ml-50m", tmp_path, tmp_path / "out", load_params())
    with pytest.raises(ConfigError, match="--path is required"):
        prepare_spark("ml-25m", None, tmp_path / "out", load_params())
    assert not (tmp_path / "out").exists()
