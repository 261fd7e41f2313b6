"""Features stage: Feast feature repo (user profile, item metadata, point-in-time user history).

``import reclora.features`` is cheap; Feast itself is imported when a store is built or opened.
"""

from reclora.features.store import (
    apply_feature_repo,
    build_feature_sources,
    features_stage,
    historical_user_features,
    history_snapshots,
    materialize,
    online_item_features,
    online_user_features,
    open_feature_store,
    point_in_time_check,
    render_feature_repo,
)

__all__ = [
    "apply_feature_repo", "build_feature_sources", "features_stage", "historical_user_features",
    "history_snapshots", "materialize", "online_item_features", "online_user_features",
    "open_feature_store", "point_in_time_check", "render_feature_repo",
]  # fmt: skip
