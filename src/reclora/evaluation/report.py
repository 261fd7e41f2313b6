"""The evaluation report: metrics for several models side by side, three plots and one HTML page.

    from reclora.evaluation import write_report
    metrics = write_report(out_dir, {"CRM": (labels, probs), "RecLoRA": (labels, probs2)},
                           context={"dataset": "ml-1m", "data_version": "abc123"},
                           champion={"name": "RecLoRA v3", "auc": 0.781})

Report layout (``out_dir`` is owned by the report and replaced as a whole, atomically,
with :func:`reclora.io.atomic_dir`: a failure part-way leaves the previous report intact)::

    out_dir/
      metrics.json     every figure: per-model metrics, calibration bins, ROC points,
                       best model per metric, context, champion comparison, the promotion
                       gate's evidence and decision (``gate``), sliced metrics (``slices``)
      roc.png          ROC curves of all models, AUC in the legend
      calibration.png  reliability diagram of all models (+ prediction histogram)
      auc_bar.png      AUC per model, y-axis zoomed on the values, champion as a dashed line
      slices.png       AUC per slice and model with its bootstrap interval (with ``slices``)
      report.html      one self-contained page (plots embedded as base64 data URIs), so it
                       works as a single KFP HTML artifact: the decision and why first, then
                       the slices (table and plot), then the headline table and the rest

``metrics.json`` holds exactly the dict :func:`write_report` returns.

This module scores the models, builds that dict, writes the directory and reads the dict back as flat
figures (:func:`flat_metrics`) and a Markdown summary (:func:`summary_markdown`) for a metrics logger; the
PNGs are drawn by :mod:`reclora.evaluation.plots`, the page by :mod:`reclora.evaluation.page`, with the
shared wording of :mod:`reclora.evaluation.formatting`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from reclora.evaluation.formatting import TABLE_METRICS, format_metric, is_number, samples_text
from reclora.evaluation.metrics import (
    EPS,
    MAX_ROC_POINTS,
    THRESHOLD,
    EvaluationInputError,
    calibration_bins,
    ctr_metrics,
    roc_points,
    validate,
)
from reclora.evaluation.page import render_html
from reclora.evaluation.plots import AUC_BAR_PNG, CALIBRATION_PNG, ROC_PNG, SLICES_PNG, render_plots
from reclora.io import atomic_dir, write_json

SCHEMA_VERSION = 1
METRICS_JSON = "metrics.json"
REPORT_HTML = "report.html"
FILES = (METRICS_JSON, ROC_PNG, CALIBRATION_PNG, AUC_BAR_PNG, REPORT_HTML)
CALIBRATION_N_BINS = 10
ROC_DECIMALS = 6


def write_report(
    out_dir: str | os.PathLike[str],
    predictions: Mapping[str, tuple[Any, Any]],
    *,
    title: str = "RecLoRA evaluation",
    context: Mapping[str, Any] | None = None,
    champion: Mapping[str, Any] | None = None,
    gate: Mapping[str, Any] | None = None,
    slices: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Score every model, write the report into ``out_dir`` atomically, return ``metrics.json``'s dict.

    ``predictions`` maps a model name (in the order to show) to ``(labels, probs)``, all on the same samples.
    ``context`` (dataset, sample counts, data version, ...) is recorded as given.
    ``champion`` is a stored figure to show beside them (a champion that could not be re-scored on these
    samples): ``{"auc": float, "name": str (or "model"), ...}``; other keys (``logloss``, ``n``, a version,
    a reason, ...) are kept under ``details``; the page says it is not on these samples.
    ``gate``: the promotion gate's evidence with its ``decision`` (``reclora.registry.gate``); the page
    opens with it. ``slices``: ``{"rows": reclora.evaluation.slices.slice_metrics(...), "definitions",
    "min_samples", "comparisons", "level"}``; a table and ``slices.png`` follow the decision.
    All input is checked before anything is written; problems raise ``ValueError``.
    """
    models = _score(predictions)
    if gate is not None and not isinstance(gate, Mapping):
        raise EvaluationInputError(f"gate must be a dict, got {type(gate).__name__}")
    if slices is not None and not (isinstance(slices, Mapping) and isinstance(slices.get("rows"), list)):
        raise EvaluationInputError("slices must be a dict with a list of slice rows under 'rows'")
    metrics = _jsonable(
        {
            "schema_version": SCHEMA_VERSION,
            "title": str(title),
            "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "model_order": list(models),
            "models": models,
            "best": _best(models),
            "champion": _champion(champion, models),
            "gate": gate,
            "slices": slices,
            "context": _context(context),
            "definitions": {
                "auc": "area under the ROC curve (ties count one half); null when only one class is present",
                "logloss": f"mean binary cross-entropy, probabilities clipped to [{EPS:g}, 1 - {EPS:g}]",
                "accuracy": f"share of samples with (prob >= {THRESHOLD}) == label",
                "calibration": f"{CALIBRATION_N_BINS} equal-width bins of the predicted probability; "
                "ece = count-weighted mean |mean_predicted - observed_rate|",
                "ece": "expected calibration error: the calibration block's ece",
                "interval": "paired bootstrap: every model scored on the same resamples (with replacement) of the "
                "samples; the central interval of the AUC (difference) over the resamples",
                "roc": f"points downsampled to at most {MAX_ROC_POINTS}, rounded to {ROC_DECIMALS} decimals",
            },
            "files": list(FILES) + ([SLICES_PNG] if slices else []),
        }
    )
    # exactly what json round-trips to (and no NaN), so the file and the return value agree
    metrics = json.loads(json.dumps(metrics, allow_nan=False))

    with atomic_dir(out_dir) as tmp:
        images = render_plots(metrics)
        for name, png in images.items():
            (tmp / name).write_bytes(png)
        (tmp / REPORT_HTML).write_text(render_html(metrics, images), encoding="utf-8")
        write_json(tmp / METRICS_JSON, metrics)
    return metrics


