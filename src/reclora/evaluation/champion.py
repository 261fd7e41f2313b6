"""The current champion, re-scored on the challenger's evaluation samples in the same run.

    result = rescore_champion(registry_uri, samples, items, users, dataset="ml-100k")
    result["status"]   # "none" | "scored" | "not comparable" | "unscorable"
    result["p"]        # with "scored": the champion's p(click) for every row of ``samples``

The champion version is loaded exactly as the KServe predictor serves it
(:class:`reclora.serving.RecLoRAPredictor`: its CRM, adapter, retrieval settings and item embeddings on its
recorded base LLM) and scores the samples with :meth:`~reclora.serving.RecLoRAPredictor.score_samples` (its
retrieval, then :func:`reclora.scoring.score_samples`, the function the LLM stage scores with), with
this run's item titles and user profiles (the data, not the model), in batches of its own run's
``train.predict_batch_size`` as its LLM stage scored (bf16 results depend on a batch's shape). A champion trained on another data set
or item catalogue is ``not comparable`` (:func:`reclora.registry.gate.data_mismatch`); one whose version
cannot be read, whose base LLM is not available here, or that fails to score is ``unscorable``, with the
reason. A version on an object store is downloaded to a temporary directory first.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from reclora.errors import RecLoRAError

if TYPE_CHECKING:
    from reclora.config.model_sections import ModelSection


@contextlib.contextmanager
def _local_version(path: str) -> Iterator[Path]:
    from reclora.storage import download_dir, is_remote

    if not is_remote(path):
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="reclora-champion-") as td:
        yield download_dir(path, Path(td) / "version")


def _stored(manifest: dict[str, Any]) -> dict[str, Any]:
    t = (manifest.get("metrics") or {}).get("test") or {}
    return {"auc": t.get("auc"), "logloss": t.get("logloss"), "n": t.get("n")}


def rescore_champion(
    registry_uri: str,
    samples: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame | None,
    dataset: str,
    name: str | None = None,
    precision: str = "auto",
    model: ModelSection | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The registry's champion scored on ``samples`` (rows with user_id, item_id, timestamp and the
    history lists hist_item_ids, hist_ratings, hist_timestamps), or why it could not be (module docstring).

    Returns {"status", "version", "reason", "stored" (its registered test AUC/LogLoss/n, from its own
    test split), "dataset", "base_model", "p" (float64 [len(samples)], only with "scored")}. Never raises
    for a broken or foreign champion: that is the result; ``samples`` without the history columns raise
    ValueError. ``precision``: this run's ``train.precision`` (auto | fp32 | bf16 | fp16), decided on this
    machine as the challenger's scores were, so the two are scored alike (never the champion's own). ``model``:
    this run's params ``model`` section, which finds the champion's base LLM on this machine (see
    :class:`reclora.serving.RecLoRAPredictor`).
    """
    from reclora.registry import DEFAULT_NAME, champion
    from reclora.registry.gate import data_mismatch

    need = {"user_id", "item_id", "timestamp", "hist_item_ids", "hist_ratings", "hist_timestamps"}
    if not need <= set(samples.columns):
        raise ValueError(f"rescore_champion: samples lack {sorted(need - set(samples.columns))}")
    out: dict[str, Any] = {
        "status": "none",
        "version": None,
        "reason": None,
        "stored": None,
        "dataset": None,
        "base_model": None,
    }
    try:
        m = champion(registry_uri, name or DEFAULT_NAME)
    except Exception as e:  # noqa: BLE001 - an unreadable registry is reported, not fatal to the evaluation
        return out | {
            "status": "unscorable",
            "reason": f"the registry's champion cannot be read: {type(e).__name__}: {e}",
        }
    if m is None:
        return out
    theirs = dict(m.get("data") or {})
    out.update(version=m["version"], stored=_stored(m), dataset=theirs.get("dataset"), base_model=m.get("base_model"))
    why = data_mismatch(theirs, {"dataset": dataset})
    if why:
        return out | {"status": "not comparable", "reason": f"trained on another data set ({why})"}
    try:
        with _local_version(m["path"]) as vdir:
            champ_items = pd.read_parquet(vdir / "items.parquet") if (vdir / "items.parquet").is_file() else None
            why = data_mismatch(theirs, {"dataset": dataset}, champ_items, items)
            if why:
                return out | {"status": "not comparable", "reason": f"another item catalogue ({why})"}
            from reclora.serving import RecLoRAPredictor

            predictor = RecLoRAPredictor(vdir, ref=m["version"], precision=precision, model=model)
            try:
                predictor.load()
            except (RecLoRAError, OSError, ValueError, KeyError, RuntimeError) as e:
                return out | {
                    "status": "unscorable",
                    "reason": f"its version cannot be loaded here: {type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}",
                }
            out["base_model"] = predictor.base_model_path
            # batches as its own run scored its evaluation subset (bf16 results depend on the batch's shape)
            predictor.max_batch = int(
                (predictor.params.get("train") or {}).get("predict_batch_size") or predictor.max_batch
            )
            p = predictor.score_samples(samples, users, items)
    except (RecLoRAError, OSError, ValueError, KeyError, RuntimeError) as e:
        return out | {
            "status": "unscorable",
            "reason": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
        }
    return out | {"status": "scored", "p": np.asarray(p, dtype=np.float64)}
