"""params.yaml is the single home of defaults; this module finds and reads it."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from reclora.errors import ConfigError

PARAMS_ENV = "RECLORA_PARAMS"
_REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def params_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Resolve params.yaml: explicit path, $RECLORA_PARAMS, ./params.yaml, then the repo's."""
    candidates = [path, os.environ.get(PARAMS_ENV), "params.yaml", _REPO_PARAMS]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c).resolve()
    if path or os.environ.get(PARAMS_ENV):
        raise ConfigError(f"params file not found: {path or os.environ[PARAMS_ENV]}")
    raise ConfigError("params.yaml not found (set RECLORA_PARAMS or run from the repository root)")


def load_params(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    p = params_path(path)
    try:
        with open(p) as f:
            params = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    if not isinstance(params, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return params


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
        elif isinstance(out.get(k), int) and not isinstance(out.get(k), bool) and isinstance(v, float) and v.is_integer():
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
    return deep_merge(params, overrides)
