"""CRM featurization: id vocabularies, item genres, user attributes, padded histories.

Everything is turned into small integer indices with **0 meaning padding or
unknown**, so an id never seen at fit time (a cold-start user or item) maps to
index 0 and the model still runs. The fitted featurizer is plain JSON.

* ``user_id`` / ``item_id``: contiguous vocabularies (1..V) over the users/items
  tables plus every id in the training samples (targets and histories).
  ``user_seen`` / ``item_seen`` record which indices occur in the training
  samples; the model zeroes the ID embeddings of the others (a catalogue item
  nobody interacted with is as good as unknown, but keeps its genres).
* genres: the vocabulary of ``items.genres`` ("A|B"); per item a multi-hot row.
* user fields: optional attributes of the users table (e.g. gender, occupation,
  age). Low-cardinality columns become categories, numeric columns with many
  values become quantile buckets ("age bucket"); missing values map to 0.
  Works when the users table has only ``user_id``.
* ratings of history entries: a small vocabulary of rating values (nearest
  value; quantile values when the scale is fine-grained), 0 = padding/missing.
* history: the list columns ``hist_items_col`` / ``hist_ratings_col`` (oldest
  first); the last ``max_len`` entries are kept, left-aligned and padded, with
  a boolean mask of real entries.

Long because: one job, the featurizer (:class:`CRMFeaturizer`: fit, transform, JSON) and the small
helpers only it uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from reclora.errors import DataError
from reclora.io import read_json, write_json

FEATURES_FORMAT_VERSION = 1
MAX_CATEGORIES = 200  # object columns with more distinct values (zip codes, free text) are skipped
BUCKET_MIN_DISTINCT = 21  # numeric columns with at least this many distinct values are bucketized
N_BUCKETS = 8
MAX_RATING_VALUES = 32
N_RATING_QUANTILES = 16


def _norm_value(v: Any) -> str | None:
    """Category key of one attribute value; None for missing."""
    if v is None:
        return None
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if v.is_integer():
            return str(int(v))
    if isinstance(v, (np.floating,)):
        return _norm_value(float(v))
    if isinstance(v, (np.integer,)):
        return str(int(v))
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    s = str(v).strip()
    return s if s else None


def _is_missing_list(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return False


def _flatten_lists(col: pd.Series, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, lengths) of a list column; missing entries are empty lists."""
    vals = col.to_numpy(dtype=object)
    try:
        lens = np.fromiter((0 if _is_missing_list(v) else len(v) for v in vals), dtype=np.int64, count=len(vals))
    except TypeError as e:
        raise DataError(f"column {col.name!r} must hold lists (one history per row)") from e
    parts = [np.asarray(v, dtype=dtype) for v, n in zip(vals, lens) if n]
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
    return flat, lens


