"""Object storage for what must outlive a pod: fsspec URIs (s3://, gs://, ...) and DVC references.

    is_remote(uri)                       an fsspec URI other than a local path / file://
    upload_dir(local, uri)               copy a local directory tree to ``uri`` (files overwritten)
    download_dir(uri, local)             copy ``uri``'s tree into a fresh local directory (atomic)
    remove(uri)                          delete a remote tree (missing is fine)
    copy_file(src, dest)                 one file from a local path or URI to a local path
    fetch_model(path)                    a model directory from a bucket, downloaded once (reused)
    fetch_source(source[, dest])         a raw-data input as a local directory: a local path as is,
                                         an fsspec URI or a DVC reference downloaded into ``dest``

A DVC reference is ``dvc+<repository>#<path>`` or ``dvc+<repository>#<path>@<rev>``: what
``dvc get <repository> <path> --rev <rev>`` fetches (a Git URL or a local path of a DVC
repository whose remote holds the data, e.g. an S3/GCS remote). Credentials are never passed
here: fsspec and DVC read the usual environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_ENDPOINT_URL`` for S3-compatible stores, ``GOOGLE_APPLICATION_CREDENTIALS``), which the
pipeline fills from a Kubernetes Secret. ``s3://``/``gs://`` need the ``cloud`` extra (s3fs, gcsfs).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from reclora.errors import DataError
from reclora.io import atomic_dir

DVC_PREFIX = "dvc+"


def is_remote(uri: str | os.PathLike[str] | None) -> bool:
    """True for an fsspec URI with a non-local protocol (``s3://b/k``, ``gs://``, ``memory://``)."""
    s = str(uri or "")
    if "://" not in s:
        return False
    return s.split("://", 1)[0] not in ("file", "local")


def is_dvc_ref(source: str | None) -> bool:
    """True for ``dvc+<repository>#<path>[@<rev>]``."""
    return bool(source) and str(source).startswith(DVC_PREFIX) and "#" in str(source)


def parse_dvc_ref(source: str) -> tuple[str, str, str | None]:
    """(repository, path, rev or None) of a DVC reference; DataError when it is malformed."""
    if not is_dvc_ref(source):
        raise DataError(f"not a DVC reference: {source!r} (expected dvc+<repository>#<path>[@<rev>])")
    repo, _, rest = source[len(DVC_PREFIX):].rpartition("#")
    path, _, rev = rest.partition("@")
    if not repo or not path:
        raise DataError(f"bad DVC reference {source!r}: expected dvc+<repository>#<path>[@<rev>]")
    return repo, path, rev or None


def filesystem(uri: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for ``uri``; a clear error when its backend is missing."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(uri)
    except ImportError as e:
        raise DataError(f"{uri}: no file-system backend installed ({e}); install the `cloud` extra") from e


def exists(uri: str) -> bool:
    """Whether ``uri`` (a file or a directory prefix) exists."""
    if not is_remote(uri):
        return Path(uri).exists()
    fs, path = filesystem(uri)
    return bool(fs.exists(path))


def copy_file(src: str, dest: str | os.PathLike[str]) -> Path:
    """Copy one file from a local path or fsspec URI to the local path ``dest``."""
    if not is_remote(src):
        return Path(shutil.copyfile(src, dest))
    fs, path = filesystem(src)
    fs.get_file(path, str(dest))
    return Path(dest)


def upload_dir(local: str | os.PathLike[str], uri: str) -> list[str]:
    """Copy every file under ``local`` to ``uri/<relative path>``; returns the relative paths copied.

    Object stores have no directory rename: a reader that must never see half a tree needs a
    marker written last (see :func:`reclora.few2many.checkpoint.save_checkpoint`).
    """
    local = Path(local)
    if not local.is_dir():
        raise DataError(f"{local}: not a directory")
    fs, root = filesystem(uri)
    root = root.rstrip("/")
    copied = []
    for f in sorted(p for p in local.rglob("*") if p.is_file()):
        rel = f.relative_to(local).as_posix()
        fs.put_file(str(f), f"{root}/{rel}")
        copied.append(rel)
    return copied


def download_dir(uri: str, local: str | os.PathLike[str]) -> Path:
    """Copy the tree at ``uri`` into ``local`` (replaced atomically); DataError when ``uri`` holds nothing."""
    fs, root = filesystem(uri)
    root = root.rstrip("/")
    files = [f for f in fs.find(root) if not f.endswith("/")]
    if not files:
        raise DataError(f"{uri}: nothing there")
    local = Path(local)
    with atomic_dir(local) as tmp:
        for f in files:
            rel = f[len(root):].lstrip("/")
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f, str(tmp / rel))
    return local


def remove(uri: str) -> None:
    """Delete the tree at ``uri`` (nothing happens when it does not exist)."""
    fs, root = filesystem(uri)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(root.rstrip("/"), recursive=True)


def fetch_model(path: str | None) -> str | None:
    """A model directory/id as a local path: ``path`` itself unless it is an object-store URI, which is
    downloaded once into ``$RECLORA_MODEL_DOWNLOADS/remote-<hash>`` (default: ``<tmp>/reclora-models``,
    writable in every pod; the image's model cache is read-only) and reused by later calls."""
    if not path or not is_remote(path):
        return path
    import hashlib

    root = Path(os.environ.get("RECLORA_MODEL_DOWNLOADS") or Path(tempfile.gettempdir()) / "reclora-models")
    local = root / f"remote-{hashlib.sha256(path.rstrip('/').encode()).hexdigest()[:16]}"
    if not (local / "config.json").is_file():
        download_dir(path, local)
    return str(local)


def fetch_source(source: str, dest: str | os.PathLike[str] | None = None) -> str:
    """A raw-data input as a local path: ``source`` itself when local (or empty), else downloaded into ``dest``
    (default: a new temporary directory).

    ``source``: a local path, an fsspec URI (``s3://bucket/raw/ml-100k``) or a DVC reference
    (``dvc+https://github.com/org/data-registry#ml-100k@v2``, ``dvc+/path/to/repo#raw``).
    Raises DataError when the remote source is missing or cannot be fetched.
    """
    if not source or not (is_remote(source) or is_dvc_ref(source)):
        return source
    dest = Path(dest) if dest is not None else Path(tempfile.mkdtemp(prefix="reclora-raw-")) / "raw"
    if is_dvc_ref(source):
        from dvc.repo import Repo

        repo, path, rev = parse_dvc_ref(source)
        with atomic_dir(dest) as tmp:
            try:
                Repo.get(repo, path, out=str(tmp / "data"), rev=rev)
            except Exception as e:  # DVC's errors vary: a missing path, rev, remote or credentials
                raise DataError(f"dvc get {repo} {path}{f' --rev {rev}' if rev else ''} failed: {e}") from e
            got = tmp / "data"
            if got.is_dir():
                for child in got.iterdir():
                    shutil.move(str(child), str(tmp / child.name))
                got.rmdir()
            else:  # a single file keeps its name
                got.rename(tmp / Path(path).name)
        return str(dest)
    return str(download_dir(source, dest))
