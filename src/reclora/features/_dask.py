"""A faster dask token for object arrays of numeric arrays (Feast's list-valued features).

Feast's file offline store runs on dask, and dask names every intermediate frame by a content
hash. For object columns (our Array(Int64)/Array(Float32) features: one numpy array per row)
dask pickles the whole column, several times, to hash it; that dominated point-in-time retrieval.
Inside :func:`fast_object_tokens`, such columns are hashed from their raw bytes plus each
element's dtype and shape instead: still a deterministic content hash (equal content -> equal
token, different content -> different token), just without pickling. Anything else (strings,
mixed objects) takes dask's own path. The original handler is restored on exit.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

_lock = threading.Lock()
_depth = 0
_orig: Any = None


def _ragged_token(orig: Any):
    from dask.hashing import hash_buffer_hex

    def normalize(x: np.ndarray) -> Any:
        if x.dtype.hasobject and x.size:
            vals = x.ravel(order="C").tolist()
            if all(type(v) is np.ndarray and not v.dtype.hasobject for v in vals):
                meta = "|".join([f"{v.dtype.str}{v.shape}" for v in vals]).encode()
                data = b"".join([np.ascontiguousarray(v).tobytes() for v in vals])
                return ("reclora-ragged", x.shape, hash_buffer_hex(meta), hash_buffer_hex(data))
        return orig(x)

    return normalize


@contextlib.contextmanager
def fast_object_tokens() -> Iterator[None]:
    """Use the byte-level token for object arrays of numeric arrays while the block runs."""
    global _depth, _orig
    try:
        from dask.tokenize import normalize_token
    except ImportError:  # pragma: no cover - no dask, nothing to speed up
        yield
        return
    with _lock:
        if _depth == 0:
            _orig = normalize_token.dispatch(np.ndarray)
            normalize_token.register(np.ndarray)(_ragged_token(_orig))
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                normalize_token.register(np.ndarray)(_orig)
                _orig = None
