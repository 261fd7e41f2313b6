"""The training stages as file-in, file-out functions: what the CLI, DVC and the KFP components call.

    retrieve_stage   prepared data -> samples with long/short retrieved histories + item embeddings
    crm_stage        retrieved samples -> trained CRM + its test predictions
    llm_stage        retrieved samples + CRM -> Few2Many-trained adapter (vanilla LoRA or RecLoRA)
                     + its predictions on the evaluation subset
    evaluate_stage   predictions of every model (+ the champion re-scored on the same samples) -> report
                     (metrics.json with slices and the promotion gate's evidence, plots, report.html)
    register_stage   the new version in the registry, promoted when the gate passes

Every stage writes its output directory atomically and returns a JSON-able summary.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from reclora.config import load_params
from reclora.data import read_prepared
from reclora.data.schema import SPLITS
from reclora.errors import DataError
from reclora.hardware import hardware_info
from reclora.io import atomic_dir, read_json, refuse_overlap, write_json

KEY = ["user_id", "item_id", "timestamp"]
PREDICTIONS = "predictions.parquet"


def _params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(params) if params is not None else load_params()


def _read_samples(retrieved_dir: Path) -> dict[str, Any]:
    """The retrieved splits, lazily: ``len(s[split])`` and ``s[split].iloc[rows]`` (a DataFrame of those
    rows with histories and retrieved lists materialized); see reclora.retrieval.layout."""
    from reclora.retrieval.layout import open_retrieved

    return open_retrieved(retrieved_dir)


def eval_subset(test: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """The seeded test subset every model is scored on (all of test when n <= 0)."""
    from reclora.few2many import sample_few

    return test.iloc[sample_few(len(test), n, seed)].reset_index(drop=True)


def shared_features(
    features_dir: str | Path | None, tables: Any, samples: pd.DataFrame | Callable[[], pd.DataFrame]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """(items, users for the CRM, users for the prompts) of a training stage.

    With ``features_dir`` (the features stage's output) they come from Feast's offline store: the
    ModelInputs its training join wrote (``model_inputs/``), or, for a store without them, a join on
    the samples' (entity, time) rows plus the prepared tables' ids (see
    ``reclora.features.inputs.training_inputs``); without, from the prepared tables (as before Feast).
    ``samples`` (user_id, item_id, timestamp) may be a function that builds them: it is called only
    when the join is needed (the CRM's key frame holds every training sample: 0.6 GB at 25M events).
    """
    if features_dir is None:
        return tables.items, tables.users, tables.users
    from reclora.features.inputs import read_model_inputs, training_inputs

    mi = read_model_inputs(features_dir)
    if mi is None:
        keys = samples() if callable(samples) else samples
        mi = training_inputs(features_dir, keys, tables.users["user_id"], tables.items["item_id"])
    return mi.items, mi.crm_users(), mi.users


# ------------------------------------------------------------------ retrieve
def retrieve_stage(
    data_dir: str | Path,
    out_dir: str | Path,
    params: Mapping[str, Any] | None = None,
    mode: str | None = None,
    model_path: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Prepared data -> retrieved directory (layout: reclora.retrieval.layout): for every sample the
    positions of its k_long / k_short retrieved behaviours in the event store. Reads the sample index
    one row group at a time and writes it the same way: memory O(events + row group), not O(samples)."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from reclora.data import schema
    from reclora.data.prepare import read_events
    from reclora.llm import resolve_model_path
    from reclora.retrieval import load_or_embed_items, retrieve_positions
    from reclora.retrieval.layout import ROW_GROUP, positions_column, retrieved_schema
    from reclora.retrieval.retriever import _Embeddings

    refuse_overlap({"--out": out_dir}, {"--data": data_dir, "--model": model_path})
    p = _params(params)
    rp = p["retrieval"]
    mode = mode or rp["mode"]
    k_long, k_short = int(rp["k_long"]), int(rp["k_short"])
    t0 = time.perf_counter()
    data_dir = Path(data_dir)
    tables_check = [data_dir / schema.META, data_dir / schema.ITEMS] + [data_dir / schema.split_path(x) for x in SPLITS]
    missing = [str(f.name) for f in tables_check if not f.is_file()]
    if missing:
        raise DataError(f"{data_dir}: not a prepared data directory (missing {', '.join(missing)}); run `reclora data prepare`")
    meta = read_json(data_dir / schema.META)
    ids = emb = event_rows = prec = None
    event_items = np.zeros(0, np.int64)  # recent mode reads no event: positions follow from the lengths
    if mode == "relevance":
        event_items = read_events(data_dir, ["item_id"])["item_id"].to_numpy(np.int64)
        from reclora.precision import choose

        src = rp.get("embedding_model") or resolve_model_path(model_path, p["model"])
        items = pd.read_parquet(data_dir / schema.ITEMS)
        prec = choose(p.get("train"), "cpu")  # the embedding model runs on the CPU
        ids, emb = load_or_embed_items(items, src, batch_size=int(rp["embedding_batch_size"]), progress=progress,
                                       layers=int(rp.get("embedding_layers") or 0), precision=prec)  # fmt: skip
        event_rows = _Embeddings(ids, emb).rows(event_items)
    out = Path(out_dir)
    counts: dict[str, int] = {}
    out_schema = retrieved_schema(k_long, k_short)
    cols = list(schema.SAMPLE_INDEX_COLUMNS)
    with atomic_dir(out) as tmp:
        (tmp / "samples").mkdir()
        shutil.copyfile(data_dir / schema.EVENTS, tmp / schema.EVENTS)
        for split in SPLITS:
            src_file = pq.ParquetFile(data_dir / schema.split_path(split))
            if "history_start" not in src_file.schema_arrow.names:
                raise DataError(f"{data_dir}: prepared by an older version (no sample index); run `reclora data prepare` again")
            counts[split] = 0
            with pq.ParquetWriter(tmp / "samples" / f"{split}.parquet", out_schema) as w:
                for batch in src_file.iter_batches(batch_size=ROW_GROUP, columns=cols):
                    t = pa.Table.from_batches([batch]).select(cols)
                    lp, sp = retrieve_positions(
                        t.column("history_start").to_numpy(), t.column("history_length").to_numpy(),
                        t.column("item_id").to_numpy(), event_items, k_long, k_short, mode, ids, emb,
                        event_rows=event_rows,
                    )  # fmt: skip
                    t = t.append_column("long_pos", positions_column(lp)).append_column("short_pos", positions_column(sp))
                    w.write_table(t.cast(out_schema), row_group_size=ROW_GROUP)
                    counts[split] += t.num_rows
        if emb is not None:
            from safetensors.numpy import save_file

            save_file({"item_ids": ids, "embeddings": emb}, str(tmp / "item_embeddings.safetensors"))
        summary = {
            "mode": mode,
            "k_long": k_long,
            "k_short": k_short,
            "dataset": meta["dataset"],
            "samples": counts,
            "seconds": round(time.perf_counter() - t0, 2),
            "precision": prec.as_dict() if prec is not None else None,  # of the item embeddings (relevance mode)
            "hardware": hardware_info(),
        }
        write_json(tmp / "retrieval.json", summary)
    return summary


# ------------------------------------------------------------------ CRM
def _crm_train(data_dir: str, retrieved_dir: str, params: dict[str, Any], progress: bool,
               features_dir: str | Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Train the CRM on the streaming layout (every rank of a process group runs this):
    ``(model, featurizer, history)``; user and item features from Feast with ``features_dir``."""
    from reclora.crm import CRMConfig
    from reclora.crm.stream import EventArrays, train_crm_streaming
    from reclora.retrieval.layout import open_retrieved

    tables, _, _ = read_prepared(data_dir, histories=False)
    s = open_retrieved(retrieved_dir)
    cfg = CRMConfig.from_dict(
        {**params["crm"], "max_len": int(params["retrieval"]["k_long"]),
         "hist_items_col": "long_item_ids", "hist_ratings_col": "long_ratings"}
    )  # fmt: skip
    events = EventArrays(s["train"].events.frame)
    def keys() -> pd.DataFrame:
        return pd.DataFrame({c: s["train"].column(c) for c in ("user_id", "item_id", "timestamp")})

    items, users, _ = shared_features(features_dir, tables, keys)
    return train_crm_streaming(s["train"], s["valid"], events, items, users, cfg, progress=progress)


def _crm_rank(data_dir: str, retrieved_dir: str, params: dict[str, Any], progress: bool, tmp: str,
              features_dir: str | Path | None = None) -> dict[str, Any]:  # fmt: skip
    """One rank of data-parallel CRM training; rank 0 saves the model to ``tmp``."""
    import torch.distributed as dist

    from reclora.crm import save_crm

    model, feat, history = _crm_train(data_dir, retrieved_dir, params, progress, features_dir)
    if dist.get_rank() == 0:
        save_crm(tmp, model, feat, history)
    return {"history": history}


def crm_stage(
    data_dir: str | Path,
    retrieved_dir: str | Path,
    out_dir: str | Path,
    params: Mapping[str, Any] | None = None,
    progress: bool = True,
    ranks: int = 1,
    features_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Retrieved samples -> trained CRM (OUT/model), its test predictions and metrics.json.

    Batches stream from the retrieved layout (reclora.crm.stream): memory does not grow with the number
    of samples. ``ranks`` > 1: data-parallel training on that many gloo ranks on this machine (under
    torchrun, an initialised process group is used as it is: rank 0 writes). Deterministic per seed.
    ``features_dir`` (the features stage's output): user attributes and item genres from Feast's
    offline store (``shared_features``); without it, from the prepared tables.
    """
    import tempfile

    from reclora.crm import load_crm, save_crm
    from reclora.crm.stream import EventArrays, predict_split, run_ranks
    from reclora.evaluation import ctr_metrics
    from reclora.few2many import distributed as dist
    from reclora.retrieval.layout import open_retrieved

    refuse_overlap({"--out": out_dir}, {"--data": data_dir, "--retrieved": retrieved_dir, "--features": features_dir})
    p = _params(params)
    t0 = time.perf_counter()
    _, _, meta = read_prepared(data_dir, histories=False)
    s = open_retrieved(retrieved_dir)
    if int(ranks) < 1:
        raise DataError(f"ranks must be >= 1, got {ranks}")
    if int(ranks) > 1 and not dist.active():
        with tempfile.TemporaryDirectory(prefix="crm-ranks-") as td:
            run_ranks(int(ranks), _crm_rank, (str(data_dir), str(retrieved_dir), p, progress, f"{td}/model", features_dir))
            model, feat = load_crm(f"{td}/model")
            history = read_json(Path(td) / "model" / "crm_history.json")
    else:
        dist.init_from_env()
        model, feat, history = _crm_train(str(data_dir), str(retrieved_dir), p, progress, features_dir)
    events = EventArrays(s["test"].events.frame)
    preds = pd.DataFrame({c: s["test"].column(c) for c in KEY + ["label"]})
    preds["p"] = predict_split(model, feat, s["test"], events)
    test_metrics = ctr_metrics(preds["label"].to_numpy(), preds["p"].to_numpy())  # one pass over test, not two
    summary = {
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


# ------------------------------------------------------------------ LLM (vanilla LoRA / RecLoRA)
def llm_stage(
    kind: str,
    data_dir: str | Path,
    retrieved_dir: str | Path,
    crm_dir: str | Path | None,
    out_dir: str | Path,
    params: Mapping[str, Any] | None = None,
    gate: str = "crm",
    model_path: str | None = None,
    progress: bool = True,
    cache_dir: str | Path | None = None,
    text_path: bool = True,
    checkpoint_uri: str | None = None,
    features_dir: str | Path | None = None,
    init_from: str | Path | None = None,
) -> dict[str, Any]:
    """Few2Many: train ``kind`` ("lora" or "reclora") on a seeded sample of train, score the eval subset.

    The run directory OUT/run keeps resumable checkpoints: a killed run started again with
    the same arguments continues from its last checkpoint. OUT/adapter is written at the end.
    ``cache_dir``: frozen-layer states shared with other runs on the same prompts and base model
    (e.g. vanilla LoRA and RecLoRA in one benchmark); see ``PromptSet.cache``. Without it, params
    ``train.share_frozen_cache: true`` keeps them in ``$RECLORA_CACHE/frozen-states`` (what both LLM
    steps of the small profile's pipeline share). ``text_path=False``
    (ablation, crm_residual readout only): nothing is trained, s stays 0, so the predictions are the CRM's.
    ``checkpoint_uri`` (any fsspec URI): the checkpoints are also mirrored there, and a run
    whose local run directory is gone (a retry in a new pod) resumes from that copy.
    ``features_dir``: the features stage's output; the prompts' profiles and titles then come from Feast.
    ``init_from`` (RecLoRA only): two-stage RecLoRA, every meta-LoRA starts from this trained vanilla
    LoRA (an OUT/adapter of kind "lora" with the same rank and targets; ``init_from_shared_lora``).
    """
    from reclora.crm import crm_signals, load_crm, signal_width
    from reclora.few2many import TrainConfig, build_adapter, init_from_shared_lora, predict_adapter, sample_few, train_adapter
    from reclora.llm import load_causal_lm, resolve_model_path
    from reclora.prompts import NOUNS, build_prompts

    out = Path(out_dir)
    run_dir = out.parent / f".{out.name}.run"  # checkpoints survive a kill; removed on success
    refuse_overlap({"--out": out, "its checkpoint directory": run_dir},
                   {"--data": data_dir, "--retrieved": retrieved_dir, "--crm": crm_dir, "--features": features_dir,
                    "--init-from": init_from, "--model": model_path})
    p = _params(params)
    tp, ap = p["train"], dict(p["adapter"])
    if cache_dir is None and tp.get("share_frozen_cache"):
        from reclora.config import cache_dir as reclora_cache

        cache_dir = reclora_cache() / "frozen-states"
    if init_from is not None:
        if kind != "reclora":
            raise DataError(f"init_from (two-stage RecLoRA) needs kind reclora, got {kind!r}")
        from reclora.few2many.adapters import check_shared_lora_dir

        init_from = check_shared_lora_dir(init_from)  # before any model loads
    t0 = time.perf_counter()
    tables, _, meta = read_prepared(data_dir, histories=False)
    s = _read_samples(Path(retrieved_dir))
    seed = int(tp["seed"])
    few = s["train"].iloc[sample_few(len(s["train"]), int(tp["sample_size"]), seed)].reset_index(drop=True)
    ev = eval_subset(s["test"], int(tp["eval_samples"]), seed)
    n_val = int(tp.get("valid_samples", 0) or 0)
    va = eval_subset(s["valid"], n_val, seed) if n_val > 0 and len(s["valid"]) else None
    kw = {"noun": NOUNS.get(meta["dataset"], "item"), "threshold": float(meta["label_threshold"])}
    used = pd.concat([f for f in (few, ev, va) if f is not None], ignore_index=True)
    items, _, users = shared_features(features_dir, tables, used)
    train_prompts = build_prompts(few, items, users, **kw)
    eval_prompts = build_prompts(ev, items, users, **kw)

    frames = {"train": few, "eval": ev} | ({"valid": va} if va is not None else {})
    sig: dict[str, np.ndarray | None] = dict.fromkeys(frames)
    anchor: dict[str, np.ndarray | None] = dict.fromkeys(frames)
    readout = str(ap.get("readout", "llm"))
    if kind == "reclora" or readout == "crm_residual":
        if crm_dir is None:
            raise DataError(f"{kind} with readout {readout} needs a trained CRM (crm_dir)")
        crm, feat = load_crm(Path(crm_dir) / "model")
        if kind == "reclora":
            gi = str(ap.get("gate_input", "hidden"))
            ap.update(signal_dim=signal_width(crm, gi), gate=gate)
            if gate == "crm":
                sig = {k: crm_signals(crm, feat, df, gi) for k, df in frames.items()}
        if readout == "crm_residual":
            anchor = {k: crm_signals(crm, feat, df, "score")[:, 0] for k, df in frames.items()}

    import torch

    from reclora.few2many import distributed as dist
    from reclora.precision import choose

    path = resolve_model_path(model_path, p["model"])
    base, tok = load_causal_lm(path)
    base.to(dist.device())
    torch.manual_seed(seed)  # the adapter's initial weights are part of the run's determinism
    adapter = build_adapter(kind, base, ap)
    if init_from is not None:
        init_from_shared_lora(adapter, init_from)
    cfg = TrainConfig.from_dict(tp)
    valid = None
    if va is not None:
        valid = {"prompts": build_prompts(va, items, users, **kw), "labels": va["label"].to_numpy(),
                 "signals": sig["valid"], "anchors": anchor["valid"]}  # fmt: skip
    if not text_path and readout != "crm_residual":
        raise DataError("text_path=False is the crm_residual readout's ablation; set adapter.readout: crm_residual")
    train_fn = train_adapter if text_path else _no_training
    from reclora.few2many.checkpoint import checkpoint_mirror

    with checkpoint_mirror(run_dir, checkpoint_uri):
        history = train_fn(
            adapter, tok, train_prompts, few["label"].to_numpy(), sig["train"], cfg, run_dir, progress,
            anchors=anchor["train"], valid=valid, diagnostics=bool(tp.get("diagnostics", False)) and valid is not None,
            cache_dir=cache_dir,
        )  # fmt: skip
    t_train = time.perf_counter()
    probs = predict_adapter(
        adapter, tok, eval_prompts, sig["eval"], batch_size=int(tp["predict_batch_size"]),
        max_length=int(tp["max_length"]), precision=cfg.precision, progress=progress, anchors=anchor["eval"],
        cache_dir=cache_dir,
    )  # fmt: skip
    t_pred = time.perf_counter()
    from reclora.evaluation import ctr_metrics

    metrics = ctr_metrics(ev["label"].to_numpy(), probs)
    summary = {
        "model": (kind if kind == "lora" or gate == "crm" else f"{kind}-{gate}") + ("+crm_residual" if readout == "crm_residual" else "")
        + ("+two_stage" if init_from is not None else ""),
        "base_model": path,
        "dataset": meta["dataset"],
        "train_samples": int(len(few)),
        "eval_samples": int(len(ev)),
        "eval": metrics,
        "train": {k: v for k, v in history.items() if k not in ("loss", "diagnostics")},
        "diagnostics": history.get("diagnostics"),
        "readout_scale": float(adapter.readout_scale.detach()) if adapter.readout_scale is not None else None,
        "valid_samples": int(len(va)) if va is not None else 0,
        "loss_first_last": [history["loss"][0], float(np.mean(history["loss"][-10:]))] if history["loss"] else None,
        "adapter": ap | {"kind": kind} | ({"init_from": str(init_from)} if init_from is not None else {}),
        "train_config": tp,
        "predict_seconds": round(t_pred - t_train, 2),
        "seconds": round(time.perf_counter() - t0, 2),
        "precision": choose(cfg.precision, dist.device(), log=False).as_dict(),
        "hardware": hardware_info(),
    }
    if dist.is_main():  # under torchrun only rank 0 writes; every rank waits for it
        import shutil

        with atomic_dir(out) as tmp:
            adapter.save(tmp / "adapter")
            ev[KEY + ["label"]].assign(p=probs).to_parquet(tmp / PREDICTIONS, index=False)
            write_json(tmp / "metrics.json", summary)
            write_json(tmp / "train_loss.json", {"loss": history["loss"]})
        shutil.rmtree(run_dir, ignore_errors=True)
    dist.barrier()
    return summary


def _no_training(*_a: Any, **_kw: Any) -> dict[str, Any]:
    """The training summary of an ablation that trains nothing."""
    return {"steps": 0, "samples_seen": 0, "loss": [], "valid_auc": [], "seconds": 0.0, "text_path": False}


# ------------------------------------------------------------------ evaluate
def _by_name(names: list[str], want: str) -> str | None:
    """The model among ``names`` called ``want`` (case-insensitive), or None."""
    return next((n for n in names if n.lower() == want.lower()), None)


def evaluated_samples(data_dir: str | Path, keys: pd.DataFrame) -> pd.DataFrame:
    """The test samples ``keys`` (user_id, item_id, timestamp) of a prepared directory with their histories
    (``SAMPLE_COLUMNS``), in ``keys``' order. Raises DataError for a key that is not a test sample."""
    from reclora.data import materialize_histories, read_events, read_split

    idx = read_split(data_dir, "test", histories=False).drop_duplicates(KEY)
    rows = keys[KEY].merge(idx, on=KEY, how="left", validate="many_to_one")
    if rows["label"].isna().any():
        bad = rows[rows["label"].isna()].iloc[0]
        raise DataError(f"{data_dir}: evaluated sample (user {bad.user_id}, item {bad.item_id}, time {bad.timestamp}) "
                        "is not in the test split of this prepared data")  # fmt: skip
    return materialize_histories(read_events(data_dir, ["item_id", "rating", "timestamp"]), rows)


def _gate_evidence(
    labels: np.ndarray, preds: Mapping[str, np.ndarray], challenger: str, baseline: str | None,
    champ: Mapping[str, Any] | None, champ_name: str | None, slices: list[dict[str, Any]] | None,
    n_boot: int, level: float, seed: int,
) -> dict[str, Any]:  # fmt: skip
    """The gate's evidence (reclora.registry.gate): challenger vs baseline and champion on the same samples."""
    from reclora.evaluation import ctr_metrics
    from reclora.evaluation.metrics import bootstrap_aucs, diff_summary

    names = [challenger] + [n for n in (baseline, champ_name) if n]
    point, boot = bootstrap_aucs(labels, [preds[n] for n in names], n_boot=n_boot, seed=seed)
    scores = {n: ctr_metrics(labels, preds[n]) for n in names}

    def vs(j: int) -> dict[str, Any]:
        n = names[j]
        return {"name": n, "auc": scores[n]["auc"], "logloss": scores[n]["logloss"],
                "diff": diff_summary(point[0], point[j], boot[:, 0], boot[:, j], level)}  # fmt: skip

    ev: dict[str, Any] = {"challenger": challenger, "auc": scores[challenger]["auc"],
                          "logloss": scores[challenger]["logloss"], "samples": int(len(labels)), "level": level,
                          "n_boot": int(n_boot), "baseline": vs(1) if baseline else None}  # fmt: skip
    c = {k: v for k, v in (champ or {"status": "none"}).items() if k != "p"}
    if champ_name:
        c |= vs(names.index(champ_name))
    ev["champion"] = c
    ev["slices"] = []
    for r in slices or []:
        if not r.get("scored"):
            continue
        m = r["models"]
        ev["slices"].append({"slice": f"{r['feature']}: {r['value']}", "n": r["n"], "auc": m[challenger]["auc"],
                             "baseline_auc": m[baseline]["auc"] if baseline else None,
                             "champion_auc": m[champ_name]["auc"] if champ_name else None})  # fmt: skip
    return ev


def evaluate_stage(
    prediction_dirs: Mapping[str, str | Path],
    out_dir: str | Path,
    context: Mapping[str, Any] | None = None,
    *,
    data_dir: str | Path | None = None,
    registry_uri: str | None = None,
    features_dir: str | Path | None = None,
    challenger: str | None = None,
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Score every model on the same samples (the intersection of their predictions) and write the report.

    ``data_dir`` (the prepared data the models were evaluated on): metrics per slice
    (:mod:`reclora.evaluation.slices`, params ``evaluation.slices``). ``registry_uri``: the current champion
    is re-scored on the same samples (:func:`reclora.evaluation.champion.rescore_champion`; needs
    ``data_dir``, and ``features_dir`` for the prompts' profiles and titles from Feast as in training) and is
    reported as one more model, ``champion vNNNN``. The promotion gate's evidence (``challenger``, default
    the first model named *reclora*, against the baseline ``pipeline.promotion.baseline`` and the champion:
    paired bootstrap intervals of the AUC differences, params ``evaluation.bootstrap``/``confidence``) and
    its decision (:func:`reclora.registry.gate.decide`) are in the report's ``gate`` block, which the
    register stage reads. Returns metrics.json's dict.
    """
    from reclora.evaluation import write_report
    from reclora.evaluation.slices import SliceSpec, define_slices, slice_inputs, slice_metrics
    from reclora.registry.gate import PromotionRules, decide

    if not prediction_dirs:
        raise DataError("evaluate: no predictions given")
    p = _params(params)
    ep = dict(p.get("evaluation") or {})
    n_boot, level, seed = int(ep.get("bootstrap", 1000)), float(ep.get("confidence", 0.95)), int(ep.get("seed", 0))
    rules = PromotionRules.from_params((p.get("pipeline") or {}).get("promotion"))
    if registry_uri and data_dir is None:
        raise DataError("evaluate: re-scoring the champion (registry_uri) needs the prepared data (data_dir)")
    refuse_overlap({"--out": out_dir}, {f"--run {n}": d for n, d in prediction_dirs.items()} | {"--data": data_dir, "--features": features_dir})
    frames = {}
    for name, d in prediction_dirs.items():
        f = Path(d) / PREDICTIONS
        if not f.is_file():
            raise DataError(f"evaluate: {f} not found (model {name!r})")
        frames[name] = pd.read_parquet(f)
    common = None
    for df in frames.values():
        keys = df[KEY]
        common = keys if common is None else common.merge(keys, on=KEY)
    common = common.drop_duplicates().reset_index(drop=True)
    if common.empty:
        raise DataError("evaluate: the models' predictions share no samples")
    labels = None
    preds: dict[str, np.ndarray] = {}
    for name, df in frames.items():
        m = common.merge(df.drop_duplicates(KEY), on=KEY, how="left")
        y = m["label"].to_numpy()
        if labels is not None and not np.array_equal(y, labels):
            raise DataError(f"evaluate: model {name!r} has other labels than {next(iter(frames))!r} for the same samples")
        labels = y if labels is None else labels
        preds[name] = m["p"].to_numpy()
    names = list(preds)
    challenger = challenger or next((n for n in names if "reclora" in n.lower()), names[-1])
    if challenger not in preds:
        raise DataError(f"evaluate: challenger {challenger!r} is not among the models ({', '.join(names)})")
    baseline = _by_name(names, rules.baseline) if rules.baseline else None
    baseline = None if baseline == challenger else baseline
    ctx = dict(context or {}) | {"evaluated_samples": int(len(common))}
    dataset = None
    if data_dir is not None:
        dataset = read_json(Path(data_dir) / "meta.json").get("dataset")
        ctx.setdefault("dataset", dataset)
    champ, champ_name, stored = None, None, None
    if registry_uri:
        from reclora.data import schema
        from reclora.data.loaders import Tables
        from reclora.evaluation.champion import rescore_champion

        samples = evaluated_samples(data_dir, common)
        tables = Tables(pd.DataFrame(), pd.read_parquet(Path(data_dir) / schema.ITEMS),
                        pd.read_parquet(Path(data_dir) / schema.USERS))  # fmt: skip
        items, _, users = shared_features(features_dir, tables, samples[KEY])
        from reclora.precision import requested_precision

        champ = rescore_champion(registry_uri, samples, items, users, str(dataset),
                                 precision=requested_precision(p.get("train")))  # as the challenger was scored
        if champ["status"] == "scored":
            champ_name = f"champion {champ['version']}"
            preds[champ_name] = champ["p"]
        elif champ.get("stored") and champ["stored"].get("auc") is not None:
            stored = {"name": f"champion {champ['version']} (stored figure, its own test split, not re-scored)",
                      **champ["stored"], "version": champ["version"], "status": champ["status"],
                      "reason": champ["reason"]}  # fmt: skip
    slice_rows, slice_block = None, None
    if data_dir is not None:
        spec = SliceSpec.from_params(ep.get("slices"), dataset)
        sl = define_slices(slice_inputs(data_dir, common), spec)
        comparisons = [(challenger, r) for r in (baseline, champ_name) if r]
        slice_rows = slice_metrics(labels, preds, sl, spec, comparisons, n_boot=n_boot, level=level, seed=seed)
        slice_block = {"rows": slice_rows, "definitions": spec.definitions(), "min_samples": spec.min_samples,
                       "comparisons": [f"{a} - {b}" for a, b in comparisons], "level": level, "n_boot": n_boot}  # fmt: skip
    from reclora.evaluation import EvaluationInputError

    try:
        evidence = _gate_evidence(labels, preds, challenger, baseline, champ, champ_name, slice_rows, n_boot, level, seed)
    except EvaluationInputError as e:  # e.g. one class only: no AUC, so no evidence either way
        evidence = {"challenger": None, "note": f"no gate evidence: {e}"}
    evidence["decision"] = decide(evidence, rules)
    extra = {}
    for name, d in prediction_dirs.items():
        mj = Path(d) / "metrics.json"
        if mj.is_file():
            extra[name] = read_json(mj)
    ctx["stage_summaries"] = {k: {kk: vv for kk, vv in v.items() if kk in ("train_samples", "seconds", "test", "eval")}
                              for k, v in extra.items()}  # fmt: skip
    return write_report(out_dir, {n: (labels, pr) for n, pr in preds.items()}, context=ctx, champion=stored,
                        gate=evidence, slices=slice_block)  # fmt: skip


# ------------------------------------------------------------------ register
def register_stage(
    crm_dir: str | Path,
    reclora_dir: str | Path,
    retrieved_dir: str | Path,
    data_dir: str | Path,
    evaluation_dir: str | Path,
    registry_uri: str,
    params: Mapping[str, Any] | None = None,
    data_version: str = "",
    run_id: str = "",
    deploy: bool | None = None,
) -> dict[str, Any]:
    """Register the new version (immutable) and promote it if it passes the gate (reclora.registry.gate, rules
    from params ``pipeline.promotion``) on the evaluation's same-sample evidence (``evaluation_dir``'s
    metrics.json: the evaluate stage's report with its ``gate`` block).

    ``deploy`` (default: params ``pipeline.serving.deploy``): when the version is promoted, patch the
    KServe InferenceService's storageUri to it (:func:`reclora.registry.deploy.deploy_version`);
    the result is under ``"deploy"`` (None when nothing was patched).
    """
    from reclora.registry import PromotionRules, register_and_gate
    from reclora.registry.deploy import deploy_version, serving_settings

    p = _params(params)
    rules = PromotionRules.from_params(p["pipeline"].get("promotion"))
    sv = serving_settings(p)
    api = None
    if sv["deploy"] if deploy is None else deploy:  # fail before registering, not after promoting
        from reclora.kube import custom_objects_api
        from reclora.registry.deploy import storage_uri

        storage_uri(registry_uri, "v0000", storage_root=sv["storage_root"])
        api = custom_objects_api()
    adapter_meta = read_json(Path(reclora_dir) / "metrics.json")
    r = register_and_gate(
        registry_uri,
        rules=rules,
        crm_dir=crm_dir,
        adapter_dir=reclora_dir,
        retrieval_dir=retrieved_dir,
        items_path=data_dir,
        params={k: p[k] for k in ("data", "retrieval", "crm", "adapter", "train", "validation") if k in p},
        metrics=read_json(Path(evaluation_dir) / "metrics.json"),
        lineage={"data_version": data_version, "pipeline_run_id": run_id},
        base_model=str(adapter_meta.get("base_model", "")),
        model="RecLoRA",
        runtime={k: adapter_meta[k] for k in ("precision", "hardware") if adapter_meta.get(k)},
    )
    r["model_card"] = f"{str(r['path']).rstrip('/')}/MODEL_CARD.md"  # a local path or an object-store URI
    r["deploy"] = None
    if r["promoted"] and api is not None:
        from reclora.kube import pod_namespace

        ns = pod_namespace(sv["namespace"])  # in a pod: the run's namespace, where the service account may patch
        r["deploy"] = deploy_version(registry_uri, r["version"], service=sv["service"], namespace=ns,
                                     storage_root=sv["storage_root"], api=api)  # fmt: skip
    return r
