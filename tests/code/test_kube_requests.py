"""The Kubernetes API requests the pipeline sends (no API server here): the real kubernetes client with
its HTTP layer replaced by a recorder. KServe rollout on promotion (a merge patch of one
InferenceService's storageUri) and the multi-node TrainJob (create, wait, retry, failure)."""

import json
import sys
import uuid
from pathlib import Path

import fsspec
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from reclora import launch, storage, trainjob
from reclora.config import deep_merge, load_params
from reclora.errors import ConfigError
from reclora.registry.deploy import deploy_version, inference_service_patch, storage_uri

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_registry import _evidence, _report, _scored, art  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[2]


class _Response:
    def __init__(self, status: int, obj: dict):
        self.status, self.reason, self.data = status, "OK", json.dumps(obj).encode()

    def getheaders(self):
        return {"content-type": "application/json"}

    def getheader(self, name, default=None):
        return self.getheaders().get(name.lower(), default)


class Recorder:
    """Replaces the client's REST layer: records (method, path, content type, body); ``reply`` answers."""

    def __init__(self, reply):
        self.calls, self.reply = [], reply
        cfg = client.Configuration(host="http://127.0.0.1:1")
        self.api = client.CustomObjectsApi(client.ApiClient(cfg))
        self.api.api_client.rest_client.request = self.request

    def request(self, method, url, query_params=None, headers=None, body=None, **_):
        path = url.split("127.0.0.1:1", 1)[1]
        self.calls.append((method, path, (headers or {}).get("Content-Type"), body))
        status, obj = self.reply(method, path, body)
        if status >= 300:
            raise ApiException(status=status, reason="Conflict" if status == 409 else "Error")
        return _Response(status, obj)


def spark_operator(*states, error=""):
    """A Recorder ``reply`` playing the Spark Operator: a POST creates the SparkApplication, each GET
    answers the next of ``states`` (the last one repeats), with ``error`` as the status errorMessage."""
    seen = iter(states)
    last = {"state": states[-1]}

    def reply(method, path, body):
        if method == "POST":
            return 201, body
        last["state"] = next(seen, last["state"])
        return 200, {
            "status": {"applicationState": {"state": last["state"], **({"errorMessage": error} if error else {})}}
        }

    return reply


ISVC = "/apis/serving.kserve.io/v1beta1/namespaces/reclora/inferenceservices/reclora"


# ------------------------------------------------------------------ KServe rollout
def test_storage_uri_of_a_version():
    assert storage_uri("s3://b/reg", "v0003") == "s3://b/reg/reclora/versions/v0003"
    assert storage_uri("gs://b/reg/", "v0001", name="m") == "gs://b/reg/m/versions/v0001"
    assert (
        storage_uri("/mnt/registry", "v0002", storage_root="pvc://reclora-registry")
        == "pvc://reclora-registry/reclora/versions/v0002"
    )
    with pytest.raises(ConfigError, match="storage_root"):
        storage_uri("runs/registry", "v0001")


def test_deploy_sends_one_merge_patch_of_the_storage_uri():
    old = {"spec": {"predictor": {"model": {"storageUri": "s3://b/reg/reclora/versions/v0001"}}}}
    rec = Recorder(lambda m, p, b: (200, old))
    out = deploy_version("s3://b/reg", "v0002", api=rec.api)
    want = {"spec": {"predictor": {"model": {"storageUri": "s3://b/reg/reclora/versions/v0002"}}}}
    assert rec.calls == [("GET", ISVC, None, None), ("PATCH", ISVC, "application/merge-patch+json", want)]
    assert out["previous"] == "s3://b/reg/reclora/versions/v0001" and out["patch"] == want
    assert out["storageUri"] == "s3://b/reg/reclora/versions/v0002" and out["dry_run"] is False


def test_dry_run_sends_nothing():
    rec = Recorder(lambda m, p, b: (500, {}))
    out = deploy_version("s3://b/reg", "v0004", dry_run=True, api=rec.api, service="recs", namespace="ml")
    assert rec.calls == [] and out["patch"] == inference_service_patch("s3://b/reg/reclora/versions/v0004")
    assert (out["service"], out["namespace"], out["previous"]) == ("recs", "ml", None)


