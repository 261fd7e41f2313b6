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
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
import os
import re
import textwrap
from collections.abc import Mapping
from typing import Any

import numpy as np

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
from reclora.io import atomic_dir, write_json

SCHEMA_VERSION = 1
METRICS_JSON = "metrics.json"
ROC_PNG = "roc.png"
CALIBRATION_PNG = "calibration.png"
AUC_BAR_PNG = "auc_bar.png"
SLICES_PNG = "slices.png"
REPORT_HTML = "report.html"
FILES = (METRICS_JSON, ROC_PNG, CALIBRATION_PNG, AUC_BAR_PNG, REPORT_HTML)
CALIBRATION_N_BINS = 10
ROC_DECIMALS = 6
DPI = 110

# metric -> (table header, higher is better)
TABLE_METRICS = {"auc": ("AUC", True), "logloss": ("LogLoss", False), "ece": ("ECE", False), "accuracy": ("Accuracy", True)}


def format_metric(value: Any) -> str:
    """How a metric value reads in the HTML table, the legends and the bar labels."""
    if value is None:
        return "n/a"
    return f"{float(value):.4f}"


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
            "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
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
        images = {
            ROC_PNG: _plot_roc(metrics),
            CALIBRATION_PNG: _plot_calibration(metrics),
            AUC_BAR_PNG: _plot_auc_bar(metrics),
        }
        if slices:
            images[SLICES_PNG] = _plot_slices(metrics)
        for name, png in images.items():
            (tmp / name).write_bytes(png)
        (tmp / REPORT_HTML).write_text(_render_html(metrics, images), encoding="utf-8")
        write_json(tmp / METRICS_JSON, metrics)
    return metrics


# -- scoring and input checks ---------------------------------------------------------


def _score(predictions: Mapping[str, tuple[Any, Any]]) -> dict[str, dict[str, Any]]:
    if not isinstance(predictions, Mapping):
        raise EvaluationInputError(f"predictions must be a mapping of model name -> (labels, probs), got {type(predictions).__name__}")
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


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)


def _champion(champion: Mapping[str, Any] | None, models: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    if champion is None:
        return None
    if not isinstance(champion, Mapping):
        raise EvaluationInputError(f"champion must be a dict with at least 'auc', got {type(champion).__name__}")
    auc = champion.get("auc")
    if not _is_number(auc) or not 0.0 <= float(auc) <= 1.0:
        raise EvaluationInputError(f"champion['auc'] must be a number in [0, 1], got {auc!r}")
    auc = float(auc)
    logloss = champion.get("logloss")
    logloss = float(logloss) if _is_number(logloss) and logloss >= 0 else None
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


# -- plots ----------------------------------------------------------------------------


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _figure(**kw: Any) -> Any:
    # a bare Figure renders with Agg on savefig and never touches pyplot's global state
    from matplotlib.figure import Figure

    return Figure(**kw)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _plot_roc(metrics: Mapping[str, Any]) -> bytes:
    fig = _figure(figsize=(6.4, 5.8), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle=":", color="0.55", linewidth=1, label="chance (AUC 0.5000)")
    names = metrics["model_order"]
    for name, color in zip(names, _colors(len(names))):
        m = metrics["models"][name]
        if m["roc"] is None:
            ax.plot([], [], color=color, label=f"{name} (AUC n/a: one class)")
            continue
        ax.plot(m["roc"]["fpr"], m["roc"]["tpr"], color=color, linewidth=1.8, label=f"{name} (AUC {format_metric(m['auc'])})")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate", ylabel="True positive rate", title="ROC curves")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8.5, framealpha=0.9)
    return _png(fig)


def _plot_calibration(metrics: Mapping[str, Any]) -> bytes:
    fig = _figure(figsize=(6.4, 7.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], linestyle="--", color="0.45", linewidth=1, label="perfectly calibrated")
    names = metrics["model_order"]
    for name, color in zip(names, _colors(len(names))):
        cal = metrics["models"][name]["calibration"]
        pts = [(x, y) for x, y in zip(cal["mean_predicted"], cal["observed_rate"]) if x is not None]
        xs, ys = zip(*pts)
        top.plot(xs, ys, marker="o", markersize=4, color=color, linewidth=1.5, label=f"{name} (ECE {cal['ece']:.3f})")
        edges = np.asarray(cal["edges"])
        counts = np.asarray(cal["count"], dtype=float)
        share = counts / counts.sum()
        bottom.stairs(share, edges, baseline=None, color=color, linewidth=1.5)
    top.set(xlim=(-0.01, 1.01), ylim=(-0.02, 1.02), ylabel="Observed positive rate", title="Calibration (reliability diagram)")
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=8.5, framealpha=0.9)
    bottom.set(xlabel="Mean predicted probability (per bin)", ylabel="Share of samples")
    bottom.set_ylim(bottom=0)
    bottom.grid(alpha=0.3)
    return _png(fig)


