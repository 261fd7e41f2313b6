"""Choosing the prepare stage's engine (params ``data.engine``: pandas on one machine, or Spark) and
starting Spark: the optional ``spark`` extra and a Java runtime are checked with a ConfigError naming what
is missing."""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Any

from reclora.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

ENGINES = ("pandas", "spark")
INSTALL_HINT = "pip install -e '.[spark]'"


def data_engine(params: dict[str, Any]) -> str:
    """``params["data"]["engine"]`` checked: "pandas" (default, one machine) or "spark"; ConfigError otherwise."""
    data = params.get("data") or {}
    engine = data.get("engine", "pandas")
    engine = "" if engine is None else str(engine)  # an empty value is an error, never a silent default
    if engine not in ENGINES:
        raise ConfigError(f"data.engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    return engine


def require_pyspark() -> Any:
    """The ``pyspark`` module; ConfigError naming the optional extra when it is not installed."""
    try:
        import pyspark
    except ImportError:
        raise ConfigError(f"data.engine spark needs pyspark, the optional `spark` extra: {INSTALL_HINT}") from None
    return pyspark


def spark_session(conf: dict[str, Any] | None = None) -> SparkSession:
    """The active SparkSession, or a new one with ``conf`` (params ``data.spark_conf``; without
    ``spark.master``: local mode on every core here, the cluster's master under spark-submit).

    Raises ConfigError without pyspark or without a Java runtime."""
    require_pyspark()
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise ConfigError("data.engine spark needs a Java runtime (17+) for Spark: no `java` on PATH and no JAVA_HOME")
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("reclora-prepare")
    for k, v in (conf or {}).items():
        builder = builder.config(str(k), str(v))
    return builder.getOrCreate()