def test_the_register_step_patches_the_inference_service_only_on_promotion(art, tmp_path, monkeypatch):
    from reclora.stages import register_stage

    rec = Recorder(lambda m, p, b: (200, {"spec": {"predictor": {"model": {"storageUri": "x"}}}}))
    monkeypatch.setattr("reclora.kube.custom_objects_api", lambda: rec.api)
    uri = f"memory://reg-{uuid.uuid4().hex[:8]}"
    params = deep_merge(load_params(), {"pipeline": {"serving": {"deploy": True}}})
    llm = Path(art["adapter_dir"])
    (llm / "metrics.json").write_text(json.dumps({"base_model": "tiny"}))
    # the gate's evidence of each run: no champion yet; worse than the re-scored v0001; better than it
    champions = (None, _scored("v0001", 0.80, 0.50, -0.25, 0.60), _scored("v0001", 0.80, 0.50, 0.005, 0.82))
    for i, ((auc, ll), ch) in enumerate(zip(((0.80, 0.50), (0.60, 0.70), (0.82, 0.48)), champions)):
        ev = tmp_path / f"eval{i}"
        ev.mkdir()
        rep = _report(auc, ll) | {"gate": _evidence(auc, ll, champion=ch)}
        rep["models"]["RecLoRA"] = rep["models"].pop("reclora")  # the evaluate report's model names
        rep["model_order"][-1] = "RecLoRA"
        (ev / "metrics.json").write_text(json.dumps(rep))
        r = register_stage(art["crm_dir"], llm, art["retrieval_dir"], Path(art["items_path"]).parent, ev, uri, params)
        assert r["promoted"] is (i != 1)
        assert (r["deploy"] is None) is (i == 1)
    patches = [c[3] for c in rec.calls if c[0] == "PATCH"]
    assert patches == [inference_service_patch(f"{uri}/reclora/versions/{v}") for v in ("v0001", "v0003")]
    assert {c[1] for c in rec.calls} == {ISVC}


def test_rbac_lets_the_pipeline_get_and_patch_only_this_inference_service():
    docs = list(yaml.safe_load_all((REPO / "infra/k8s/base/rbac.yaml").read_text()))
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "reclora-pipeline-runner")
    rules = [r for r in role["rules"] if "serving.kserve.io" in r["apiGroups"]]
    assert rules == [
        {
            "apiGroups": ["serving.kserve.io"],
            "resources": ["inferenceservices"],
            "resourceNames": ["reclora"],
            "verbs": ["get", "patch"],
        }
    ]
    isvc = yaml.safe_load((REPO / "infra/k8s/base/inferenceservice.yaml").read_text())
    sv = load_params()["pipeline"]["serving"]
    assert (isvc["metadata"]["name"], isvc["metadata"]["namespace"]) == (sv["service"], sv["namespace"])


# ------------------------------------------------------------------ multi-node TrainJob
def _params(nodes=2, gpus=4):
    return deep_merge(
        load_params("params.yaml" if Path("params.yaml").is_file() else None),
        {
            "pipeline": {
                "gpu": {"num_nodes": nodes, "accelerator_limit": gpus},
                "storage_secret": {"name": "reclora-object-store"},
                "trainjob": {"poll_seconds": 0.5},  # the tests' sleep only records it
            }
        },
    )


def _job_outputs(out_uri: str) -> None:
    fs, root = fsspec.core.url_to_fs(out_uri)
    fs.pipe(f"{root}/metrics.json", json.dumps({"eval": {"auc": 0.7}, "base_model": "m"}).encode())
    fs.pipe(f"{root}/adapter/weights.safetensors", b"w")


def test_multinode_training_creates_the_trainjob_and_waits_for_it(tmp_path):
    ckpt = f"memory://ckpt-{uuid.uuid4().hex[:8]}/run-1/train-llm-2"
    states = iter(["Created", "Created", "Complete"])

    def reply(method, path, body):
        if method == "POST":
            return 201, body
        st = next(states)
        if st == "Complete":
            _job_outputs(f"{ckpt}/output")
        return 200, {"status": {"conditions": [{"type": st, "status": "True"}]}}

    rec, naps = Recorder(reply), []
    s = trainjob.train_llm_multinode(
        "reclora",
        "s3://art/data",
        "s3://art/ret",
        "s3://art/crm",
        tmp_path / "adapter",
        _params(),
        ckpt,
        model_path="s3://models/llama",
        api=rec.api,
        sleep=naps.append,
    )
    assert s == {"eval": {"auc": 0.7}, "base_model": "m"}
    assert (tmp_path / "adapter" / "adapter" / "weights.safetensors").read_bytes() == b"w"
    name = trainjob.job_name(ckpt, "reclora")
    base = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/reclora/trainjobs"
    assert [c[:2] for c in rec.calls] == [("POST", base)] + [("GET", f"{base}/{name}")] * 3 and naps == [0.5, 0.5]

    body = rec.calls[0][3]
    p = _params()["pipeline"]
    assert body["metadata"] == {
        "name": name,
        "namespace": "reclora",
        "labels": {"app.kubernetes.io/part-of": "reclora", "app.kubernetes.io/component": "trainer"},
    }
    t = body["spec"]["trainer"]
    assert body["spec"]["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "TrainingRuntime",
        "name": "reclora-torch",
    }
    assert (t["image"], t["numNodes"], t["numProcPerNode"]) == (p["gpu_image"], 2, 4)
    assert (
        t["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "4" == t["resourcesPerNode"]["requests"]["nvidia.com/gpu"]
    )
    assert t["command"] == ["torchrun"] and t["args"][:2] == ["--module", "reclora.launch"]
    a = launch.parser().parse_args(t["args"][2:])  # the worker accepts exactly these arguments
    assert (a.kind, a.data, a.retrieved, a.crm, a.model_path) == (
        "reclora",
        "s3://art/data",
        "s3://art/ret",
        "s3://art/crm",
        "s3://models/llama",
    )
    assert a.out == f"{ckpt}/output" and a.checkpoint_uri == f"{ckpt}/ckpt"
    assert json.loads(a.overrides)["pipeline"]["gpu"]["num_nodes"] == 2
    # credentials only by reference to the Secret
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in t["env"]}
    assert env["AWS_ACCESS_KEY_ID"] == {"name": "reclora-object-store", "key": "AWS_ACCESS_KEY_ID", "optional": False}
    assert env["AWS_ENDPOINT_URL"]["optional"] is True
    # the same shape as the standalone manifest in infra/k8s/trainer
    ref = yaml.safe_load((REPO / "infra/k8s/trainer/trainjob.yaml").read_text())
    assert ref["spec"]["runtimeRef"] == body["spec"]["runtimeRef"] and ref["apiVersion"] == body["apiVersion"]
    assert set(ref["spec"]["trainer"]) <= set(t) and ref["spec"]["trainer"]["image"] == t["image"]


