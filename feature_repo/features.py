"""The RecLoRA Feast repo: entities `user`, `item`; feature views `user_profile`, `item_metadata`,
`user_history`, `user_activity`. The objects are defined once in reclora.features.definitions (the library applies
the same ones); this file exposes them to the `feast` CLI.

Sources directory: $RECLORA_FEATURE_SOURCES (absolute, or relative to this repo), default "data/sources".
Offline store the sources are declared for: $RECLORA_FEAST_OFFLINE_STORE (file | duckdb | spark), default "file".
"""

import os
from pathlib import Path

from reclora.features.definitions import feature_definitions

SOURCES = os.environ.get("RECLORA_FEATURE_SOURCES", "data/sources")
OFFLINE_STORE = os.environ.get("RECLORA_FEAST_OFFLINE_STORE", "file")
_defs = feature_definitions(SOURCES, repo_path=Path(__file__).resolve().parent, offline_store=OFFLINE_STORE)

user = _defs["user"]
item = _defs["item"]
user_profile = _defs["user_profile"]
item_metadata = _defs["item_metadata"]
user_history = _defs["user_history"]
user_activity = _defs["user_activity"]
