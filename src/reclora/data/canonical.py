"""The canonical tables every loader returns (:class:`Tables`; columns and dtypes in
:mod:`reclora.data.schema`) and the canonical interactions frame built from a raw one by the exact
readers of :mod:`reclora.data.cells`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from reclora.data.cells import exact_int64, float_column, id_column, unix_seconds

# where the order of a user's events comes from: real timestamps, or the row order of the raw file
# (GoodBooks-10K has no times; there a repeated (user, item) pair is the same event twice)
TIME_SOURCES = ("timestamp", "row_order")


@dataclass
class Tables:
    """The canonical tables of a data set (columns and dtypes: :mod:`reclora.data.schema`): ``interactions``
    (user_id, item_id, rating, timestamp; one row per event), ``items`` (item_id, title, genres, ...),
    ``users`` (user_id, optional attributes) and ``time_source`` (one of TIME_SOURCES): where the order
    of a user's events comes from."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    time_source: str = "timestamp"


def canonical_interactions(
    df: pd.DataFrame, where: Path, names: dict[str, str] | None = None, timestamps: bool = False
) -> pd.DataFrame:
    """The four canonical columns, read exactly; ``names`` maps canonical -> source column (for errors).

    ``timestamps``: the time column may hold datetimes (generic tables); else it must be unix seconds.
    """
    n = names or {}
    ts = (unix_seconds if timestamps else lambda v, w, c: exact_int64(v, w, c, "unix seconds"))(
        df["timestamp"], where, n.get("timestamp", "timestamp")
    )
    out = pd.DataFrame(
        {
            "user_id": id_column(df, "user_id", where, n.get("user_id")),
            "item_id": id_column(df, "item_id", where, n.get("item_id")),
            "rating": float_column(df, "rating", where, n.get("rating")),
            "timestamp": ts,
        }
    )
    return out.reset_index(drop=True)


def interaction_users(inter: pd.DataFrame) -> pd.DataFrame:
    """A users table derived from the interactions: one row per distinct non-null user id, sorted (int64)."""
    ids = np.sort(inter["user_id"].dropna().unique())
    return pd.DataFrame({"user_id": ids.astype("int64")})
