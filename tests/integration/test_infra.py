"""infra/: Dockerfiles and Kubernetes manifests, validated offline (no Docker, no cluster, no network).

* every YAML document under infra/k8s parses and is accounted for (resource, patch or standalone);
* the kustomizations are rendered here in Python (resources, namespace, strategic-merge and JSON 6902
  patches; any other kustomize feature fails the test rather than being silently skipped), so the
  overlays are checked as they would be applied;
* built-in kinds validate against the Kubernetes OpenAPI schemas (kubernetes-validate, strict, two
  versions); pod templates inside CRDs (TrainingRuntime, the effective KServe predictor pod and
  the effective TrainJob node pod) are validated as Pods/Jobs as well;
* the KServe InferenceService and ServingRuntime are deserialized into the KServe SDK models
  strictly (unknown fields and wrong types fail) and cross-checked;
* every container: requests+limits, the restricted security context (pod level merged with
  container level), writable emptyDir /tmp and cache, pinned images;
* the GPU overlay changes the predictor only; the Trainer TrainJob/TrainingRuntime are checked by hand;
* the Dockerfiles: pinned bases, multi-stage, numeric non-root USER, model baked at build time,
  telemetry off and HF_HUB_OFFLINE, nothing installed at run time, build context filter.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
K8S = INFRA / "k8s"
DOCKER = INFRA / "docker"
OVERLAYS = ("cpu", "gpu", "local")
# where the base goes: its own namespace (the overlays above), a Kubeflow Profile's, single-user KFP's
NAMESPACE_OVERLAYS = ("multi-user", "single-user", "single-user-trainer", "single-user-spark")
KUSTOMIZATIONS = (
    ["base", "trainer", "spark", "workspace"]
    + [f"overlays/{o}" for o in OVERLAYS]
    + [f"overlays/{o}" for o in NAMESPACE_OVERLAYS]
)
# the namespace each kustomization renders into (the single-user ones: KFP's own)
RENDER_NAMESPACE = {f"overlays/{o}": "kubeflow" for o in NAMESPACE_OVERLAYS if o.startswith("single-user")}
TRAINJOBS = [K8S / "trainer" / "trainjob.yaml", K8S / "trainer" / "trainjob-crm.yaml"]  # LLM and CRM
STANDALONE = set(TRAINJOBS)  # applied with `kubectl create -f`, not by kustomize

UID = 10001
CACHE_MOUNT = "/var/cache/reclora"
EMBEDDINGS_MOUNT = "/opt/reclora/cache/embeddings"
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "ClusterTrainingRuntime",
    "Profile",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
}
WORKLOAD_POD_PATHS = {  # built-in kinds -> path to the pod spec
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


# ----------------------------------------------------------------------------------------------
# loading and rendering
# ----------------------------------------------------------------------------------------------


def load_docs(path: Path) -> list[Any]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def all_yaml_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*") if p.suffix in (".yaml", ".yml"))


@cache
def params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def api_group_version(api_version: str) -> tuple[str, str]:
    return tuple(api_version.split("/", 1)) if "/" in api_version else ("", api_version)  # type: ignore


def is_builtin(doc: dict) -> bool:
    group, _ = api_group_version(doc["apiVersion"])
    return "." not in group or group.endswith(".k8s.io")


def ident(doc: dict) -> str:
    m = doc.get("metadata", {})
    return f"{doc.get('kind')}/{m.get('name') or m.get('generateName')}"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge, lists and scalars replace, null deletes. This is what
    kustomize's strategic merge does for custom resources (they have no patch-merge keys)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def list_overlaps(target: Any, patch: Any, path: str = "") -> list[str]:
    """Paths where a merge patch would replace an existing list. kustomize may merge such lists by a
    guessed key (name, mountPath, ...) where a merge patch replaces them; patches here must not rely
    on either, so the rendering stays exact."""
    if isinstance(patch, dict) and isinstance(target, dict):
        return [p for k, v in patch.items() if k in target for p in list_overlaps(target[k], v, f"{path}/{k}")]
    if isinstance(patch, list) and isinstance(target, list):
        return [path]
    return []


def _pointer(path: str) -> list[str]:
    assert path.startswith("/"), f"JSON pointer must start with '/': {path}"
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json6902(doc: dict, ops: list[dict]) -> dict:
    """Apply RFC 6902 operations (add, replace, remove, test); raise on a missing path."""
    doc = copy.deepcopy(doc)
    for op in ops:
        kind = op["op"]
        assert kind in ("add", "replace", "remove", "test"), f"unsupported JSON patch op {kind}"
        *parents, last = _pointer(op["path"])
        node: Any = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if isinstance(node, list):
            idx = len(node) if last == "-" else int(last)
            if kind == "add":
                node.insert(idx, copy.deepcopy(op["value"]))
            elif kind == "replace":
                node[idx] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del node[idx]
            else:
                assert node[idx] == op["value"], f"JSON patch test failed at {op['path']}"
        else:
            if kind in ("replace", "remove", "test") and last not in node:
                raise KeyError(f"JSON patch {kind}: no such path {op['path']}")
            if kind in ("add", "replace"):
                node[last] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del node[last]
            else:
                assert node[last] == op["value"], f"JSON patch test failed at {op['path']}"
    return doc


def matches_target(doc: dict, target: dict) -> bool:
    unsupported = set(target) - {"group", "version", "kind", "name", "namespace"}
    assert not unsupported, f"patch target fields not supported by this renderer: {unsupported}"
    group, version = api_group_version(doc["apiVersion"])
    want = {
        "group": group,
        "version": version,
        "kind": doc["kind"],
        "name": doc["metadata"].get("name"),
        "namespace": doc["metadata"].get("namespace"),
    }
    return all(want[k] == v for k, v in target.items())


def kustomize(directory: Path, _seen: tuple = ()) -> list[dict]:
    """A small, strict kustomize: resources (files and directories), namespace, patches."""
    directory = directory.resolve()
    assert directory not in _seen, f"kustomization cycle at {directory}"
    kfile = directory / "kustomization.yaml"
    assert kfile.is_file(), f"{directory}: no kustomization.yaml"
    k = yaml.safe_load(kfile.read_text())
    assert k.get("apiVersion") == "kustomize.config.k8s.io/v1beta1" and k.get("kind") == "Kustomization", kfile
    unknown = set(k) - {"apiVersion", "kind", "namespace", "resources", "patches"}
    assert not unknown, f"{kfile}: kustomize fields this test cannot render: {sorted(unknown)}"
    objs: list[dict] = []
    for r in k.get("resources", []):
        p = (directory / r).resolve()
        assert p.exists(), f"{kfile}: resource {r} does not exist"
        objs += kustomize(p, _seen + (directory,)) if p.is_dir() else [copy.deepcopy(d) for d in load_docs(p)]
    for entry in k.get("patches", []):
        assert set(entry) <= {"path", "patch", "target"}, f"{kfile}: unsupported patch entry {entry}"
        if "path" in entry:
            ppath = directory / entry["path"]
            assert ppath.is_file(), f"{kfile}: patch {entry['path']} does not exist"
            body = yaml.safe_load(ppath.read_text())
        else:
            body = yaml.safe_load(entry["patch"])
        if isinstance(body, dict) and body.get("$patch") == "delete":  # strategic-merge delete of one object
            target = entry.get("target") or {"kind": body["kind"], "name": body["metadata"]["name"]}
            hits = [i for i, o in enumerate(objs) if matches_target(o, target)]
            assert hits, f"{kfile}: patch target {target} matches nothing"
            objs = [o for i, o in enumerate(objs) if i not in hits]
            continue
        if isinstance(body, list):  # JSON 6902
            assert "target" in entry, f"{kfile}: a JSON 6902 patch needs a target"
            hits = [i for i, o in enumerate(objs) if matches_target(o, entry["target"])]
            assert hits, f"{kfile}: patch target {entry['target']} matches nothing"
            for i in hits:
                objs[i] = json6902(objs[i], body)
        else:  # strategic merge
            target = entry.get("target") or {"kind": body["kind"], "name": body["metadata"]["name"]}
            hits = [i for i, o in enumerate(objs) if matches_target(o, target)]
            assert hits, f"{kfile}: patch target {target} matches nothing"
            for i in hits:
                o = objs[i]
                assert body["kind"] == o["kind"] and body["metadata"]["name"] == o["metadata"]["name"], (
                    f"{kfile}: strategic-merge patch {ident(body)} applied to {ident(o)}"
                )
                # built-in kinds merge lists by key in kustomize; keep those to JSON 6902 here
                assert not is_builtin(o), f"{kfile}: use a JSON 6902 patch for built-in {ident(o)}"
                overlaps = list_overlaps(o, body)
                assert not overlaps, f"{kfile}: merge patch replaces existing lists {overlaps}; use JSON 6902"
                objs[i] = merge_patch(o, body)
    ns = k.get("namespace")
    if ns:
        for o in objs:
            if o["kind"] not in CLUSTER_SCOPED:
                old = o["metadata"].get("namespace")
                o["metadata"]["namespace"] = ns
                # kustomize moves the bound service accounts of this kustomization along
                for sub in o.get("subjects", []) if o["kind"] in ("RoleBinding", "ClusterRoleBinding") else []:
                    if sub.get("kind") == "ServiceAccount" and sub.get("namespace") in (old, None):
                        sub["namespace"] = ns
    keys = [
        (o["apiVersion"].split("/")[0], o["kind"], o["metadata"].get("namespace"), o["metadata"].get("name"))
        for o in objs
    ]
    dupes = {x for x in keys if keys.count(x) > 1}
    assert not dupes, f"{kfile}: duplicate resources {dupes}"
    return objs


@cache
def _render(rel: str) -> str:
    return json.dumps(kustomize(K8S / rel))


def render(rel: str) -> list[dict]:
    return json.loads(_render(rel))


def find(objs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"].get("name") == name)]


def one(objs: list[dict], kind: str, name: str) -> dict:
    hits = find(objs, kind, name)
    assert len(hits) == 1, f"expected exactly one {kind}/{name}, found {len(hits)}"
    return hits[0]


# ----------------------------------------------------------------------------------------------
# effective pod specs
# ----------------------------------------------------------------------------------------------


def _get(d: dict, path: tuple) -> Any:
    for p in path:
        d = d[p]
    return d


def _podspec_keys() -> set[str]:
    import kubernetes.client as k8s

    return set(k8s.V1PodSpec.attribute_map.values())


MODEL_ONLY_KEYS = {"runtime", "modelFormat", "protocolVersion", "storageUri", "storage", "runtimeVersion"}


def predictor_pod(isvc: dict, objs: list[dict]) -> dict:
    """The predictor pod KServe builds: predictor pod fields + the runtime container merged with the model."""
    pred = isvc["spec"]["predictor"]
    model = pred["model"]
    runtimes = find(objs, "ServingRuntime", model["runtime"]) + find(objs, "ClusterServingRuntime", model["runtime"])
    assert len(runtimes) == 1, f"InferenceService runtime {model['runtime']} not found"
    rt = runtimes[0]["spec"]
    c = next(c for c in rt["containers"] if c["name"] == "kserve-container")
    container = merge_patch(c, {k: v for k, v in model.items() if k not in MODEL_ONLY_KEYS})
    spec = {k: copy.deepcopy(v) for k, v in pred.items() if k in _podspec_keys() and k != "containers"}
    for k in ("nodeSelector", "tolerations", "affinity", "imagePullSecrets"):
        if k in rt and k not in spec:
            spec[k] = copy.deepcopy(rt[k])
    spec["containers"] = [container]
    spec["volumes"] = copy.deepcopy(rt.get("volumes", [])) + copy.deepcopy(pred.get("volumes", []))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": isvc["metadata"]["name"] + "-predictor"},
        "spec": spec,
    }


def runtime_pods(rt: dict) -> Iterator[tuple[dict, dict]]:
    for rj in rt["spec"]["template"]["spec"]["replicatedJobs"]:
        yield rj, rj["template"]["spec"]["template"]["spec"]


def trainjob_pod(tj: dict, objs: list[dict]) -> dict:
    """The trainer node pod: the runtime's trainer step with the TrainJob's trainer overrides."""
    ref = tj["spec"]["runtimeRef"]
    rt = one(objs, ref.get("kind", "ClusterTrainingRuntime"), ref["name"])
    step = "trainer.kubeflow.org/trainjob-ancestor-step"
    rj, spec = next(
        (rj, s) for rj, s in runtime_pods(rt) if rj["template"]["metadata"]["labels"].get(step) == "trainer"
    )
    spec = copy.deepcopy(spec)
    node = next(c for c in spec["containers"] if c["name"] == "node")
    tr = tj["spec"].get("trainer", {})
    for key in ("image", "command", "args"):
        if key in tr:
            node[key] = copy.deepcopy(tr[key])
    if "resourcesPerNode" in tr:
        node["resources"] = copy.deepcopy(tr["resourcesPerNode"])
    env = {e["name"]: e for e in node.get("env", [])}
    env.update({e["name"]: e for e in tr.get("env", [])})
    if env:
        node["env"] = list(env.values())
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "trainjob-node"}, "spec": spec}


def pod_specs(objs: list[dict]) -> Iterator[tuple[str, dict]]:
    """(label, pod spec) for every pod the manifests create, as the controllers would build it."""
    for o in objs:
        if o["kind"] in WORKLOAD_POD_PATHS and is_builtin(o):
            yield ident(o), _get(o, WORKLOAD_POD_PATHS[o["kind"]])
        elif o["kind"] in ("TrainingRuntime", "ClusterTrainingRuntime"):
            for rj, spec in runtime_pods(o):
                yield f"{ident(o)}/{rj['name']}", spec
        elif o["kind"] == "InferenceService":
            yield ident(o) + "/predictor", predictor_pod(o, objs)["spec"]
        elif o["kind"] == "TrainJob":
            yield ident(o), trainjob_pod(o, objs)["spec"]


def containers(spec: dict) -> list[dict]:
    return list(spec.get("initContainers", [])) + list(spec["containers"])


# ----------------------------------------------------------------------------------------------
# checks (functions return findings so the negative tests can use them)
# ----------------------------------------------------------------------------------------------


def security_findings(spec: dict) -> list[str]:
    out = []
    pod = spec.get("securityContext", {})
    for c in containers(spec):
        sc = c.get("securityContext", {})
        eff = {k: sc.get(k, pod.get(k)) for k in ("runAsNonRoot", "runAsUser", "seccompProfile")}
        n = c["name"]
        if eff["runAsNonRoot"] is not True:
            out.append(f"{n}: runAsNonRoot is not true")
        if eff["runAsUser"] != UID:
            out.append(f"{n}: runAsUser is {eff['runAsUser']}, not {UID}")
        if (eff["seccompProfile"] or {}).get("type") != "RuntimeDefault":
            out.append(f"{n}: seccompProfile is not RuntimeDefault")
        if sc.get("readOnlyRootFilesystem") is not True:
            out.append(f"{n}: readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{n}: allowPrivilegeEscalation is not false")
        if "ALL" not in (sc.get("capabilities") or {}).get("drop", []):
            out.append(f"{n}: capabilities do not drop ALL")
        if (sc.get("capabilities") or {}).get("add"):
            out.append(f"{n}: adds capabilities")
        if sc.get("privileged"):
            out.append(f"{n}: privileged")
    if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
        out.append("pod uses host namespaces")
    return out


_UNITS = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(q: Any) -> float:
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(q))
    assert m and m.group(2) in _UNITS, f"bad quantity {q!r}"
    return float(m.group(1)) * _UNITS[m.group(2)]


def resource_findings(spec: dict) -> list[str]:
    out = []
    for c in containers(spec):
        r = c.get("resources") or {}
        req, lim = r.get("requests") or {}, r.get("limits") or {}
        for res in ("cpu", "memory"):
            if res not in req:
                out.append(f"{c['name']}: no {res} request")
            if res not in lim:
                out.append(f"{c['name']}: no {res} limit")
            if res in req and res in lim and quantity(req[res]) > quantity(lim[res]):
                out.append(f"{c['name']}: {res} request above limit")
        for res in set(req) | set(lim):
            if "/" in res and req.get(res) != lim.get(res):  # extended resources (GPUs): request == limit
                out.append(f"{c['name']}: {res} request {req.get(res)} != limit {lim.get(res)}")
    return out


IMAGE_RE = re.compile(
    r"^(?P<repo>[a-z0-9][a-z0-9._\-/:]*?)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


def image_findings(image: str) -> list[str]:
    m = IMAGE_RE.match(image)
    if not m:
        return [f"unparseable image {image!r}"]
    if not m.group("tag") and not m.group("digest"):
        return [f"untagged image {image!r}"]
    if m.group("tag") == "latest":
        return [f"image uses latest: {image!r}"]
    return []


def volume_findings(spec: dict) -> list[str]:
    out = []
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    for c in containers(spec):
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        for m in mounts.values():
            if m["name"] not in vols:
                out.append(f"{c['name']}: mount {m['mountPath']} refers to missing volume {m['name']}")
        for path in ("/tmp", CACHE_MOUNT):
            m = mounts.get(path)
            if m is None or "emptyDir" not in vols.get(m["name"], {}) or m.get("readOnly"):
                out.append(f"{c['name']}: no writable emptyDir at {path}")
    return out


# ----------------------------------------------------------------------------------------------
# YAML inventory
# ----------------------------------------------------------------------------------------------


def test_every_yaml_file_parses_and_is_accounted_for():
    files = all_yaml_files()
    assert files, "no YAML under infra/k8s"
    used: set[Path] = set(STANDALONE)
    for rel in KUSTOMIZATIONS:
        d = K8S / rel
        k = yaml.safe_load((d / "kustomization.yaml").read_text())
        used.add(d / "kustomization.yaml")
        used |= {(d / r).resolve() for r in k.get("resources", []) if (d / r).is_file()}
        used |= {(d / p["path"]).resolve() for p in k.get("patches", []) if "path" in p}
    for f in files:
        docs = load_docs(f)
        assert docs, f"{f}: empty"
        assert f.resolve() in used, f"{f.relative_to(REPO)} is neither a kustomize resource, a patch nor standalone"
    for f in files:
        if f.name == "kustomization.yaml" or isinstance(load_docs(f)[0], list):
            continue
        for d in load_docs(f):
            assert isinstance(d, dict) and {"apiVersion", "kind", "metadata"} <= set(d), f"{f}: not a k8s object"
            m = d["metadata"]
            name = m.get("name") or m.get("generateName", "").rstrip("-")
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), f"{f}: bad name {name!r}"
            if d["kind"] not in CLUSTER_SCOPED:
                assert m.get("namespace") == "reclora", f"{f}: {ident(d)} must say namespace reclora"


@pytest.mark.parametrize("rel", KUSTOMIZATIONS)
def test_kustomization_renders(rel):
    objs = render(rel)
    assert objs
    for o in objs:
        if o["kind"] not in CLUSTER_SCOPED:
            assert o["metadata"]["namespace"] == RENDER_NAMESPACE.get(rel, "reclora"), ident(o)


def test_renderer_rejects_missing_patch_targets_and_unknown_fields(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "cm.yaml").write_text(
        yaml.safe_dump(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "x"}, "data": {"k": "v"}}
        )
    )
    (base / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": ["cm.yaml"]}
        )
    )
    ov = tmp_path / "ov"
    ov.mkdir()
    (ov / "p.yaml").write_text(yaml.safe_dump([{"op": "replace", "path": "/data/k", "value": "w"}]))
    kz = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["../base"],
        "patches": [{"path": "p.yaml", "target": {"kind": "ConfigMap", "name": "a"}}],
    }
    (ov / "kustomization.yaml").write_text(yaml.safe_dump(kz))
    assert kustomize(ov)[0]["data"] == {"k": "w"}
    kz["patches"][0]["target"]["name"] = "missing"
    (ov / "kustomization.yaml").write_text(yaml.safe_dump(kz))
    with pytest.raises(AssertionError, match="matches nothing"):
        kustomize(ov)
    kz["patches"][0]["target"]["name"] = "a"
    kz["images"] = [{"name": "x", "newTag": "1"}]
    (ov / "kustomization.yaml").write_text(yaml.safe_dump(kz))
    with pytest.raises(AssertionError, match="cannot render"):
        kustomize(ov)
    with pytest.raises(KeyError):
        json6902({"a": {}}, [{"op": "replace", "path": "/a/b", "value": 1}])


# ----------------------------------------------------------------------------------------------
# Kubernetes schemas
# ----------------------------------------------------------------------------------------------


def k8s_versions() -> tuple[str, ...]:
    from kubernetes_validate.utils import latest_version

    return ("1.31.0", latest_version())


def validate_k8s(doc: dict, what: str) -> None:
    import kubernetes_validate

    for v in k8s_versions():
        try:
            kubernetes_validate.validate(doc, v, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            raise AssertionError(f"{what} invalid for Kubernetes {v} at {path}: {e.message}") from None


def test_builtin_kinds_validate_against_kubernetes_schemas():
    n = 0
    for f in all_yaml_files():
        for d in load_docs(f):
            if isinstance(d, dict) and d.get("kind") != "Kustomization" and "apiVersion" in d and is_builtin(d):
                if d.get("$patch") == "delete":  # a deletion patch names its target, it is no object
                    continue
                validate_k8s(d, f"{f.relative_to(REPO)}: {ident(d)}")
                n += 1
    for rel in KUSTOMIZATIONS:  # as rendered (patched)
        for o in render(rel):
            if is_builtin(o):
                validate_k8s(o, f"{rel}: {ident(o)}")
    assert n >= 10


def test_pod_templates_inside_custom_resources_validate_as_pods():
    for rel in ("overlays/cpu", "overlays/gpu", "overlays/local"):
        objs = render(rel)
        for isvc in find(objs, "InferenceService"):
            validate_k8s(predictor_pod(isvc, objs), f"{rel}: {ident(isvc)} predictor pod")
    trainer = render("trainer")
    for rt in find(trainer, "TrainingRuntime"):
        for rj, _ in runtime_pods(rt):
            job = {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": rj["name"]},
                "spec": rj["template"]["spec"],
            }
            validate_k8s(job, f"{ident(rt)} replicatedJob {rj['name']}")
    for f in TRAINJOBS:
        tj = load_docs(f)[0]
        validate_k8s(trainjob_pod(tj, trainer), f"{f.name}: TrainJob node pod")


def test_negative_schema_validation_catches_typos():
    doc = copy.deepcopy(one(render("base"), "Deployment", "reclora-feature-server"))
    doc["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # typo of resources
    with pytest.raises(AssertionError, match="invalid"):
        validate_k8s(doc, "typo")


# ----------------------------------------------------------------------------------------------
# pods: security, resources, volumes, images
# ----------------------------------------------------------------------------------------------


def all_pods() -> list[tuple[str, str, dict]]:
    out = []
    for rel in ("overlays/cpu", "overlays/gpu", "overlays/local", "trainer"):
        out += [(rel, label, spec) for label, spec in pod_specs(render(rel))]
    trainer = render("trainer")
    for f in TRAINJOBS:
        for tj in load_docs(f):
            out.append((f"trainer/{f.name}", ident(tj), trainjob_pod(tj, trainer)["spec"]))
    return out


def test_every_pod_is_restricted_with_resources_and_writable_volumes():
    pods = all_pods()
    labels = {label.split("/")[0] for _, label, _ in pods}
    assert {"Deployment", "InferenceService", "TrainingRuntime", "TrainJob"} <= labels, labels
    problems = []
    for rel, label, spec in pods:
        for f in security_findings(spec) + resource_findings(spec) + volume_findings(spec):
            problems.append(f"{rel} {label}: {f}")
    assert not problems, "\n".join(problems)


def test_servingruntime_container_is_restricted_on_its_own():
    # ServingRuntime has no pod-level securityContext: its container must carry the whole context
    for rel in ("overlays/cpu", "overlays/gpu"):
        for rt in find(render(rel), "ServingRuntime"):
            spec = {"containers": rt["spec"]["containers"], "volumes": rt["spec"].get("volumes", [])}
            assert not security_findings(spec) + resource_findings(spec) + volume_findings(spec), ident(rt)


def test_checks_catch_violations():
    spec = copy.deepcopy(one(render("base"), "Deployment", "reclora-feature-server")["spec"]["template"]["spec"])
    assert not security_findings(spec) and not resource_findings(spec) and not volume_findings(spec)
    bad = copy.deepcopy(spec)
    del bad["securityContext"]["runAsNonRoot"]
    del bad["containers"][0]["securityContext"]["runAsNonRoot"]
    bad["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    bad["containers"][0]["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}
    del bad["containers"][0]["resources"]["limits"]
    bad["volumes"] = [v for v in bad["volumes"] if v["name"] != "tmp"]
    f = security_findings(bad) + resource_findings(bad) + volume_findings(bad)
    for needle in ("runAsNonRoot", "readOnlyRootFilesystem", "drop ALL", "cpu limit", "memory limit", "/tmp"):
        assert any(needle in x for x in f), (needle, f)
    # container-level settings override the pod level
    over = copy.deepcopy(spec)
    over["containers"][0]["securityContext"]["runAsUser"] = 0
    assert any("runAsUser" in x for x in security_findings(over))
    assert image_findings("ghcr.io/x/y:latest") and image_findings("ghcr.io/x/y") and image_findings("y")
    assert not image_findings("ghcr.io/x/y:1.2.3") and not image_findings("localhost:5000/y@sha256:" + "a" * 64)


def test_images_are_pinned_and_match_the_pipeline_defaults():
    p = params()["pipeline"]
    ours = {p["cpu_image"], p["gpu_image"]}
    seen = set()
    for rel, label, spec in all_pods():
        for c in containers(spec):
            assert not image_findings(c["image"]), f"{rel} {label}: {image_findings(c['image'])}"
            assert c["image"] in ours, f"{rel} {label}: image {c['image']} is not one of params.yaml's {ours}"
            seen.add(c["image"])
    assert seen == ours
    for o in render("overlays/cpu"):
        assert p["gpu_image"] not in json.dumps(o), f"cpu overlay uses the GPU image in {ident(o)}"


def test_service_accounts_claims_and_selectors_resolve():
    for rel in ("overlays/cpu", "overlays/gpu", "overlays/local", "trainer"):
        objs = render(rel)
        sas = {o["metadata"]["name"] for o in find(objs, "ServiceAccount")}
        pvcs = {o["metadata"]["name"] for o in find(objs, "PersistentVolumeClaim")}
        cms = {o["metadata"]["name"] for o in find(objs, "ConfigMap")}
        for label, spec in pod_specs(objs):
            assert spec.get("serviceAccountName") in sas, f"{rel} {label}: service account not defined here"
            assert spec.get("automountServiceAccountToken") is False, f"{rel} {label}: API token mounted"
            for v in spec.get("volumes", []):
                if "persistentVolumeClaim" in v:
                    assert v["persistentVolumeClaim"]["claimName"] in pvcs, f"{rel} {label}: {v}"
                if "configMap" in v:
                    assert v["configMap"]["name"] in cms, f"{rel} {label}: {v}"
        for dep in find(objs, "Deployment"):
            tl = dep["spec"]["template"]["metadata"]["labels"]
            assert dep["spec"]["selector"]["matchLabels"].items() <= tl.items(), ident(dep)
            svcs = [s for s in find(objs, "Service") if s["spec"]["selector"].items() <= tl.items()]
            assert svcs, f"no Service selects {ident(dep)}"
            for s in svcs:
                names = {p["name"] for c in dep["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
                assert all(p["targetPort"] in names for p in s["spec"]["ports"]), ident(s)
        for np_ in find(objs, "NetworkPolicy"):
            sel = np_["spec"]["podSelector"]["matchLabels"]
            assert any(
                sel.items() <= d["spec"]["template"]["metadata"]["labels"].items() for d in find(objs, "Deployment")
            ), f"{ident(np_)} selects no pod"


def test_rbac_is_least_privilege():
    objs = render("overlays/cpu")
    assert not find(objs, "ClusterRole") and not find(objs, "ClusterRoleBinding")
    role = one(objs, "Role", "reclora-pipeline-runner")
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {field}: {rule}"
        assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"]), rule
        if {"secrets", "configmaps"} & set(rule["resources"]):
            assert rule.get("resourceNames") and set(rule["verbs"]) <= {"get"}, f"unscoped access: {rule}"
        if "pods" in rule["resources"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule
        if "workflows" in rule["resources"]:
            pytest.fail("pipeline pods do not need Argo workflows (the KFP API server creates them)")
    rb = one(objs, "RoleBinding", "reclora-pipeline-runner")
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reclora-pipeline-runner"}
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "reclora-pipeline-runner", "namespace": "reclora"}]
    for name in ("reclora-predictor", "reclora-feature-server"):
        assert one(objs, "ServiceAccount", name).get("automountServiceAccountToken") is False
    assert one(render("trainer"), "ServiceAccount", "reclora-trainer").get("automountServiceAccountToken") is False


# ----------------------------------------------------------------------------------------------
# KServe
# ----------------------------------------------------------------------------------------------


def sub_context(group: Any, name: str, args: list[str]) -> tuple[Any, Any]:
    """Parse ``args`` for a click group and its subcommand without running anything: (group ctx, sub ctx)."""
    ctx = group.make_context(name, list(args))
    rest = list(getattr(ctx, "_protected_args", None) or []) + list(ctx.args)
    sub_name, *sub_args = rest
    sub = group.get_command(ctx, sub_name)
    assert sub is not None, f"{name}: no subcommand {sub_name}"
    return ctx, sub.make_context(sub_name, sub_args, parent=ctx)


def sdk_model(data: Any, klass: Any, path: str = "") -> Any:
    """Deserialize ``data`` into a KServe SDK (or Kubernetes client) model, strictly: unknown fields
    and wrong primitive types fail; required fields are checked by the model constructors.
    (kserve.ApiClient.deserialize cannot resolve the Kubernetes models it refers to, e.g. V1ObjectMeta.)"""
    import kserve.models
    import kubernetes.client.models

    if data is None:
        return None
    if isinstance(klass, str):
        if klass.startswith("list["):
            assert isinstance(data, list), f"{path}: expected a list"
            return [sdk_model(x, klass[5:-1], f"{path}[{i}]") for i, x in enumerate(data)]
        if klass.startswith("dict("):
            assert isinstance(data, dict), f"{path}: expected a mapping"
            m = re.fullmatch(r"dict\(([^,]*), (.*)\)", klass)
            assert m, klass
            sub = m.group(2)
            return {k: sdk_model(v, sub, f"{path}.{k}") for k, v in data.items()}
        prim: dict[str, Any] = {"str": str, "int": int, "float": (int, float), "bool": bool}
        if klass in prim:
            ok = isinstance(data, prim[klass]) and not (klass in ("int", "float") and isinstance(data, bool))
            assert ok, f"{path}: expected {klass}, got {data!r}"
            return data
        if klass in ("object", "datetime", "date"):
            return data
        klass = getattr(kserve.models, klass, None) or getattr(kubernetes.client.models, klass)
    assert isinstance(data, dict), f"{path}: expected a mapping for {klass.__name__}"
    unknown = set(data) - set(klass.attribute_map.values())
    assert not unknown, f"{path}: unknown field(s) {sorted(unknown)} for {klass.__name__}"
    kwargs = {
        attr: sdk_model(data[key], klass.openapi_types[attr], f"{path}.{key}")
        for attr, key in klass.attribute_map.items()
        if key in data
    }
    return klass(**kwargs)


def test_kserve_resources_deserialize_into_the_sdk_models():
    import kserve

    for rel in ("overlays/cpu", "overlays/gpu", "overlays/local"):
        objs = render(rel)
        rts = find(objs, "ServingRuntime")
        isvcs = find(objs, "InferenceService")
        assert len(rts) == 1 and len(isvcs) == 1
        rt = sdk_model(rts[0], kserve.V1alpha1ServingRuntime, rel + ":ServingRuntime")
        isvc = sdk_model(isvcs[0], kserve.V1beta1InferenceService, rel + ":InferenceService")
        assert isinstance(rt, kserve.V1alpha1ServingRuntime) and isinstance(isvc, kserve.V1beta1InferenceService)
        assert rt.api_version == "serving.kserve.io/v1alpha1" and isvc.api_version == "serving.kserve.io/v1beta1"

        pred = isvc.spec.predictor
        model = pred.model
        assert model.runtime == rt.metadata.name and isvc.metadata.namespace == rt.metadata.namespace
        formats = {(f.name, f.version) for f in rt.spec.supported_model_formats}
        assert (model.model_format.name, model.model_format.version) in formats
        assert model.protocol_version in rt.spec.protocol_versions
        assert 1 <= pred.min_replicas <= pred.max_replicas
        assert pred.scale_metric in ("cpu", "memory", "concurrency", "rps") and 0 < pred.scale_target <= 100
        uri = model.storage_uri
        assert re.match(r"^(pvc|s3|gs|hf|https?|oci)://", uri), uri
        if uri.startswith("pvc://"):
            claim = uri[len("pvc://") :].split("/")[0]
            assert find(objs, "PersistentVolumeClaim", claim), f"storageUri claim {claim} is not defined"
        assert find(objs, "ServiceAccount", pred.service_account_name)

        (c,) = rt.spec.containers
        assert c.name == "kserve-container"
        assert c.command == ["reclora"] and c.args[:1] == ["serve"]
        args = dict(zip(c.args[1::2], c.args[2::2]))
        assert args == {"--model": "/mnt/models", "--port": "8080", "--host": "0.0.0.0"}, c.args
        ports = {p.container_port for p in c.ports}
        assert ports == {8080}
        assert c.readiness_probe.http_get.path == "/v2/health/ready" and c.readiness_probe.http_get.port == 8080
        assert c.liveness_probe.http_get.path == "/v2/health/live" and c.liveness_probe.http_get.port == 8080


def test_kserve_strict_deserialization_catches_mistakes():
    import kserve

    isvc = copy.deepcopy(find(render("overlays/cpu"), "InferenceService")[0])
    isvc["spec"]["predictor"]["minReplica"] = 1
    with pytest.raises(AssertionError, match="unknown field"):
        sdk_model(isvc, kserve.V1beta1InferenceService)
    rt = copy.deepcopy(find(render("overlays/cpu"), "ServingRuntime")[0])
    rt["spec"]["supportedModelFormats"][0]["version"] = 1
    with pytest.raises(AssertionError, match="expected str"):
        sdk_model(rt, kserve.V1alpha1ServingRuntime)
    rt["spec"]["supportedModelFormats"][0]["version"] = "1"
    del rt["spec"]["containers"]
    with pytest.raises(ValueError, match="containers"):
        sdk_model(rt, kserve.V1alpha1ServingRuntime)


def test_gpu_overlay_changes_only_the_predictor():
    cpu, gpu = render("overlays/cpu"), render("overlays/gpu")
    g = params()["pipeline"]["gpu"]
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, cpu)) == sorted(map(key, gpu))
    by_cpu = {key(o): o for o in cpu}
    for o in gpu:
        if o["kind"] not in ("InferenceService", "ServingRuntime"):
            assert o == by_cpu[key(o)], f"gpu overlay changed {ident(o)}"
    # nothing GPU-ish in the CPU overlay
    for label, spec in pod_specs(cpu):
        assert "nodeSelector" not in spec and "tolerations" not in spec, label
        for c in containers(spec):
            assert "nvidia.com" not in json.dumps(c.get("resources", {})), label
    # the runtime differs only in its image
    rt_c, rt_g = one(cpu, "ServingRuntime", "reclora-runtime"), one(gpu, "ServingRuntime", "reclora-runtime")
    rt_c2 = copy.deepcopy(rt_c)
    rt_c2["spec"]["containers"][0]["image"] = params()["pipeline"]["gpu_image"]
    assert rt_g == rt_c2
    # the predictor pod gets GPUs, node selector and tolerations matching the pipeline's GPU pool
    isvc = one(gpu, "InferenceService", "reclora")
    pod = predictor_pod(isvc, gpu)["spec"]
    assert pod["nodeSelector"] == {k: str(v) for k, v in g["node_selector"].items()}
    assert pod["tolerations"] == g["tolerations"]
    (c,) = pod["containers"]
    res = g["accelerator_type"]
    assert str(c["resources"]["limits"][res]) == str(g["accelerator_limit"])
    assert c["image"] == params()["pipeline"]["gpu_image"]
    cpu_isvc = one(cpu, "InferenceService", "reclora")
    changed = {
        k
        for k in set(isvc["spec"]["predictor"]) | set(cpu_isvc["spec"]["predictor"])
        if isvc["spec"]["predictor"].get(k) != cpu_isvc["spec"]["predictor"].get(k)
    }
    assert changed <= {"nodeSelector", "tolerations", "model", "maxReplicas"}, changed
    assert isvc["metadata"] == cpu_isvc["metadata"]


# ----------------------------------------------------------------------------------------------
# Feast feature server
# ----------------------------------------------------------------------------------------------


def test_feast_server_config_and_command_are_valid_for_the_installed_feast():
    import click
    from feast.cli.cli import cli
    from feast.repo_config import RepoConfig

    objs = render("overlays/cpu")
    cm = one(objs, "ConfigMap", "reclora-feast-config")
    cfg = yaml.safe_load(cm["data"]["feature_store.yaml"])
    repo_cfg = yaml.safe_load((REPO / "feature_repo" / "feature_store.yaml").read_text())
    assert cfg["project"] == repo_cfg["project"]
    assert cfg["entity_key_serialization_version"] == repo_cfg["entity_key_serialization_version"]
    RepoConfig(**dict(cfg, repo_path="/var/lib/feast"))  # pydantic validation of the whole file

    dep = one(objs, "Deployment", "reclora-feature-server")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["feast"]
    ctx, sctx = sub_context(cli, "feast", c["args"])
    assert sctx.info_name == "serve"
    assert sctx.params["host"] == "0.0.0.0"
    port = sctx.params["port"]
    assert port == c["ports"][0]["containerPort"]
    # the config file the server reads is the ConfigMap's key, mounted where the args say
    fs_yaml = ctx.params["feature_store_yaml"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    mount = mounts[str(Path(fs_yaml).parent)]
    vol = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert vol["configMap"]["name"] == cm["metadata"]["name"] and Path(fs_yaml).name in cm["data"]
    for path in (cfg["registry"], cfg["online_store"]["path"]):
        assert any(path.startswith(mp + "/") and not m.get("readOnly") for mp, m in mounts.items()), path
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    with pytest.raises(click.UsageError):
        sub_context(cli, "feast", ["serve", "--no-such-flag"])


# ----------------------------------------------------------------------------------------------
# Kubeflow Trainer
# ----------------------------------------------------------------------------------------------

TRAINJOB_SPEC = {
    "runtimeRef",
    "initializer",
    "trainer",
    "suspend",
    "managedBy",
    "labels",
    "annotations",
    "podSpecOverrides",
    "podTemplateOverrides",
    "templateOverrides",
}
TRAINER_FIELDS = {"image", "command", "args", "env", "numNodes", "resourcesPerNode", "numProcPerNode"}


def test_trainjob_and_training_runtime_structure():
    objs = render("trainer")
    (rt,) = find(objs, "TrainingRuntime")
    assert rt["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    assert set(rt["spec"]) <= {"mlPolicy", "podGroupPolicy", "template"}
    ml = rt["spec"]["mlPolicy"]
    assert set(ml) <= {"numNodes", "torch"} and set(ml["torch"]) <= {"numProcPerNode", "elasticPolicy"}
    assert isinstance(ml["numNodes"], int) and ml["numNodes"] >= 1
    rjs = rt["spec"]["template"]["spec"]["replicatedJobs"]
    assert set(rt["spec"]["template"]["spec"]) <= {"replicatedJobs", "failurePolicy", "successPolicy", "network"}
    steps = {rj["template"]["metadata"]["labels"].get("trainer.kubeflow.org/trainjob-ancestor-step"): rj for rj in rjs}
    assert "trainer" in steps
    node = steps["trainer"]
    assert set(node) <= {"name", "replicas", "template", "dependsOn", "groupName"}
    pod = node["template"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    assert [c["name"] for c in pod["containers"]] == ["node"], "the Trainer overrides the container named node"

    docs = load_docs(K8S / "trainer" / "trainjob.yaml")
    assert len(docs) == 1
    tj = docs[0]
    assert tj["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and tj["kind"] == "TrainJob"
    name = tj["metadata"].get("name") or tj["metadata"]["generateName"]
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9-])?", name) and len(name) <= 63 - 5
    assert set(tj["spec"]) <= TRAINJOB_SPEC
    ref = tj["spec"]["runtimeRef"]
    assert ref == {"apiGroup": "trainer.kubeflow.org", "kind": "TrainingRuntime", "name": rt["metadata"]["name"]}
    assert tj["metadata"]["namespace"] == rt["metadata"]["namespace"], "a TrainingRuntime is namespaced"
    tr = tj["spec"]["trainer"]
    assert set(tr) <= TRAINER_FIELDS
    assert isinstance(tr["numNodes"], int) and tr["numNodes"] >= 2, "multi-node"
    npp = tr["numProcPerNode"]
    assert isinstance(npp, int) and npp >= 1
    gpu = params()["pipeline"]["gpu"]["accelerator_type"]
    for part in ("requests", "limits"):
        assert int(tr["resourcesPerNode"][part][gpu]) == npp, "one process per GPU"
    assert tr["image"] == params()["pipeline"]["gpu_image"]
    assert tr["command"] == ["torchrun"] and tr["args"][:4] == ["--module", "reclora", "train", "llm"]


def test_trainjob_args_parse_with_the_reclora_cli():
    import typer.main

    from reclora.cli.train import app

    tj = load_docs(K8S / "trainer" / "trainjob.yaml")[0]
    args = tj["spec"]["trainer"]["args"][2:]  # after `--module reclora`
    assert args[0] == "train"
    _, sctx = sub_context(typer.main.get_command(app), "train", args[1:])
    assert sctx.info_name == "llm"
    assert sctx.params["kind"] == "reclora" and sctx.params["crm"]
    for key in ("data", "retrieved", "crm", "out"):
        assert sctx.params[key].startswith("/workspace/"), key
    pod = trainjob_pod(tj, render("trainer"))["spec"]
    ws = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/workspace"]
    assert ws and not ws[0].get("readOnly")


def test_crm_trainjob_runs_the_crm_stage_on_the_same_runtime_with_feast_features():
    import typer.main

    from reclora.cli.train import app

    llm, crm = (load_docs(f)[0] for f in TRAINJOBS)
    assert crm["spec"]["runtimeRef"] == llm["spec"]["runtimeRef"]  # one launcher (torchrun) for both
    tr = crm["spec"]["trainer"]
    assert set(crm["spec"]) <= TRAINJOB_SPEC and set(tr) <= TRAINER_FIELDS and tr["numNodes"] >= 2
    assert tr["command"] == ["torchrun"] and tr["image"] == llm["spec"]["trainer"]["image"]
    gpu = params()["pipeline"]["gpu"]["accelerator_type"]
    assert all(int(tr["resourcesPerNode"][p][gpu]) == tr["numProcPerNode"] for p in ("requests", "limits"))
    args = tr["args"][2:]
    assert tr["args"][:2] == ["--module", "reclora"] and args[0] == "train"
    _, sctx = sub_context(typer.main.get_command(app), "train", args[1:])
    assert sctx.info_name == "crm"
    for key in ("data", "retrieved", "feature_store", "out"):  # Feast's offline store for the attributes
        assert sctx.params[key].startswith("/workspace/"), key


# ----------------------------------------------------------------------------------------------
# Dockerfiles
# ----------------------------------------------------------------------------------------------


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, buf = [], ""
    for raw in path.read_text().splitlines():
        s = raw.strip()
        if s.startswith("#") or (not s and not buf):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        instr, _, rest = buf.partition(" ")
        out.append((instr.upper(), rest.strip()))
        buf = ""
    assert not buf, f"{path}: dangling line continuation"
    return out


def stages(instrs: list[tuple[str, str]]) -> list[dict]:
    out: list[dict] = []
    for instr, rest in instrs:
        if instr == "FROM":
            toks = [t for t in rest.split() if not t.startswith("--")]
            out.append(
                {"image": toks[0], "name": toks[2] if len(toks) > 2 and toks[1].upper() == "AS" else None, "instrs": []}
            )
        else:
            assert out, "instruction before FROM"
            out[-1]["instrs"].append((instr, rest))
    return out


def kv_pairs(rest: str) -> dict[str, str]:
    return dict(t.split("=", 1) for t in shlex.split(rest) if "=" in t)


def exec_form(rest: str) -> list[str]:
    return json.loads(rest) if rest.startswith("[") else shlex.split(rest)


PINNED_TAG = re.compile(r":[^:/@]*\d+\.\d+\.\d+[^:/@]*$")


@pytest.mark.parametrize("flavour", ["cpu", "gpu"])
def test_dockerfile(flavour):
    path = DOCKER / f"Dockerfile.{flavour}"
    st = stages(dockerfile(path))
    assert len(st) >= 2, "multi-stage build"
    names = set()
    for s in st:
        img = s["image"]
        if img not in names:
            pinned = PINNED_TAG.search(img.split("@")[0]) or re.search(r"@sha256:[0-9a-f]{64}$", img)
            assert pinned and "latest" not in img, f"unpinned base {img}"
        if s["name"]:
            names.add(s["name"])
    bases = {s["image"] for s in st} - names
    # one base for both (torch's CUDA wheels carry the CUDA libraries): one pull, or one local stand-in
    assert all(re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", b) for b in bases), bases

    final = st[-1]
    fi = final["instrs"]
    users = [r for i, r in fi if i == "USER"]
    assert users and re.fullmatch(r"\d+(:\d+)?", users[-1]) and int(users[-1].split(":")[0]) == UID
    assert [r for i, r in fi if i == "WORKDIR"][-1] == "/app"
    env: dict[str, str] = {}
    for i, r in fi:
        if i == "ENV":
            env.update(kv_pairs(r))
    assert env.get("HF_HUB_OFFLINE") == "1"
    assert env.get("FEAST_USAGE") == "False" and env.get("GX_ANALYTICS_ENABLED") == "False"
    assert env.get("DVC_NO_ANALYTICS") == "1"
    assert env.get("RECLORA_CACHE") and env.get("RECLORA_PARAMS") == "/app/params.yaml"
    labels: dict[str, str] = {}
    for i, r in fi:
        if i == "LABEL":
            labels.update(kv_pairs(r))
    for k in ("title", "description", "version", "source", "licenses", "revision"):
        assert f"org.opencontainers.image.{k}" in labels, k
    assert any(i == "HEALTHCHECK" for i, _ in fi)
    vols = [v for i, r in fi if i == "VOLUME" for v in exec_form(r)]
    assert {"/tmp", CACHE_MOUNT, EMBEDDINGS_MOUNT} <= set(vols)
    # writable-path env vars point into the cache volume
    for var in ("HF_HOME", "XDG_CACHE_HOME", "MPLCONFIGDIR"):
        assert env[var].startswith(CACHE_MOUNT), var
    # nothing installed at run time: not in CMD/ENTRYPOINT, and the final stage runs no pip install
    for i, r in fi:
        if i in ("CMD", "ENTRYPOINT"):
            toks = exec_form(r)
            assert not {"pip", "pip3", "uv"} & {Path(t).name for t in toks} and "install" not in toks, r
            assert "-m pip" not in " ".join(toks)
        if i == "RUN":
            assert "pip install" not in r, "the runtime stage must not pip install"
    cmd = exec_form([r for i, r in fi if i == "CMD"][-1])
    assert cmd[:2] == ["reclora", "serve"]
    # the model is baked at build time and copied into the runtime stage
    builder_runs = " ".join(r for s in st[:-1] for i, r in s["instrs"] if i == "RUN")
    assert "reclora model fetch" in builder_runs
    copies = [r for i, r in fi if i == "COPY"]
    assert any(c.startswith("--from=") and f"{env['RECLORA_CACHE']}/models" in c for c in copies), copies
    assert any(c.startswith("--from=") and "/opt/venv" in c for c in copies)
    # torch from the right index, the project under the lock
    idx = "whl/cpu" if flavour == "cpu" else "whl/cu128"
    args = {k: v for s in st[:-1] for i, r in s["instrs"] if i == "ARG" for k, v in kv_pairs(r).items()}
    assert args.get("TORCH_INDEX_URL") == f"https://download.pytorch.org/{idx}", args
    assert re.search(r'pip install .*--index-url "\$TORCH_INDEX_URL".* "?torch==2\.13\.0', builder_runs), builder_runs
    cuda_check = "torch.version.cuda is None" if flavour == "cpu" else "assert torch.version.cuda,"
    assert cuda_check in builder_runs, "the build checks it got the intended torch build"
    assert "-c requirements.lock" in builder_runs
    for i, r in (x for s in st for x in s["instrs"]):
        assert i != "ADD", "use COPY (ADD fetches URLs and unpacks archives)"
        if i == "COPY" and not r.startswith("--from="):
            *srcs, _dest = [t for t in shlex.split(r) if not t.startswith("--")]
            for src in srcs:
                assert (REPO / src).exists(), f"COPY source {src} missing in the repo"
                assert not dockerignored(src), f"COPY source {src} is excluded by .dockerignore"


def dockerignore_rules(path: Path) -> list[tuple[bool, re.Pattern]]:
    rules = []
    for line in path.read_text().splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        neg = s.startswith("!")
        pat = s[1:] if neg else s
        pat = pat.strip("/")
        rx = ""
        i = 0
        while i < len(pat):
            if pat.startswith("**/", i):
                rx += "(?:.*/)?"
                i += 3
            elif pat.startswith("**", i):
                rx += ".*"
                i += 2
            elif pat[i] == "*":
                rx += "[^/]*"
                i += 1
            elif pat[i] == "?":
                rx += "[^/]"
                i += 1
            else:
                rx += re.escape(pat[i])
                i += 1
        rules.append((neg, re.compile(rx + "$")))
    return rules


def dockerignored(rel: str, ignore_file: Path = DOCKER / ".dockerignore") -> bool:
    """Docker's semantics: the last matching rule wins; a rule matches a path or any of its parents."""
    parts = Path(rel).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for neg, rx in dockerignore_rules(ignore_file):
        if any(rx.match(p) for p in prefixes):
            excluded = not neg
    return excluded


