"""The evaluation report's plots as PNG bytes (matplotlib's Agg renderer on bare Figures, never pyplot's
global state): ROC curves, the reliability diagram, AUC per model and AUC per slice, all from the
``metrics.json`` dict of :func:`reclora.evaluation.report.write_report`."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping
from typing import Any

import numpy as np

from reclora.evaluation.formatting import format_metric, slice_models

ROC_PNG = "roc.png"
CALIBRATION_PNG = "calibration.png"
AUC_BAR_PNG = "auc_bar.png"
SLICES_PNG = "slices.png"
DPI = 110


def render_plots(metrics: Mapping[str, Any]) -> dict[str, bytes]:
    """The report's PNGs by file name: ROC_PNG, CALIBRATION_PNG, AUC_BAR_PNG, and SLICES_PNG when
    ``metrics`` holds slices. ``metrics``: the dict :func:`reclora.evaluation.report.write_report` builds."""
    images = {
        ROC_PNG: _plot_roc(metrics),
        CALIBRATION_PNG: _plot_calibration(metrics),
        AUC_BAR_PNG: _plot_auc_bar(metrics),
    }
    if metrics.get("slices"):
        images[SLICES_PNG] = _plot_slices(metrics)
    return images


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
        ax.plot(
            m["roc"]["fpr"],
            m["roc"]["tpr"],
            color=color,
            linewidth=1.8,
            label=f"{name} (AUC {format_metric(m['auc'])})",
        )
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
    top.set(
        xlim=(-0.01, 1.01),
        ylim=(-0.02, 1.02),
        ylabel="Observed positive rate",
        title="Calibration (reliability diagram)",
    )
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
        ax.axhline(
            champ["auc"],
            color="0.15",
            linestyle="--",
            linewidth=1.3,
            label=f"champion {champ['name']} ({format_metric(champ['auc'])})",
        )
        ax.legend(loc="best", fontsize=8.5, framealpha=0.9)
    ax.set_xticks(x, [textwrap.fill(n, 14) for n in names], fontsize=9)
    ax.set_ylim(bottom, top)
    ax.set_ylabel("AUC" + (" (axis zoomed, not from 0)" if bottom > 0 else ""))
    ax.set_title("AUC per model")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return _png(fig)


def _plot_slices(metrics: Mapping[str, Any]) -> bytes:
    """Forest plot: one row per scored slice, one marker per model at its AUC, its bootstrap interval as a bar."""
    rows = [r for r in metrics["slices"]["rows"] if r.get("scored")]
    names = slice_models(metrics)
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
