"""The adapter registry's storage: immutable, numbered versions under a local path or any fsspec URI.

Layout (what the KServe predictor loads)::

    <uri>/<name>/
      champion.json                 current champion, the stack of past champions, a log of decisions
      versions/
        v0001/
          crm/                      crm.safetensors, crm_config.json, crm_features.json (the CRM stage's model/)
          adapter/                  the adapter weights (safetensors) + JSON config (the LLM stage's adapter/)
          retrieval/                item_embeddings.safetensors (+ retrieval.json)      [optional]
          items.parquet             the item catalogue the prompts are built from       [optional]
          params.json               the parameters of the run
          metrics.json              the metrics exactly as the caller passed them
          MODEL_CARD.md             data, metrics table, intended use, limits, lineage
          manifest.json             version, created_at, base_model, files (sha256, size), metrics, lineage
        v0002/ ...

Atomicity
    * local paths: the version is assembled in a hidden ``versions/.tmp-<pid>-<rand>-<host>``
      directory and renamed to ``vNNNN`` in one ``rename(2)``: a reader sees all of it or
      nothing, even when the writer is killed. The rename is also the number allocation:
      renaming onto an existing (never empty) version fails, and the writer retries with
      the next number, so concurrent registrations all land, each in its own version.
    * other fsspec URIs (s3://, gs://, memory://, ...): object stores have no directory
      rename, so a writer claims ``vNNNN/.claim`` with an exclusive create (``"xb"``; where
      the backend lacks it, write-then-read-back), uploads every file and writes
      ``manifest.json`` LAST. A version without ``manifest.json`` is invisible to every reader.
    * :func:`~reclora.registry.backend.cleanup` (run by every registration) removes temp dirs of dead writers (same
      host) and any temp dir or unfinished claimed version older than ``stale_after`` seconds.
    * versions are never modified after they land; the champion pointer lives outside them in
      ``champion.json``, replaced atomically (temp file + rename locally, under a file lock;
      one PUT on an object store), so a manifest's ``status`` on disk is the status at
      registration time and readers get the live status from :func:`show`/:func:`list_versions`.

Verification
    A version verifies when its manifest is a whole JSON object (version, created_at, files) naming its
    own directory, and every file in the directory is listed in it with its exact sha256 and size
    (:func:`~reclora.registry.manifest.check_version`). :func:`list_versions` marks any other version
    ``unreadable`` with the reason; promotion, rollback, deployment and serving refuse it
    (:mod:`reclora.registry.manifest`: ``verified_ref``, ``require_verified``, ``verify_dir``).

The modules: :mod:`reclora.registry.errors` (exceptions), :mod:`reclora.registry.backend` (the
Store over local paths and fsspec URIs, references, cleanup), :mod:`reclora.registry.manifest`
(files, hashes, lineage, manifest, verification) and this one: register, resolve, show, list, verify.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reclora.errors import DataError
from reclora.io import refuse_overlap
from reclora.registry.backend import (
    CARD,
    CHUNK,
    CLAIM,
    DEFAULT_NAME,
    MANIFEST,
    MAX_ATTEMPTS,
    METRICS,
    PARAMS,
    STALE_AFTER,
    TMP_PREFIX,
    Store,
    cleanup,
    host_tag,
    json_bytes,
    open_store,
    utc_now,
    version_name,
    version_ref,
)
from reclora.registry.errors import RegistryError
from reclora.registry.manifest import (
    build_lineage,
    build_manifest,
    bytes_entry,
    check_version,
    collect_sources,
    data_summary,
    hash_file,
)
from reclora.registry.metrics import summarize_metrics


def _copy_file(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> dict[str, Any]:
    """Copy one file, hashing it on the way; returns {"sha256", "size"} of what was written."""
    h, size = hashlib.sha256(), 0
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        while chunk := fi.read(CHUNK):
            h.update(chunk)
            fo.write(chunk)
            size += len(chunk)
        fo.flush()
        os.fsync(fo.fileno())
    return {"sha256": h.hexdigest(), "size": size}


def _card(manifest: Mapping[str, Any], params: Mapping[str, Any]) -> bytes:
    from reclora.registry.card import render_model_card

    return render_model_card(manifest, params=params).encode("utf-8")


def register(
    uri: str | os.PathLike[str],
    *,
    crm_dir: str | os.PathLike[str],
    adapter_dir: str | os.PathLike[str],
    retrieval_dir: str | os.PathLike[str] | None = None,
    items_path: str | os.PathLike[str] | None = None,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    lineage: Mapping[str, Any] | None,
    base_model: str,
    name: str = DEFAULT_NAME,
    model: str | None = None,
    data: Mapping[str, Any] | None = None,
    model_registry_url: str | None = None,
    model_registry_options: Mapping[str, Any] | None = None,
    stale_after: float = STALE_AFTER,
    detect_git_commit: bool = True,
    promotion: Mapping[str, Any] | None = None,
    runtime: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Store a new immutable version ``vNNNN`` and return its manifest (plus ``path``, the version's URI).

    ``metrics``: the evaluate report, the LLM stage's metrics.json or ``{"auc", "logloss", ...}``
    (see :mod:`reclora.registry.metrics`); ``model`` picks the registered model in a report.
    ``lineage``: whatever identifies the run (``data_version``/DVC hash, ``pipeline_run_id``, ...);
    the git commit is added when the caller gives none and a checkout is found.
    ``data``: dataset facts for the model card (defaults to the prepared ``meta.json`` beside ``items_path``).
    ``model_registry_url``: also record the version in a Kubeflow Model Registry (needs the
    ``model-registry`` package; see :mod:`reclora.registry.kubeflow`).
    ``promotion``: the promotion gate's decision and its evidence (``register_and_gate``), kept in the
    manifest and the model card.
    ``runtime``: what the adapter was trained on, {"precision": {"chosen", ...}, "hardware": {...}} (the LLM
    stage's summary); recorded in the manifest and the model card (a server decides its own precision).
    """
    store = open_store(uri, name)
    refuse_overlap(
        {"the registry": store.url(store.base)},
        {"crm_dir": crm_dir, "adapter_dir": adapter_dir, "retrieval_dir": retrieval_dir, "items_path": items_path},
    )
    sources = collect_sources(crm_dir, adapter_dir, retrieval_dir, items_path)
    if not isinstance(params, Mapping):
        raise DataError(f"params must be a dict, got {type(params).__name__}")
    if lineage is not None and not isinstance(lineage, Mapping):
        raise DataError(f"lineage must be a dict, got {type(lineage).__name__}")
    if not isinstance(base_model, str) or not base_model:
        raise DataError("base_model must name the base LLM (path, URI or hub id)")
    summary = summarize_metrics(metrics, model)
    if model_registry_url:
        from reclora.registry.kubeflow import load_client

        load_client()  # fail before writing anything when the client is missing
    full_lineage = build_lineage(lineage, detect_git_commit)
    info = data_summary(data, items_path, full_lineage)
    created = utc_now()
    generated = {PARAMS: json_bytes(params), METRICS: json_bytes(metrics)}
    cleanup(store, stale_after=stale_after)

    def build(version: str, files: dict[str, Any]) -> tuple[dict[str, Any], bytes, bytes]:
        draft = build_manifest(
            name, version, created, base_model, files, summary, full_lineage, info, promotion, runtime
        )
        card = _card(draft, params)
        files = {**files, CARD: bytes_entry(card)}
        m = build_manifest(name, version, created, base_model, files, summary, full_lineage, info, promotion, runtime)
        return m, card, json_bytes(m)

    if store.local:
        manifest = _register_local(store, sources, generated, build)
    else:
        manifest = _register_remote(store, sources, generated, build)
    path = store.url(store.vdir(manifest["version"]))
    result = {**manifest, "path": path}
    if model_registry_url:
        from reclora.registry.kubeflow import record_version

        result["model_registry"] = record_version(
            manifest, path, model_registry_url, **dict(model_registry_options or {})
        )
    return result


