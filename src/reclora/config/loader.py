"""Finding, reading and merging params files: params.yaml (the single home of defaults) found, an older
file merged over the packaged defaults, a profile and overrides applied, the command line's ``--set`` items
typed and applied. The typed sections that check the result are in :mod:`reclora.config.schema`."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from reclora.errors import ConfigError

PARAMS_ENV = "RECLORA_PARAMS"
_REPO_PARAMS = Path(__file__).resolve().parents[3] / "params.yaml"  # src/reclora/config/loader.py -> the repo


def params_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Resolve params.yaml: explicit path, $RECLORA_PARAMS, ./params.yaml, then the repo's."""
    candidates = [path, os.environ.get(PARAMS_ENV), "params.yaml", _REPO_PARAMS]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c).resolve()
    if path or os.environ.get(PARAMS_ENV):
        raise ConfigError(f"params file not found: {path or os.environ[PARAMS_ENV]}")
    raise ConfigError("params.yaml not found (set RECLORA_PARAMS or run from the repository root)")


# `--set section.key=value` from the command line (reclora.cli.common.SET_OPTION): kept raw here and
# applied, typed by params.yaml, whenever params are loaded, so a bad one is a ConfigError there.
_CLI_SETS: list[str] = []


def set_cli_overrides(items: list[str] | None) -> None:
    """Remember ``--set`` items (``section.key=value``) for every later :func:`load_params` call."""
    _CLI_SETS[:] = list(items or [])