# -- scoring and input checks ---------------------------------------------------------


def _score(predictions: Mapping[str, tuple[Any, Any]]) -> dict[str, dict[str, Any]]:
    if not isinstance(predictions, Mapping):
        raise EvaluationInputError(
            f"predictions must be a mapping of model name -> (labels, probs), got {type(predictions).__name__}"
        )
    if not predictions:
        raise EvaluationInputError("predictions is empty: nothing to evaluate")
    models: dict[str, dict[str, Any]] = {}
    for name, pair in predictions.items():
        if not isinstance(name, str) or not name.strip():
            raise EvaluationInputError(f"model names must be non-empty strings, got {name!r}")
        if isinstance(pair, (str, bytes)) or not hasattr(pair, "__len__") or len(pair) != 2:
            raise EvaluationInputError(f"model {name!r}: expected a (labels, probs) pair")
        try:
            y, p = validate(*pair)
            m = ctr_metrics(y, p)
            m["calibration"] = calibration_bins(y, p, CALIBRATION_N_BINS)
            m["ece"] = m["calibration"]["ece"]
            if m["auc"] is None:
                m["roc"] = None
            else:
                fpr, tpr = roc_points(y, p)
                m["roc"] = {
                    "fpr": [round(float(v), ROC_DECIMALS) for v in fpr],
                    "tpr": [round(float(v), ROC_DECIMALS) for v in tpr],
                }
        except ValueError as e:
            raise EvaluationInputError(f"model {name!r}: {e}") from None
        models[name] = m
    return models


def _best(models: Mapping[str, Mapping[str, Any]]) -> dict[str, str | None]:
    """The best model per table metric (first in caller order on ties; None if no model has it)."""
    best: dict[str, str | None] = {}
    for key, (_, higher) in TABLE_METRICS.items():
        scored = [(name, m[key]) for name, m in models.items() if m[key] is not None]
        if not scored:
            best[key] = None
            continue
        target = (max if higher else min)(v for _, v in scored)
        best[key] = next(name for name, v in scored if v == target)
    return best