def _auc_ylim(values: list[float]) -> tuple[float, float]:
    """A y-range zoomed around the AUC values, with room below the lowest bar and for labels above."""
    lo, hi = min(values), max(values)
    span = max(hi - lo, 0.05)
    bottom = max(0.0, lo - 0.6 * span)
    top = min(1.0 + 0.05 * span, hi + 0.45 * span)
    return bottom, max(top, hi + 0.15 * span)


def _plot_auc_bar(metrics: Mapping[str, Any]) -> bytes:
    names = metrics["model_order"]
    aucs = [metrics["models"][n]["auc"] for n in names]
    champ = metrics["champion"]
    fig = _figure(figsize=(max(5.5, 1.25 * len(names) + 2.5), 4.6), layout="constrained")
    ax = fig.add_subplot()
    values = [a for a in aucs if a is not None] + ([champ["auc"]] if champ else [])
    bottom, top = _auc_ylim(values) if values else (0.0, 1.0)
    x = np.arange(len(names))
    colors = _colors(len(names))
    heights = [a if a is not None else bottom for a in aucs]
    ax.bar(x, [h - bottom for h in heights], bottom=bottom, color=colors, width=0.62, edgecolor="0.25", linewidth=0.6)
    pad = 0.015 * (top - bottom)
    for xi, a in zip(x, aucs):
        y = a if a is not None else bottom
        ax.text(xi, y + pad, format_metric(a), ha="center", va="bottom", fontsize=9, fontweight="bold")
    if champ:
        ax.axhline(champ["auc"], color="0.15", linestyle="--", linewidth=1.3,
                   label=f"champion {champ['name']} ({format_metric(champ['auc'])})")
        ax.legend(loc="best", fontsize=8.5, framealpha=0.9)
    ax.set_xticks(x, [textwrap.fill(n, 14) for n in names], fontsize=9)
    ax.set_ylim(bottom, top)
    ax.set_ylabel("AUC" + (" (axis zoomed, not from 0)" if bottom > 0 else ""))
    ax.set_title("AUC per model")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return _png(fig)


# -- HTML -----------------------------------------------------------------------------

_CSS = """
body{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
margin:2rem auto;max-width:1100px;padding:0 1rem;color:#222;line-height:1.45}
h1{margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.meta{color:#666;font-size:.9rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.95rem}
th,td{border:1px solid #d5d5d5;padding:.35rem .7rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.best{background:#d9f2d9;font-weight:700}
tr.champion td{font-style:italic;color:#444;background:#fafafa}
.pos{color:#11772b}.neg{color:#b3261e}
.figs{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-start}
figure{margin:0;flex:1 1 460px}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.85rem}
pre{margin:0;font-size:.85rem;white-space:pre-wrap}
.note{color:#666;font-size:.85rem}
section.decision{border-left:6px solid #b3261e;background:#fbf1f0;padding:.2rem 1rem .6rem;margin:1rem 0}
section.decision.promote{border-left-color:#11772b;background:#eef8f0}
section.decision h2{border:0;margin-top:.6rem}
"""


def _delta(d: float | None) -> str:
    if d is None:
        return '<td class="num">n/a</td>'
    cls = "pos" if d > 0 else "neg" if d < 0 else ""
    return f'<td class="num {cls}">{d:+.4f}</td>'


