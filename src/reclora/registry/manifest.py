"""What a version holds and how it is checked: its files, hashes, lineage, manifest and verification.

:func:`collect_sources` finds the artifacts of a registration (CRM, adapter, retrieval, items);
:func:`build_lineage` and :func:`data_summary` gather what identifies the run and its data;
:func:`build_manifest` writes them into the manifest (every file with its sha256 and size);
:func:`verify_dir` / :func:`check_version` re-hash a version against its manifest and
:func:`require_verified` / :func:`verified_ref` refuse one that does not verify.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from reclora.errors import DataError
from reclora.io import loads_json
from reclora.registry.backend import (
    CARD,
    CHUNK,
    MANIFEST,
    METRICS,
    PARAMS,
    SCHEMA_VERSION,
    Store,
    json_safe,
    version_ref,
)
from reclora.registry.errors import RegistryError, UnverifiedVersion

CRM_WEIGHTS = "crm.safetensors"
EMBEDDINGS = "item_embeddings.safetensors"
ITEMS = "items.parquet"


def hash_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """{"sha256" (hex), "size" (bytes)} of a local file, read in 1 MiB chunks."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return {"sha256": h.hexdigest(), "size": size}


def bytes_entry(data: bytes) -> dict[str, Any]:
    """{"sha256", "size"} of ``data``: the manifest entry of a generated file."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _walk(d: Path) -> list[Path]:
    """Regular files under d (symlinks followed), hidden names skipped, in a stable order."""
    out = []
    for root, dirs, files in os.walk(d, followlinks=True):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        out += [Path(root) / f for f in sorted(files) if not f.startswith(".")]
    return out


def _dir_files(d: Path, dest: str) -> list[tuple[str, Path]]:
    return [(f"{dest}/{f.relative_to(d).as_posix()}", f) for f in _walk(d)]


def collect_sources(
    crm_dir: str | os.PathLike[str],
    adapter_dir: str | os.PathLike[str],
    retrieval_dir: str | os.PathLike[str] | None = None,
    items_path: str | os.PathLike[str] | None = None,
) -> list[tuple[str, Path]]:
    """(path inside the version, source file) for every artifact; clear DataErrors for anything missing.

    ``crm_dir`` may be the CRM stage's output (its ``model/`` is taken) or the model dir itself;
    ``adapter_dir`` the LLM stage's output (its ``adapter/``) or the adapter dir itself;
    ``retrieval_dir`` the retrieve stage's output (item_embeddings.safetensors, retrieval.json) or the
    embeddings file; ``items_path`` items.parquet or the prepared data dir holding it.
    """
    out: list[tuple[str, Path]] = []
    crm = Path(crm_dir)
    if (crm / "model").is_dir():
        crm = crm / "model"
    if not crm.is_dir():
        raise DataError(f"CRM directory {crm_dir} not found; run the CRM stage first")
    if not (crm / CRM_WEIGHTS).is_file():
        raise DataError(f"{crm}: no {CRM_WEIGHTS} (not a saved CRM; expected the CRM stage's output or its model/)")
    out += _dir_files(crm, "crm")

    ad = Path(adapter_dir)
    if (ad / "adapter").is_dir():
        ad = ad / "adapter"
    if not ad.is_dir():
        raise DataError(f"adapter directory {adapter_dir} not found; run the LLM stage first")
    files = _dir_files(ad, "adapter")
    if not any(p.name.endswith(".safetensors") for _, p in files):
        raise DataError(f"{ad}: no .safetensors weights (expected the LLM stage's output or its adapter/)")
    out += files

    if retrieval_dir is not None:
        r = Path(retrieval_dir)
        if r.is_file() and r.name.endswith(".safetensors"):
            out.append((f"retrieval/{EMBEDDINGS}", r))
        elif r.is_dir():
            got = [(f"retrieval/{n}", r / n) for n in (EMBEDDINGS, "retrieval.json") if (r / n).is_file()]
            if not got:
                raise DataError(f"{r}: neither {EMBEDDINGS} nor retrieval.json (expected the retrieve stage's output)")
            out += got
        else:
            raise DataError(f"retrieval directory {retrieval_dir} not found; run the retrieve stage first")

    if items_path is not None:
        it = Path(items_path)
        if it.is_dir():
            it = it / ITEMS
        if not it.is_file():
            raise DataError(f"items table {it} not found (expected items.parquet or the prepared data directory)")
        out.append((ITEMS, it))
    return out


# ------------------------------------------------------------------ lineage and data
def detect_git(cwd: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """{"git_commit", "git_dirty"} of the checkout at cwd (else of the package's own checkout), or None."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # never take the index lock of a checkout others use
    for d in dict.fromkeys([str(cwd or os.getcwd()), str(Path(__file__).resolve().parent)]):
        try:
            r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=d, capture_output=True, text=True, timeout=10, env=env)
            if r.returncode != 0 or not re.fullmatch(r"[0-9a-f]{40,64}", r.stdout.strip()):
                continue
            s = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=d,
                capture_output=True,
                text=True,
                timeout=20,
                env=env,
            )
            return {"git_commit": r.stdout.strip(), "git_dirty": bool(s.stdout.strip()) if s.returncode == 0 else None}
        except (OSError, subprocess.SubprocessError):
            continue
    return None


