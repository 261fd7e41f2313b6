"""The CRM stage: retrieved samples -> the trained conventional recommender (DIN), its test predictions and metrics."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import pandas as pd

from reclora.config import Params, as_params
from reclora.data import read_prepared
from reclora.errors import DataError
from reclora.hardware import hardware_info
from reclora.io import atomic_dir, read_json, refuse_overlap, write_json
from reclora.stages.common import KEY, PREDICTIONS, shared_features

if TYPE_CHECKING:
    from reclora.crm import CRMConfig


class CRMResult(TypedDict):
    """What :func:`crm_stage` returns (also OUT/metrics.json).

    Attributes:
        model: "CRM".
        dataset: the prepared data set's name.
        test: CTR metrics on the whole test split (:func:`reclora.evaluation.ctr_metrics`: auc, logloss, n, ...).
        valid_auc_by_epoch: the validation AUC after each epoch.
        train_samples: samples in the train split.
        train_samples_per_s: training throughput (samples per second, all ranks).
        ranks: data-parallel ranks that trained it.
        hidden_dim: width of the CRM's last hidden vector h (what RecLoRA's gates read).
        seconds: wall time of the stage.
        precision: the precision choice (the CRM trains in fp32).
        hardware: the machine the stage ran on.
    """

    model: str
    dataset: str
    test: dict[str, Any]
    valid_auc_by_epoch: list[float | None]
    train_samples: int
    train_samples_per_s: float | None
    ranks: int
    hidden_dim: int
    seconds: float
    precision: dict[str, Any]
    hardware: dict[str, Any]


def crm_config(params: Params) -> CRMConfig:
    """The CRM's settings on the retrieved layout: params ``crm``, a history of ``retrieval.k_long`` behaviours
    read from the retrieved long-history columns. Raises ConfigError for settings CRMConfig refuses."""
    from reclora.crm import CRMConfig

    long_history = {"hist_items_col": "long_item_ids", "hist_ratings_col": "long_ratings"}
    return CRMConfig.from_dict({**params.crm.to_dict(), "max_len": params.retrieval.k_long, **long_history})


def _crm_train(
    data_dir: str, retrieved_dir: str, params: Params, progress: bool, feature_store: str | Path | None = None
) -> tuple[Any, Any, dict[str, Any]]:
    """Train the CRM on the streaming layout (every rank of a process group runs this):
    ``(model, featurizer, history)``; user and item features from Feast with ``feature_store``."""
    from reclora.crm.stream import EventArrays, train_crm_streaming
    from reclora.retrieval.layout import open_retrieved

    tables, _, _ = read_prepared(data_dir, histories=False)
    s = open_retrieved(retrieved_dir)
    cfg = crm_config(params)
    events = EventArrays(s["train"].events.frame)

    def keys() -> pd.DataFrame:
        return pd.DataFrame({c: s["train"].column(c) for c in ("user_id", "item_id", "timestamp")})

    items, users, _ = shared_features(feature_store, tables, keys)
    return train_crm_streaming(s["train"], s["valid"], events, items, users, cfg, progress=progress)


def _crm_rank(
    data_dir: str, retrieved_dir: str, params: Params, progress: bool, tmp: str, feature_store: str | Path | None = None
) -> dict[str, Any]:
    """One rank of data-parallel CRM training; rank 0 saves the model to ``tmp``."""
    import torch.distributed as dist

    from reclora.crm import save_crm

    model, feat, history = _crm_train(data_dir, retrieved_dir, params, progress, feature_store)
    if dist.get_rank() == 0:
        save_crm(tmp, model, feat, history)
    return {"history": history}


def crm_stage(
    data_dir: str | Path,
    retrieved_dir: str | Path,
    out_dir: str | Path,
    params: Params | Mapping[str, Any],
    progress: bool = True,
    ranks: int = 1,
    feature_store: str | Path | None = None,
) -> CRMResult:
    """Retrieved samples -> trained CRM (OUT/model), its test predictions and metrics.json.

    Batches stream from the retrieved layout (reclora.crm.stream): memory does not grow with the number
    of samples. ``ranks`` > 1: data-parallel training on that many gloo ranks on this machine (under
    torchrun, an initialised process group is used as it is: rank 0 writes). Deterministic per seed.
    ``feature_store`` (the features stage's output): user attributes and item genres from Feast's
    offline store (``shared_features``); without it, from the prepared tables. ``params``: the run's params
    (``crm``, ``retrieval.k_long``; a :class:`~reclora.config.Params` or its mapping). Raises DataError for
    ``ranks`` < 1 or inputs that are not the stages' outputs.
    """
    import tempfile

    from reclora.crm import load_crm, save_crm
    from reclora.crm.stream import EventArrays, predict_split, run_ranks
    from reclora.evaluation import ctr_metrics
    from reclora.few2many import distributed as dist
    from reclora.retrieval.layout import open_retrieved

    inputs = {"--data": data_dir, "--retrieved": retrieved_dir, "--feature-store": feature_store}
    refuse_overlap({"--out": out_dir}, inputs)
    params = as_params(params)
    t0 = time.perf_counter()
    _, _, meta = read_prepared(data_dir, histories=False)
    s = open_retrieved(retrieved_dir)
    if int(ranks) < 1:
        raise DataError(f"ranks must be >= 1, got {ranks}")
    if int(ranks) > 1 and not dist.active():
        with tempfile.TemporaryDirectory(prefix="crm-ranks-") as td:
            rank_args = (str(data_dir), str(retrieved_dir), params, progress, f"{td}/model", feature_store)
            run_ranks(int(ranks), _crm_rank, rank_args)
            model, feat = load_crm(f"{td}/model")
            history = read_json(Path(td) / "model" / "crm_history.json")
    else:
        dist.init_from_env()
        model, feat, history = _crm_train(str(data_dir), str(retrieved_dir), params, progress, feature_store)
    events = EventArrays(s["test"].events.frame)
    preds = pd.DataFrame({c: s["test"].column(c) for c in KEY + ["label"]})
    preds["p"] = predict_split(model, feat, s["test"], events)
    test_metrics = ctr_metrics(preds["label"].to_numpy(), preds["p"].to_numpy())  # one pass over test, not two
    summary: CRMResult = {
        "model": "CRM",
        "dataset": meta["dataset"],
        "test": test_metrics,
        "valid_auc_by_epoch": [e.get("valid_auc") for e in history["epochs"]],
        "train_samples": int(len(s["train"])),
        "train_samples_per_s": history.get("train_samples_per_s"),
        "ranks": int(history.get("ranks", 1)),
        "hidden_dim": int(model.hidden_dim),
        "seconds": round(time.perf_counter() - t0, 2),
        "precision": {"chosen": "fp32", "requested": "fp32", "device": "cpu", "reason": "the CRM trains in fp32"},
        "hardware": hardware_info(),
    }
    if dist.is_main():
        with atomic_dir(Path(out_dir)) as tmp:
            save_crm(tmp / "model", model, feat, history)
            preds.to_parquet(tmp / PREDICTIONS, index=False)
            write_json(tmp / "metrics.json", summary)
    dist.barrier()
    return summary