def _render_table(metrics: Mapping[str, Any]) -> str:
    names = metrics["model_order"]
    models = metrics["models"]
    champ = metrics["champion"]
    best_value = {k: (models[b][k] if b is not None else None) for k, b in metrics["best"].items()}
    head = "".join(f"<th>{label}</th>" for label, _ in TABLE_METRICS.values())
    head = f"<tr><th>Model</th>{head}<th>n</th><th>Positive rate</th>"
    head += "<th>&Delta;AUC vs stored champion figure</th>" if champ else ""
    rows = [head + "</tr>"]
    for name in names:
        m = models[name]
        cells = [f"<td>{html.escape(name)}</td>"]
        for key in TABLE_METRICS:
            v = m[key]
            best = v is not None and len(names) > 1 and v == best_value[key]
            reason = f' title="{html.escape(m["auc_reason"])}"' if key == "auc" and v is None else ""
            cells.append(f'<td class="num{" best" if best else ""}"{reason}>{format_metric(v)}</td>')
        cells.append(f'<td class="num">{m["n"]:,}</td>')
        cells.append(f'<td class="num">{format_metric(m["positive_rate"])}</td>')
        if champ:
            cells.append(_delta(champ["per_model"][name]["auc_delta"]))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    if champ:
        n = champ["details"].get("n")
        cells = [f"<td>{html.escape(champ['name'])}</td>",
                 f'<td class="num">{format_metric(champ["auc"])}</td>',
                 f'<td class="num">{format_metric(champ["logloss"])}</td>']
        cells += ['<td class="num"></td>'] * (len(TABLE_METRICS) - 2)
        cells += [f'<td class="num">{int(n):,}</td>' if _is_number(n) else '<td class="num"></td>',
                  '<td class="num"></td><td class="num"></td>']  # fmt: skip
        rows.append('<tr class="champion">' + "".join(cells) + "</tr>")
    return "<table>\n" + "\n".join(rows) + "\n</table>"


def _render_kv(d: Mapping[str, Any]) -> str:
    rows = []
    for k, v in d.items():
        if isinstance(v, (dict, list)):
            val = f"<pre>{html.escape(json.dumps(v, indent=2, sort_keys=True))}</pre>"
        else:
            val = html.escape("null" if v is None else str(v))
        rows.append(f"<tr><th>{html.escape(str(k))}</th><td>{val}</td></tr>")
    return "<table>\n" + "\n".join(rows) + "\n</table>"


def _samples(metrics: Mapping[str, Any]) -> str:
    n = (metrics.get("context") or {}).get("evaluated_samples")
    if n is None:
        n = next(iter(metrics["models"].values()))["n"]
    return f"{int(n):,}"


def _summary(metrics: Mapping[str, Any]) -> str:
    best = metrics["best"]["auc"]
    parts = []
    if best is not None:
        auc = metrics["models"][best]["auc"]
        parts.append(f"Best AUC on these {_samples(metrics)} samples: <b>{html.escape(best)}</b> ({format_metric(auc)}).")
    else:
        parts.append("No model has a defined AUC (only one class in the labels).")
    champ = metrics["champion"]
    if champ:
        n = champ["details"].get("n")
        on = f"its own test split of {int(n):,} samples" if _is_number(n) else "its own test split"
        parts.append(
            f"The champion <b>{html.escape(champ['name'])}</b> is shown by its stored figure (AUC "
            f"{format_metric(champ['auc'])}, on {on}, not on these samples): compare with care."
        )
    return "<p>" + " ".join(parts) + "</p>"


def _ci(lo: Any, hi: Any) -> str:
    return f"[{lo:+.4f}, {hi:+.4f}]" if _is_number(lo) and _is_number(hi) else ""


def _render_decision(gate: Mapping[str, Any]) -> str:
    """The decision and why: promote or not, then one row per check of the gate."""
    d = gate.get("decision") or {}
    ok = bool(d.get("promote"))
    head = "Decision: promote" if ok else "Decision: not promoted"
    n = gate.get("samples")
    level = gate.get("level")
    lvl = f"{float(level):.0%} " if _is_number(level) else ""
    rows = ["<tr><th>Check</th><th>Figure</th><th>" + lvl + "interval</th><th>Must clear</th><th>Result</th></tr>"]
    for c in d.get("checks") or []:
        res = {True: '<span class="pos">pass</span>', False: '<span class="neg">fail</span>', None: "n/a"}[c.get("passed")]
        if "diff" in c:
            fig = (f"AUC {format_metric(c.get('auc'))} vs {format_metric(c.get('reference_auc'))}: "
                   f"&Delta; {c['diff']:+.4f}")  # fmt: skip
            ci, need = _ci(c.get("lo"), c.get("hi")), f"lower end &gt; {c['margin']:+.4f}"
        elif "logloss" in c:
            fig = f"LogLoss {format_metric(c.get('logloss'))} vs {format_metric(c.get('reference_logloss'))}"
            ci, need = "", f"&le; {format_metric(c.get('ceiling'))}"
        elif "drop" in c:
            fig = f"{c['drop']:+.4f} AUC below {html.escape(str(c['reference']))} on {html.escape(str(c['slice']))}"
            ci, need = "", f"&le; {c['max_slice_drop']:.4f}"
        else:
            fig, ci, need = html.escape(str(c.get("text", ""))), "", ""
        rows.append(f"<tr><td>{html.escape(str(c.get('check')))}</td><td>{fig}</td><td class=\"num\">{ci}</td>"
                    f"<td>{need}</td><td>{res}</td></tr>")  # fmt: skip
    champ = gate.get("champion") or {}
    status = champ.get("status", "none")
    notes = []
    if status == "scored":
        notes.append(f"The champion {html.escape(str(champ.get('version')))} was re-scored on these samples "
                     "(its registered CRM and adapter, as served).")  # fmt: skip
    elif status != "none":
        notes.append(f"The champion {html.escape(str(champ.get('version')))} is {html.escape(status)}: "
                     f"{html.escape(str(champ.get('reason')))}.")  # fmt: skip
    if gate.get("note"):
        notes.append(html.escape(str(gate["note"])))
    on = f"every figure on the same {int(n):,} samples" if _is_number(n) else "every figure on the same samples"
    rules = d.get("rules") or {}
    rule_text = ", ".join(f"{k} {json.dumps(v)}" for k, v in rules.items())
    return (f'<section class="decision {"promote" if ok else "hold"}">\n<h2>{head}</h2>\n'
            f"<p>{html.escape(str(d.get('reason', '')))}</p>\n"
            + ("<table>\n" + "\n".join(rows) + "\n</table>\n" if d.get("checks") else "")
            + f'<p class="note">{" ".join(notes)} Paired bootstrap intervals, {on}. Rules: {html.escape(rule_text)}.</p>\n'
            "</section>")  # fmt: skip


