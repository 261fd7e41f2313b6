"""Object storage for what must outlive a pod: fsspec URIs (s3://, gs://, ...) and DVC references.

    is_remote(uri)                       an fsspec URI other than a local path / file://
    upload_dir(local, uri)               copy a local directory tree to ``uri`` (files overwritten)
    download_dir(uri, local)             copy ``uri``'s tree into a fresh local directory (atomic)
    remove(uri)                          delete a remote tree (missing is fine)
    copy_file(src, dest)                 one file from a local path or URI to a local path
    fetch_model(path)                    a model directory from a bucket, downloaded once (reused)
    fetch_source(source[, dest])         a raw-data input as a local directory: a local path as is,
                                         an fsspec URI or a DVC reference downloaded into ``dest``
    source_fingerprint(source)           a string that changes with the data behind ``source`` (cache key)

Artifact URIs as Kubeflow Pipelines v2 hands them out (``artifact.uri``; the pipeline root's scheme):
``s3://`` and ``gs://`` as they are, ``minio://bucket/key`` (KFP's default MinIO store) as the same
bucket and key on the S3 endpoint ``$AWS_ENDPOINT_URL``. A scheme fsspec does not know, or
``oci://`` (an OCI image registry, which KFP uses for container-image models), is a DataError
naming it.

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
    repo, _, rest = source[len(DVC_PREFIX) :].rpartition("#")
    path, _, rev = rest.partition("@")
    if not repo or not path:
        raise DataError(f"bad DVC reference {source!r}: expected dvc+<repository>#<path>[@<rev>]")
    return repo, path, rev or None


# Kubeflow Pipelines' artifact-store schemes that fsspec names otherwise: scheme -> (fsspec protocol,
# the environment variable with the endpoint). KFP's `minio://bucket/key` is S3 on the MinIO service.
KFP_SCHEMES = {"minio": ("s3", "AWS_ENDPOINT_URL")}
NOT_STORAGE = {"oci": "an OCI image registry (KFP's container-image models), not an object store"}


def filesystem(uri: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for ``uri``: a local path, an fsspec URI, or a Kubeflow
    Pipelines artifact URI (``minio://bucket/key``: S3 at ``$AWS_ENDPOINT_URL``).

    Raises DataError for an unknown scheme, ``oci://``, a ``minio://`` URI without an endpoint, or a
    backend that is not installed (the ``cloud`` extra).
    """
    import fsspec

    scheme, sep, rest = str(uri).partition("://")
    kwargs: dict[str, Any] = {}
    if sep and scheme in NOT_STORAGE:
        raise DataError(f"{uri}: {scheme}:// is {NOT_STORAGE[scheme]}")
    if sep and scheme in KFP_SCHEMES:
        protocol, env = KFP_SCHEMES[scheme]
        endpoint = os.environ.get(env)
        if not endpoint:
            raise DataError(
                f"{uri}: a {scheme}:// artifact URI needs the store's S3 endpoint in ${env} "
                "(KFP's default MinIO: http://minio-service.kubeflow:9000; the storage Secret's optional key)"
            )
        uri, kwargs = f"{protocol}://{rest}", {"endpoint_url": endpoint}
    try:
        return fsspec.core.url_to_fs(uri, **kwargs)
    except ImportError as e:
        raise DataError(f"{uri}: no file-system backend installed ({e}); install the `cloud` extra") from e
    except ValueError as e:
        if "Protocol not known" not in str(e):
            raise
        raise DataError(
            f"{uri}: unknown storage scheme {scheme}:// (reclora reads local paths, s3://, gs://, minio:// "
            "and the other fsspec protocols)"
        ) from None


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
            rel = f[len(root) :].lstrip("/")
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


def source_fingerprint(source: str, unseen: str | None = None) -> str:
    """A string that changes whenever the data behind ``source`` changes (the prepare step's cache key).

    ``source``: "" (synthetic data: nothing to read, ""), a local path (DVC's md5 of the file or
    directory: a content hash), an object-store URI (a hash of every object's key, size and ETag /
    MD5 / generation as the store reports them, without reading the data), or a DVC reference (the
    resolved Git commit and the DVC md5 of the path there). A local path that does not exist here
    (one on the Spark work volume) is ``"unseen:<unseen>"`` when ``unseen`` is given (the run's id:
    that step is then never served from the cache). Raises DataError when the source is missing or
    empty.
    """
    import hashlib

    if not source:
        return ""
    if unseen is not None and not (is_remote(source) or is_dvc_ref(source) or Path(source).exists()):
        return f"unseen:{unseen}"
    if is_dvc_ref(source):
        from dvc.api import DVCFileSystem

        repo, path, rev = parse_dvc_ref(source)
        try:
            fs = DVCFileSystem(repo, rev=rev)
            info = fs.info(path)
            commit = fs.repo.scm.get_rev()
        except Exception as e:  # DVC's errors vary: a missing repository, rev or path
            raise DataError(f"{source}: cannot read the DVC reference: {e}") from e
        md5 = (info.get("dvc_info") or {}).get("md5") or info.get("md5") or ""
        return f"dvc:{commit}:{path}:{md5}"
    if not is_remote(source):
        from reclora.data import dvc_hash

        return f"md5:{dvc_hash(source)['md5']}"
    fs, root = filesystem(source)
    root = root.rstrip("/")
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        found = {}
    if not found:
        raise DataError(f"{source}: nothing there")
    h = hashlib.sha256()
    for key in sorted(found):
        info = found[key]
        stamps = [info.get(k) for k in ("ETag", "etag", "md5Hash", "generation", "mtime", "LastModified")]
        version = next((str(v) for v in stamps if v is not None), "")
        h.update(f"{key[len(root) :]}\0{info.get('size')}\0{version}\n".encode())
    return f"objects:{h.hexdigest()}"
