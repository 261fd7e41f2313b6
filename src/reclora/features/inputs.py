"""Feast -> model inputs: the one path by which training and serving get the shared user and item features.

The user attributes (``user_profile``: whatever the users table has, plus the prompt's
``profile_text``) and the item metadata (``item_metadata``: ``title``, ``genres``) are defined once
in the Feast repo (:mod:`reclora.features.definitions`). Nothing else computes them:

* training reads them with Feast's ``get_historical_features`` on the samples' (entity,
  ``event_timestamp``) rows, plus one row per known entity at the training cut-off so that the
  model's vocabularies cover the whole catalogue (:func:`offline_feature_frames`);
* serving reads them from the online store (:func:`online_feature_frames`);
* :func:`model_inputs` turns either pair of Feast feature frames into the same
  :class:`ModelInputs`: the users table the CRM featurizer fits its user fields on and the prompt
  builder takes ``profile_text`` from, and the items table of titles and genres.

Feature frames have one row per requested (entity, time); :func:`model_inputs` keeps, per entity,
the row with the latest ``event_timestamp`` (online rows count as "now"), drops entities Feast
knows nothing of (all features null), and gives every column one type on both sides (numeric
attributes float64 with NaN for missing, text attributes object with None), so the offline and the
online path give equal frames for the same entity at the same time.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from reclora.errors import DataError
from reclora.features.definitions import ITEM_FEATURES, PROFILE_TEXT, TIMESTAMP_FIELD, feature_refs
from reclora.features.read import DEFAULT_CHUNK_ROWS, historical_view, latest_rows
from reclora.features.repo import open_feature_store

if TYPE_CHECKING:
    from feast import FeatureStore

USER_VIEW = "user_profile"
ITEM_VIEW = "item_metadata"
ITEM_COLUMNS = ["item_id", *ITEM_FEATURES]


@dataclass
class ModelInputs:
    """The shared features as the models take them.

    ``users``: one row per user: ``user_id`` (int64), the profile attributes (numeric: float64,
    NaN = missing; text: object, None = missing), ``profile_text`` (str, "" = no attributes).
    ``items``: one row per item: ``item_id`` (int64), ``title``, ``genres`` ("A|B") as str.
    Both sorted by id.
    """

    users: pd.DataFrame
    items: pd.DataFrame

    @property
    def attributes(self) -> list[str]:
        """The profile attribute columns (the CRM's candidate user fields)."""
        return [c for c in self.users.columns if c not in ("user_id", PROFILE_TEXT)]

    def crm_users(self) -> pd.DataFrame:
        """``users`` without ``profile_text``: the table :meth:`CRMFeaturizer.fit` takes."""
        return self.users.drop(columns=[PROFILE_TEXT])


def _view_names(store: FeatureStore, view: str) -> tuple[list[str], list[str]]:
    refs = feature_refs(store, view)
    return refs, [r.split(":", 1)[1] for r in refs]


def offline_feature_frames(
    store: FeatureStore,
    samples: pd.DataFrame,
    user_ids: Iterable[Any] = (),
    item_ids: Iterable[Any] = (),
    as_of: Any = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    latest_per_key: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training: (user frame, item frame) from the offline store.

    Entity rows: every sample's (``user_id``, ``timestamp``) and (``item_id``, ``timestamp``)
    (unix seconds), plus ``user_ids`` / ``item_ids`` (the known catalogue, ids only) at ``as_of``
    (default: the latest sample time), so every id the model has a vocabulary entry for gets its
    features as of the training cut-off. Returns the frames :func:`model_inputs` takes (one row per
    entity row; with ``latest_per_key`` one per entity, see :func:`reclora.features.read.historical_view`).
    """
    for c in ("user_id", "item_id", "timestamp"):
        if c not in samples.columns:
            raise DataError(f"samples lack column {c!r}")
    ts = pd.to_numeric(samples["timestamp"], errors="coerce")
    if ts.isna().any():
        raise DataError("samples have missing or non-numeric timestamps")
    t_ref = int(ts.max()) if as_of is None and len(ts) else int(as_of if as_of is not None else 0)
    uids = np.asarray(list(user_ids), dtype=np.int64)
    iids = np.asarray(list(item_ids), dtype=np.int64)
    u_rows = pd.DataFrame(
        {
            "user_id": np.r_[samples["user_id"].to_numpy(np.int64), uids],
            TIMESTAMP_FIELD: np.r_[ts.to_numpy(np.int64), np.full(len(uids), t_ref, np.int64)],
        }
    )
    i_rows = pd.DataFrame(
        {
            "item_id": np.r_[samples["item_id"].to_numpy(np.int64), iids],
            TIMESTAMP_FIELD: np.r_[ts.to_numpy(np.int64), np.full(len(iids), t_ref, np.int64)],
        }
    )
    del ts
    return (
        historical_view(store, u_rows, USER_VIEW, "user_id", chunk_rows, latest_per_key),
        historical_view(store, i_rows, ITEM_VIEW, "item_id", chunk_rows, latest_per_key),
    )


def online_feature_frames(
    store: FeatureStore, user_ids: Iterable[Any], item_ids: Iterable[Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Serving: (user frame, item frame) of the given ids from the online store (one row per id)."""
    out = []
    for view, key, ids in ((USER_VIEW, "user_id", user_ids), (ITEM_VIEW, "item_id", item_ids)):
        ids = sorted({int(i) for i in ids})
        refs, names = _view_names(store, view)
        if ids:
            frame = pd.DataFrame(
                store.get_online_features(features=refs, entity_rows=[{key: i} for i in ids]).to_dict()
            )
        else:
            frame = pd.DataFrame({key: pd.Series([], dtype="int64"), **{n: pd.Series([], dtype=object) for n in names}})
        out.append(frame[[key, *names]])
    return out[0], out[1]


def _latest(frame: pd.DataFrame, key: str, names: list[str]) -> pd.DataFrame:
    f = latest_rows(frame, key, names)
    out = f[[key, *names]].astype({key: "int64"}).sort_values(key).reset_index(drop=True)
    return out


def _uniform(col: pd.Series) -> pd.Series:
    """One type per column on both sides: numbers -> float64 (NaN missing), else object (None missing)."""
    vals = col.astype(object).where(col.notna(), None)
    present = [v for v in vals if v is not None]
    if present and all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) for v in present
    ):
        return pd.to_numeric(col, errors="coerce").astype("float64")
    return vals


