"""Beyond one machine, by configuration: Feast's Spark offline store from params, and the SparkApplication
the Spark features step sends to the Kubeflow Spark Operator (no API server here: the real kubernetes
client with its HTTP layer replaced by the recorder of test_kube_requests)."""

import json
import sys
import uuid
from pathlib import Path

import fsspec
import pytest
import yaml

from reclora import spark
from reclora.config import deep_merge, load_params
from reclora.errors import ConfigError
from reclora.features.repo import store_config, store_overrides

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_kube_requests import Recorder, spark_operator  # noqa: E402

BASE = "/apis/sparkoperator.k8s.io/v1beta2/namespaces/reclora/sparkapplications"


def _params(**features):
    p = load_params()
    return deep_merge(p, {"features": features, "pipeline": {"storage_secret": {"name": "reclora-object-store"}}})


def test_offline_store_is_chosen_by_params_only():
    assert store_overrides(_params())["offline_store"] == {"type": "duckdb"}  # params' default
    assert store_overrides(_params(offline_store="file"))["offline_store"] == {"type": "file"}
    assert store_config(None, store_overrides(_params(offline_store="duckdb")))["offline_store"] == {"type": "duckdb"}
    cfg = store_config(None, store_overrides(_params(offline_store="spark", spark_staging_location="s3://b/stage")))
    assert cfg["offline_store"]["type"] == "spark" and cfg["offline_store"]["staging_location"] == "s3://b/stage"
    assert cfg["offline_store"]["spark_conf"]["spark.sql.session.timeZone"] == "UTC"
    assert cfg["online_store"] == {"type": "sqlite", "path": "data/online_store.db"}  # the rest stays
    # features.store still has the last word (e.g. a Redis online store beside Spark)
    over = store_overrides(
        _params(offline_store="spark", store={"online_store": {"type": "redis", "connection_string": "r:6379"}})
    )
    assert over["online_store"]["type"] == "redis" and over["offline_store"]["type"] == "spark"
    with pytest.raises(ConfigError, match="offline_store must be one of"):
        store_overrides(_params(offline_store="bigtable"))


def test_spark_sources_are_declared_for_the_spark_store(tmp_path):
    from reclora.features.definitions import feature_definitions

    defs = feature_definitions("sources", repo_path=tmp_path, offline_store="spark")
    src = defs["user_history_source"]
    assert type(src).__name__ == "SparkSource" and src.path == str(
        (tmp_path / "sources" / "user_history.parquet").resolve()
    )
    assert src.file_format == "parquet" and src.timestamp_field == "event_timestamp"
    assert type(feature_definitions("sources", tmp_path, "duckdb")["user_history_source"]).__name__ == "FileSource"
    remote = feature_definitions("s3://b/src", tmp_path, "spark")["user_profile_source"]
    assert remote.path == "s3://b/src/user_profile.parquet"
    with pytest.raises(ConfigError):
        feature_definitions("sources", tmp_path, "bigquery")


