"""The feature repo: its ``feature_store.yaml`` (store backends as configuration), rendering, ``apply``, open.

A feature repo is a directory holding ``feature_store.yaml``, ``features.py`` (the same file in every
repo, :mod:`reclora.features.repo_features`, for the ``feast`` CLI), ``feature_sources.json`` (the
sources directory and offline store it declares) and ``data/`` (registry, SQLite online store).
:func:`render_feature_repo` writes one into a run directory; :func:`apply_feature_repo` renders and
registers the objects of :mod:`reclora.features.definitions` (what ``feast apply`` does);
:func:`open_feature_store` opens an applied repo.

Store backends are configuration: an overrides mapping (the ``store_config`` argument, or
``$RECLORA_FEAST_STORE_CONFIG``, a YAML file, or params ``features.offline_store`` /
``features.store``: :func:`store_overrides`) is merged over the local default (provider local, file
offline store, SQLite online store, file registry), e.g.
``{"online_store": {"type": "redis", "connection_string": "${REDIS_URL}"},
"registry": "s3://bucket/reclora/registry.db"}``. Feast expands ``${VAR}`` in the YAML.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from reclora.config import Params, deep_merge
from reclora.errors import ConfigError, DataError
from reclora.features.definitions import PROJECT, REPO_SOURCES, SOURCE_FILES, feature_definitions

if TYPE_CHECKING:
    from feast import FeatureStore

STORE_CONFIG_ENV = "RECLORA_FEAST_STORE_CONFIG"
REGISTRY_PATH = "data/registry.db"
ONLINE_PATH = "data/online_store.db"
# the checked-in repo (template and `feast` CLI entry point); never rendered over
TEMPLATE_DIR = Path(__file__).resolve().parents[3] / "feature_repo"
# the repo's Python file, copied as features.py into every rendered repo
REPO_FEATURES_PY = Path(__file__).resolve().with_name("repo_features.py")

OFFLINE_STORES = ("file", "duckdb", "spark")  # params features.offline_store
DEFAULT_STORE_CONFIG: dict[str, Any] = {
    "project": PROJECT,
    "provider": "local",
    "registry": REGISTRY_PATH,
    "offline_store": {"type": "file"},
    "online_store": {"type": "sqlite", "path": ONLINE_PATH},
    "entity_key_serialization_version": 3,
    "auth": {"type": "no_auth"},
}


def _merge_store(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base`` (:func:`reclora.config.deep_merge`), except that a block
    naming a ``type`` replaces the block it overrides whole (another store type has other options)."""
    retyped = {k: dict(v) for k, v in over.items() if isinstance(v, Mapping) and "type" in v}
    rest = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in over.items() if k not in retyped}
    return {**deep_merge(dict(base), rest), **copy.deepcopy(retyped)}