def build_lineage(lineage: Mapping[str, Any] | None, detect: bool = True) -> dict[str, Any]:
    """A copy of ``lineage`` with the git commit (and whether the checkout is dirty) added when ``detect``
    and the caller gave none and a checkout is found (:func:`detect_git`)."""
    out = dict(lineage or {})
    if detect and "git_commit" not in out:
        g = detect_git()
        if g:
            out.update(g)
            out["git_commit_source"] = "detected"
    return out


DATA_VERSION_KEYS = ("data_version", "dvc_data_hash", "dvc_md5", "data_hash", "dvc_hash")


def data_summary(
    data: Mapping[str, Any] | None, items_path: str | os.PathLike[str] | None, lineage: Mapping[str, Any]
) -> dict[str, Any]:
    """Data facts for the manifest and model card: prepared meta.json (beside items_path) <- ``data``."""
    info: dict[str, Any] = {}
    if items_path is not None:
        p = Path(items_path)
        meta = (p if p.is_dir() else p.parent) / "meta.json"
        if meta.is_file():
            with contextlib.suppress(ValueError, OSError):
                m = json.loads(meta.read_text())
                keep = (
                    "dataset",
                    "rows",
                    "users",
                    "items",
                    "samples",
                    "positive_rate",
                    "label_threshold",
                    "min_history",
                    "split",
                )
                info.update({k: m[k] for k in keep if k in m})
    info.update(dict(data or {}))
    if "data_version" not in info:
        for k in DATA_VERSION_KEYS:
            v = lineage.get(k)
            if v:
                info["data_version"] = v.get("md5", v) if isinstance(v, Mapping) else v
                break
    return info