def _champion(champion: Mapping[str, Any] | None, models: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    if champion is None:
        return None
    if not isinstance(champion, Mapping):
        raise EvaluationInputError(f"champion must be a dict with at least 'auc', got {type(champion).__name__}")
    auc = champion.get("auc")
    if not is_number(auc) or not 0.0 <= float(auc) <= 1.0:
        raise EvaluationInputError(f"champion['auc'] must be a number in [0, 1], got {auc!r}")
    auc = float(auc)
    logloss = champion.get("logloss")
    logloss = float(logloss) if is_number(logloss) and logloss >= 0 else None
    per_model: dict[str, dict[str, Any]] = {}
    for name, m in models.items():
        d = None if m["auc"] is None else m["auc"] - auc
        per_model[name] = {
            "auc_delta": d,
            "beats_champion": None if d is None else bool(d > 0),
            "logloss_delta": None if logloss is None else m["logloss"] - logloss,
        }
    scored = [(n, m["auc"]) for n, m in models.items() if m["auc"] is not None]
    best = max(scored, key=lambda nv: nv[1])[0] if scored else None
    return {
        "name": str(champion.get("name") or champion.get("model") or "champion"),
        "auc": auc,
        "logloss": logloss,
        "details": {k: v for k, v in champion.items() if k not in ("name", "model", "auc", "logloss")},
        "per_model": per_model,
        "best_model": best,
        "best_model_auc_delta": None if best is None else per_model[best]["auc_delta"],
        "best_model_beats_champion": None if best is None else per_model[best]["beats_champion"],
    }


def _context(context: Mapping[str, Any] | None) -> dict[str, Any]:
    if context is None:
        return {}
    if not isinstance(context, Mapping):
        raise EvaluationInputError(f"context must be a dict, got {type(context).__name__}")
    return dict(context)


def _jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays unwrapped, paths and other objects as strings,
    non-finite floats as None, tuples as lists, keys as strings."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in (sorted(obj, key=str) if isinstance(obj, (set, frozenset)) else obj)]
    if isinstance(obj, (dt.datetime, dt.date)):
        return obj.isoformat()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)


# -- flat figures and a short summary (for a metrics logger, e.g. a KFP Metrics artifact) -----------


def _key(*parts: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", " ".join(parts).lower()).strip("_")


def flat_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The report's figures as one flat ``{name: number}``: ``evaluated_samples``; per model ``<model>_auc``,
    ``_logloss``, ``_ece`` (model names lower-cased, non-alphanumerics as ``_``); the gate's ``promote`` (0/1)
    and ``auc_diff|lo|hi_vs_baseline|champion``; per slice ``slice_<feature>_<value>_n`` and
    ``slice_<feature>_<value>_<model>_auc``. Undefined values (an AUC of one class) are left out."""
    out: dict[str, float] = {}
    n = (metrics.get("context") or {}).get("evaluated_samples")
    if is_number(n):
        out["evaluated_samples"] = float(n)
    for name, m in metrics["models"].items():
        for k in ("auc", "logloss", "ece"):
            if is_number(m.get(k)):
                out[_key(name, k)] = float(m[k])
    gate = metrics.get("gate") or {}
    if gate.get("decision"):
        out["promote"] = float(bool(gate["decision"]["promote"]))
    for ref in ("baseline", "champion"):
        d = (gate.get(ref) or {}).get("diff")
        for k in ("diff", "lo", "hi") if d else ():
            out[f"auc_{k}_vs_{ref}"] = float(d[k])
    for r in (metrics.get("slices") or {}).get("rows", []):
        key = _key("slice", r["feature"], r["value"])
        out[f"{key}_n"] = float(r["n"])
        for name, v in (r.get("models") or {}).items():
            out[_key(key, name, "auc")] = float(v["auc"])
    return out


def summary_markdown(metrics: Mapping[str, Any]) -> str:
    """A few lines of markdown: the gate's decision and why, then every model's AUC, LogLoss, ECE, accuracy."""
    gate = metrics.get("gate") or {}
    d = gate.get("decision")
    rows = []
    if d:
        rows += [f"**{'Promote' if d['promote'] else 'Not promoted'}**: {d['reason']}", ""]
    rows += [
        f"Every model on the same {samples_text(metrics)} samples.",
        "",
        "| model | AUC | LogLoss | ECE | accuracy | n |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in metrics["models"].items():
        rows.append(
            f"| {name} | {format_metric(v['auc'])} | {format_metric(v['logloss'])} | {format_metric(v['ece'])} "
            f"| {format_metric(v['accuracy'])} | {v['n']} |"
        )
    champ = gate.get("champion") or {}
    if champ.get("status") not in (None, "none", "scored"):
        rows += ["", f"Champion {champ.get('version')}: {champ['status']} ({champ.get('reason')})"]
    return "\n".join(rows) + "\n"
