"""The LLM stage: Few2Many training of vanilla LoRA or RecLoRA on a seeded sample of train, then its
predictions on the evaluation subset (scored by :func:`reclora.scoring.score_samples`, as served).

    llm_stage  =  samples (Few2Many sample, validation and evaluation subsets)
               -> CRM (signals for the gates, anchors for the crm_residual readout)
               -> training inputs -> adapter on its base LLM -> train -> score the evaluation subset
               -> summary (metrics.json) and OUT/{adapter, predictions.parquet, train_loss.json}
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import pandas as pd

from reclora.config import Params, as_params
from reclora.config import cache_dir as reclora_cache
from reclora.data import read_prepared
from reclora.errors import DataError
from reclora.hardware import hardware_info
from reclora.io import atomic_dir, refuse_overlap, write_json
from reclora.stages.common import KEY, PREDICTIONS, eval_subset, read_samples, shared_features

if TYPE_CHECKING:
    from reclora.config.model_sections import AdapterSection, ModelSection, TrainSection
    from reclora.scoring import ScoringInputs


class LLMResult(TypedDict):
    """What :func:`llm_stage` returns (also OUT/metrics.json).

    Attributes:
        model: the model's name: lora | reclora | reclora-<gate>, + "+crm_residual", + "+two_stage".
        base_model: the base LLM's local path.
        dataset: the prepared data set's name.
        train_samples: samples in the Few2Many training sample.
        eval_samples: samples in the evaluation subset (``eval_subset`` of test).
        eval: CTR metrics on the evaluation subset (auc, logloss, n, ...).
        train: the training summary (:func:`reclora.few2many.train_adapter`'s, without the per-step losses).
        diagnostics: the text path's diagnostics (``train.diagnostics``), else None.
        readout_scale: the crm_residual readout's learned scale s, else None.
        valid_samples: samples in the validation subset (0 without one).
        loss_first_last: [first step's loss, mean of the last ten], None when nothing was trained.
        adapter: the adapter settings (params ``adapter`` + signal_dim, gate, kind, init_from).
        train_config: params ``train`` as run.
        predict_seconds: wall time of scoring the evaluation subset.
        seconds: wall time of the stage.
        precision: the precision choice on the training device (``Precision.as_dict``).
        hardware: the machine the stage ran on.
    """

    model: str
    base_model: str
    dataset: str
    train_samples: int
    eval_samples: int
    eval: dict[str, Any]
    train: dict[str, Any]
    diagnostics: dict[str, Any] | None
    readout_scale: float | None
    valid_samples: int
    loss_first_last: list[float] | None
    adapter: dict[str, Any]
    train_config: dict[str, Any]
    predict_seconds: float
    seconds: float
    precision: dict[str, Any]
    hardware: dict[str, Any]


def few2many_samples(
    retrieved_dir: str | Path, train: TrainSection
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """(Few2Many training sample, evaluation subset, validation subset or None) of the retrieved splits, seeded
    by params ``train`` (``seed``; sizes ``sample_size``, ``eval_samples``, ``valid_samples``); each a frame of
    retrieved samples with their histories materialized."""
    from reclora.few2many import sample_few

    s = read_samples(Path(retrieved_dir))
    few = s["train"].iloc[sample_few(len(s["train"]), train.sample_size, train.seed)].reset_index(drop=True)
    ev = eval_subset(s["test"], train.eval_samples, train.seed)
    n_val = train.valid_samples
    va = eval_subset(s["valid"], n_val, train.seed) if n_val > 0 and len(s["valid"]) else None
    return few, ev, va


def _crm_for(
    kind: str, gate: str, adapter: AdapterSection, crm_dir: str | Path | None, adapter_settings: dict[str, Any]
) -> Any:
    """The trained CRM (model, featurizer) the adapter reads (RecLoRA's gates, the crm_residual readout), else
    None; sets ``adapter_settings``' signal_dim and gate for RecLoRA. Raises DataError when one is needed and
    not given."""
    if kind != "reclora" and adapter.readout != "crm_residual":
        return None
    from reclora.crm import load_crm, signal_width

    if crm_dir is None:
        raise DataError(f"{kind} with readout {adapter.readout} needs a trained CRM (crm_dir)")
    crm, feat = load_crm(Path(crm_dir) / "model")
    if kind == "reclora":
        adapter_settings.update(signal_dim=signal_width(crm, adapter.gate_input), gate=gate)
    return crm, feat


def _adapter_on_base(
    kind: str,
    adapter_settings: dict[str, Any],
    model_path: str | None,
    seed: int,
    init_from: Path | None,
    model: ModelSection,
) -> tuple[str, Any, Any]:
    """(base model path, a fresh adapter of ``kind`` on the base LLM on this rank's device, tokenizer); the
    adapter's initial weights are drawn after ``torch.manual_seed(seed)`` (part of the run's determinism)."""
    import torch

    from reclora.few2many import build_adapter, init_from_shared_lora
    from reclora.few2many import distributed as dist
    from reclora.llm import load_causal_lm, resolve_model_path

    path = resolve_model_path(model_path, model)
    base, tok = load_causal_lm(path)
    base.to(dist.device())
    torch.manual_seed(seed)
    adapter = build_adapter(kind, base, adapter_settings)
    if init_from is not None:
        init_from_shared_lora(adapter, init_from)
    return path, adapter, tok


def _no_training(*_a: Any, **_kw: Any) -> dict[str, Any]:
    """The training summary of an ablation that trains nothing."""
    return {"steps": 0, "samples_seen": 0, "loss": [], "valid_auc": [], "seconds": 0.0, "text_path": False}


def train_on_inputs(
    adapter: Any,
    tok: Any,
    train: ScoringInputs,
    labels: np.ndarray,
    valid: tuple[ScoringInputs, np.ndarray] | None,
    cfg: Any,
    diagnostics: bool,
    run_dir: Path,
    checkpoint_uri: str | None,
    progress: bool,
    cache_dir: str | Path | None,
    text_path: bool,
) -> dict[str, Any]:
    """Train ``adapter`` on the training inputs (labels [n] 0/1) with ``cfg`` (a TrainConfig of params ``train``),
    running the text path's diagnostics when ``diagnostics`` (params ``train.diagnostics``) and there is a
    validation subset, checkpointing in
    ``run_dir`` (mirrored to ``checkpoint_uri``); ``valid``: (inputs, labels) of the validation subset.
    ``text_path=False`` (the crm_residual readout's ablation) trains nothing. Returns
    :func:`reclora.few2many.train_adapter`'s history. Raises DataError for ``text_path=False`` without the
    crm_residual readout."""
    from reclora.few2many import train_adapter
    from reclora.few2many.checkpoint import checkpoint_mirror

    val = None
    if valid is not None:
        v, v_labels = valid
        val = {"prompts": v.prompts, "labels": v_labels, "signals": v.signals, "anchors": v.anchors}
    if not text_path and not adapter.uses_anchor:
        raise DataError("text_path=False is the crm_residual readout's ablation; set adapter.readout: crm_residual")
    train_fn = train_adapter if text_path else _no_training
    with checkpoint_mirror(run_dir, checkpoint_uri):
        return train_fn(
            adapter,
            tok,
            train.prompts,
            labels,
            train.signals,
            cfg,
            run_dir,
            progress,
            anchors=train.anchors,
            valid=val,
            diagnostics=diagnostics and val is not None,
            cache_dir=cache_dir,
        )


def _model_name(kind: str, gate: str, readout: str, two_stage: bool) -> str:
    """lora | reclora | reclora-<gate> (a gate other than the CRM's), + "+crm_residual", + "+two_stage"."""
    name = kind if kind == "lora" or gate == "crm" else f"{kind}-{gate}"
    return name + ("+crm_residual" if readout == "crm_residual" else "") + ("+two_stage" if two_stage else "")


def llm_summary(
    name: str,
    base_model: str,
    dataset: str,
    samples: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None],
    probs: np.ndarray,
    history: Mapping[str, Any],
    adapter: Any,
    adapter_settings: Mapping[str, Any],
    train: TrainSection,
    cfg: Any,
    seconds: tuple[float, float, float],
) -> LLMResult:
    """The stage's summary: ``samples`` = (training sample, evaluation subset, validation subset or None),
    ``probs`` the evaluation subset's p(click) [n_eval], ``history`` the training's, ``adapter_settings`` the
    adapter's (with kind and init_from), ``train``/``cfg`` params ``train`` and its TrainConfig, ``seconds`` =
    (start, end of training, end of scoring) of ``time.perf_counter``."""
    from reclora.evaluation import ctr_metrics
    from reclora.few2many import distributed as dist
    from reclora.precision import choose

    few, ev, va = samples
    t0, t_train, t_pred = seconds
    loss = history["loss"]
    return {
        "model": name,
        "base_model": base_model,
        "dataset": dataset,
        "train_samples": int(len(few)),
        "eval_samples": int(len(ev)),
        "eval": ctr_metrics(ev["label"].to_numpy(), probs),
        "train": {k: v for k, v in history.items() if k not in ("loss", "diagnostics")},
        "diagnostics": history.get("diagnostics"),
        "readout_scale": float(adapter.readout_scale.detach()) if adapter.readout_scale is not None else None,
        "valid_samples": int(len(va)) if va is not None else 0,
        "loss_first_last": [loss[0], float(np.mean(loss[-10:]))] if loss else None,
        "adapter": dict(adapter_settings),
        "train_config": train.to_dict(),
        "predict_seconds": round(t_pred - t_train, 2),
        "seconds": round(time.perf_counter() - t0, 2),
        "precision": choose(cfg.precision, dist.device(), log=False).as_dict(),
        "hardware": hardware_info(),
    }


def _write_outputs(
    out: Path, run_dir: Path, adapter: Any, ev: pd.DataFrame, probs: np.ndarray, summary: LLMResult, loss: list[float]
) -> None:
    """OUT/{adapter, predictions.parquet, metrics.json, train_loss.json}, written atomically by rank 0 (every
    rank waits for it); the checkpoints' run directory is removed once they are."""
    import shutil

    from reclora.few2many import distributed as dist

    if dist.is_main():
        with atomic_dir(out) as tmp:
            adapter.save(tmp / "adapter")
            ev[KEY + ["label"]].assign(p=probs).to_parquet(tmp / PREDICTIONS, index=False)
            write_json(tmp / "metrics.json", summary)
            write_json(tmp / "train_loss.json", {"loss": loss})
        shutil.rmtree(run_dir, ignore_errors=True)
    dist.barrier()


def llm_stage(
    kind: str,
    data_dir: str | Path,
    retrieved_dir: str | Path,
    crm_dir: str | Path | None,
    out_dir: str | Path,
    params: Params | Mapping[str, Any],
    gate: str = "crm",
    model_path: str | None = None,
    progress: bool = True,
    cache_dir: str | Path | None = None,
    text_path: bool = True,
    checkpoint_uri: str | None = None,
    feature_store: str | Path | None = None,
    init_from: str | Path | None = None,
) -> LLMResult:
    """Few2Many: train ``kind`` ("lora" or "reclora") on a seeded sample of train, score the eval subset.

    ``params``: the run's params (``train``, ``adapter``, ``model``; a :class:`~reclora.config.Params` or its
    mapping). The run directory OUT/run keeps resumable
    checkpoints: a killed run started again with
    the same arguments continues from its last checkpoint. OUT/adapter is written at the end.
    ``cache_dir``: frozen-layer states shared with other runs on the same prompts and base model
    (e.g. vanilla LoRA and RecLoRA in one benchmark); see ``PromptSet.cache``. Without it, params
    ``train.share_frozen_cache: true`` keeps them in ``$RECLORA_CACHE/frozen-states`` (what both LLM
    steps of the small profile's pipeline share). ``text_path=False``
    (ablation, crm_residual readout only): nothing is trained, s stays 0, so the predictions are the CRM's.
    ``checkpoint_uri`` (any fsspec URI): the checkpoints are also mirrored there, and a run
    whose local run directory is gone (a retry in a new pod) resumes from that copy.
    ``feature_store``: the features stage's output; the prompts' profiles and titles then come from Feast.
    ``init_from`` (RecLoRA only): two-stage RecLoRA, every meta-LoRA starts from this trained vanilla
    LoRA (an OUT/adapter of kind "lora" with the same rank and targets; ``init_from_shared_lora``).
    Raises DataError for inputs that are not the stages' outputs, a CRM missing where one is needed, or
    ``init_from`` / ``text_path`` used with the wrong kind or readout.
    """
    from reclora.few2many import TrainConfig
    from reclora.prompts import NOUNS
    from reclora.scoring import PromptStyle, ScoringModel, score_samples, scoring_inputs

    out = Path(out_dir)
    run_dir = out.parent / f".{out.name}.run"  # checkpoints survive a kill; removed on success
    refuse_overlap(
        {"--out": out, "its checkpoint directory": run_dir},
        {
            "--data": data_dir,
            "--retrieved": retrieved_dir,
            "--crm": crm_dir,
            "--feature-store": feature_store,
            "--init-from": init_from,
            "--model": model_path,
        },
    )
    params = as_params(params)
    if cache_dir is None and params.train.share_frozen_cache:
        cache_dir = reclora_cache() / "frozen-states"
    if init_from is not None:
        if kind != "reclora":
            raise DataError(f"init_from (two-stage RecLoRA) needs kind reclora, got {kind!r}")
        from reclora.few2many.adapters import check_shared_lora_dir

        init_from = check_shared_lora_dir(init_from)  # before any model loads
    t0 = time.perf_counter()
    tables, _, meta = read_prepared(data_dir, histories=False)
    few, ev, va = few2many_samples(retrieved_dir, params.train)
    style = PromptStyle(NOUNS.get(meta["dataset"], "item"), float(meta["label_threshold"]))
    used = pd.concat([f for f in (few, ev, va) if f is not None], ignore_index=True)
    items, _, users = shared_features(feature_store, tables, used)

    adapter_settings = params.adapter.to_dict()  # + signal_dim and gate (RecLoRA), what build_adapter reads
    crm = _crm_for(kind, gate, params.adapter, crm_dir, adapter_settings)
    gate_input = params.adapter.gate_input if kind == "reclora" and gate == "crm" else None
    anchored = params.adapter.readout == "crm_residual"
    train_in = scoring_inputs(few, items, users, style, crm, gate_input, anchored)
    valid = None
    if va is not None:
        valid = (scoring_inputs(va, items, users, style, crm, gate_input, anchored), va["label"].to_numpy())

    seed = params.train.seed
    path, adapter, tok = _adapter_on_base(kind, adapter_settings, model_path, seed, init_from, params.model)
    cfg = TrainConfig.from_dict(params.train.to_dict())
    labels = few["label"].to_numpy()
    history = train_on_inputs(
        adapter,
        tok,
        train_in,
        labels,
        valid,
        cfg,
        params.train.diagnostics,
        run_dir,
        checkpoint_uri,
        progress,
        cache_dir,
        text_path,
    )
    t_train = time.perf_counter()
    scorer = ScoringModel(adapter, tok, crm[0] if crm else None, crm[1] if crm else None, style, cfg.max_length)
    probs = score_samples(
        scorer,
        ev,
        items,
        users,
        batch_size=params.train.predict_batch_size,
        precision=cfg.precision,
        progress=progress,
        cache_dir=cache_dir,
        distributed=None,
    )
    t_pred = time.perf_counter()
    adapter_settings |= {"kind": kind} | ({"init_from": str(init_from)} if init_from is not None else {})
    name = _model_name(kind, gate, params.adapter.readout, init_from is not None)
    times = (t0, t_train, t_pred)
    samples = (few, ev, va)
    summary = llm_summary(
        name, path, meta["dataset"], samples, probs, history, adapter, adapter_settings, params.train, cfg, times
    )
    _write_outputs(out, run_dir, adapter, ev, probs, summary, history["loss"])
    return summary
