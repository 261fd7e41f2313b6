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
    * :func:`cleanup` (run by every registration) removes temp dirs of dead writers (same
      host) and any temp dir or unfinished claimed version older than ``stale_after`` seconds.
    * versions are never modified after they land; the champion pointer lives outside them in
      ``champion.json``, replaced atomically (temp file + rename locally, under a file lock;
      one PUT on an object store), so a manifest's ``status`` on disk is the status at
      registration time and readers get the live status from :func:`show`/:func:`list_versions`.

Verification
    A version verifies when its manifest is a whole JSON object (version, created_at, files) naming its
    own directory, and every file in the directory is listed in it with its exact sha256 and size
    (:func:`check_version`). :func:`list_versions` marks any other version ``unreadable`` with the
    reason; promotion, rollback, deployment and serving refuse it (:func:`verified_ref`,
    :func:`require_verified`, :func:`verify_dir`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from reclora.errors import DataError, RecLoRAError
from reclora.io import loads_json, refuse_overlap, write_json
from reclora.registry.metrics import summarize_metrics

DEFAULT_NAME = "reclora"
MANIFEST = "manifest.json"
CHAMPION = "champion.json"
CARD = "MODEL_CARD.md"
PARAMS = "params.json"
METRICS = "metrics.json"
CLAIM = ".claim"
CHAMPION_LOCK = ".champion.lock"
TMP_PREFIX = ".tmp-"
SCHEMA_VERSION = 1
STALE_AFTER = 24 * 3600.0  # seconds after which an unfinished write is considered abandoned
MAX_ATTEMPTS = 10000
CHUNK = 1 << 20

VERSION_RE = re.compile(r"^v(\d{4,})$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
CRM_WEIGHTS = "crm.safetensors"
EMBEDDINGS = "item_embeddings.safetensors"
ITEMS = "items.parquet"

# default registry settings; params.yaml's optional `registry:` section overrides them (see settings())
DEFAULTS: dict[str, Any] = {
    "uri": "registry",  # a local directory, or any fsspec URI (s3://bucket/prefix, gs://..., memory://...)
    "name": DEFAULT_NAME,
    "model_registry_url": "",  # Kubeflow Model Registry (e.g. https://model-registry.kubeflow:8443); "" = off
    "stale_after_hours": 24,
}


class RegistryError(RecLoRAError):
    """The registry cannot do what was asked (bad URI, unknown ref, conflicting state)."""


class VersionNotFound(RegistryError):
    """No visible version matches the reference."""


class NoChampion(RegistryError):
    """The registry has no champion yet."""


class NoPreviousChampion(RegistryError):
    """A rollback was asked for but there is no earlier champion to restore."""


def settings(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Registry settings: DEFAULTS <- params['registry'] <- $RECLORA_REGISTRY (the URI only)."""
    out = dict(DEFAULTS)
    if params and isinstance(params.get("registry"), Mapping):
        out.update({k: v for k, v in params["registry"].items() if v is not None})
    if os.environ.get("RECLORA_REGISTRY"):
        out["uri"] = os.environ["RECLORA_REGISTRY"]
    return out


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def version_name(n: int) -> str:
    return f"v{int(n):04d}"


# ------------------------------------------------------------------ JSON helpers
def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars -> Python, NaN/inf -> None, paths -> str, tuples -> lists."""
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_clean(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return _clean(obj.item())
        except (TypeError, ValueError):
            pass
    if hasattr(obj, "tolist"):
        return _clean(obj.tolist())
    return str(obj)


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(_clean(obj), indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


# ------------------------------------------------------------------ storage
class Store:
    """One named model in a registry URI: local paths use os calls, everything else fsspec."""

    def __init__(self, uri: str | os.PathLike[str], name: str = DEFAULT_NAME):
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise RegistryError(f"bad model name {name!r}: use letters, digits, '.', '_' or '-' (not starting with '.')")
        uri = os.fspath(uri)
        if not uri:
            raise RegistryError("empty registry URI")
        import fsspec  # type: ignore[import-untyped]
        from fsspec.implementations.local import LocalFileSystem  # type: ignore[import-untyped]

        try:
            fs, root = fsspec.core.url_to_fs(uri)
        except (ImportError, ValueError) as e:
            raise RegistryError(f"cannot open registry URI {uri!r}: {e}") from e
        self.uri, self.name, self.fs = uri, name, fs
        self.local = isinstance(fs, LocalFileSystem)
        root = os.path.abspath(root) if self.local else (root.rstrip("/") or "/")
        self.base = f"{root.rstrip('/')}/{name}"
        self.versions = f"{self.base}/versions"

    def __repr__(self) -> str:
        return f"Store({self.uri!r}, {self.name!r})"

    @property
    def where(self) -> str:
        return self.url(self.base)

    def url(self, path: str) -> str:
        """What to hand to a loader: a plain path locally, a full URI (with protocol) otherwise."""
        return path if self.local else self.fs.unstrip_protocol(path)

    def vdir(self, version: str) -> str:
        return f"{self.versions}/{version}"

    # -- reading
    def read_bytes(self, path: str) -> bytes | None:
        try:
            if self.local:
                return Path(path).read_bytes()
            return self.fs.cat_file(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def read_json(self, path: str) -> Any:
        raw = self.read_bytes(path)
        if raw is None:
            return None
        try:
            return loads_json(raw)
        except ValueError as e:  # not JSON (a manifest cut short), or an object that repeats a key
            raise RegistryError(f"{self.url(path)}: not valid JSON ({e})") from e

    def exists(self, path: str) -> bool:
        return os.path.exists(path) if self.local else self.fs.exists(path)

    def _entries(self) -> list[tuple[str, bool]]:
        """(name, is_dir) of everything in versions/ (hidden names included)."""
        if self.local:
            try:
                with os.scandir(self.versions) as it:
                    return [(e.name, e.is_dir()) for e in it]
            except FileNotFoundError:
                return []
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache(self.versions)
        try:
            infos = self.fs.ls(self.versions, detail=True)
        except FileNotFoundError:
            return []
        return [(i["name"].rstrip("/").rsplit("/", 1)[-1], i.get("type") == "directory") for i in infos]

    def numbered(self) -> list[int]:
        """Numbers of every vNNNN directory, finished or not (what allocation must avoid)."""
        return sorted(int(m.group(1)) for n, d in self._entries() if d and (m := VERSION_RE.match(n)))

    def visible(self) -> list[str]:
        """Finished versions (with manifest.json), oldest first."""
        return [v for v in map(version_name, self.numbered()) if self.exists(f"{self.vdir(v)}/{MANIFEST}")]

    def manifest(self, version: str) -> dict[str, Any]:
        m = self.read_json(f"{self.vdir(version)}/{MANIFEST}")
        if m is None:
            raise VersionNotFound(self._not_found(version))
        return m

    def _not_found(self, version: str) -> str:
        known = self.visible()
        listing = ", ".join(known[-10:]) if known else "none"
        return f"version {version} not found in {self.where} (versions: {listing})"

    # -- champion pointer
    def champion_doc(self) -> dict[str, Any] | None:
        return self.read_json(f"{self.base}/{CHAMPION}")

    def write_champion_doc(self, doc: Mapping[str, Any]) -> None:
        path = f"{self.base}/{CHAMPION}"
        if self.local:
            write_json(path, _clean(doc))
        else:
            self.fs.pipe_file(path, json_bytes(doc))  # one PUT: atomic on object stores

    @contextlib.contextmanager
    def champion_lock(self) -> Iterator[None]:
        """Serialize read-modify-write of champion.json (an flock locally; none on object stores)."""
        if not self.local:
            yield
            return
        import fcntl

        os.makedirs(self.base, exist_ok=True)
        fd = os.open(f"{self.base}/{CHAMPION_LOCK}", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def update_champion(self, fn: Callable[[dict[str, Any]], dict[str, Any] | None]) -> dict[str, Any]:
        """Apply ``fn`` to the champion document under the lock; write its result unless it returns None."""
        with self.champion_lock():
            doc = self.champion_doc() or new_champion_doc(self.name)
            new = fn(json.loads(json.dumps(doc)))
            if new is None:
                return doc
            new["updated_at"] = utc_now()
            new["events"] = new.get("events", [])[-500:]
            self.write_champion_doc(new)
            return new

    def current_champion(self) -> str | None:
        doc = self.champion_doc()
        return doc.get("champion") if doc else None


def new_champion_doc(name: str) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "name": name, "champion": None, "promoted_at": None,
            "reason": None, "history": [], "events": [], "updated_at": None}  # fmt: skip


def open_store(uri: str | os.PathLike[str] | Store, name: str = DEFAULT_NAME) -> Store:
    return uri if isinstance(uri, Store) else Store(uri, name)


# ------------------------------------------------------------------ files
def _hash_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return {"sha256": h.hexdigest(), "size": size}


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


def _bytes_entry(data: bytes) -> dict[str, Any]:
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
            s = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=d,
                               capture_output=True, text=True, timeout=20, env=env)  # fmt: skip
            return {"git_commit": r.stdout.strip(), "git_dirty": bool(s.stdout.strip()) if s.returncode == 0 else None}
        except (OSError, subprocess.SubprocessError):
            continue
    return None


def build_lineage(lineage: Mapping[str, Any] | None, detect: bool = True) -> dict[str, Any]:
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
                keep = ("dataset", "rows", "users", "items", "samples", "positive_rate", "label_threshold",
                        "min_history", "split")  # fmt: skip
                info.update({k: m[k] for k in keep if k in m})
    info.update(dict(data or {}))
    if "data_version" not in info:
        for k in DATA_VERSION_KEYS:
            v = lineage.get(k)
            if v:
                info["data_version"] = v.get("md5", v) if isinstance(v, Mapping) else v
                break
    return info


# ------------------------------------------------------------------ cleanup
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def cleanup(
    uri: str | os.PathLike[str] | Store, name: str = DEFAULT_NAME, stale_after: float = STALE_AFTER
) -> list[str]:
    """Remove what killed writers left behind; returns what was removed.

    Local: ``versions/.tmp-*`` dirs whose writer (same host) is dead, or older than ``stale_after`` s.
    Object stores: ``vNNNN`` dirs without manifest.json whose claim is older than ``stale_after`` s.
    Finished versions are never touched.
    """
    store = open_store(uri, name)
    removed: list[str] = []
    now = time.time()
    if store.local:
        for n, is_dir in store._entries():
            if not n.startswith(TMP_PREFIX):
                continue
            path = f"{store.versions}/{n}"
            parts = n[len(TMP_PREFIX):].split("-", 2)
            dead = False
            if len(parts) == 3 and parts[0].isdigit() and parts[2] == _host():
                dead = not _pid_alive(int(parts[0]))
            try:
                age = now - os.lstat(path).st_mtime
            except FileNotFoundError:
                continue
            if dead or age > stale_after:
                (shutil.rmtree if is_dir else os.unlink)(path)  # type: ignore[operator]
                removed.append(path)
        return removed
    for num in store.numbered():
        v = store.vdir(version_name(num))
        if store.exists(f"{v}/{MANIFEST}"):
            continue
        claim = store.read_json(f"{v}/{CLAIM}") if store.exists(f"{v}/{CLAIM}") else None
        created = claim.get("created") if isinstance(claim, Mapping) else None
        if isinstance(created, (int, float)) and now - created > stale_after:
            with contextlib.suppress(FileNotFoundError):
                store.fs.rm(v, recursive=True)
            removed.append(store.url(v))
    return removed


# ------------------------------------------------------------------ register
def _manifest(
    name: str, version: str, created: str, base_model: str, files: Mapping[str, Any], summary: Mapping[str, Any],
    lineage: Mapping[str, Any], data: Mapping[str, Any], promotion: Mapping[str, Any] | None = None,
    runtime: Mapping[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    return _clean({
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
            "crm": "crm", "adapter": "adapter", "params": PARAMS, "metrics": METRICS, "card": CARD,
            "retrieval": f"retrieval/{EMBEDDINGS}" if f"retrieval/{EMBEDDINGS}" in files else None,
            "items": ITEMS if ITEMS in files else None,
        },
    } | ({"promotion": promotion} if promotion is not None else {}))  # fmt: skip


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
    refuse_overlap({"the registry": store.url(store.base)},
                   {"crm_dir": crm_dir, "adapter_dir": adapter_dir, "retrieval_dir": retrieval_dir, "items_path": items_path})
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
        draft = _manifest(name, version, created, base_model, files, summary, full_lineage, info, promotion, runtime)
        card = _card(draft, params)
        files = {**files, CARD: _bytes_entry(card)}
        m = _manifest(name, version, created, base_model, files, summary, full_lineage, info, promotion, runtime)
        return m, card, json_bytes(m)

    if store.local:
        manifest = _register_local(store, sources, generated, build)
    else:
        manifest = _register_remote(store, sources, generated, build)
    path = store.url(store.vdir(manifest["version"]))
    result = {**manifest, "path": path}
    if model_registry_url:
        from reclora.registry.kubeflow import record_version

        result["model_registry"] = record_version(manifest, path, model_registry_url, **dict(model_registry_options or {}))
    return result


def _register_local(store: Store, sources, generated, build) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    os.makedirs(store.versions, exist_ok=True)
    tmp = f"{store.versions}/{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{_host()}"
    os.mkdir(tmp)
    try:
        files: dict[str, Any] = {}
        for rel, src in sources:
            dst = Path(tmp) / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            files[rel] = _copy_file(src, dst)
        for rel, blob in generated.items():
            Path(tmp, rel).write_bytes(blob)
            files[rel] = _bytes_entry(blob)
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
    files: dict[str, Any] = {rel: _hash_file(src) for rel, src in sources}
    files.update({rel: _bytes_entry(blob) for rel, blob in generated.items()})
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


# ------------------------------------------------------------------ reading
def version_ref(store: Store, ref: str | int) -> str:
    """A version name (vNNNN) for 'champion', 'latest', 'vNNNN', 'NNNN' or an int; errors name what exists."""
    if isinstance(ref, int) and not isinstance(ref, bool):
        v = version_name(ref)
    elif isinstance(ref, str) and ref.strip().lower() == "champion":
        cur = store.current_champion()
        if cur is None:
            raise NoChampion(f"no champion yet in {store.where}: promote a version first")
        return cur
    elif isinstance(ref, str) and ref.strip().lower() == "latest":
        vis = store.visible()
        if not vis:
            raise VersionNotFound(f"no versions registered in {store.where}")
        return vis[-1]
    elif isinstance(ref, str) and (m := re.fullmatch(r"[vV]?(\d+)", ref.strip())):
        v = version_name(int(m.group(1)))
    else:
        raise RegistryError(f"bad version reference {ref!r}: use 'champion', 'latest' or vNNNN")
    if not store.exists(f"{store.vdir(v)}/{MANIFEST}"):
        raise VersionNotFound(store._not_found(v))
    return v


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
    logloss. ``verify``: each version is checked (:func:`check_version`: its manifest whole, every file's
    sha256 and size as listed); one that does not verify has status ``unreadable``, ``error`` (the
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
            created_at=m.get("created_at"), base_model=m.get("base_model"), model=(m.get("metrics") or {}).get("model"),
            auc=t.get("auc"), logloss=t.get("logloss"), accuracy=t.get("accuracy"),
            git_commit=lin.get("git_commit"), data_version=(m.get("data") or {}).get("data_version"),
        )  # fmt: skip
        out.append(row)
    return out


class UnverifiedVersion(RegistryError):
    """A version whose manifest or files do not verify: it is never promoted, rolled back to, deployed or served."""


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
        bad = [k for k, v in files.items() if not isinstance(v, Mapping) or not isinstance(v.get("sha256"), str)
               or not isinstance(v.get("size"), int)]
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
    present = {f.relative_to(d).as_posix(): (lambda f=f: _hash_file(f)) for f in _walk(d) if f.name != MANIFEST}
    return _file_problems(m["files"], present)


def check_version(store: Store, version: str) -> tuple[dict[str, Any] | None, list[str]]:
    """(manifest or None, problems) of one version of ``store`` (problems empty: it verifies); see :func:`verify_dir`."""
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


def verify(uri: str | os.PathLike[str], version: str | int = "champion", name: str = DEFAULT_NAME) -> dict[str, Any]:
    """Re-hash a version's files against its manifest: {"version", "ok", "problems": [...], "path"}."""
    store = open_store(uri, name)
    v = version_ref(store, version)
    _, problems = check_version(store, v)
    return {"version": v, "ok": not problems, "problems": problems, "path": store.url(store.vdir(v))}
