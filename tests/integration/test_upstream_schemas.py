"""The manifests against the upstream schemas of every version infra/README.md claims ("Supported versions"):
`kubectl kustomize` renders of every kustomization (the Python renderer of test_infra.py where kubectl is
missing, and compared with it where kubectl is there), the standalone TrainJobs, and the objects the code
sends at run time (TrainJob, SparkApplications, the InferenceService after its patch), each validated
strictly (tests/k8s_schemas.py): custom resources against their CRDs' openAPIV3Schema at the oldest
supported release, later ones and main; built-in kinds against Kubernetes' OpenAPI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))
import k8s_schemas as ks  # noqa: E402
from test_infra import K8S, KUSTOMIZATIONS, REPO, TRAINJOBS, kustomize, load_docs, merge_patch  # noqa: E402
from test_registry import _evidence, _report, art  # noqa: E402,F401

KUBECTL = shutil.which("kubectl")
# the CRDs of each supported component, as named in infra/README.md's table
COMPONENT_KINDS = {
    "KServe": ("InferenceService", "ServingRuntime"),
    "Kubeflow Trainer": ("TrainingRuntime", "TrainJob"),
    "Kubeflow Spark Operator": ("SparkApplication",),
    "Kubeflow Profiles": ("Profile",),
}
# serving.kserve.io/deploymentMode values each KServe release accepts (pkg/constants/constants.go at the tag):
# "Standard" is new in v0.16.0, "RawDeployment" its deprecated alias from then on.
KSERVE_DEPLOYMENT_MODES = {
    "v0.15.0": {"Serverless", "RawDeployment", "ModelMesh"},
    "v0.16.0": {"Serverless", "RawDeployment", "Standard", "ModelMesh"},
}


def render(rel: str) -> list[dict]:
    """`kubectl kustomize` of ``rel`` under infra/k8s; without kubectl, the test's own renderer."""
    if not KUBECTL:
        return kustomize(K8S / rel)
    out = subprocess.run([KUBECTL, "kustomize", str(K8S / rel)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"kubectl kustomize {rel}: {out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _key(o: dict) -> tuple:
    return o["apiVersion"], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]


# ------------------------------------------------------------------ fixtures and the versions table
def test_schema_fixtures_name_their_source_and_licence():
    readme = (ks.SCHEMAS / "README.md").read_text()
    assert ks.sources(), "tests/schemas/sources.json is empty"
    for s in ks.sources():
        assert (ks.SCHEMAS / s["file"]).is_file(), s
        assert s["license"] == "Apache-2.0" and re.fullmatch(r"[0-9a-f]{40}", s["commit"]), s
        for needle in (s["repository"], s["path"]):
            assert needle in readme, f"tests/schemas/README.md does not name {needle}"
        assert f"{s['repository']}" in readme and s["version"] in readme, s
        crd = json.loads((ks.SCHEMAS / s["file"]).read_text())
        assert crd["kind"] == s["kind"] and crd["versions"], s


def test_the_versions_table_is_the_one_place_and_matches_the_fixtures():
    table = ks.supported_versions()
    assert {"Kubernetes", "Kubeflow Pipelines", *COMPONENT_KINDS} <= set(table), sorted(table)
    for component, kinds in COMPONENT_KINDS.items():
        row = table[component]
        for kind in kinds:
            kept = ks.crd_versions(kind)
            assert row["checked"] == kept, f"{component}: the table says {row['checked']}, tests/schemas has {kept}"
            assert row["minimum"] == kept[0], (
                f"{component}: minimum {row['minimum']} is not the oldest checked {kept[0]}"
            )
            assert kept[-1] == "main", f"{kind}: main is not among the checked versions"
    assert table["Kubernetes"]["minimum"].lstrip("v") == ".".join(ks.K8S_OLDEST.split(".")[:2])
    # README and the deploy guide point at the table instead of stating versions of their own
    readme, infra = (REPO / "README.md").read_text(), ks.INFRA_README.read_text()
    assert "infra/README.md#supported-versions" in readme
    for text in (readme, infra):
        assert not re.search(r"KServe \(?0\.1[0-5]\+", text), "a KServe minimum other than the table's"
        assert "0.15+" not in text


def test_kserve_minimum_accepts_the_deployment_mode_the_manifests_use():
    isvc = next(o for o in render("overlays/cpu") if o["kind"] == "InferenceService")
    mode = isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
    minimum = ks.supported_versions()["KServe"]["minimum"]
    known = [v for v in KSERVE_DEPLOYMENT_MODES if ks.version_key(v) <= ks.version_key(minimum)]
    assert known and mode in KSERVE_DEPLOYMENT_MODES[max(known, key=ks.version_key)], (
        f"deploymentMode {mode} is not accepted by KServe {minimum}"
    )
    assert mode not in KSERVE_DEPLOYMENT_MODES["v0.15.0"], "Standard is the current name (v0.16+)"


# ------------------------------------------------------------------ every manifest
@pytest.mark.parametrize("rel", KUSTOMIZATIONS)
def test_every_render_validates_against_the_upstream_schemas(rel):
    objs = render(rel)
    assert objs
    problems = [e for o in objs for e in ks.errors(o)]
    assert not problems, f"{rel}:\n" + "\n".join(problems)


@pytest.mark.skipif(not KUBECTL, reason="kubectl not installed: the renders above came from the test's renderer")
@pytest.mark.parametrize("rel", KUSTOMIZATIONS)
def test_kubectl_and_the_test_renderer_agree(rel):
    canon = lambda objs: sorted(json.dumps(o, sort_keys=True) for o in objs)  # noqa: E731
    assert canon(render(rel)) == canon(kustomize(K8S / rel))


@pytest.mark.parametrize("path", TRAINJOBS, ids=lambda p: p.name)
def test_standalone_trainjobs_validate(path):
    for tj in load_docs(path):
        ks.assert_valid({**tj, "metadata": {**tj["metadata"], "name": tj["metadata"]["generateName"] + "x1y2z"}})


def test_the_validator_is_strict_where_kubernetes_is():
    rt = next(o for o in render("trainer") if o["kind"] == "TrainingRuntime")
    old = merge_patch(rt, {"spec": {"mlPolicy": {"torch": {"numProcPerNode": 1}}}})  # the shape before v2.2.0
    assert ks.crd_errors(old, "v2.0.0") == []
    for v in ("v2.2.0", "v2.3.0", "main"):
        assert any("'numProcPerNode' was unexpected" in e for e in ks.crd_errors(old, v)), v
    isvc = next(o for o in render("overlays/cpu") if o["kind"] == "InferenceService")
    typo = merge_patch(isvc, {"spec": {"predictor": {"model": {"storageURI": "s3://b/x"}}}})
    assert any("storageURI" in e for e in ks.errors(typo))
    assert any("labelz" in e for e in ks.errors(merge_patch(isvc, {"metadata": {"labelz": {"a": "b"}}})))
    wrong = merge_patch(isvc, {"spec": {"predictor": {"minReplicas": "one"}}})
    assert any("minReplicas" in e for e in ks.errors(wrong))


# ------------------------------------------------------------------ namespaces: multi-user and single-user
def test_multi_user_overlay_is_a_profile_whose_namespace_kfp_provisions():
    objs = render("overlays/multi-user")
    (profile,) = [o for o in objs if o["kind"] == "Profile"]
    assert not [o for o in objs if o["kind"] == "Namespace"], "the profile controller owns the namespace"
    ns = profile["metadata"]["name"]
    assert {o["metadata"]["namespace"] for o in objs if o["kind"] != "Profile"} == {ns}
    assert profile["spec"]["owner"]["kind"] in ("User", "Group")
    # the labelled-namespace route: the base's own namespace carries the label KFP's profile controller selects
    (base_ns,) = [o for o in render("overlays/cpu") if o["kind"] == "Namespace"]
    assert base_ns["metadata"]["labels"]["pipelines.kubeflow.org/enabled"] == "true"
    # the runner is bound in the namespace its pods run in
    (rb,) = [o for o in objs if o["kind"] == "RoleBinding" and o["metadata"]["name"] == "reclora-pipeline-runner"]
    assert rb["subjects"][0]["namespace"] == ns


def test_single_user_overlays_put_everything_in_kfps_namespace():
    for rel in ("overlays/single-user", "overlays/single-user-trainer", "overlays/single-user-spark"):
        objs = render(rel)
        assert not [o for o in objs if o["kind"] == "Namespace"]
        assert {o["metadata"]["namespace"] for o in objs} == {"kubeflow"}, rel
        for rb in (o for o in objs if o["kind"] == "RoleBinding"):
            assert {s["namespace"] for s in rb["subjects"]} == {"kubeflow"}, rel
    # the same objects as the default overlay, only elsewhere
    base = {(o["kind"], o["metadata"]["name"]) for o in render("overlays/cpu") if o["kind"] != "Namespace"}
    assert {(o["kind"], o["metadata"]["name"]) for o in render("overlays/single-user")} == base


def test_spark_pieces_exist_where_the_spark_applications_run():
    sp = yaml.safe_load((REPO / "params.yaml").read_text())["pipeline"]["spark"]
    for rel in ("spark", "overlays/single-user-spark"):
        objs = render(rel)
        sas = {o["metadata"]["name"] for o in objs if o["kind"] == "ServiceAccount"}
        claims = {o["metadata"]["name"]: o for o in objs if o["kind"] == "PersistentVolumeClaim"}
        assert sp["service_account"] in sas and sp["work_claim"] in claims, rel
        assert claims[sp["work_claim"]]["spec"]["accessModes"] == ["ReadWriteMany"]
        (role,) = [o for o in objs if o["kind"] == "Role" and o["metadata"]["name"] == sp["service_account"]]
        verbs = {r: set(rule["verbs"]) for rule in role["rules"] for r in rule["resources"]}
        assert {"create", "get", "list", "watch", "delete"} <= verbs["pods"], "the driver runs its executors"
        assert "create" in verbs["configmaps"] and "secrets" not in verbs
        (rb,) = [o for o in objs if o["kind"] == "RoleBinding"]
        assert rb["roleRef"]["name"] == role["metadata"]["name"]
        sa = {"kind": "ServiceAccount", "name": sp["service_account"], "namespace": role["metadata"]["namespace"]}
        assert rb["subjects"] == [sa]


# ------------------------------------------------------------------ objects the code sends at run time
def _namespace_file(tmp_path, monkeypatch, ns: str) -> None:
    f = tmp_path / "namespace"
    f.write_text(ns + "\n")
    monkeypatch.setattr("reclora.kube.SA_NAMESPACE", f)


def test_trainjob_sent_at_run_time_validates_in_the_pods_namespace(tmp_path, monkeypatch):
    from test_kube_requests import Recorder, _job_outputs, _params

    from reclora import trainjob

    _namespace_file(tmp_path, monkeypatch, "team-a")
    ckpt = f"memory://ckpt-{uuid.uuid4().hex[:8]}/run/train-llm"
    _job_outputs(f"{ckpt}/output")

    def reply(method, path, body):
        return (
            (201, body)
            if method == "POST"
            else (200, {"status": {"conditions": [{"type": "Complete", "status": "True"}]}})
        )

    rec = Recorder(reply)
    data = "minio://mlpipeline/v2/artifacts/d"  # what KFP's default pipeline root hands out
    trainjob.train_llm_multinode(
        "reclora", data, "s3://a/r", "s3://a/c", tmp_path / "o", _params(), ckpt, api=rec.api, sleep=lambda s: None
    )
    method, path, _, body = rec.calls[0]
    assert method == "POST" and path == "/apis/trainer.kubeflow.org/v1alpha1/namespaces/team-a/trainjobs"
    assert body["metadata"]["namespace"] == "team-a"
    ks.assert_valid(body, "TrainJob sent by reclora.trainjob")
    # and it runs on the runtime the manifests define, which is valid at the same versions
    rt = next(o for o in render("trainer") if o["kind"] == "TrainingRuntime")
    assert body["spec"]["runtimeRef"]["name"] == rt["metadata"]["name"]


@pytest.mark.parametrize("step", ["prepare", "features"])
def test_spark_applications_sent_at_run_time_validate_in_the_pods_namespace(step, tmp_path, monkeypatch):
    from test_kube_requests import Recorder

    from reclora import spark
    from reclora.config import load_params

    _namespace_file(tmp_path, monkeypatch, "team-b")
    out = f"memory://spark-{uuid.uuid4().hex[:8]}"
    report = {"data_version": "x", "rows": 1, "users": 1, "items": 1, "positive_rate": 0.5, "samples": {}}

    def reply(method, path, body):
        if method == "POST":
            import fsspec

            written = "report.json" if step == "prepare" else "out/summary.json"
            fsspec.filesystem("memory").pipe(f"{out.removeprefix('memory://')}/{written}", json.dumps(report).encode())
            return 201, body
        return 200, {"status": {"applicationState": {"state": "COMPLETED"}}}

    rec = Recorder(reply)
    params = load_params()
    if step == "prepare":
        spark.prepare_on_spark(
            "synthetic", "", f"{out}/data", f"{out}/report.json", params, api=rec.api, sleep=lambda s: None
        )
    else:
        spark.features_on_spark(f"{out}/data", f"{out}/out", params, api=rec.api, sleep=lambda s: None)
    method, path, _, body = rec.calls[0]
    assert method == "POST" and path == "/apis/sparkoperator.k8s.io/v1beta2/namespaces/team-b/sparkapplications"
    ks.assert_valid(body, f"SparkApplication of the {step} step")
    sp = params["pipeline"]["spark"]
    assert body["spec"]["driver"]["serviceAccount"] == sp["service_account"]
    assert body["spec"]["sparkVersion"] == sp["spark_version"]


def test_spark_version_and_image_are_the_ones_built_here():
    sp = yaml.safe_load((REPO / "params.yaml").read_text())["pipeline"]["spark"]
    lock = (REPO / "requirements.lock").read_text().splitlines()
    pins = dict(line.strip().split("==") for line in lock if line.strip().lower().startswith("pyspark=="))
    assert sp["spark_version"] == pins["pyspark"], "the SparkApplication's sparkVersion is the image's pyspark"
    assert (REPO / "infra/docker/Dockerfile.spark").is_file()


def test_the_inference_service_patch_validates_and_goes_to_the_pods_namespace(tmp_path, monkeypatch, art):
    from test_kube_requests import Recorder

    from reclora.config import deep_merge, load_params
    from reclora.stages import register_stage

    _namespace_file(tmp_path, monkeypatch, "team-c")
    isvc = next(o for o in render("overlays/cpu") if o["kind"] == "InferenceService")
    rec = Recorder(lambda m, p, b: (200, isvc))
    monkeypatch.setattr("reclora.kube.custom_objects_api", lambda: rec.api)
    params = deep_merge(load_params(), {"pipeline": {"serving": {"deploy": True}}})  # serving.namespace: reclora
    llm = Path(art["adapter_dir"])
    (llm / "metrics.json").write_text(json.dumps({"base_model": "tiny"}))
    ev = tmp_path / "eval"
    ev.mkdir()
    rep = _report(0.8, 0.5) | {"gate": _evidence(0.8, 0.5)}  # no champion yet: the CRM rule decides
    rep["models"]["RecLoRA"] = rep["models"].pop("reclora")
    rep["model_order"][-1] = "RecLoRA"
    (ev / "metrics.json").write_text(json.dumps(rep))
    uri = f"memory://reg-{uuid.uuid4().hex[:8]}"
    r = register_stage(art["crm_dir"], llm, art["retrieval_dir"], Path(art["items_path"]).parent, ev, uri, params)
    assert r["promoted"] and r["deploy"]["namespace"] == "team-c"
    (patch,) = [c for c in rec.calls if c[0] == "PATCH"]
    assert patch[1] == "/apis/serving.kserve.io/v1beta1/namespaces/team-c/inferenceservices/reclora"
    assert patch[2] == "application/merge-patch+json"
    ks.assert_valid(merge_patch(isvc, patch[3]), "InferenceService after the promotion's patch")