def _register_local(store: Store, sources, generated, build) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    os.makedirs(store.versions, exist_ok=True)
    tmp = f"{store.versions}/{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{host_tag()}"
    os.mkdir(tmp)
    try:
        files: dict[str, Any] = {}
        for rel, src in sources:
            dst = Path(tmp) / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            files[rel] = _copy_file(src, dst)
        for rel, blob in generated.items():
            Path(tmp, rel).write_bytes(blob)
            files[rel] = bytes_entry(blob)
        for _ in range(MAX_ATTEMPTS):
            nums = store.numbered()
            version = version_name((nums[-1] if nums else 0) + 1)
            manifest, card, mbytes = build(version, files)
            Path(tmp, CARD).write_bytes(card)
            with open(Path(tmp, MANIFEST), "wb") as f:
                f.write(mbytes)
                f.flush()
                os.fsync(f.fileno())
            target = store.vdir(version)
            try:
                os.rename(tmp, target)  # atomic; fails on an existing version (never empty): the allocation lock
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST) and os.path.isdir(target):
                    continue  # another writer took this number first: take the next one
                raise
            with contextlib.suppress(OSError):
                fd = os.open(store.versions, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            return manifest
        raise RegistryError(f"could not allocate a version number in {store.where} after {MAX_ATTEMPTS} attempts")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _claim(store: Store, vdir: str) -> bool:
    """Exclusively create vdir/.claim; False when another writer has the number."""
    path = f"{vdir}/{CLAIM}"
    token = secrets.token_hex(16)
    body = json_bytes({"token": token, "pid": os.getpid(), "host": socket.gethostname(), "created": time.time()})
    try:
        with store.fs.open(path, "xb") as f:
            f.write(body)
    except FileExistsError:
        return False
    except (ValueError, NotImplementedError, TypeError):
        # backend without exclusive create: write, then read back (last writer wins; the loser retries)
        if store.exists(path):
            return False
        store.fs.pipe_file(path, body)
        time.sleep(0.2)
        with contextlib.suppress(Exception):
            store.fs.invalidate_cache(vdir)
        if store.read_bytes(path) != body:
            return False
    # a finished version whose claim was removed by hand must not be written into
    return not store.exists(f"{vdir}/{MANIFEST}")


def _register_remote(store: Store, sources, generated, build) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    files: dict[str, Any] = {rel: hash_file(src) for rel, src in sources}
    files.update({rel: bytes_entry(blob) for rel, blob in generated.items()})
    for _ in range(MAX_ATTEMPTS):
        nums = store.numbered()
        version = version_name((nums[-1] if nums else 0) + 1)
        vdir = store.vdir(version)
        if not _claim(store, vdir):
            continue
        manifest, card, mbytes = build(version, files)
        try:
            for rel, src in sources:
                store.fs.put_file(str(src), f"{vdir}/{rel}")
            for rel, blob in {**generated, CARD: card}.items():
                store.fs.pipe_file(f"{vdir}/{rel}", blob)
            store.fs.pipe_file(f"{vdir}/{MANIFEST}", mbytes)  # LAST: the version becomes visible here
        except BaseException:
            with contextlib.suppress(Exception):
                store.fs.rm(vdir, recursive=True)
            raise
        return manifest
    raise RegistryError(f"could not allocate a version number in {store.where} after {MAX_ATTEMPTS} attempts")


def resolve(uri: str | os.PathLike[str], ref: str | int = "champion", name: str = DEFAULT_NAME) -> str:
    """The path (local) or URI (fsspec) of the version directory ``ref`` points at."""
    store = open_store(uri, name)
    return store.url(store.vdir(version_ref(store, ref)))


def _status(version: str, current: str | None) -> str:
    return "champion" if version == current else "challenger"


def show(uri: str | os.PathLike[str], version: str | int = "champion", name: str = DEFAULT_NAME) -> dict[str, Any]:
    """A version's manifest with its live ``status`` and ``path``; ``version`` may be any ref."""
    store = open_store(uri, name)
    v = version_ref(store, version)
    m = store.manifest(v)
    return {**m, "status": _status(v, store.current_champion()), "path": store.url(store.vdir(v))}


def list_versions(uri: str | os.PathLike[str], name: str = DEFAULT_NAME, verify: bool = True) -> list[dict[str, Any]]:
    """One summary per finished version, oldest first: version, created_at, status, base_model, model, auc,
    logloss. ``verify``: each version is checked (:func:`~reclora.registry.manifest.check_version`: its
    manifest whole, every file's sha256 and size as listed); one that does not verify has status ``unreadable``, ``error`` (the
    reasons) and ``champion`` (whether champion.json points at it). Never raises for a broken version."""
    store = open_store(uri, name)
    current = store.current_champion()
    out = []
    for v in store.visible():
        row: dict[str, Any] = {"version": v, "status": _status(v, current), "path": store.url(store.vdir(v))}
        if verify:
            m, problems = check_version(store, v)
        else:
            try:
                m, problems = store.manifest(v), []
            except RegistryError as e:
                m, problems = None, [str(e)]
        if problems or not isinstance(m, Mapping):
            out.append(row | {"status": "unreadable", "error": "; ".join(problems), "champion": v == current})
            continue
        t = (m.get("metrics") or {}).get("test") or {}
        lin = m.get("lineage") or {}
        row.update(
            created_at=m.get("created_at"),
            base_model=m.get("base_model"),
            model=(m.get("metrics") or {}).get("model"),
            auc=t.get("auc"),
            logloss=t.get("logloss"),
            accuracy=t.get("accuracy"),
            git_commit=lin.get("git_commit"),
            data_version=(m.get("data") or {}).get("data_version"),
        )
        out.append(row)
    return out


def verify(uri: str | os.PathLike[str], version: str | int = "champion", name: str = DEFAULT_NAME) -> dict[str, Any]:
    """Re-hash a version's files against its manifest: {"version", "ok", "problems": [...], "path"}."""
    store = open_store(uri, name)
    v = version_ref(store, version)
    _, problems = check_version(store, v)
    return {"version": v, "ok": not problems, "problems": problems, "path": store.url(store.vdir(v))}


__all__ = ["list_versions", "register", "resolve", "show", "verify"]
