"""The evaluate stage: every model's predictions (+ the champion re-scored on the same samples) -> the report
(metrics.json with slices and the promotion gate's evidence, plots, report.html)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict, cast

import numpy as np
import pandas as pd

from reclora.config import Params, as_params
from reclora.errors import DataError
from reclora.io import read_json, refuse_overlap
from reclora.stages.common import KEY, PREDICTIONS, shared_features


class EvaluateResult(TypedDict):
    """What :func:`evaluate_stage` returns: OUT/metrics.json (:func:`reclora.evaluation.write_report`).

    Attributes:
        schema_version: version of this layout.
        title: the report's title.
        generated_at: when it was written (UTC, ISO 8601).
        model_order: the models' names, in the order shown.
        models: per model its metrics on the evaluated samples (auc, logloss, n, calibration, interval, roc...).
        best: the model with the highest AUC.
        champion: a champion's stored figure shown beside them (one that could not be re-scored), else None.
        gate: the promotion gate's evidence and its ``decision`` (:mod:`reclora.registry.gate`).
        slices: metrics per slice (rows, definitions, min_samples, comparisons, level), or None without data.
        context: the run's context (dataset, evaluated_samples, stage_summaries, ...).
        definitions: what each metric means.
        files: the report's files.
    """

    schema_version: int
    title: str
    generated_at: str
    model_order: list[str]
    models: dict[str, dict[str, Any]]
    best: Any
    champion: dict[str, Any] | None
    gate: dict[str, Any] | None
    slices: dict[str, Any] | None
    context: dict[str, Any]
    definitions: dict[str, str]
    files: list[str]


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
        raise DataError(
            f"{data_dir}: evaluated sample (user {bad.user_id}, item {bad.item_id}, time {bad.timestamp}) "
            "is not in the test split of this prepared data"
        )
    return materialize_histories(read_events(data_dir, ["item_id", "rating", "timestamp"]), rows)


def _gate_evidence(
    labels: np.ndarray,
    preds: Mapping[str, np.ndarray],
    challenger: str,
    baseline: str | None,
    champ: Mapping[str, Any] | None,
    champ_name: str | None,
    slices: list[dict[str, Any]] | None,
    n_boot: int,
    level: float,
    seed: int,
) -> dict[str, Any]:
    """The gate's evidence (reclora.registry.gate): challenger vs baseline and champion on the same samples."""
    from reclora.evaluation import ctr_metrics
    from reclora.evaluation.metrics import bootstrap_aucs, diff_summary

    names = [challenger] + [n for n in (baseline, champ_name) if n]
    point, boot = bootstrap_aucs(labels, [preds[n] for n in names], n_boot=n_boot, seed=seed)
    scores = {n: ctr_metrics(labels, preds[n]) for n in names}

    def vs(j: int) -> dict[str, Any]:
        n = names[j]
        return {
            "name": n,
            "auc": scores[n]["auc"],
            "logloss": scores[n]["logloss"],
            "diff": diff_summary(point[0], point[j], boot[:, 0], boot[:, j], level),
        }

    ev: dict[str, Any] = {
        "challenger": challenger,
        "auc": scores[challenger]["auc"],
        "logloss": scores[challenger]["logloss"],
        "samples": int(len(labels)),
        "level": level,
        "n_boot": int(n_boot),
        "baseline": vs(1) if baseline else None,
    }
    c = {k: v for k, v in (champ or {"status": "none"}).items() if k != "p"}
    if champ_name:
        c |= vs(names.index(champ_name))
    ev["champion"] = c
    ev["slices"] = []
    for r in slices or []:
        if not r.get("scored"):
            continue
        m = r["models"]
        ev["slices"].append(
            {
                "slice": f"{r['feature']}: {r['value']}",
                "n": r["n"],
                "auc": m[challenger]["auc"],
                "baseline_auc": m[baseline]["auc"] if baseline else None,
                "champion_auc": m[champ_name]["auc"] if champ_name else None,
            }
        )
    return ev


