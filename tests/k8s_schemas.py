"""Validation against the upstream schemas: custom resources against their CRDs' openAPIV3Schema (the
fixtures in tests/schemas, see its README) and built-in kinds against Kubernetes' own OpenAPI
(``kubernetes-validate``), both strict: an unknown field is an error, as ``kubectl apply``
(server-side field validation ``Strict``, kubectl's default) reports it. The supported range is the
table "Supported versions" in infra/README.md (:func:`supported_versions`).

How a CRD schema is made strict (what the API server does with a structural schema): every object
node without ``properties``-escape (``additionalProperties`` or ``x-kubernetes-preserve-unknown-fields``)
gets ``additionalProperties: false``, so a field the CRD does not declare is refused instead of
silently pruned; ``nullable`` allows null; ``x-kubernetes-int-or-string`` is an integer or a string;
``metadata`` (the root's and an embedded resource's) is checked as a Kubernetes ObjectMeta. The
JSON Schema dialect is draft 4, the one OpenAPI 3.0 builds on. Not evaluated: CEL rules
(``x-kubernetes-validations``) and ``format`` values.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "tests" / "schemas"
INFRA_README = REPO / "infra" / "README.md"
# the Kubernetes versions built-in kinds are checked against (the oldest supported and the newest shipped)
K8S_OLDEST = "1.31.0"


@cache
def sources() -> list[dict[str, Any]]:
    """The fixtures' provenance (tests/schemas/sources.json): component, kind, version, repository, commit, file."""
    return json.loads((SCHEMAS / "sources.json").read_text())


def crd_versions(kind: str) -> list[str]:
    """The upstream versions (release tags, then ``main``) whose CRD of ``kind`` is kept here."""
    return [s["version"] for s in sources() if s["kind"] == kind]


