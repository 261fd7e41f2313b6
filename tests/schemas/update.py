"""Refresh the upstream CRD schema fixtures in this folder (run by hand, not by the tests).

    python tests/schemas/update.py kserve/kserve=/path/to/kserve.git kubeflow/trainer=/path/to/trainer.git ...

Each argument maps a GitHub repository to a local clone (a bare git directory is fine). For every
(repository, ref, path) in SOURCES it reads the CustomResourceDefinition at that ref, keeps the
``openAPIV3Schema`` of each served version with the ``description`` texts removed (validation does
not read them; the files shrink about fivefold), and writes ``crds/<kind>@<label>.json``, sorted and
compact; ``sources.json`` records repository, ref, resolved commit, path, licence and the file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
LICENSE = "Apache-2.0"

# (component, repository, label, ref, path of the CRD in the repository)
_KSERVE = "config/crd/full/serving.kserve.io_{}.yaml"
_TRAINER = "manifests/base/crds/trainer.kubeflow.org_{}.yaml"
_SPARK = "config/crd/bases/sparkoperator.k8s.io_sparkapplications.yaml"
_PROFILE = "components/profile-controller/manifests/kustomize/base/crd/kubeflow.org_profiles.yaml"
SOURCES = [
    *[
        ("kserve", "kserve/kserve", label, ref, _KSERVE.format(k))
        for label, ref in (("v0.16.0", "v0.16.0"), ("v0.20.0", "v0.20.0"), ("main", "HEAD"))
        for k in ("inferenceservices", "servingruntimes")
    ],
    *[
        ("trainer", "kubeflow/trainer", label, ref, _TRAINER.format(k))
        for label, ref in (("v2.0.0", "v2.0.0"), ("v2.2.0", "v2.2.0"), ("v2.3.0", "v2.3.0"), ("main", "HEAD"))
        for k in ("trainingruntimes", "trainjobs")
    ],
    *[
        ("spark-operator", "kubeflow/spark-operator", label, ref, _SPARK)
        for label, ref in (("v2.3.0", "v2.3.0"), ("v2.5.2", "v2.5.2"), ("main", "HEAD"))
    ],
    *[
        ("profile", "kubeflow/dashboard", label, ref, _PROFILE)
        for label, ref in (("v2.0.0", "v2.0.0"), ("main", "HEAD"))
    ],
]


def _strip(s):
    if isinstance(s, dict):
        return {k: _strip(v) for k, v in s.items() if k != "description"}
    if isinstance(s, list):
        return [_strip(x) for x in s]
    return s


def _git(gitdir: str, *args: str) -> str:
    return subprocess.run(["git", f"--git-dir={gitdir}", *args], capture_output=True, text=True, check=True).stdout


def main(argv: list[str]) -> None:
    clones = dict(a.split("=", 1) for a in argv)
    (HERE / "crds").mkdir(exist_ok=True)
    records, written = [], {}
    for component, repo, label, ref, path in SOURCES:
        gitdir = clones[repo]
        commit = _git(gitdir, "rev-parse", f"{ref}^{{commit}}").strip()
        (crd,) = [d for d in yaml.safe_load_all(_git(gitdir, "show", f"{commit}:{path}")) if d]
        kind = crd["spec"]["names"]["kind"]
        versions = {
            v["name"]: _strip(v["schema"]["openAPIV3Schema"]) for v in crd["spec"]["versions"] if v.get("served")
        }
        body = {"group": crd["spec"]["group"], "kind": kind, "scope": crd["spec"]["scope"], "versions": versions}
        text = json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n"
        out = written.get(text) or HERE / "crds" / f"{kind.lower()}@{label}.json"  # identical schemas: one file
        if text not in written:
            out.write_text(text)
            written[text] = out
        records.append(
            {
                "component": component,
                "kind": kind,
                "version": label,
                "repository": f"github.com/{repo}",
                "ref": "main" if ref == "HEAD" else ref,
                "commit": commit,
                "path": path,
                "license": LICENSE,
                "file": f"crds/{out.name}",
            }
        )
    (HERE / "sources.json").write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
