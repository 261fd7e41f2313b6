"""KFP components, one folder per pipeline stage.

Each ``component.py`` holds a plain function with typed KFP artifacts that calls the
library (``reclora``) and nothing else, and ``make(image)`` turns it into a
``@dsl.component`` running in ``image`` (no pip install at run time: the image has
the project installed). ``build_components(cpu_image, gpu_image)`` makes them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kfp import dsl


def lightweight(fn: Any, image: str) -> Any:
    """A Python component in ``image`` with nothing installed at run time."""
    return dsl.component(fn, base_image=image, install_kfp_package=False)


@dataclass
class Components:
    """The pipeline's KFP components, one field per step (``@dsl.component`` objects, made by
    :func:`build_components`)."""

    prepare: Any
    validate: Any
    features: Any
    retrieve: Any
    train_crm: Any
    train_llm: Any
    evaluate: Any
    register: Any
    features_spark: Any = None  # features.offline_store spark: the features step as a SparkApplication
    prepare_spark: Any = None  # data.engine spark: the prepare step as a SparkApplication
    source_version: Any = None  # the raw source's fingerprint: part of prepare's cache key


def build_components(cpu_image: str, gpu_image: str) -> Components:
    """Every step's component: train_llm runs in ``gpu_image``, every other step in ``cpu_image``."""
    from components.evaluate.component import evaluate
    from components.features.component import features
    from components.features_spark.component import features_spark
    from components.prepare.component import prepare
    from components.prepare_spark.component import prepare_spark
    from components.register.component import register
    from components.retrieve.component import retrieve
    from components.source_version.component import source_version
    from components.train_crm.component import train_crm
    from components.train_llm.component import train_llm
    from components.validate.component import validate

    return Components(
        prepare=lightweight(prepare, cpu_image),
        validate=lightweight(validate, cpu_image),
        features=lightweight(features, cpu_image),
        retrieve=lightweight(retrieve, cpu_image),
        train_crm=lightweight(train_crm, cpu_image),
        train_llm=lightweight(train_llm, gpu_image),
        evaluate=lightweight(evaluate, cpu_image),
        register=lightweight(register, cpu_image),
        features_spark=lightweight(features_spark, cpu_image),
        prepare_spark=lightweight(prepare_spark, cpu_image),
        source_version=lightweight(source_version, cpu_image),
    )