def store_overrides(params: Params | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Store-config overrides: ``$RECLORA_FEAST_STORE_CONFIG`` (a YAML file), else params'
    ``features`` (a :class:`~reclora.config.Params` or its mapping): ``offline_store`` (file | duckdb | spark;
    spark with ``spark_conf``) and then the ``store`` mapping (any feature_store.yaml keys) over it."""
    path = os.environ.get(STORE_CONFIG_ENV)
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"${STORE_CONFIG_ENV}: file not found: {p}")
        try:
            over = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from e
        if not isinstance(over, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        return over
    features = params.features.to_dict() if isinstance(params, Params) else (params or {}).get("features")
    if isinstance(features, Mapping):
        over = features.get("store") or {}
        if not isinstance(over, Mapping):
            raise ConfigError("params.yaml: features.store must be a mapping")
        kind = features.get("offline_store")
        if not kind:
            return dict(over)
        if kind not in OFFLINE_STORES:
            raise ConfigError(
                f"params.yaml: features.offline_store must be one of {', '.join(OFFLINE_STORES)}, got {kind!r}"
            )
        block: dict[str, Any] = {"type": kind}
        if kind == "spark":
            conf = features.get("spark_conf") or {}
            if not isinstance(conf, Mapping):
                raise ConfigError("params.yaml: features.spark_conf must be a mapping")
            block["spark_conf"] = {str(k): str(v) for k, v in conf.items()}
            if features.get("spark_staging_location"):
                block["staging_location"] = str(features["spark_staging_location"])
        return _merge_store({"offline_store": block}, over)
    return {}


def store_config(online_path: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | None = None) -> dict:
    """The feature_store.yaml content: the local default, ``online_path``, then ``overrides``."""
    cfg = copy.deepcopy(DEFAULT_STORE_CONFIG)
    if online_path is not None:
        cfg["online_store"]["path"] = str(online_path)
    return _merge_store(cfg, overrides or {})


def render_feature_repo(
    repo_dir: str | os.PathLike[str],
    sources_dir: str | os.PathLike[str],
    online_path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Path, str]:
    """Write ``feature_store.yaml``, ``features.py`` and ``feature_sources.json`` into ``repo_dir`` (a
    run directory).

    ``online_path`` (SQLite file) is absolute or relative to ``repo_dir``; default
    ``data/online_store.db``. ``overrides`` are deep-merged over the local default config
    (a block with a new ``type`` replaces the block).

    Returns (repo_dir, the sources path as the repo stores it: relative to the repo when local,
    so repo and sources move together; an object-store URI as is).
    """
    repo = Path(repo_dir)
    if repo.resolve() == TEMPLATE_DIR.resolve():
        raise ConfigError(f"{repo}: this is the checked-in template repo; render into a run directory instead")
    src = str(sources_dir)
    if "://" not in src:
        sp = Path(src)
        if not sp.is_absolute():
            sp = Path.cwd() / sp
        src = os.path.relpath(sp, repo.resolve() if repo.exists() else Path.cwd() / repo)
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "data").mkdir(exist_ok=True)
    cfg = store_config(online_path, overrides)
    head = (
        "# Rendered by reclora.features.repo.render_feature_repo (template: feature_repo/).\n"
        "# Relative paths are resolved against this directory by Feast.\n"
    )
    tmp = repo / ".feature_store.yaml.tmp"
    tmp.write_text(head + yaml.safe_dump(cfg, sort_keys=False))
    os.replace(tmp, repo / "feature_store.yaml")
    tmp = repo / f".{REPO_SOURCES}.tmp"
    declared = {"sources": src, "offline_store": str(cfg["offline_store"].get("type", "file"))}
    tmp.write_text(json.dumps(declared) + "\n")
    os.replace(tmp, repo / REPO_SOURCES)
    tmp = repo / ".features.py.tmp"
    shutil.copyfile(REPO_FEATURES_PY, tmp)
    os.replace(tmp, repo / "features.py")
    return repo, src


def open_feature_store(repo_dir: str | os.PathLike[str]) -> FeatureStore:
    """A FeatureStore on an applied repo (e.g. ``OUT/repo`` of the features stage), for serving.
    Raises DataError when ``repo_dir`` has no ``feature_store.yaml``."""
    from feast import FeatureStore

    repo = Path(repo_dir)
    if not (repo / "feature_store.yaml").is_file():
        raise DataError(f"{repo}: not a feature repo (no feature_store.yaml); run the features stage first")
    return FeatureStore(repo_path=str(repo.resolve()))


def apply_feature_repo(
    repo_dir: str | os.PathLike[str],
    sources_dir: str | os.PathLike[str],
    online_path: str | os.PathLike[str] | None = None,
    store_config: Mapping[str, Any] | None = None,
) -> FeatureStore:
    """Render the repo into ``repo_dir`` and apply it (what ``feast apply`` does): register the
    entities, sources and feature views and create the online store tables.

    ``store_config``: the overrides of :func:`store_config` (default: ``$RECLORA_FEAST_STORE_CONFIG``).
    Returns the open FeatureStore. Raises DataError when a local sources directory lacks a source
    file, ConfigError on a bad store configuration.
    """
    src = str(sources_dir)
    if "://" not in src:
        missing = [f for f in SOURCE_FILES if not (Path(src) / f).is_file()]
        if missing:
            raise DataError(f"{src}: feature sources missing ({', '.join(missing)}); run build_feature_sources first")
    overrides = store_config if store_config is not None else store_overrides()
    repo, rel = render_feature_repo(repo_dir, src, online_path, overrides)
    store = open_feature_store(repo)
    defs = feature_definitions(rel, repo_path=repo.resolve(), offline_store=str(store.config.offline_store.type))
    store.apply(list(defs.values()))
    return store


__all__ = [
    "apply_feature_repo",
    "open_feature_store",
    "render_feature_repo",
    "store_config",
    "store_overrides",
]
