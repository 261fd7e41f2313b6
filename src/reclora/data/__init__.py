"""Data plane: loaders to canonical tables, synthetic data, CTR samples, versions."""

from reclora.data.loaders import DATASETS, Tables
from reclora.data.prepare import load_dataset, prepare, read_events, read_prepared, read_split
from reclora.data.samples import assign_splits, build_sample_index, build_samples, materialize_histories
from reclora.data.synthetic import generate
from reclora.data.version import dvc_hash

__all__ = [
    "DATASETS",
    "Tables",
    "assign_splits",
    "build_sample_index",
    "build_samples",
    "dvc_hash",
    "generate",
    "load_dataset",
    "materialize_histories",
    "prepare",
    "read_events",
    "read_prepared",
    "read_split",
]