def _strict(node: Any, root: bool = False) -> Any:
    if isinstance(node, list):
        return [_strict(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items() if k not in ("properties", "items", "additionalProperties")}
    if "properties" in node:
        out["properties"] = {k: _strict(v) for k, v in node["properties"].items()}
    if "items" in node:
        out["items"] = _strict(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _strict(node["additionalProperties"])
    elif "additionalProperties" in node:
        out["additionalProperties"] = node["additionalProperties"]
    embedded = node.get("x-kubernetes-embedded-resource") or root
    if embedded:
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props["metadata"] = {"type": "object"}  # checked as an ObjectMeta by validate_crd
    is_object = node.get("type") == "object" or "properties" in node
    if is_object and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in node:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in node:
        out["type"] = [node["type"], "null"]
    return out


@cache
def _validator(kind: str, version: str, api_version: str) -> Any:
    import jsonschema

    rec = next((s for s in sources() if s["kind"] == kind and s["version"] == version), None)
    if rec is None:
        raise KeyError(f"no {kind} schema for {version} in tests/schemas (have {crd_versions(kind)})")
    crd = json.loads((SCHEMAS / rec["file"]).read_text())
    group, _, ver = api_version.rpartition("/")
    if group != crd["group"] or ver not in crd["versions"]:
        raise KeyError(f"{kind} {version} serves {crd['group']}/{sorted(crd['versions'])}, not {api_version}")
    schema = _strict(crd["versions"][ver], root=True)
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def _meta_errors(meta: Any, where: str, k8s_version: str) -> list[str]:
    """ObjectMeta checked as Kubernetes checks it (the same type on every kind)."""
    import kubernetes_validate

    probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}
    try:
        kubernetes_validate.validate(probe, k8s_version, strict=True)
    except kubernetes_validate.ValidationError as e:
        sub = ".".join(str(p) for p in list(e.path)[1:])
        return [f"{where}{'.' + sub if sub else ''}: {e.message}"]
    return []


def _embedded_metas(node: Any, schema: dict[str, Any], path: str) -> list[tuple[str, Any]]:
    """(path, metadata) of every embedded resource (x-kubernetes-embedded-resource) in ``node``."""
    out: list[tuple[str, Any]] = []
    if not isinstance(schema, dict):
        return out
    if isinstance(node, dict):
        if schema.get("x-kubernetes-embedded-resource") and "metadata" in node:
            out.append((f"{path}.metadata", node["metadata"]))
        for k, v in node.items():
            sub = (schema.get("properties") or {}).get(k)
            if sub is None and isinstance(schema.get("additionalProperties"), dict):
                sub = schema["additionalProperties"]
            if sub is not None:
                out += _embedded_metas(v, sub, f"{path}.{k}")
    elif isinstance(node, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(node):
            out += _embedded_metas(v, schema["items"], f"{path}[{i}]")
    return out


def crd_errors(obj: dict[str, Any], version: str) -> list[str]:
    """Every schema error of the custom resource ``obj`` against its CRD at upstream ``version``
    (a tag such as "v0.16.0", or "main"); [] when valid."""
    v = _validator(obj["kind"], version, obj["apiVersion"])
    found = sorted(v.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    errors = [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in found]
    metas = [("metadata", obj.get("metadata"))] + _embedded_metas(obj, v.schema, "")
    for where, meta in metas:
        errors += _meta_errors(meta, where.lstrip("."), K8S_OLDEST)
    return errors


def k8s_versions() -> tuple[str, ...]:
    """The Kubernetes versions built-in kinds are validated against: the oldest supported, the newest shipped."""
    from kubernetes_validate.utils import latest_version

    return (K8S_OLDEST, latest_version())


def k8s_errors(obj: dict[str, Any]) -> list[str]:
    """Schema errors of a built-in kind at every version of :func:`k8s_versions` (strict)."""
    import kubernetes_validate

    out = []
    for ver in k8s_versions():
        try:
            kubernetes_validate.validate(obj, ver, strict=True)
        except kubernetes_validate.ValidationError as e:
            out.append(f"Kubernetes {ver} at {'.'.join(str(p) for p in e.path)}: {e.message}")
    return out


def is_builtin(obj: dict[str, Any]) -> bool:
    """A Kubernetes kind (core, apps, rbac.authorization.k8s.io, ...), not a custom resource kept here
    (sparkoperator.k8s.io is a CRD's group despite its suffix)."""
    group = obj["apiVersion"].rpartition("/")[0]
    custom = {(s["kind"]) for s in sources()}
    return obj["kind"] not in custom and ("." not in group or group.endswith(".k8s.io"))


def errors(obj: dict[str, Any]) -> list[str]:
    """Every schema error of ``obj`` at every version it must work on: built-in kinds at each of
    :func:`k8s_versions`, custom resources at each upstream version kept in tests/schemas
    (the oldest supported release, later releases, main)."""
    if is_builtin(obj):
        return k8s_errors(obj)
    out = []
    for ver in crd_versions(obj["kind"]):
        out += [f"{obj['kind']} {ver}: {e}" for e in crd_errors(obj, ver)]
    if not crd_versions(obj["kind"]):
        out.append(f"no upstream schema kept for {obj['apiVersion']} {obj['kind']}")
    return out


def assert_valid(obj: dict[str, Any], what: str = "") -> None:
    """AssertionError listing every schema error of ``obj`` (see :func:`errors`)."""
    errs = errors(obj)
    m = obj.get("metadata") or {}
    assert not errs, f"{what or obj.get('kind')} {m.get('name') or m.get('generateName')}:\n" + "\n".join(errs)


_ROW = re.compile(r"^\|\s*(?P<name>[^|]+?)\s*\|\s*(?P<min>[^|]+?)\s*\|\s*(?P<checked>[^|]+?)\s*\|")


def supported_versions() -> dict[str, dict[str, Any]]:
    """The table under "## Supported versions" in infra/README.md (the one place the minimum versions
    are stated): {component: {"minimum": "v0.16.0", "checked": ["v0.16.0", "v0.20.0", "main"]}}."""
    text = INFRA_README.read_text()
    m = re.search(r"^## Supported versions\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, "infra/README.md has no '## Supported versions' section"
    rows = {}
    for line in m.group(1).splitlines():
        r = _ROW.match(line)
        if not r or set(r.group("name")) <= set("-: ") or r.group("name").lower() == "component":
            continue
        checked = [c.strip(" `") for c in r.group("checked").split(",")]
        rows[r.group("name").strip("`* ")] = {"minimum": r.group("min").strip("`* "), "checked": checked}
    return rows


def version_key(v: str) -> tuple[int, ...]:
    """ "v0.16.0" / "1.31" -> (0, 16, 0) / (1, 31); "main" sorts last."""
    if v == "main":
        return (10**9,)
    return tuple(int(x) for x in re.findall(r"\d+", v))
