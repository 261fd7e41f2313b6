"""The RecLoRA Feast repo: entities `user`, `item`; feature views `user_profile`, `item_metadata`,
`user_history`, `user_activity`, for the `feast` CLI (`feast apply`, `feast plan`, ...).

The objects are defined once in reclora.features.definitions (the library applies the same ones);
this file only exposes them. It is the same file in every repo: reclora.features.repo copies it
(src/reclora/features/repo_features.py) as features.py into each rendered repo, and
feature_repo/features.py is the checked-in copy. The library never imports it.

Sources directory: $RECLORA_FEATURE_SOURCES (absolute, or relative to this repo), else the repo's
feature_sources.json, else "data/sources". Offline store the sources are declared for:
$RECLORA_FEAST_OFFLINE_STORE (file | duckdb | spark), else feature_sources.json, else "file".
"""

from pathlib import Path

from reclora.features.definitions import repo_objects

_objects = repo_objects(Path(__file__).resolve().parent)

user = _objects["user"]
item = _objects["item"]
user_profile = _objects["user_profile"]
item_metadata = _objects["item_metadata"]
user_history = _objects["user_history"]
user_activity = _objects["user_activity"]
