"""The typed params sections of the data stages: ``data`` (with ``data.table``), ``synthetic``, ``validation``
and ``features``. Values live in params.yaml only; these classes say what each key is and check it."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from reclora.config.fields import Section, is_finite, setting

#: data sets the loaders read (reclora.data.loaders.DATASETS; a test keeps the two equal)
Dataset = Literal["ml-100k", "ml-1m", "ml-25m", "goodbooks-10k", "synthetic", "table"]


@dataclass(frozen=True)
class TableSection(Section):
    """``data.table``: the generic parquet/CSV tables (dataset ``table``)."""

    KEY: ClassVar[str] = "data.table"

    interactions: str = setting("File name (without extension) of the interactions table.")
    items: str = setting("File name (without extension) of the items table.")
    users: str = setting("File name (without extension) of the users table.")
    columns: dict[str, str] = setting(
        "Canonical column -> source column (user_id, item_id, rating, timestamp, "
        "title, genres); reclora.data.loaders checks the names."
    )


@dataclass(frozen=True)
class DataSection(Section):
    """``data``: which behaviour data and how the prepare stage cuts it into CTR samples."""

    KEY: ClassVar[str] = "data"

    dataset: Dataset = setting("Data set: ml-100k | ml-1m | ml-25m | goodbooks-10k | synthetic | table.")
    path: str = setting("Raw data directory (a DVC dependency of `prepare`; not read by synthetic).")
    out: str = setting("Where `data prepare` writes the canonical tables and samples.")
    min_history: int = setting("Samples whose user has fewer strictly earlier interactions are dropped.")
    max_history: int = setting("Most recent earlier interactions kept on each sample (the retrieval pool).")
    split: tuple[float, float, float] = setting("Train/valid/test fractions by global timestamp (sum 1).")
    max_users: int = setting("0 = all users; N = a seeded sample of N users (for ML-25M-sized data).")
    seed: int = setting("Seed of the user sample.")
    engine: Literal["pandas", "spark"] = setting(
        "pandas (one machine) | spark (the same output built by Spark; "
        "the pipeline's prepare step is then a SparkApplication)."
    )
    spark_conf: dict[str, Any] = setting("engine spark: the Spark session's settings (no spark.master).")
    spark_log_level: str = setting("engine spark, local mode: Spark's own log level (OFF, WARN to debug).")
    label_threshold: dict[str, float] = setting("Per data set: label = rating >= threshold.")
    table: TableSection = setting("The generic parquet/CSV tables: file names and column mapping.")

    def __post_init__(self) -> None:
        self.at_least(0, "min_history", "max_users")
        self.at_least(1, "max_history")
        s = self.split
        self.require(
            all(is_finite(f) and f >= 0 for f in s) and abs(sum(s) - 1) <= 1e-6,
            "split",
            "be three non-negative fractions summing to 1",
        )
        self.require(
            all(is_finite(v) for v in self.label_threshold.values()),
            "label_threshold",
            "map data sets to finite numbers",
        )


@dataclass(frozen=True)
class SyntheticSection(Section):
    """``synthetic``: the seeded synthetic data set (byte-reproducible)."""

    KEY: ClassVar[str] = "synthetic"

    n_users: int = setting("Users.")
    n_items: int = setting("Items.")
    mean_interactions: float = setting("Mean interactions per user (Poisson, at least min_interactions).")
    min_interactions: int = setting("Fewest interactions of a user.")
    n_genres: int = setting("Genres the items are drawn from.")
    seed: int = setting("Seed of the generator.")
    start: str | datetime.date = setting("First day of the fixed time window (an ISO date, YYYY-MM-DD).")
    days: int = setting("Length of the time window in days.")

    def __post_init__(self) -> None:
        self.at_least(1, "n_users", "n_items", "min_interactions", "n_genres", "days")
        self.positive("mean_interactions")
        try:
            ok = isinstance(self.start, datetime.date) or bool(datetime.datetime.fromisoformat(self.start))
        except ValueError:
            ok = False
        self.require(ok, "start", "be a date (YYYY-MM-DD)")


@dataclass(frozen=True)
class ValidationSection(Section):
    """``validation``: bounds on the prepared data; a run outside them stops before training."""

    KEY: ClassVar[str] = "validation"

    min_interactions: int = setting("Fewest interactions the prepared data may have.")
    max_interactions: int = setting("Most interactions the prepared data may have.")
    positive_rate: tuple[float, float] = setting("[low, high] bounds of the share of positive labels.")
    rating_range: dict[str, tuple[float, float]] = setting("Per data set: [low, high] of a valid rating.")
    future_slack_seconds: float = setting("Timestamps later than now + this many seconds are 'in the future'.")
    min_timestamp: dict[str, str | int | datetime.date] = setting(
        "Per data set: timestamps earlier than this (a UTC date YYYY-MM-DD, or unix seconds) are refused."
    )

    def __post_init__(self) -> None:
        self.at_least(0, "min_interactions", "future_slack_seconds")
        self.require(self.max_interactions >= self.min_interactions, "max_interactions", "be >= min_interactions")
        lo, hi = self.positive_rate
        self.require(
            is_finite(lo) and is_finite(hi) and 0 <= lo <= hi <= 1, "positive_rate", "be [low, high] in [0, 1]"
        )
        self.require(
            all(is_finite(a) and is_finite(b) and a <= b for a, b in self.rating_range.values()),
            "rating_range",
            "map data sets to [low, high] with low <= high",
        )


@dataclass(frozen=True)
class FeaturesSection(Section):
    """``features``: Feast, the one definition of the features training (offline) and serving (online) share."""

    KEY: ClassVar[str] = "features"

    offline_store: Literal["file", "duckdb", "spark"] = setting(
        "duckdb (out-of-core, one machine) | file (parquet + dask) | spark (a cluster: SparkSources)."
    )
    chunk_rows: int = setting(
        "Entity rows per get_historical_features request (memory is bounded by it; 0 = the library's default)."
    )
    pit_check_rows: int = setting("Distinct (user, time) sample rows the point-in-time check compares (0 = all).")
    spark_conf: dict[str, Any] = setting("offline_store spark: Feast's spark_conf (the Spark session).")
    spark_staging_location: str = setting(
        "offline_store spark: object-store URI for materialization staging ('' = none)."
    )
    store: dict[str, Any] = setting("Other feature_store.yaml keys, deep-merged last (online_store, registry, ...).")

    def __post_init__(self) -> None:
        self.at_least(0, "chunk_rows", "pit_check_rows")
