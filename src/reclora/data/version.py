"""Data versions: the DVC content hash of a directory, computed as DVC computes it.

The hash equals the ``md5`` DVC records for the same directory in dvc.lock or a
``.dvc`` file (``<md5>.dir``), so later stages can put it in their lineage.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from reclora.errors import DataError


def dvc_hash(path: str | Path) -> dict[str, Any]:
    """{"md5": "<hex>.dir", "nfiles": N, "size": bytes} for a directory (or a file's md5)."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    path = Path(path)
    if not path.exists():
        raise DataError(f"cannot hash {path}: not found")
    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory() as tmp:
        _, meta, obj = build(HashFileDB(fs, tmp), str(path.resolve()), fs, "md5", dry_run=True)
    return {"md5": obj.hash_info.value, "nfiles": meta.nfiles if meta.isdir else 1, "size": meta.size}
