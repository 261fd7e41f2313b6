"""Features stage: Feast feature repo (user profile, item metadata, point-in-time user history).

The package, by job: :mod:`~reclora.features.definitions` (the Feast objects, defined once),
:mod:`~reclora.features.sources` (their parquet sources from prepared data),
:mod:`~reclora.features.repo` (rendering, configuring, applying and opening a feature repo),
:mod:`~reclora.features.read` (materialization, point-in-time and online reads),
:mod:`~reclora.features.inputs` (Feast -> the models' shared inputs) and
:mod:`~reclora.features.stage` (the whole step and its point-in-time check).

``import reclora.features`` is cheap; Feast itself is imported when a store is built or opened.
"""

from reclora.features.read import historical_user_features, materialize, online_item_features, online_user_features
from reclora.features.repo import apply_feature_repo, open_feature_store, render_feature_repo
from reclora.features.sources import build_feature_sources, history_snapshots
from reclora.features.stage import features_stage, point_in_time_check

__all__ = [
    "apply_feature_repo",
    "build_feature_sources",
    "features_stage",
    "historical_user_features",
    "history_snapshots",
    "materialize",
    "online_item_features",
    "online_user_features",
    "open_feature_store",
    "point_in_time_check",
    "render_feature_repo",
]
