"""The registry's storage backend: one named model under a local path or any fsspec URI.

:class:`Store` reads and writes ``<uri>/<name>/`` (layout in :mod:`reclora.registry.store`): local
paths with os calls (atomic renames, an flock around ``champion.json``, its lock file removed
after), everything else through fsspec (one PUT per file). Also here: the registry's file names,
version names and references (:func:`version_ref`: ``champion``, ``latest``, ``vNNNN``), JSON-safe
serialization, and :func:`cleanup` of what killed writers left behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from reclora.io import loads_json, write_json
from reclora.registry.errors import NoChampion, RegistryError, VersionNotFound

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


def utc_now() -> str:
    """Now in UTC, ISO 8601 to the second with a ``Z`` suffix."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def version_name(n: int) -> str:
    """The directory name of version ``n`` (``vNNNN``, at least 4 digits)."""
    return f"v{int(n):04d}"


# ------------------------------------------------------------------ JSON helpers
def json_safe(obj: Any) -> Any:
    """A JSON-safe copy: numpy scalars -> Python, NaN/inf -> None, paths -> str, tuples -> lists."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return json_safe(obj.item())
        except (TypeError, ValueError):
            pass
    if hasattr(obj, "tolist"):
        return json_safe(obj.tolist())
    return str(obj)


def json_bytes(obj: Any) -> bytes:
    """``obj`` as indented, key-sorted JSON bytes with a final newline (:func:`json_safe` first)."""
    return (json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


# ------------------------------------------------------------------ storage
class Store:
    """One named model in a registry URI: local paths use os calls, everything else fsspec."""

    def __init__(self, uri: str | os.PathLike[str], name: str = DEFAULT_NAME):
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise RegistryError(
                f"bad model name {name!r}: use letters, digits, '.', '_' or '-' (not starting with '.')"
            )
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
        """The model's directory ``<uri>/<name>`` as a loader takes it (:meth:`url`), for messages."""
        return self.url(self.base)

    def url(self, path: str) -> str:
        """What to hand to a loader: a plain path locally, a full URI (with protocol) otherwise."""
        return path if self.local else self.fs.unstrip_protocol(path)

    def vdir(self, version: str) -> str:
        """The path of ``version``'s directory (``<base>/versions/<version>``), inside the store's filesystem."""
        return f"{self.versions}/{version}"

    # -- reading
    def read_bytes(self, path: str) -> bytes | None:
        """The bytes of the file at ``path``; None when it does not exist (or is a directory)."""
        try:
            if self.local:
                return Path(path).read_bytes()
            return self.fs.cat_file(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def read_json(self, path: str) -> Any:
        """The parsed JSON at ``path``; None when the file does not exist. Raises RegistryError when it is not
        valid JSON or repeats a key."""
        raw = self.read_bytes(path)
        if raw is None:
            return None
        try:
            return loads_json(raw)
        except ValueError as e:  # not JSON (a manifest cut short), or an object that repeats a key
            raise RegistryError(f"{self.url(path)}: not valid JSON ({e})") from e

    def exists(self, path: str) -> bool:
        """Whether ``path`` (a file or a directory) exists in the store."""
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
        """``version``'s manifest.json; raises VersionNotFound (listing the known versions) when it has none."""
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
        """The champion.json document; None before the first write (RegistryError when it is not valid JSON)."""
        return self.read_json(f"{self.base}/{CHAMPION}")

    def write_champion_doc(self, doc: Mapping[str, Any]) -> None:
        """Replace champion.json with ``doc`` (JSON-safe copy) in one step: an atomic rename locally, one PUT on an
        object store (:meth:`update_champion` calls it under :meth:`champion_lock`)."""
        path = f"{self.base}/{CHAMPION}"
        if self.local:
            write_json(path, json_safe(doc))
        else:
            self.fs.pipe_file(path, json_bytes(doc))  # one PUT: atomic on object stores

    @contextlib.contextmanager
    def champion_lock(self) -> Iterator[None]:
        """Serialize read-modify-write of champion.json: an flock on ``<base>/.champion.lock`` locally (none on
        object stores).

        Nothing is left behind, whatever happens under the lock (a refused rollback included): the lock file
        is removed while still held, and the directories this call created (the model's, the registry's) when
        they are still empty. A waiter that then gets the lock of the removed file sees that it is no longer the one at the
        path and locks the new one, so two holders never overlap.
        """
        if not self.local:
            yield
            return
        import fcntl

        path = f"{self.base}/{CHAMPION_LOCK}"
        made = _missing_dirs(self.base)  # deepest first
        while True:
            os.makedirs(self.base, exist_ok=True)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except FileNotFoundError:  # another call removed the empty directory it had made: make it again
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if _same_file(fd, path):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # the previous holder removed this file before releasing it: lock the current one
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # before the release: a waiter on this file sees it is gone (above)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            for d in made:
                try:
                    os.rmdir(d)
                except OSError:  # not empty (champion.json written, a version landed): kept, and its parents
                    break

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
        """The champion's version name (``vNNNN``); None when there is none."""
        doc = self.champion_doc()
        return doc.get("champion") if doc else None


def _missing_dirs(path: str) -> list[str]:
    """``path`` and its ancestors that do not exist yet, deepest first (what ``os.makedirs(path)`` creates)."""
    out: list[str] = []
    while path and not os.path.isdir(path) and os.path.dirname(path) != path:
        out.append(path)
        path = os.path.dirname(path)
    return out


def _same_file(fd: int, path: str) -> bool:
    """Whether the open file ``fd`` is still the file at ``path`` (False once that was removed or replaced)."""
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (at_path.st_dev, at_path.st_ino) == (held.st_dev, held.st_ino)


def new_champion_doc(name: str) -> dict[str, Any]:
    """An empty champion.json document for model ``name`` (no champion, no history)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "champion": None,
        "promoted_at": None,
        "reason": None,
        "history": [],
        "events": [],
        "updated_at": None,
    }


def open_store(uri: str | os.PathLike[str] | Store, name: str = DEFAULT_NAME) -> Store:
    """``uri`` itself when it is a Store, else the Store of model ``name`` at ``uri`` (RegistryError on a bad
    URI or name)."""
    return uri if isinstance(uri, Store) else Store(uri, name)


# ------------------------------------------------------------------ cleanup
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def host_tag() -> str:
    """This host's name as it appears in temp-dir names (letters, digits and dots; others as '_')."""
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
            parts = n[len(TMP_PREFIX) :].split("-", 2)
            dead = False
            if len(parts) == 3 and parts[0].isdigit() and parts[2] == host_tag():
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


__all__ = [
    "DEFAULT_NAME",
    "Store",
    "cleanup",
    "json_bytes",
    "json_safe",
    "new_champion_doc",
    "open_store",
    "utc_now",
    "version_name",
    "version_ref",
]