def evaluate_stage(
    prediction_dirs: Mapping[str, str | Path],
    out_dir: str | Path,
    context: Mapping[str, Any] | None = None,
    *,
    data_dir: str | Path | None = None,
    registry_uri: str | None = None,
    feature_store: str | Path | None = None,
    challenger: str | None = None,
    params: Params | Mapping[str, Any],
) -> EvaluateResult:
    """Score every model on the same samples (the intersection of their predictions) and write the report.

    ``data_dir`` (the prepared data the models were evaluated on): metrics per slice
    (:mod:`reclora.evaluation.slices`, params ``evaluation.slices``). ``registry_uri``: the current champion
    is re-scored on the same samples (:func:`reclora.evaluation.champion.rescore_champion`; needs
    ``data_dir``, and ``feature_store`` for the prompts' profiles and titles from Feast as in training) and is
    reported as one more model, ``champion vNNNN``. The promotion gate's evidence (``challenger``, default
    the first model named *reclora*, against the baseline ``pipeline.promotion.baseline`` and the champion:
    paired bootstrap intervals of the AUC differences, params ``evaluation.bootstrap``/``confidence``) and
    its decision (:func:`reclora.registry.gate.decide`) are in the report's ``gate`` block, which the
    register stage reads. ``params`` (keyword, required): the run's params (``evaluation``, ``pipeline.promotion``,
    ``train.precision`` for the champion's re-scoring; a :class:`~reclora.config.Params` or its mapping).
    Returns metrics.json's dict. Raises DataError for missing predictions, models that share no samples or
    disagree on labels, an unknown challenger, or re-scoring without ``data_dir``.
    """
    from reclora.evaluation import write_report
    from reclora.evaluation.slices import SliceSpec, define_slices, slice_inputs, slice_metrics
    from reclora.registry.gate import decide

    if not prediction_dirs:
        raise DataError("evaluate: no predictions given")
    params = as_params(params)
    n_boot, level, seed = params.evaluation.bootstrap, params.evaluation.confidence, params.evaluation.seed
    rules = params.pipeline.promotion
    if registry_uri and data_dir is None:
        raise DataError("evaluate: re-scoring the champion (registry_uri) needs the prepared data (data_dir)")
    runs = {f"--run {n}": d for n, d in prediction_dirs.items()}
    refuse_overlap({"--out": out_dir}, runs | {"--data": data_dir, "--feature-store": feature_store})
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
            raise DataError(
                f"evaluate: model {name!r} has other labels than {next(iter(frames))!r} for the same samples"
            )
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
        tables = Tables(
            pd.DataFrame(),
            pd.read_parquet(Path(data_dir) / schema.ITEMS),
            pd.read_parquet(Path(data_dir) / schema.USERS),
        )
        items, _, users = shared_features(feature_store, tables, samples[KEY])
        champ = rescore_champion(
            registry_uri, samples, items, users, str(dataset), precision=params.train.precision, model=params.model
        )  # as the challenger was scored
        if champ["status"] == "scored":
            champ_name = f"champion {champ['version']}"
            preds[champ_name] = champ["p"]
        elif champ.get("stored") and champ["stored"].get("auc") is not None:
            stored = {
                "name": f"champion {champ['version']} (stored figure, its own test split, not re-scored)",
                **champ["stored"],
                "version": champ["version"],
                "status": champ["status"],
                "reason": champ["reason"],
            }
    slice_rows, slice_block = None, None
    if data_dir is not None:
        spec = SliceSpec.from_params(params.evaluation.slices.to_dict(), dataset)
        sl = define_slices(slice_inputs(data_dir, common), spec)
        comparisons = [(challenger, r) for r in (baseline, champ_name) if r]
        slice_rows = slice_metrics(labels, preds, sl, spec, comparisons, n_boot=n_boot, level=level, seed=seed)
        slice_block = {
            "rows": slice_rows,
            "definitions": spec.definitions(),
            "min_samples": spec.min_samples,
            "comparisons": [f"{a} - {b}" for a, b in comparisons],
            "level": level,
            "n_boot": n_boot,
        }
    from reclora.evaluation import EvaluationInputError

    try:
        evidence = _gate_evidence(
            labels, preds, challenger, baseline, champ, champ_name, slice_rows, n_boot, level, seed
        )
    except EvaluationInputError as e:  # e.g. one class only: no AUC, so no evidence either way
        evidence = {"challenger": None, "note": f"no gate evidence: {e}"}
    evidence["decision"] = decide(evidence, rules)
    extra = {}
    for name, d in prediction_dirs.items():
        mj = Path(d) / "metrics.json"
        if mj.is_file():
            extra[name] = read_json(mj)
    ctx["stage_summaries"] = {
        k: {kk: vv for kk, vv in v.items() if kk in ("train_samples", "seconds", "test", "eval")}
        for k, v in extra.items()
    }
    report = write_report(
        out_dir,
        {n: (labels, pr) for n, pr in preds.items()},
        context=ctx,
        champion=stored,
        gate=evidence,
        slices=slice_block,
    )
    return cast(EvaluateResult, report)