def test_dockerignore_keeps_the_context_small_and_the_sources_in():
    text = (DOCKER / ".dockerignore").read_text()
    for flavour in ("cpu", "gpu"):
        assert (DOCKER / f"Dockerfile.{flavour}.dockerignore").read_text() == text, (
            "the per-Dockerfile ignore files (what BuildKit reads) must equal infra/docker/.dockerignore"
        )
    for keep in (
        "pyproject.toml",
        "requirements.lock",
        "README.md",
        "params.yaml",
        "src/reclora/__init__.py",
        "feature_repo/feature_store.yaml",
    ):
        assert not dockerignored(keep), keep
    for drop in (
        ".venv/bin/python",
        ".git/HEAD",
        "runs/demo/x.parquet",
        "data/prepared/a",
        "tests/helpers.py",
        "src/reclora/__pycache__/x.pyc",
        "feature_repo/data/registry.db",
        "infra/k8s/base/x.yaml",
    ):
        assert dockerignored(drop), drop


# ----------------------------------------------------------------------------------------------
# documentation
# ----------------------------------------------------------------------------------------------


def test_readme_documents_build_deploy_and_every_file():
    readme = (INFRA / "README.md").read_text()
    for needle in (
        "docker build -f infra/docker/Dockerfile.cpu",
        "docker build -f infra/docker/Dockerfile.gpu",
        "kustomize build infra/k8s/overlays/cpu | kubectl apply -f -",
        "kustomize build infra/k8s/overlays/gpu",
        "storageUri",
        "reclora.ai/accelerator",
        "reclora-pipeline-runner",
        "TrainJob",
    ):
        assert needle in readme, needle
    for f in sorted(INFRA.rglob("*")):
        if f.is_file() and f.name != "README.md":
            assert f.name in readme, f"infra/README.md does not describe {f.relative_to(INFRA)}"