def build_manifest(
    name: str,
    version: str,
    created: str,
    base_model: str,
    files: Mapping[str, Any],
    summary: Mapping[str, Any],
    lineage: Mapping[str, Any],
    data: Mapping[str, Any],
    promotion: Mapping[str, Any] | None = None,
    runtime: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of a version: schema version, name, version, created_at, base_model, the status at
    registration (challenger), metrics summary, lineage, data facts, runtime, every file's sha256 and size
    (``files``, sorted), where each part lies (``layout``) and, when given, the promotion decision."""
    return json_safe(
        {
            "schema_version": SCHEMA_VERSION,
            "name": name,
            "version": version,
            "created_at": created,
            "base_model": base_model,
            "status": "challenger",  # at registration; the live status comes from champion.json
            "metrics": summary,
            "lineage": lineage,
            "data": data,
            "runtime": dict(runtime or {}),
            "files": {k: files[k] for k in sorted(files)},
            "layout": {
                "crm": "crm",
                "adapter": "adapter",
                "params": PARAMS,
                "metrics": METRICS,
                "card": CARD,
                "retrieval": f"retrieval/{EMBEDDINGS}" if f"retrieval/{EMBEDDINGS}" in files else None,
                "items": ITEMS if ITEMS in files else None,
            },
        }
        | ({"promotion": promotion} if promotion is not None else {})
    )


def _manifest_problems(m: Any, version: str | None) -> list[str]:
    """What is wrong with a parsed manifest (empty: it is whole)."""
    if not isinstance(m, Mapping):
        return [f"{MANIFEST} is not a JSON object"]
    problems = [f"{MANIFEST} lacks {k!r}" for k in ("version", "created_at", "files", "metrics") if k not in m]
    if m.get("version") not in (None, version):
        problems.append(f"{MANIFEST} names version {m.get('version')!r}, not its directory {version}")
    files = m.get("files")
    if "files" in m and (not isinstance(files, Mapping) or not files):
        problems.append(f"{MANIFEST}: 'files' must list the version's files")
    elif isinstance(files, Mapping):
        bad = [
            k
            for k, v in files.items()
            if not isinstance(v, Mapping) or not isinstance(v.get("sha256"), str) or not isinstance(v.get("size"), int)
        ]
        if bad:
            problems.append(f"{MANIFEST}: no sha256/size for {', '.join(sorted(bad)[:3])}")
    return problems


def _file_problems(listed: Mapping[str, Any], present: Mapping[str, Callable[[], dict[str, Any]]]) -> list[str]:
    """Listed files against the files present (relative path -> a function hashing it)."""
    problems = []
    for rel in sorted(listed):
        if rel not in present:
            problems.append(f"{rel}: missing")
            continue
        got, want = present[rel](), listed[rel]
        if got["size"] != want.get("size"):
            problems.append(f"{rel}: {got['size']} bytes, the manifest says {want.get('size')}")
        elif got["sha256"] != want.get("sha256"):
            problems.append(f"{rel}: sha256 differs from the manifest")
    problems += [f"{rel}: not in the manifest" for rel in sorted(set(present) - set(listed))]
    return problems


def verify_dir(path: str | os.PathLike[str], version: str | None = None) -> list[str]:
    """Problems of a local version directory against its own manifest.json (empty list: it verifies):
    a manifest missing, cut short or without its fields (or naming another ``version`` than the one
    asked for; a copy such as KServe's /mnt/models may have any directory name), a listed file missing
    or with another size or sha256, a file the manifest does not list (hidden files aside)."""
    d = Path(path)
    try:
        m = loads_json((d / MANIFEST).read_bytes())
    except FileNotFoundError:
        return [f"no {MANIFEST}"]
    except ValueError as e:
        return [f"{MANIFEST} is not valid JSON ({e})"]
    problems = _manifest_problems(m, version or (m.get("version") if isinstance(m, Mapping) else None))
    if problems:
        return problems
    present = {f.relative_to(d).as_posix(): (lambda f=f: hash_file(f)) for f in _walk(d) if f.name != MANIFEST}
    return _file_problems(m["files"], present)


def check_version(store: Store, version: str) -> tuple[dict[str, Any] | None, list[str]]:
    """(manifest or None, problems) of one version of ``store`` (problems empty: it verifies); see
    :func:`verify_dir`."""
    vdir = store.vdir(version)
    if store.local:
        problems = verify_dir(vdir, version)
        m = None if problems and any(MANIFEST in p for p in problems) else store.read_json(f"{vdir}/{MANIFEST}")
        return m, problems
    try:
        m = store.manifest(version)
    except RegistryError as e:
        return None, [f"{MANIFEST} is not valid JSON ({str(e).split('(', 1)[-1].rstrip(')')})"]
    problems = _manifest_problems(m, version)
    if problems:
        return None, problems
    with contextlib.suppress(Exception):
        store.fs.invalidate_cache(vdir)
    present: dict[str, Callable[[], dict[str, Any]]] = {}
    for path in store.fs.find(vdir):
        rel = path[len(vdir.rstrip("/")) + 1 :] if path.startswith(vdir) else path.split(f"/{version}/", 1)[-1]
        if rel == MANIFEST or any(x.startswith(".") for x in rel.split("/")):
            continue

        def digest(path: str = path) -> dict[str, Any]:
            h, size = hashlib.sha256(), 0
            with store.fs.open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                    size += len(chunk)
            return {"sha256": h.hexdigest(), "size": size}

        present[rel] = digest
    return m, _file_problems(m["files"], present)


def require_verified(store: Store, version: str, action: str) -> dict[str, Any]:
    """The manifest of ``version``, or UnverifiedVersion naming the version, ``action`` and the problems."""
    m, problems = check_version(store, version)
    if problems or m is None:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise UnverifiedVersion(f"{version} in {store.where} cannot be {action}: it does not verify ({shown})")
    return m


def verified_ref(store: Store, ref: str | int, action: str) -> str:
    """:func:`version_ref`, then :func:`require_verified` (``action``: "promoted", "deployed", ...)."""
    v = version_ref(store, ref)
    require_verified(store, v, action)
    return v


__all__ = [
    "build_lineage",
    "build_manifest",
    "bytes_entry",
    "check_version",
    "collect_sources",
    "data_summary",
    "detect_git",
    "hash_file",
    "require_verified",
    "verified_ref",
    "verify_dir",
]