def test_a_retried_step_follows_its_job_and_replaces_a_failed_one(tmp_path):
    ckpt = f"memory://ckpt-{uuid.uuid4().hex[:8]}/run-2/train-llm"
    _job_outputs(f"{ckpt}/output")
    seen = {"posts": 0}

    def reply(method, path, body):
        if method == "POST":
            seen["posts"] += 1
            return (409, {}) if seen["posts"] == 1 else (201, body)
        if method == "DELETE":
            return 200, {}
        failed = seen["posts"] == 1
        return 200, {"status": {"conditions": [{"type": "Failed" if failed else "Complete", "status": "True"}]}}

    rec = Recorder(reply)
    trainjob.train_llm_multinode(
        "lora", "s3://a/d", "s3://a/r", None, tmp_path / "o", _params(), ckpt, api=rec.api, sleep=lambda s: None
    )
    assert [c[0] for c in rec.calls] == ["POST", "GET", "DELETE", "POST", "GET"]


def test_a_failed_job_fails_the_step_and_no_bucket_is_refused(tmp_path):
    rec = Recorder(
        lambda m, p, b: (
            (201, b)
            if m == "POST"
            else (200, {"status": {"conditions": [{"type": "Failed", "status": "True", "message": "OOMKilled"}]}})
        )
    )
    with pytest.raises(RuntimeError, match="failed: OOMKilled"):
        trainjob.train_llm_multinode(
            "lora",
            "s3://a/d",
            "s3://a/r",
            None,
            tmp_path / "o",
            _params(),
            "memory://c/run/t",
            api=rec.api,
            sleep=lambda s: None,
        )
    with pytest.raises(ConfigError, match="checkpoint_uri"):
        trainjob.train_llm_multinode("lora", "d", "r", None, tmp_path / "o", _params(), "", api=rec.api)
    assert storage.is_remote("memory://c") and not storage.is_remote("/tmp/x") and not storage.is_remote("file:///x")


def test_rbac_for_trainjobs_is_what_run_trainjob_uses():
    docs = list(yaml.safe_load_all((REPO / "infra/k8s/base/rbac.yaml").read_text()))
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "reclora-pipeline-runner")
    rules = [r for r in role["rules"] if "trainer.kubeflow.org" in r["apiGroups"]]
    assert rules == [
        {"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"], "verbs": ["create", "get", "delete"]}
    ]


def test_the_register_step_fails_before_registering_without_api_access(art, tmp_path, monkeypatch):
    from reclora.registry import list_versions
    from reclora.stages import register_stage

    def no_api():
        raise ConfigError("no Kubernetes API access (test)")

    monkeypatch.setattr("reclora.kube.custom_objects_api", no_api)
    uri = f"memory://reg-{uuid.uuid4().hex[:8]}"
    params = deep_merge(load_params(), {"pipeline": {"serving": {"deploy": True}}})
    with pytest.raises(ConfigError, match="API access"):
        register_stage(
            art["crm_dir"],
            art["adapter_dir"],
            art["retrieval_dir"],
            Path(art["items_path"]).parent,
            tmp_path,
            uri,
            params,
        )
    assert list_versions(uri) == []
