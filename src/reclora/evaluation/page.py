"""The evaluation report's one self-contained HTML page (plots embedded as base64 data URIs, so it works as
a single KFP HTML artifact): the promotion decision and why first, then the slices (table and plot), then
the headline table, the plots, the champion's stored figures, the context and the definitions."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from typing import Any

from reclora.evaluation.formatting import TABLE_METRICS, format_metric, is_number, samples_text, slice_models
from reclora.evaluation.plots import AUC_BAR_PNG, CALIBRATION_PNG, ROC_PNG, SLICES_PNG

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
        cells = [
            f"<td>{html.escape(champ['name'])}</td>",
            f'<td class="num">{format_metric(champ["auc"])}</td>',
            f'<td class="num">{format_metric(champ["logloss"])}</td>',
        ]
        cells += ['<td class="num"></td>'] * (len(TABLE_METRICS) - 2)
        cells += [
            f'<td class="num">{int(n):,}</td>' if is_number(n) else '<td class="num"></td>',
            '<td class="num"></td><td class="num"></td>',
        ]
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


def _summary(metrics: Mapping[str, Any]) -> str:
    best = metrics["best"]["auc"]
    parts = []
    if best is not None:
        auc = metrics["models"][best]["auc"]
        parts.append(
            f"Best AUC on these {samples_text(metrics)} samples: <b>{html.escape(best)}</b> ({format_metric(auc)})."
        )
    else:
        parts.append("No model has a defined AUC (only one class in the labels).")
    champ = metrics["champion"]
    if champ:
        n = champ["details"].get("n")
        on = f"its own test split of {int(n):,} samples" if is_number(n) else "its own test split"
        parts.append(
            f"The champion <b>{html.escape(champ['name'])}</b> is shown by its stored figure (AUC "
            f"{format_metric(champ['auc'])}, on {on}, not on these samples): compare with care."
        )
    return "<p>" + " ".join(parts) + "</p>"


def _ci(lo: Any, hi: Any) -> str:
    return f"[{lo:+.4f}, {hi:+.4f}]" if is_number(lo) and is_number(hi) else ""


def _render_decision(gate: Mapping[str, Any]) -> str:
    """The decision and why: promote or not, then one row per check of the gate."""
    d = gate.get("decision") or {}
    ok = bool(d.get("promote"))
    head = "Decision: promote" if ok else "Decision: not promoted"
    n = gate.get("samples")
    level = gate.get("level")
    lvl = f"{float(level):.0%} " if is_number(level) else ""
    rows = ["<tr><th>Check</th><th>Figure</th><th>" + lvl + "interval</th><th>Must clear</th><th>Result</th></tr>"]
    for c in d.get("checks") or []:
        res = {True: '<span class="pos">pass</span>', False: '<span class="neg">fail</span>', None: "n/a"}[
            c.get("passed")
        ]
        if "diff" in c:
            fig = (
                f"AUC {format_metric(c.get('auc'))} vs {format_metric(c.get('reference_auc'))}: "
                f"&Delta; {c['diff']:+.4f}"
            )
            ci, need = _ci(c.get("lo"), c.get("hi")), f"lower end &gt; {c['margin']:+.4f}"
        elif "logloss" in c:
            fig = f"LogLoss {format_metric(c.get('logloss'))} vs {format_metric(c.get('reference_logloss'))}"
            ci, need = "", f"&le; {format_metric(c.get('ceiling'))}"
        elif "drop" in c:
            fig = f"{c['drop']:+.4f} AUC below {html.escape(str(c['reference']))} on {html.escape(str(c['slice']))}"
            ci, need = "", f"&le; {c['max_slice_drop']:.4f}"
        else:
            fig, ci, need = html.escape(str(c.get("text", ""))), "", ""
        rows.append(
            f'<tr><td>{html.escape(str(c.get("check")))}</td><td>{fig}</td><td class="num">{ci}</td>'
            f"<td>{need}</td><td>{res}</td></tr>"
        )
    champ = gate.get("champion") or {}
    status = champ.get("status", "none")
    notes = []
    if status == "scored":
        notes.append(
            f"The champion {html.escape(str(champ.get('version')))} was re-scored on these samples "
            "(its registered CRM and adapter, as served)."
        )
    elif status != "none":
        notes.append(
            f"The champion {html.escape(str(champ.get('version')))} is {html.escape(status)}: "
            f"{html.escape(str(champ.get('reason')))}."
        )
    if gate.get("note"):
        notes.append(html.escape(str(gate["note"])))
    on = f"every figure on the same {int(n):,} samples" if is_number(n) else "every figure on the same samples"
    rules = d.get("rules") or {}
    rule_text = ", ".join(f"{k} {json.dumps(v)}" for k, v in rules.items())
    return (
        f'<section class="decision {"promote" if ok else "hold"}">\n<h2>{head}</h2>\n'
        f"<p>{html.escape(str(d.get('reason', '')))}</p>\n"
        + ("<table>\n" + "\n".join(rows) + "\n</table>\n" if d.get("checks") else "")
        + f'<p class="note">{" ".join(notes)} Paired bootstrap intervals, {on}. Rules: {html.escape(rule_text)}.</p>\n'
        "</section>"
    )


def _render_slices(metrics: Mapping[str, Any], png: bytes | None) -> str:
    s = metrics["slices"]
    names = slice_models(metrics)
    comps = list(s.get("comparisons") or [])
    lvl = f"{float(s['level']):.0%}" if is_number(s.get("level")) else ""
    head = "<tr><th>Slice</th><th>n</th><th>Positive rate</th>"
    head += "".join(f"<th>{html.escape(n)} AUC [{lvl}]</th>" for n in names)
    head += "".join(f"<th>&Delta;AUC {html.escape(c)} [{lvl}]</th>" for c in comps) + "</tr>"
    rows = [head]
    width = len(names) + len(comps)
    for r in s["rows"]:
        pos = r["positives"] / r["n"] if r["n"] else None
        cells = [
            f"<td>{html.escape(r['feature'])}: <b>{html.escape(r['value'])}</b></td>",
            f'<td class="num">{r["n"]:,}</td>',
            f'<td class="num">{format_metric(pos)}</td>',
        ]
        if not r.get("scored"):
            cells.append(f'<td class="note" colspan="{max(width, 1)}">{html.escape(r["note"])}</td>')
        else:
            for n in names:
                m = r["models"][n]
                cells.append(
                    f'<td class="num">{format_metric(m["auc"])}<br><small>[{format_metric(m["lo"])}, '
                    f"{format_metric(m['hi'])}]</small></td>"
                )
            for c in comps:
                d = r["diffs"][c]
                cls = "pos" if d["lo"] > 0 else "neg" if d["hi"] < 0 else ""
                cells.append(f'<td class="num {cls}">{d["diff"]:+.4f}<br><small>{_ci(d["lo"], d["hi"])}</small></td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    defs = "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in (s.get("definitions") or {}).items()
    )
    img = ""
    if png:
        b64 = base64.b64encode(png).decode("ascii")
        img = (
            f'<figure><img src="data:image/png;base64,{b64}" alt="AUC per slice"><figcaption>AUC per slice and model '
            f"with its {lvl} paired bootstrap interval (slices with at least {s.get('min_samples')} samples and both "
            "classes).</figcaption></figure>"
        )
    return (
        "<h2>Slices</h2>\n<table>\n" + "\n".join(rows) + "\n</table>\n"
        f'<p class="note">Green: the interval of the difference lies above 0; red: below. Slices with fewer than '
        f"{s.get('min_samples')} samples or one class only are listed, not scored.</p>\n"
        f'<ul class="note">{defs}</ul>\n{img}'
    )


def render_html(metrics: Mapping[str, Any], images: Mapping[str, bytes]) -> str:
    """The report page as one HTML document (UTF-8 text). ``metrics``: the dict
    :func:`reclora.evaluation.report.write_report` builds; ``images``: the PNGs by file name
    (:func:`reclora.evaluation.plots.render_plots`), embedded as data URIs."""
    title = html.escape(metrics["title"])
    n = samples_text(metrics)
    captions = {
        ROC_PNG: f"ROC curves of all models on the same {n} samples (AUC in the legend).",
        CALIBRATION_PNG: "Reliability diagram: observed positive rate against mean predicted "
        "probability per bin; the dashed diagonal is perfect calibration. Below: share of samples per bin.",
        AUC_BAR_PNG: f"AUC per model on the same {n} samples"
        + (
            "; the dashed line is the champion's stored figure, from its own test split."
            if metrics["champion"]
            else "."
        ),
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
