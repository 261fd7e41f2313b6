"""Small file-system helpers: atomic writes so no reader ever sees half an output."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``target``; on success it replaces ``target``.

    ``target`` given as a symlink is written into the directory the link points to (the link stays).
    On any exception the temporary directory is removed and ``target`` (if it existed) is left
    exactly as it was; neither the temporary directory nor the previous ``target`` (moved aside as
    ``.NAME.old-PID`` for the swap) is left behind, on success or failure.
    """
    target = Path(os.path.abspath(target))
    if target.is_symlink():
        target = target.resolve()  # write into the link's target; never replace the link with a directory
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; outputs are shared like any other directory
        yield tmp
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}-{tmp.name.rsplit('-', 1)[-1]}"
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            if old is not None:
                os.replace(old, target)  # put the previous output back
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _where(p: str | os.PathLike[str]) -> tuple[str, str]:
    """(scheme, normalized path) of a local path (absolute, symlinks resolved) or a URI (``s3://b/k``)."""
    s = os.fspath(p)
    if "://" in s:
        scheme, _, rest = s.partition("://")
        return scheme.lower(), "/" + "/".join(x for x in rest.split("/") if x and x != ".")
    return "file", str(Path(s).expanduser().resolve())


def _relation(out: tuple[str, str], inp: tuple[str, str]) -> str | None:
    if out[0] != inp[0]:
        return None
    o, i = out[1].rstrip("/") or "/", inp[1].rstrip("/") or "/"
    if o == i:
        return "is"
    if i.startswith(o if o.endswith("/") else o + "/"):
        return "contains"
    if o.startswith(i if i.endswith("/") else i + "/"):
        return "lies inside"
    return None


def refuse_overlap(
    outputs: Mapping[str, str | os.PathLike[str] | None], inputs: Mapping[str, str | os.PathLike[str] | None]
) -> None:
    """Refuse, before anything is written, an output that is, contains or lies inside one of the inputs.

    ``outputs`` and ``inputs`` map how the user named each path (``"--out"``, ``"--path"``) to the path
    (None or "" = not given: skipped). Local paths are compared absolute with symlinks resolved (an
    output given as a symlink is checked, and written, at its target); URIs (``s3://...``) by scheme
    and key prefix. Raises :class:`~reclora.errors.ConfigError` naming both paths and their relation.
    """
    from reclora.errors import ConfigError

    ins = [(n, p, _where(p)) for n, p in inputs.items() if p is not None and os.fspath(p) != ""]
    for oname, o in outputs.items():
        if o is None or os.fspath(o) == "":
            continue
        ow = _where(o)
        for iname, i, iw in ins:
            rel = _relation(ow, iw)
            if rel is None:
                continue
            what = {"is": "is the same path as", "contains": "contains", "lies inside": "lies inside"}[rel]
            raise ConfigError(
                f"{oname} {_shown(o)} {what} the input {iname} {_shown(i)}: an output must never replace "
                f"or write into an input; choose a {oname} outside it"
            )


def _shown(p: str | os.PathLike[str]) -> str:
    """A path as given, with where it really leads when a symlink takes it elsewhere."""
    s = os.fspath(p)
    if "://" in s:
        return s
    real = Path(s).expanduser().resolve()
    return s if real == Path(s).expanduser().absolute() else f"{s} (-> {real})"


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write JSON atomically (temp file in the same directory, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=str)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


class DuplicateKeyError(ValueError):
    """A JSON object or YAML mapping repeats a key: which copy is meant is ambiguous (``json`` and PyYAML keep
    the last silently)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"repeats the key {key!r} in one object (a repeated key is ambiguous)")
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateKeyError(k)
        out[k] = v
    return out


def loads_json(text: str | bytes) -> Any:
    """``json.loads`` that refuses an object with a repeated key.

    Raises :class:`DuplicateKeyError` (a ValueError naming the key) for a repeated key and
    ``json.JSONDecodeError`` (also a ValueError) for text that is not JSON."""
    return json.loads(text, object_pairs_hook=_unique_keys)


def loads_yaml(text: str | bytes) -> Any:
    """``yaml.safe_load`` that refuses a mapping with a repeated key (PyYAML keeps the last copy silently).

    Raises :class:`DuplicateKeyError` (a ValueError naming the key and its line) for a repeated key and
    ``yaml.YAMLError`` for text that is not YAML."""
    import yaml

    class _StrictLoader(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        loader.flatten_mapping(node)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                err = DuplicateKeyError(str(key))
                line = key_node.start_mark.line + 1
                err.args = (f"repeats the key {key!r} in one mapping (line {line}; a repeated key is ambiguous)",)
                raise err
            seen.add(key)
        return loader.construct_mapping(node, deep=deep)

    _StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def read_json(path: str | os.PathLike[str]) -> Any:
    """A JSON file (:func:`loads_json`: a repeated key is refused). Raises DataError naming the file for a
    repeated key or text that is not JSON; OSError when it cannot be read."""
    from reclora.errors import DataError

    with open(path, "rb") as f:
        raw = f.read()
    try:
        return loads_json(raw)
    except ValueError as e:
        raise DataError(
            f"{path}: {'JSON object ' if isinstance(e, DuplicateKeyError) else 'not valid JSON: '}{e}"
        ) from e