def _index_of(vocab: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """1-based index of each id in the sorted unique ``vocab``; 0 when absent."""
    ids = np.asarray(ids)
    if len(vocab) == 0 or ids.size == 0:
        return np.zeros(ids.shape, dtype=np.int64)
    pos = np.searchsorted(vocab, ids)
    pos_c = np.minimum(pos, len(vocab) - 1)
    hit = vocab[pos_c] == ids
    return np.where(hit, pos_c + 1, 0).astype(np.int64)


def _int_ids(values: Any) -> np.ndarray:
    s = pd.to_numeric(pd.Series(values), errors="coerce")
    s = s[s.notna()]
    return np.unique(s.to_numpy().astype(np.int64))


class CRMFeaturizer:
    """Fitted vocabularies and lookup tables of the CRM (see the module docstring)."""

    def __init__(
        self,
        user_ids: ArrayLike,
        item_ids: ArrayLike,
        genres: Sequence[str],
        item_genres: Sequence[Sequence[int]],
        fields: Sequence[Mapping[str, Any]],
        user_field_values: ArrayLike,
        rating_values: Sequence[float],
        user_seen: ArrayLike,
        item_seen: ArrayLike,
        max_len: int = 60,
        hist_items_col: str = "hist_item_ids",
        hist_ratings_col: str = "hist_ratings",
    ) -> None:
        self.user_ids = np.asarray(user_ids, dtype=np.int64)
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        self.genres = [str(g) for g in genres]
        self.item_genres = [sorted(int(g) for g in gs) for gs in item_genres]
        self.fields = [dict(f) for f in fields]
        self.user_field_values = np.asarray(user_field_values, dtype=np.int64).reshape(
            len(self.user_ids), len(self.fields)
        )
        self.rating_values = np.asarray(sorted(float(r) for r in rating_values), dtype=np.float64)
        self.user_seen = np.asarray(user_seen, dtype=bool)
        self.item_seen = np.asarray(item_seen, dtype=bool)
        self.max_len = int(max_len)
        self.hist_items_col = hist_items_col
        self.hist_ratings_col = hist_ratings_col
        if len(self.item_genres) != len(self.item_ids):
            raise ValueError("item_genres must have one entry per item id")
        if len(self.user_seen) != len(self.user_ids) or len(self.item_seen) != len(self.item_ids):
            raise ValueError("user_seen/item_seen must have one entry per id")
        if self.max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")

    # ------------------------------------------------------------------ sizes
    @property
    def n_users(self) -> int:
        """Rows of the user embedding (vocabulary + index 0)."""
        return len(self.user_ids) + 1

    @property
    def n_items(self) -> int:
        """Rows of the item embedding (vocabulary + index 0)."""
        return len(self.item_ids) + 1

    @property
    def n_genres(self) -> int:
        """Number of genres in the vocabulary of ``items.genres`` (0 when the items table has none)."""
        return len(self.genres)

    @property
    def n_ratings(self) -> int:
        """Rows of the rating embedding (rating values + index 0 = padding/missing)."""
        return len(self.rating_values) + 1

    @property
    def field_names(self) -> list[str]:
        """Names of the user attribute fields, in the column order of ``user_field_values``."""
        return [f["name"] for f in self.fields]

    @property
    def field_sizes(self) -> list[int]:
        """Per user field: number of local indices (0 = unknown/missing included)."""
        out = []
        for f in self.fields:
            out.append(len(f["values"]) + 1 if f["kind"] == "category" else len(f["edges"]) + 2)
        return out

    # -------------------------------------------------------------------- fit
    @classmethod
    def fit(
        cls,
        train: pd.DataFrame,
        items: pd.DataFrame | None = None,
        users: pd.DataFrame | None = None,
        max_len: int = 60,
        hist_items_col: str = "hist_item_ids",
        hist_ratings_col: str = "hist_ratings",
        user_fields: Iterable[str] | None = None,
    ) -> CRMFeaturizer:
        """Fit on the training samples plus the items/users tables.

        ``user_fields``: attribute columns of ``users`` to use; None = every usable
        column (categorical with <= MAX_CATEGORIES values, or numeric -> buckets).
        """
        for c in ("user_id", "item_id", hist_items_col, hist_ratings_col):
            if c not in train.columns:
                raise DataError(f"CRM training samples lack column {c!r}")
        items = items if items is not None else pd.DataFrame({"item_id": pd.Series([], dtype="int64")})
        users = users if users is not None else pd.DataFrame({"user_id": pd.Series([], dtype="int64")})
        hist_flat, _ = _flatten_lists(train[hist_items_col], np.int64)
        rating_flat, _ = _flatten_lists(train[hist_ratings_col], np.float64)

        train_users = _int_ids(train["user_id"])
        train_items = np.unique(np.concatenate([_int_ids(train["item_id"]), np.unique(hist_flat)]))
        table_users = _int_ids(users["user_id"]) if "user_id" in users.columns else np.zeros(0, np.int64)
        table_items = _int_ids(items["item_id"]) if "item_id" in items.columns else np.zeros(0, np.int64)
        user_vocab = np.unique(np.concatenate([table_users, train_users]))
        item_vocab = np.unique(np.concatenate([table_items, train_items]))
        user_seen = np.isin(user_vocab, train_users)
        item_seen = np.isin(item_vocab, train_items)

        # genres: multi-hot over the vocabulary of items.genres
        genre_lists: dict[int, list[str]] = {}
        if "genres" in items.columns and "item_id" in items.columns:
            for iid, g in zip(pd.to_numeric(items["item_id"], errors="coerce"), items["genres"]):
                if pd.isna(iid) or not isinstance(g, str):
                    continue
                genre_lists[int(iid)] = [x.strip() for x in g.split("|") if x.strip()]
        genres = sorted({g for gs in genre_lists.values() for g in gs})
        gidx = {g: i for i, g in enumerate(genres)}
        item_genres = [sorted({gidx[g] for g in genre_lists.get(int(i), [])}) for i in item_vocab]

        # user attribute fields
        fields: list[dict[str, Any]] = []
        candidates = [c for c in users.columns if c != "user_id"] if user_fields is None else list(user_fields)
        for c in candidates:
            if c not in users.columns:
                raise DataError(f"users table has no attribute column {c!r}")
            spec = _fit_field(c, users[c], explicit=user_fields is not None)
            if spec is not None:
                fields.append(spec)
        field_values = np.zeros((len(user_vocab), len(fields)), dtype=np.int64)
        if fields and len(users):
            uid = pd.to_numeric(users["user_id"], errors="coerce")
            ok = uid.notna().to_numpy()
            rows = _index_of(user_vocab, uid[ok].to_numpy().astype(np.int64)) - 1
            for j, f in enumerate(fields):
                local = _encode_field(f, users[f["name"]][ok])
                field_values[rows, j] = local

        # rating vocabulary of history entries
        r = rating_flat[np.isfinite(rating_flat)]
        uniq = np.unique(np.round(r, 3))
        if len(uniq) > MAX_RATING_VALUES:
            uniq = np.unique(np.quantile(r, (np.arange(N_RATING_QUANTILES) + 0.5) / N_RATING_QUANTILES))

        return cls(
            user_ids=user_vocab,
            item_ids=item_vocab,
            genres=genres,
            item_genres=item_genres,
            fields=fields,
            user_field_values=field_values,
            rating_values=uniq.tolist(),
            user_seen=user_seen,
            item_seen=item_seen,
            max_len=max_len,
            hist_items_col=hist_items_col,
            hist_ratings_col=hist_ratings_col,
        )

    # -------------------------------------------------------------- transform
    def user_index(self, ids: Any) -> np.ndarray:
        """Index (1..V) of each user id in the vocabulary, int64, same shape as ``ids``; 0 for an unknown id."""
        return _index_of(self.user_ids, np.asarray(ids, dtype=np.int64))

    def item_index(self, ids: Any) -> np.ndarray:
        """Index (1..V) of each item id in the vocabulary, int64, same shape as ``ids``; 0 for an unknown id."""
        return _index_of(self.item_ids, np.asarray(ids, dtype=np.int64))

    def rating_index(self, ratings: Any) -> np.ndarray:
        """Index (1..R) of the nearest rating value; 0 for NaN or when there is no vocabulary."""
        r = np.asarray(ratings, dtype=np.float64)
        if len(self.rating_values) == 0:
            return np.zeros(r.shape, dtype=np.int64)
        mids = (self.rating_values[1:] + self.rating_values[:-1]) / 2
        idx = np.searchsorted(mids, np.nan_to_num(r), side="right") + 1
        return np.where(np.isfinite(r), idx, 0).astype(np.int64)

    def transform(
        self,
        df: pd.DataFrame,
        hist_items_col: str | None = None,
        hist_ratings_col: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Samples -> index arrays: user [N], item [N], hist_items/hist_ratings [N, L] int64, hist_mask [N, L] bool.

        L = min(max_len, longest history in ``df``) (at least 1). The last ``max_len``
        entries of each history are kept, left-aligned, padding after them.
        """
        hi = hist_items_col or self.hist_items_col
        hr = hist_ratings_col or self.hist_ratings_col
        for c in ("user_id", "item_id", hi, hr):
            if c not in df.columns:
                raise DataError(f"CRM input lacks column {c!r}")
        n = len(df)
        user = self.user_index(
            pd.to_numeric(df["user_id"], errors="coerce").fillna(-(2**62)).to_numpy().astype(np.int64)
        )
        item = self.item_index(
            pd.to_numeric(df["item_id"], errors="coerce").fillna(-(2**62)).to_numpy().astype(np.int64)
        )
        items_flat, lens = _flatten_lists(df[hi], np.int64)
        ratings_flat, rlens = _flatten_lists(df[hr], np.float64)
        if not np.array_equal(lens, rlens):
            bad = int(np.flatnonzero(lens != rlens)[0])
            raise DataError(f"row {bad}: {hi!r} and {hr!r} have different lengths ({lens[bad]} vs {rlens[bad]})")
        width = int(max(1, min(self.max_len, int(lens.max()) if n else 0)))
        starts = np.cumsum(lens) - lens
        pos = np.arange(len(items_flat), dtype=np.int64) - np.repeat(starts, lens)
        drop = np.maximum(lens - self.max_len, 0)
        col = pos - np.repeat(drop, lens)
        keep = col >= 0
        row = np.repeat(np.arange(n, dtype=np.int64), lens)[keep]
        col = col[keep]
        hist_items = np.zeros((n, width), dtype=np.int64)
        hist_ratings = np.zeros((n, width), dtype=np.int64)
        mask = np.zeros((n, width), dtype=bool)
        hist_items[row, col] = self.item_index(items_flat[keep])
        hist_ratings[row, col] = self.rating_index(ratings_flat[keep])
        mask[row, col] = True
        return {"user": user, "item": item, "hist_items": hist_items, "hist_ratings": hist_ratings, "hist_mask": mask}

    # ----------------------------------------------------------- model tables
    def genre_matrix(self) -> np.ndarray:
        """[n_items, n_genres] float32: each item's genres, weights 1/count (row 0 = unknown: zeros)."""
        m = np.zeros((self.n_items, max(self.n_genres, 1)), dtype=np.float32)
        for i, gs in enumerate(self.item_genres):
            if gs:
                m[i + 1, gs] = 1.0 / len(gs)
        return m

    def user_field_matrix(self) -> np.ndarray:
        """[n_users, n_fields] int64 indices into one shared field table (offsets applied; row 0 = unknown)."""
        offsets = np.cumsum([0] + self.field_sizes[:-1]).astype(np.int64) if self.fields else np.zeros(0, np.int64)
        m = np.zeros((self.n_users, len(self.fields)), dtype=np.int64)
        if self.fields:
            m[1:] = self.user_field_values
            m += offsets[None, :]
        return m

    # ------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """The featurizer as a JSON-able dict (with ``format_version``); :meth:`from_dict` reads it back."""
        return {
            "format_version": FEATURES_FORMAT_VERSION,
            "max_len": self.max_len,
            "hist_items_col": self.hist_items_col,
            "hist_ratings_col": self.hist_ratings_col,
            "user_ids": self.user_ids.tolist(),
            "item_ids": self.item_ids.tolist(),
            "user_seen": self.user_seen.astype(int).tolist(),
            "item_seen": self.item_seen.astype(int).tolist(),
            "genres": list(self.genres),
            "item_genres": [list(g) for g in self.item_genres],
            "fields": [dict(f) for f in self.fields],
            "user_field_values": self.user_field_values.tolist(),
            "rating_values": self.rating_values.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CRMFeaturizer:
        """The featurizer of a :meth:`to_dict` mapping. Raises DataError for another ``format_version`` and
        ValueError when the tables do not have one entry per id."""
        v = d.get("format_version")
        if v != FEATURES_FORMAT_VERSION:
            raise DataError(f"CRM features: unsupported format_version {v!r} (expected {FEATURES_FORMAT_VERSION})")
        return cls(
            user_ids=d["user_ids"],
            item_ids=d["item_ids"],
            genres=d["genres"],
            item_genres=d["item_genres"],
            fields=d["fields"],
            user_field_values=d["user_field_values"],
            rating_values=d["rating_values"],
            user_seen=[bool(x) for x in d["user_seen"]],
            item_seen=[bool(x) for x in d["item_seen"]],
            max_len=d["max_len"],
            hist_items_col=d["hist_items_col"],
            hist_ratings_col=d["hist_ratings_col"],
        )

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` (atomically, :func:`reclora.io.write_json`); returns the path."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> CRMFeaturizer:
        """The featurizer saved at ``path`` by :meth:`save`; DataError for another ``format_version``."""
        return cls.from_dict(read_json(path))

    def __repr__(self) -> str:
        return (
            f"CRMFeaturizer(users={len(self.user_ids)}, items={len(self.item_ids)}, genres={self.n_genres}, "
            f"fields={self.field_names}, ratings={len(self.rating_values)}, max_len={self.max_len})"
        )


def _fit_field(name: str, s: pd.Series, explicit: bool) -> dict[str, Any] | None:
    """Spec of one user attribute: {"name", "kind": "category", "values"} or {"name", "kind": "bucket", "edges"}."""
    numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
    nonnull = s.dropna()
    if numeric and nonnull.nunique() >= BUCKET_MIN_DISTINCT:
        x = nonnull.to_numpy(dtype=np.float64)
        edges = np.unique(np.quantile(x, np.arange(1, N_BUCKETS) / N_BUCKETS))
        return {"name": name, "kind": "bucket", "edges": edges.tolist()}
    values = sorted({k for k in (_norm_value(v) for v in nonnull.tolist()) if k is not None})
    if not values:
        return None
    if len(values) > MAX_CATEGORIES and not explicit:
        return None  # id-like column (zip code, free text): no generalisation to learn
    return {"name": name, "kind": "category", "values": values}


def _encode_field(spec: Mapping[str, Any], s: pd.Series) -> np.ndarray:
    if spec["kind"] == "bucket":
        x = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
        idx = np.searchsorted(np.asarray(spec["edges"], dtype=np.float64), np.nan_to_num(x), side="right") + 1
        return np.where(np.isfinite(x), idx, 0).astype(np.int64)
    lookup = {v: i + 1 for i, v in enumerate(spec["values"])}
    return np.fromiter((lookup.get(_norm_value(v), 0) for v in s.tolist()), dtype=np.int64, count=len(s))