def test_the_spark_step_creates_the_application_and_waits_for_it():
    rec, naps = Recorder(spark_operator("SUBMITTED", "RUNNING", "COMPLETED")), []
    params = _params()
    out = f"memory://art-{uuid.uuid4().hex[:8]}/run-1/features"  # the application writes the stage output here
    with fsspec.open(f"{out}/summary.json", "w") as f:
        json.dump({"training_rows": 12, "pit_leaks": 0}, f)
    s = spark.features_on_spark("s3://art/run-1/data", out, params, api=rec.api, sleep=naps.append)
    assert s == {"training_rows": 12, "pit_leaks": 0}
    name = spark.application_name(out)
    assert [c[:2] for c in rec.calls] == [("POST", BASE)] + [("GET", f"{BASE}/{name}")] * 3 and len(naps) == 2
    body = rec.calls[0][3]
    sp, s = params["pipeline"]["spark"], body["spec"]
    assert body["apiVersion"] == "sparkoperator.k8s.io/v1beta2" and body["kind"] == "SparkApplication"
    assert body["metadata"]["name"] == name and len(name) <= 63
    assert (s["type"], s["mode"], s["image"], s["sparkVersion"]) == (
        "Python",
        "cluster",
        sp["image"],
        sp["spark_version"],
    )
    assert s["mainApplicationFile"] == sp["main_application_file"] and s["mainApplicationFile"].endswith("spark_job.py")
    assert s["restartPolicy"] == {"type": "Never"}
    assert s["volumes"] == [{"name": "work", "persistentVolumeClaim": {"claimName": sp["work_claim"]}}]
    for role in ("driver", "executor"):
        assert s[role]["volumeMounts"] == [{"name": "work", "mountPath": "/workspace"}]
        assert s[role]["serviceAccount"] == sp["service_account"]
        env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in s[role]["env"]}  # credentials by reference only
        assert env["AWS_ACCESS_KEY_ID"]["name"] == "reclora-object-store"
    assert (s["executor"]["instances"], s["executor"]["cores"], s["executor"]["memory"]) == (2, 2, "8g")
    assert s["sparkConf"]["spark.sql.session.timeZone"] == "UTC"
    # the driver program accepts exactly these arguments, and runs the stage on Feast's Spark store
    a = dict(zip(s["arguments"][::2], s["arguments"][1::2]))
    assert (a["--data"], a["--out"], a["--work"]) == ("s3://art/run-1/data", out, f"/workspace/{name}")
    assert json.loads(a["--features-params"])["offline_store"] == "spark"


def test_a_failed_application_fails_the_step_and_a_retry_replaces_it():
    failed = spark_operator("FAILED", error="driver OOMKilled")
    with pytest.raises(RuntimeError, match="OOMKilled"):
        spark.features_on_spark("s3://a/d", "memory://a/f", _params(), api=Recorder(failed).api, sleep=lambda s: None)

    seen = {"posts": 0}

    def retry(method, path, body):
        if method == "POST":
            seen["posts"] += 1
            return (409, {}) if seen["posts"] == 1 else (201, body)
        if method == "DELETE":
            return 200, {}
        state = "FAILED" if seen["posts"] == 1 else "COMPLETED"
        return 200, {"status": {"applicationState": {"state": state}}}

    rec, out = Recorder(retry), f"memory://a-{uuid.uuid4().hex[:8]}/f"
    with fsspec.open(f"{out}/summary.json", "w") as f:
        f.write("{}")
    spark.features_on_spark("s3://a/d", out, _params(), api=rec.api, sleep=lambda s: None)
    assert [c[0] for c in rec.calls] == ["POST", "GET", "DELETE", "POST", "GET"]


def test_local_paths_and_missing_settings_are_refused():
    with pytest.raises(ConfigError, match="object-store data URI"):
        spark.features_on_spark("/tmp/data", "s3://a/f", _params(), api=object())
    p = deep_merge(_params(), {"pipeline": {"spark": {"work_claim": ""}}})
    with pytest.raises(ConfigError, match="work_claim"):
        spark.features_on_spark("s3://a/d", "s3://a/f", p, api=object())


def test_pipeline_compiles_the_spark_step_when_the_store_is_spark(tmp_path, monkeypatch):
    from kfp import compiler

    import pipelines.pipeline as pl
    from pipelines.pipeline import build_pipeline
    from reclora.config import load_params_with

    monkeypatch.setattr(
        pl,
        "load_params_with",
        lambda o, prof: deep_merge(load_params_with(o, prof), {"features": {"offline_store": "spark"}}),
    )
    compiler.Compiler().compile(build_pipeline(), str(tmp_path / "p.yaml"))
    ir = next(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))  # the IR (platform spec follows)
    execs = ir["deploymentSpec"]["executors"]
    assert any("features_spark" in json.dumps(e) for e in execs.values())
    assert not any("features_stage(" in json.dumps(e) for e in execs.values())
