"""What several stages share: the predictions file and its key, the retrieved samples, the evaluation subset and
the user/item features a training stage reads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

KEY = ["user_id", "item_id", "timestamp"]  # one sample: the columns that identify it in every predictions file
PREDICTIONS = "predictions.parquet"  # every model's scored samples: KEY + label + p, in a stage's output directory


def read_samples(retrieved_dir: Path) -> dict[str, Any]:
    """The retrieved splits, lazily: ``len(s[split])`` and ``s[split].iloc[rows]`` (a DataFrame of those
    rows with histories and retrieved lists materialized); see reclora.retrieval.layout."""
    from reclora.retrieval.layout import open_retrieved

    return open_retrieved(retrieved_dir)


def eval_subset(test: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """The seeded test subset every model is scored on (all of test when n <= 0)."""
    from reclora.few2many import sample_few

    return test.iloc[sample_few(len(test), n, seed)].reset_index(drop=True)


def shared_features(
    feature_store: str | Path | None, tables: Any, samples: pd.DataFrame | Callable[[], pd.DataFrame]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """(items, users for the CRM, users for the prompts) of a training stage.

    With ``feature_store`` (the features stage's output) they come from Feast's offline store: the
    ModelInputs its training join wrote (``model_inputs/``), or, for a store without them, a join on
    the samples' (entity, time) rows plus the prepared tables' ids (see
    ``reclora.features.inputs.training_inputs``); without, from the prepared tables (as before Feast).
    ``samples`` (user_id, item_id, timestamp) may be a function that builds them: it is called only
    when the join is needed (the CRM's key frame holds every training sample: 0.6 GB at 25M events).
    """
    if feature_store is None:
        return tables.items, tables.users, tables.users
    from reclora.features.inputs import read_model_inputs, training_inputs

    inputs = read_model_inputs(feature_store)
    if inputs is None:
        keys = samples() if callable(samples) else samples
        inputs = training_inputs(feature_store, keys, tables.users["user_id"], tables.items["item_id"])
    return inputs.items, inputs.crm_users(), inputs.users