def _slice_models(metrics: Mapping[str, Any]) -> list[str]:
    rows = (metrics.get("slices") or {}).get("rows") or []
    first = next((r for r in rows if r.get("scored")), None)
    return [n for n in metrics["model_order"] if first and n in first["models"]]


def _render_slices(metrics: Mapping[str, Any], png: bytes | None) -> str:
    s = metrics["slices"]
    names = _slice_models(metrics)
    comps = list(s.get("comparisons") or [])
    lvl = f"{float(s['level']):.0%}" if _is_number(s.get("level")) else ""
    head = "<tr><th>Slice</th><th>n</th><th>Positive rate</th>"
    head += "".join(f"<th>{html.escape(n)} AUC [{lvl}]</th>" for n in names)
    head += "".join(f"<th>&Delta;AUC {html.escape(c)} [{lvl}]</th>" for c in comps) + "</tr>"
    rows = [head]
    width = len(names) + len(comps)
    for r in s["rows"]:
        pos = r["positives"] / r["n"] if r["n"] else None
        cells = [f"<td>{html.escape(r['feature'])}: <b>{html.escape(r['value'])}</b></td>", f'<td class="num">{r["n"]:,}</td>',
                 f'<td class="num">{format_metric(pos)}</td>']  # fmt: skip
        if not r.get("scored"):
            cells.append(f'<td class="note" colspan="{max(width, 1)}">{html.escape(r["note"])}</td>')
        else:
            for n in names:
                m = r["models"][n]
                cells.append(f'<td class="num">{format_metric(m["auc"])}<br><small>[{format_metric(m["lo"])}, '
                             f'{format_metric(m["hi"])}]</small></td>')
            for c in comps:
                d = r["diffs"][c]
                cls = "pos" if d["lo"] > 0 else "neg" if d["hi"] < 0 else ""
                cells.append(f'<td class="num {cls}">{d["diff"]:+.4f}<br><small>{_ci(d["lo"], d["hi"])}</small></td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    defs = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in (s.get("definitions") or {}).items())
    img = ""
    if png:
        b64 = base64.b64encode(png).decode("ascii")
        img = (f'<figure><img src="data:image/png;base64,{b64}" alt="AUC per slice"><figcaption>AUC per slice and model '
               f"with its {lvl} paired bootstrap interval (slices with at least {s.get('min_samples')} samples and both "
               "classes).</figcaption></figure>")  # fmt: skip
    return ("<h2>Slices</h2>\n<table>\n" + "\n".join(rows) + "\n</table>\n"
            f'<p class="note">Green: the interval of the difference lies above 0; red: below. Slices with fewer than '
            f"{s.get('min_samples')} samples or one class only are listed, not scored.</p>\n"
            f'<ul class="note">{defs}</ul>\n{img}')  # fmt: skip


def _plot_slices(metrics: Mapping[str, Any]) -> bytes:
    """Forest plot: one row per scored slice, one marker per model at its AUC, its bootstrap interval as a bar."""
    rows = [r for r in metrics["slices"]["rows"] if r.get("scored")]
    names = _slice_models(metrics)
    fig = _figure(figsize=(7.6, max(2.5, 0.42 * len(rows) + 1.4)), layout="constrained")
    ax = fig.add_subplot()
    if not rows:
        ax.text(0.5, 0.5, "no slice with enough samples to score", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _png(fig)
    k = len(names)
    for j, (name, color) in enumerate(zip(names, _colors(k))):
        off = (j - (k - 1) / 2) * min(0.8 / max(k, 1), 0.22)
        ys = [i + off for i in range(len(rows))]
        auc = [r["models"][name]["auc"] for r in rows]
        lo = [r["models"][name]["auc"] - r["models"][name]["lo"] for r in rows]
        hi = [r["models"][name]["hi"] - r["models"][name]["auc"] for r in rows]
        ax.errorbar(auc, ys, xerr=[lo, hi], fmt="o", markersize=4, color=color, elinewidth=1.2, capsize=2, label=name)
    ax.set_yticks(range(len(rows)), [f"{r['feature']}: {r['value']} (n={r['n']:,})" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0.5, color="0.6", linestyle=":", linewidth=1)
    ax.set_xlabel("AUC (with its paired bootstrap interval)")
    ax.set_title("AUC per slice")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    return _png(fig)


def _render_html(metrics: Mapping[str, Any], images: Mapping[str, bytes]) -> str:
    title = html.escape(metrics["title"])
    n = _samples(metrics)
    captions = {
        ROC_PNG: f"ROC curves of all models on the same {n} samples (AUC in the legend).",
        CALIBRATION_PNG: "Reliability diagram: observed positive rate against mean predicted "
        "probability per bin; the dashed diagonal is perfect calibration. Below: share of samples per bin.",
        AUC_BAR_PNG: f"AUC per model on the same {n} samples"
        + ("; the dashed line is the champion's stored figure, from its own test split." if metrics["champion"] else "."),
    }
    figs = []
    for name, png in images.items():
        if name not in captions:
            continue
        b64 = base64.b64encode(png).decode("ascii")
        alt = html.escape(captions[name].split(":")[0].split(";")[0].split(" on the same")[0].rstrip("."))
        figs.append(
            f'<figure><img src="data:image/png;base64,{b64}" alt="{alt}">'
            f"<figcaption>{html.escape(captions[name])}</figcaption></figure>"
        )
    context = _render_kv(metrics["context"]) if metrics["context"] else '<p class="note">No context given.</p>'
    champ = metrics["champion"]
    champ_html = ""
    if champ:
        info = {"name": champ["name"], "auc": format_metric(champ["auc"])}
        if champ["logloss"] is not None:
            info["logloss"] = format_metric(champ["logloss"])
        info.update(champ["details"])
        champ_html = "<h2>Champion (stored figures)</h2>\n" + _render_kv(info)
    decision = _render_decision(metrics["gate"]) if metrics.get("gate") else ""
    slices = _render_slices(metrics, images.get(SLICES_PNG)) if metrics.get("slices") else ""
    defs = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in metrics["definitions"].items())
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{title}</h1>
<p class="meta">Generated {html.escape(metrics["generated_at"])} &middot; {len(metrics["model_order"])} model(s) &middot; {n} samples, the same for every model</p>
{decision}
{slices}
<h2>Metrics</h2>
{_summary(metrics)}
{_render_table(metrics)}
<p class="note">Every model on the same {n} samples. Best value per column highlighted (highest AUC and accuracy, lowest LogLoss and ECE).</p>
<h2>Plots</h2>
<div class="figs">
{chr(10).join(figs)}
</div>
{champ_html}
<h2>Context</h2>
{context}
<h2>Definitions</h2>
<ul class="note">{defs}</ul>
</body>
</html>
"""


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
    if _is_number(n):
        out["evaluated_samples"] = float(n)
    for name, m in metrics["models"].items():
        for k in ("auc", "logloss", "ece"):
            if _is_number(m.get(k)):
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
    rows += [f"Every model on the same {_samples(metrics)} samples.", "",
             "| model | AUC | LogLoss | ECE | accuracy | n |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, v in metrics["models"].items():
        rows.append(f"| {name} | {format_metric(v['auc'])} | {format_metric(v['logloss'])} | {format_metric(v['ece'])} "
                    f"| {format_metric(v['accuracy'])} | {v['n']} |")  # fmt: skip
    champ = gate.get("champion") or {}
    if champ.get("status") not in (None, "none", "scored"):
        rows += ["", f"Champion {champ.get('version')}: {champ['status']} ({champ.get('reason')})"]
    return "\n".join(rows) + "\n"
