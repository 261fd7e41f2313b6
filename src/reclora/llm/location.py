"""Where the base LLM is: the embedded default's cache directory, an explicit path, a path recorded elsewhere.

No loading here (:mod:`reclora.llm.model` loads, :mod:`reclora.llm.fetch` downloads): just the
names and checks both of them, the stages and the server agree on. ``model`` arguments are the
params ``model`` section (``name``: the embedded default's name, ``path``: an explicit model, "" = the
default; the typed :class:`~reclora.config.model_sections.ModelSection` or its mapping), loaded at the edge.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reclora.config import cache_dir
from reclora.errors import RecLoRAError
from reclora.io import read_json

if TYPE_CHECKING:
    from reclora.config.model_sections import ModelSection

MARKER = "reclora_model.json"
#: the marker's key for the seconds the fetch that put the model in the cache took (download, conversion, check)
FIRST_FETCH_SECONDS = "first_fetch_seconds"


def _setting(model: ModelSection | Mapping[str, Any], key: str) -> Any:
    """The ``model`` section's ``key`` (``name``, ``path``): the typed section's attribute or the mapping's value."""
    return model.get(key) if isinstance(model, Mapping) else getattr(model, key)


def default_model_dir(model: ModelSection | Mapping[str, Any], cache: str | Path | None = None) -> Path:
    """The directory of the embedded default model ``model.name``: ``<cache>/models/<name>``
    (``cache`` default: $RECLORA_CACHE or the user cache dir). It may not be fetched yet."""
    return (Path(cache) if cache else cache_dir()) / "models" / str(_setting(model, "name"))


def is_fetched(path: Path) -> bool:
    """Whether ``path`` holds a fetched and verified model (the marker, config, weights, tokenizer)."""
    return all((path / f).is_file() for f in (MARKER, "config.json", "model.safetensors", "tokenizer.json"))


def model_info(path: Path) -> dict[str, Any]:
    """What the fetch recorded about the model at ``path`` (source, sha256, parameters, ...,
    ``first_fetch_seconds``: how long that fetch took), else {"path"}. A marker written before that key's
    name, with ``fetch_seconds``, reads the same."""
    if not (path / MARKER).is_file():
        return {"path": str(path)}
    info = read_json(path / MARKER)
    if "fetch_seconds" in info:  # the older name, which read as if it were the time of every later call
        info.setdefault(FIRST_FETCH_SECONDS, info.pop("fetch_seconds"))
    return info


def resolve_model_path(path: str | Path | None, model: ModelSection | Mapping[str, Any]) -> str:
    """An explicit path/id, else ``model.path``, else the fetched embedded default.
    Raises RecLoRAError when the default is needed and not fetched."""
    path = path or _setting(model, "path")
    if path:
        return str(path)
    d = default_model_dir(model)
    if not is_fetched(d):
        raise RecLoRAError(f"the default model is not in {d}; run `reclora model fetch` (or `make demo`)")
    return str(d)


def local_model_path(path: str | Path, model: ModelSection | Mapping[str, Any]) -> str:
    """``path`` as a base model on this machine: itself if it exists here; else, when it names the
    embedded default model (a version registered on another machine or in another image, whose
    model cache lay elsewhere, e.g. /opt/reclora/cache/models/NAME in the images), this machine's
    fetched copy of it; else unchanged (a hub id, or a clear error when it is loaded)."""
    p = Path(path)
    if p.is_absolute() and not os.path.exists(p):  # False also where a parent is not readable (/root)
        d = default_model_dir(model)
        if p.name == d.name and is_fetched(d):
            return str(d)
    return str(path)


__all__ = [
    "FIRST_FETCH_SECONDS",
    "MARKER",
    "default_model_dir",
    "is_fetched",
    "local_model_path",
    "model_info",
    "resolve_model_path",
]
