"""MODEL_CARD.md for a registered version: data, metrics, intended use, limits, lineage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, Mapping):
        return ", ".join(f"{k} {_fmt(x, digits)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x, digits) for x in v)
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return out


def render_model_card(manifest: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> str:
    """The markdown model card of one version, from its manifest (and the run's params as the version records
    them: a mapping of some sections, an older version's without newer keys)."""
    recorded = dict(params or {})
    name, version = manifest.get("name", "reclora"), manifest.get("version", "?")
    met = manifest.get("metrics") or {}
    test = met.get("test") or {}
    model = met.get("model", "reclora")
    data = dict(manifest.get("data") or {})
    lineage = dict(manifest.get("lineage") or {})
    base = manifest.get("base_model", "n/a")
    adapter = recorded.get("adapter") or {}
    train = recorded.get("train") or {}
    retrieval = recorded.get("retrieval") or {}
    data_params = recorded.get("data") or {}

    lines = [f"# Model card: {name} {version}", ""]
    lines += [
        f"- Registered: {manifest.get('created_at', 'n/a')} (UTC); status at registration: "
        f"{manifest.get('status', 'challenger')} (the live champion is recorded in `champion.json`).",
        f"- Model: `{model}` on the frozen base LLM `{base}`.",
        "",
        "## Model",
        "",
        "RecLoRA (arXiv 2408.03533): a CTR recommender that asks a causal LLM whether the user will like the "
        "target item and reads p = softmax([logit(Yes), logit(No)])[0]. The base LLM and the conventional "
        "recommender (CRM, a DIN-style model) are frozen; the adapter is a bank of meta-LoRAs on the attention "
        "projections whose mixing weights come from a gate fed with the CRM's hidden vector of the user and item "
        "(personalised LoRA). The CRM sees the full training split; the LLM a small sample of it (Few2Many).",
        "",
    ]
    cfg = [
        ["adapter kind", adapter.get("kind", model)],
        ["rank / alpha", f"{adapter.get('rank', 'n/a')} / {adapter.get('alpha', 'n/a')}"],
        ["meta-LoRAs per module", adapter.get("n_experts")],
        ["target modules", adapter.get("target_modules")],
        ["LLM training sample", train.get("sample_size")],
        ["history in prompt / in CRM", f"{retrieval.get('k_short', 'n/a')} / {retrieval.get('k_long', 'n/a')}"],
    ]
    lines += _table(["setting", "value"], [r for r in cfg if r[1] is not None]) + [""]

    lines += ["## Data", ""]
    samples = data.get("samples")
    drows: list[list[Any]] = [
        ["dataset", data.get("dataset")],
        ["interactions (rows)", data.get("rows")],
        [
            "users / items",
            f"{_fmt(data.get('users'))} / {_fmt(data.get('items'))}"
            if data.get("users") is not None or data.get("items") is not None
            else None,
        ],
        ["CTR samples", samples],
        ["positive rate", data.get("positive_rate")],
        [
            "label",
            f"rating >= {_fmt(data.get('label_threshold'), 1)}" if data.get("label_threshold") is not None else None,
        ],
        ["data version", data.get("data_version")],
    ]
    extra: list[list[Any]] = [
        [k, v]
        for k, v in data.items()
        if k not in ("dataset", "rows", "users", "items", "samples", "positive_rate", "label_threshold", "data_version")
    ]
    lines += _table(["", "value"], [r for r in drows + extra if r[1] is not None]) + [""]

    rt = dict(manifest.get("runtime") or {})
    if rt:
        prec, hw = dict(rt.get("precision") or {}), dict(rt.get("hardware") or {})
        cpu = dict(hw.get("cpu") or {})
        gpus = hw.get("gpus") or []
        hrows: list[list[Any]] = [
            [
                "precision",
                f"{prec.get('chosen', 'n/a')} (requested {prec.get('requested', 'n/a')}: {prec.get('reason', '')})"
                if prec
                else None,
            ],
            [
                "CPU",
                f"{cpu.get('model', 'n/a')}; flags {', '.join(cpu.get('flags') or []) or 'none of note'}; "
                f"ATen {cpu.get('aten_capability', 'n/a')}"
                if cpu
                else None,
            ],
            ["threads", f"{hw.get('threads')} ({hw.get('threads_source', 'n/a')})" if hw.get("threads") else None],
            [
                "GPU",
                ", ".join(f"{g.get('name')} (compute capability {g.get('capability')})" for g in gpus) or "none"
                if hw
                else None,
            ],
            ["torch", f"{hw.get('torch')} (CUDA {hw.get('cuda') or 'none'})" if hw.get("torch") else None],
        ]
        lines += [
            "## Training hardware and precision",
            "",
            "What the adapter was trained on. A server decides its own precision by its own hardware "
            "(`reclora serve --precision` forces one).",
            "",
        ]
        lines += _table(["", "value"], [r for r in hrows if r[1] is not None]) + [""]

    lines += [
        "## Metrics",
        "",
        "Offline CTR metrics on the held-out test split (the latest 10% by time), "
        "every model scored on the same samples when they come from one evaluation report.",
        "",
    ]
    rows = [[f"**{model}** (this version)", test.get("auc"), test.get("logloss"), test.get("accuracy"), test.get("n")]]
    for bname, b in (met.get("baselines") or {}).items():
        rows.append([bname, b.get("auc"), b.get("logloss"), b.get("accuracy"), b.get("n")])
    lines += _table(["model", "AUC", "LogLoss", "accuracy", "samples"], rows) + [""]

    lines += _promotion(manifest.get("promotion"))

    min_hist = data.get("min_history", data_params.get("min_history", 5))
    lines += [
        "## Intended use",
        "",
        "- Scoring the click/like probability of candidate items for known users inside a recommendation "
        "service (KServe InferenceService with the RecLoRA predictor), e.g. to re-rank a candidate list.",
        "- Offline comparison of adapters in the champion/challenger registry; a version is promoted only when, on "
        "the same evaluation samples, the paired bootstrap interval of its AUC gain over the CRM of its run and over "
        "the champion (re-scored on those samples) clears the configured margins (see Promotion decision).",
        "- Not for decisions about people beyond item recommendation; not a substitute for an online A/B test.",
        "",
        "## Limits",
        "",
        f"- Base model size: the embedded default (`SmolLM2-135M-Instruct`) is a small model chosen to run on a "
        f"CPU; quality and latency do not carry over to a production-size LLM on GPUs (this version: `{base}`).",
        "- Offline CTR evaluation only: AUC/LogLoss/accuracy on a time-based test split (possibly a seeded subset); "
        "no online metric (click-through, retention) has been measured, and offline gains may not show online.",
        f"- Cold start: samples whose user has fewer than {min_hist} earlier interactions were dropped from "
        "training and evaluation. A user or item never seen in training maps to the CRM's unknown id (index 0): the "
        "gate then gets a near-generic signal and the prompt little or no history, so scores fall back to what the "
        "item's title and genres and the base LLM's prior suggest. The metrics above say nothing about these cases.",
        "- Labels are explicit ratings thresholded into like/dislike; the model inherits the popularity and "
        "selection biases of the logged feedback and can reinforce them in a feedback loop.",
        "- The adapter only works with the exact base model and CRM stored with it (same tokenizer, same CRM "
        "vocabularies); the predictor must load this version's `crm/` and `adapter/` together.",
        "",
        "## Lineage",
        "",
    ]
    lrows = [[k, lineage[k]] for k in sorted(lineage)] or [["(none recorded)", ""]]
    lines += _table(["key", "value"], lrows) + [""]
    files = manifest.get("files") or {}
    if files:
        total = sum(int(f.get("size", 0)) for f in files.values())
        lines += [
            "## Files",
            "",
            f"{len(files)} artifact files ({total:,} bytes) besides this card and `manifest.json`; every file's "
            "sha256 and size are in `manifest.json` (`reclora.registry.verify` re-checks them).",
            "",
        ]
    return "\n".join(lines)


def _promotion(promotion: Mapping[str, Any] | None) -> list[str]:
    """The gate's decision and the figures behind it (reclora.registry.gate), as markdown lines."""
    if not promotion:
        return []
    d = promotion.get("decision") or {}
    ev = promotion.get("evidence") or {}
    lines = [
        "## Promotion decision",
        "",
        f"**{'Promote' if d.get('promote') else 'Not promoted'}**: {_fmt(d.get('reason'))}",
        "",
    ]
    rows: list[list[Any]] = []
    level = ev.get("level")
    for ref in ("baseline", "champion"):
        r = ev.get(ref) or {}
        dd = r.get("diff")
        if dd:
            rows.append(
                [
                    f"{ev.get('challenger')} - {r.get('name')}",
                    ev.get("auc"),
                    r.get("auc"),
                    f"{dd['diff']:+.4f}",
                    f"{dd['lo']:+.4f} to {dd['hi']:+.4f}",
                ]
            )
    if rows:
        lines += _table(
            [
                "comparison (same samples)",
                "AUC",
                "reference AUC",
                "difference",
                f"{level:.0%} interval" if isinstance(level, float) else "interval",
            ],
            rows,
        ) + [""]
    champ = ev.get("champion") or {}
    if champ.get("status") not in (None, "none", "scored"):
        lines += [f"Champion {champ.get('version')}: {champ['status']} ({_fmt(champ.get('reason'))}).", ""]
    if ev.get("samples"):
        lines += [
            f"Every figure on the same {int(ev['samples']):,} evaluation samples; paired bootstrap intervals "
            f"({ev.get('n_boot')} resamples). Rules: {_fmt(d.get('rules'))}.",
            "",
        ]
    slices = [s for s in ev.get("slices") or [] if s.get("auc") is not None]
    if slices:
        lines += ["Slices (AUC of this version; of the baseline and the champion on the same slice):", ""]
        lines += _table(
            ["slice", "samples", "AUC", "baseline AUC", "champion AUC"],
            [[s["slice"], s["n"], s["auc"], s.get("baseline_auc"), s.get("champion_auc")] for s in slices],
        )
        lines += [""]
    return lines