def model_inputs(user_frame: pd.DataFrame, item_frame: pd.DataFrame) -> ModelInputs:
    """The one function from Feast feature frames (offline or online) to the models' inputs.

    ``user_frame``: ``user_id`` + the ``user_profile`` features (optionally ``event_timestamp``);
    ``item_frame``: ``item_id`` + ``title``, ``genres`` (optionally ``event_timestamp``). Per
    entity the latest row is kept; entities without any feature value are dropped. Returns
    :class:`ModelInputs` (types in its docstring). Raises DataError when a key column is missing.
    """
    if "user_id" not in user_frame.columns or "item_id" not in item_frame.columns:
        raise DataError("feature frames need user_id (users) and item_id (items) columns")
    u_names = [c for c in user_frame.columns if c not in ("user_id", TIMESTAMP_FIELD)]
    users = _latest(user_frame, "user_id", u_names)
    for c in u_names:
        users[c] = _uniform(users[c]) if c != PROFILE_TEXT else users[c].fillna("").astype(str)
    if PROFILE_TEXT not in users.columns:
        users[PROFILE_TEXT] = ""
    attrs = [c for c in u_names if c != PROFILE_TEXT]
    users = users[["user_id", *attrs, PROFILE_TEXT]]
    i_names = [c for c in ITEM_FEATURES if c in item_frame.columns]
    items = _latest(item_frame, "item_id", i_names)
    for c in ITEM_FEATURES:
        items[c] = items[c].fillna("").astype(str) if c in items.columns else ""
    return ModelInputs(users=users, items=items[ITEM_COLUMNS])


def training_inputs(
    feature_store: str | os.PathLike[str],
    samples: pd.DataFrame,
    user_ids: Iterable[Any] = (),
    item_ids: Iterable[Any] = (),
    as_of: Any = None,
) -> ModelInputs:
    """Training's :class:`ModelInputs`: the features stage's store (``feature_store``: its OUT, or
    the ``repo`` inside it) read offline on the samples' rows plus the catalogue ids (see
    :func:`offline_feature_frames`), through :func:`model_inputs`."""
    d = Path(feature_store)
    store = open_feature_store(d / "repo" if (d / "repo" / "feature_store.yaml").is_file() else d)
    return model_inputs(*offline_feature_frames(store, samples, user_ids, item_ids, as_of))


MODEL_INPUTS_DIR = "model_inputs"


def read_model_inputs(feature_store: str | os.PathLike[str]) -> ModelInputs | None:
    """The :class:`ModelInputs` the features stage wrote (``feature_store``/model_inputs/{users,items}.parquet:
    its training join on every sample row plus the catalogue at the cut-off), or None when the
    directory has none (a store built by hand). Training stages read these instead of joining again."""
    d = Path(feature_store) / MODEL_INPUTS_DIR
    if not ((d / "users.parquet").is_file() and (d / "items.parquet").is_file()):
        return None
    return ModelInputs(users=pd.read_parquet(d / "users.parquet"), items=pd.read_parquet(d / "items.parquet"))


__all__ = [
    "MODEL_INPUTS_DIR",
    "ModelInputs",
    "historical_view",
    "model_inputs",
    "offline_feature_frames",
    "online_feature_frames",
    "read_model_inputs",
    "training_inputs",
]