def cli_overrides(base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The remembered ``--set`` items as a nested overrides mapping, typed against ``base``
    (default: params.yaml without them). Raises ConfigError on a malformed or unknown item."""
    if not _CLI_SETS:
        return {}
    return parse_overrides(_CLI_SETS, base if base is not None else _read_merged(params_path()))


def _coerce(key: str, raw: str, current: Any) -> Any:
    """``raw`` as the type of ``current`` (the value params.yaml has at ``key``)."""
    if isinstance(current, str) or current is None and raw == "":
        return raw
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}={raw}: not a valid value: {e}") from e
    if current is None:
        return value
    if isinstance(value, str) and isinstance(current, (int, float)) and not isinstance(current, bool):
        try:  # YAML 1.1 reads 1e-3 (no dot) as a string
            value = float(raw) if isinstance(current, float) else int(raw)
        except ValueError:
            pass
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"--set {key}={raw}: params.yaml has a boolean there (true/false)")
        return value
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"--set {key}={raw}: params.yaml has an integer there ({current})")
        return value
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"--set {key}={raw}: params.yaml has a number there ({current})")
        return float(value)
    for kind, name in ((list, "list, e.g. [64, 32]"), (dict, "mapping, e.g. {a: 1}")):
        if isinstance(current, kind):
            if not isinstance(value, kind):
                raise ConfigError(f"--set {key}={raw}: params.yaml has a {name} there")
            return value
    return value


# Keys params.yaml no longer has, still accepted by `--set`: old key -> (new key, {old value: new value}).
RENAMED_SETS: dict[str, tuple[str, dict[bool, str]]] = {
    "train.bf16": ("train.precision", {True: "bf16", False: "fp32"}),
}


def _renamed(key: str, raw: str, params: dict[str, Any]) -> tuple[str, str]:
    """(key, raw) of a ``--set`` item, an old key that params.yaml no longer has translated to its new one."""
    if key not in RENAMED_SETS:
        return key, raw
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            new, values = RENAMED_SETS[key]
            value = _coerce(key, raw, False)  # a boolean, or a ConfigError naming the key
            return new, values[value]
        node = node[part]
    return key, raw  # params.yaml still has it (an older file): as it is


def parse_overrides(items: list[str], params: dict[str, Any]) -> dict[str, Any]:
    """``["train.lr=0.01", "crm.mlp=[64, 32]"]`` -> ``{"train": {"lr": 0.01}, "crm": {"mlp": [64, 32]}}``.

    Each value takes the type params.yaml has at its key (int, float, bool, str, list, mapping;
    YAML syntax for lists and mappings); a later item for the same key wins.
    Raises ConfigError for an item without ``=``, a key params.yaml does not have, or a value of
    the wrong type. A renamed key (:data:`RENAMED_SETS`: ``train.bf16=true|false``) sets its new one
    (``train.precision=bf16|fp32``).
    """
    out: dict[str, Any] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set wants section.key=value, got {item!r}")
        key, raw = _renamed(key, raw, params)
        parts = key.split(".")
        node: Any = params
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                where = ".".join(parts[:i]) or "params.yaml"
                known = ", ".join(sorted(map(str, node))) if isinstance(node, dict) else "no keys"
                raise ConfigError(f"--set {key}: {where} has no key {part!r} (it has: {known})")
            node = node[part]
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = _coerce(key, raw, node)
    return out


def _read(p: Path) -> dict[str, Any]:
    from reclora.io import DuplicateKeyError, loads_yaml

    try:
        params = loads_yaml(p.read_text())
    except DuplicateKeyError as e:
        raise ConfigError(f"{p}: {e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    if not isinstance(params, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return params


def defaults_path() -> Path | None:
    """The packaged defaults: the repository's params.yaml (an install from the checkout), else the file
    $RECLORA_PARAMS names (the images' /app/params.yaml); None when neither exists."""
    for c in (_REPO_PARAMS, os.environ.get(PARAMS_ENV)):
        if c and Path(c).is_file():
            return Path(c).resolve()
    return None


def _read_merged(p: Path) -> dict[str, Any]:
    """The params file ``p`` merged over the packaged defaults (:func:`defaults_path`): a file written for an
    earlier version that lacks a newer key gets that key's default (nested mappings merge key by key)."""
    params = _read(p)
    defaults = defaults_path()
    if defaults is None or defaults == p.resolve():
        return params
    return deep_merge(_read(defaults), params)


def load_params(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """params.yaml (see :func:`params_path`), merged over the packaged defaults (a key the file lacks takes
    its default: :func:`defaults_path`), with the command line's ``--set`` items applied.

    Raises ConfigError if a file is missing or not a YAML mapping, or a ``--set`` item is bad.
    """
    params = _read_merged(params_path(path))
    return deep_merge(params, cli_overrides(params)) if _CLI_SETS else params


def section(name: str, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """One top-level section of params.yaml (a deep copy the caller may modify)."""
    params = load_params(path)
    if name not in params:
        raise ConfigError(f"params.yaml has no '{name}' section")
    return copy.deepcopy(params[name])


def cache_dir() -> Path:
    """Where fetched models and other caches live ($RECLORA_CACHE or the user cache dir)."""
    env = os.environ.get("RECLORA_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("reclora"))


def deep_merge(base: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of ``base`` with ``overrides`` merged in (nested mappings merge, other values replace)."""
    out = copy.deepcopy(base)
    for k, v in (overrides or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        elif (
            isinstance(out.get(k), int) and not isinstance(out.get(k), bool) and isinstance(v, float) and v.is_integer()
        ):
            out[k] = int(v)  # KFP passes dict parameters as protobuf Structs, where every number is a float
        elif isinstance(v, list) and isinstance(out.get(k), list) and all(isinstance(x, int) for x in out[k]):
            out[k] = [int(x) if isinstance(x, float) and x.is_integer() else x for x in v]
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_params_with(overrides: dict[str, Any] | None = None, profile: str | None = None) -> dict[str, Any]:
    """params.yaml, then a named profile from its ``profiles:`` section, then explicit overrides."""
    params = load_params()
    if profile:
        profiles = params.get("profiles", {})
        if profile not in profiles:
            raise ConfigError(f"unknown profile {profile!r}; params.yaml has {sorted(profiles)}")
        params = deep_merge(params, profiles[profile])
    # explicit overrides, then the command line's --set (last word) over the profile
    return deep_merge(deep_merge(params, overrides), cli_overrides(params))
