"""The promotion gate: promote a challenger only on figures measured on the same samples.

    rules = params.pipeline.promotion      # typed params (reclora.config); a mapping: PromotionRules.from_params
    decision = decide(evidence, rules)     # evidence: the evaluation report's "gate" block
    decision["promote"], decision["reason"], decision["checks"]

The evidence (written by ``reclora.stages.evaluate_stage``) holds, for one set of evaluated samples:
the challenger's AUC and LogLoss, the same-run baseline's (the CRM) and the paired bootstrap interval of
AUC(challenger) - AUC(baseline); the champion's status (``none``: no champion yet; ``scored``: re-scored on
these samples, with its AUC, LogLoss and the interval of AUC(challenger) - AUC(champion); ``not comparable``:
trained on another data set or item catalogue; ``unscorable``: same data, but its version could not be
loaded or scored) and the per-slice AUCs. The rules:

1. baseline: the interval's lower end of AUC(challenger) - AUC(baseline) must be above ``baseline_margin``.
2. champion (status ``scored``): the interval's lower end of AUC(challenger) - AUC(champion) must be above
   ``champion_margin`` (negative: non-inferiority, the challenger may be that much worse) and
   LogLoss(challenger) <= LogLoss(champion) + ``logloss_tolerance``.
3. a champion that is ``not comparable`` is never replaced automatically (``reclora registry promote vNNNN
   --allow-other-data`` does it by hand); one that is ``unscorable`` falls back to ``unscored_champion``:
   ``refuse`` (the default: no automatic promotion) or ``baseline`` (rule 1 alone decides, and the reason
   says the champion was not compared).
4. ``max_slice_drop`` (optional): on every slice with enough samples the challenger's AUC may be at most
   this much below the baseline's and the (re-scored) champion's.

Every rule must pass; the reason names every figure.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from reclora.config.pipeline_sections import UNSCORED_RULES, PromotionRules  # noqa: F401 (moved there; re-exported)
from reclora.errors import ConfigError

STATUSES = ("none", "scored", "not comparable", "unscorable")


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _s(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.4f}"


def _interval_text(
    chal: str, auc: float | None, ref: str, ref_auc: float | None, d: Mapping[str, Any], margin: float
) -> tuple[bool, str]:
    ok = d["lo"] > margin
    level = f"{float(d.get('level', 0.95)):.0%}"
    return ok, (
        f"AUC {chal} {_f(auc)} vs {ref} {_f(ref_auc)}: {_s(d['diff'])} ({level} interval {_s(d['lo'])} "
        f"to {_s(d['hi'])}) {'clears' if ok else 'does not clear'} the margin {_s(margin)}"
    )


def decide(evidence: Mapping[str, Any] | None, rules: PromotionRules) -> dict[str, Any]:
    """The gate's decision on one evaluation's evidence (module docstring).

    Returns {"promote": bool, "reason": one line naming every figure, "checks": [{"check", "passed" (None =
    not applicable), "text", figures...}], "rules", "champion" (the version compared against, or None),
    "samples"}. Evidence without figures (None, or no ``challenger``) refuses with the reason.
    """
    if not isinstance(evidence, Mapping) or not evidence.get("challenger"):
        why = (
            "not promoted: no same-sample evidence (the metrics carry no evaluation gate block: run the "
            "evaluate stage with a baseline); promote by hand with `reclora registry promote`"
        )
        return {
            "promote": False,
            "reason": why,
            "checks": [],
            "rules": rules.as_dict(),
            "champion": None,
            "samples": None,
        }
    chal = str(evidence["challenger"])
    n = evidence.get("samples")
    checks: list[dict[str, Any]] = []
    base = evidence.get("baseline")
    if rules.baseline:
        if not base:
            checks.append(
                {
                    "check": "baseline",
                    "passed": False,
                    "text": f"the baseline {rules.baseline!r} is not among the other evaluated models",
                }
            )
        else:
            ok, text = _interval_text(
                chal, evidence.get("auc"), base["name"], base.get("auc"), base["diff"], rules.baseline_margin
            )
            checks.append(
                {
                    "check": "baseline",
                    "passed": ok,
                    "reference": base["name"],
                    "auc": evidence.get("auc"),
                    "reference_auc": base.get("auc"),
                    **{k: base["diff"][k] for k in ("diff", "lo", "hi")},
                    "margin": rules.baseline_margin,
                    "text": text,
                }
            )
    champ = dict(evidence.get("champion") or {"status": "none"})
    status = champ.get("status", "none")
    if status not in STATUSES:
        raise ConfigError(f"gate evidence: unknown champion status {status!r}")
    v = champ.get("version")
    if status == "none":
        checks.append({"check": "champion", "passed": None, "text": "no champion yet"})
    elif status == "not comparable":
        checks.append(
            {
                "check": "champion",
                "passed": False,
                "version": v,
                "text": f"champion {v} is not comparable ({champ.get('reason')}): not replaced automatically; "
                f"`reclora registry promote <version> --allow-other-data` does it by hand",
            }
        )
    elif status == "unscorable":
        if rules.unscored_champion == "baseline":
            checks.append(
                {
                    "check": "champion",
                    "passed": None,
                    "version": v,
                    "text": f"champion {v} could not be re-scored ({champ.get('reason')}); not compared "
                    "(promotion.unscored_champion: baseline)",
                }
            )
        else:
            checks.append(
                {
                    "check": "champion",
                    "passed": False,
                    "version": v,
                    "text": f"champion {v} could not be re-scored ({champ.get('reason')}); "
                    "promotion.unscored_champion: refuse",
                }
            )
    else:
        ok, text = _interval_text(
            chal, evidence.get("auc"), f"champion {v}", champ.get("auc"), champ["diff"], rules.champion_margin
        )
        checks.append(
            {
                "check": "champion",
                "passed": ok,
                "version": v,
                "auc": evidence.get("auc"),
                "reference_auc": champ.get("auc"),
                **{k: champ["diff"][k] for k in ("diff", "lo", "hi")},
                "margin": rules.champion_margin,
                "text": text,
            }
        )
        ll, cll = evidence.get("logloss"), champ.get("logloss")
        ceiling = None if cll is None else cll + rules.logloss_tolerance
        ok = ll is not None and ceiling is not None and ll <= ceiling + 1e-12
        checks.append(
            {
                "check": "champion logloss",
                "passed": ok,
                "logloss": ll,
                "reference_logloss": cll,
                "ceiling": ceiling,
                "text": f"LogLoss {_f(ll)} {'<=' if ok else '>'} {_f(ceiling)} (champion {v} {_f(cll)} + "
                f"{_f(rules.logloss_tolerance)})",
            }
        )
    if rules.max_slice_drop is not None:
        refs = ([base["name"]] if base and rules.baseline else []) + ([f"champion {v}"] if status == "scored" else [])
        worst = None
        for sl in evidence.get("slices") or []:
            for r in refs:
                key = "baseline_auc" if base and r == base["name"] else "champion_auc"
                if sl.get(key) is None or sl.get("auc") is None:
                    continue
                drop = sl[key] - sl["auc"]
                if worst is None or drop > worst[0]:
                    worst = (drop, sl["slice"], r, sl["n"])
        if worst is None:
            checks.append({"check": "slices", "passed": None, "text": "no slice with enough samples to compare"})
        else:
            ok = worst[0] <= rules.max_slice_drop + 1e-12
            checks.append(
                {
                    "check": "slices",
                    "passed": ok,
                    "drop": worst[0],
                    "slice": worst[1],
                    "reference": worst[2],
                    "max_slice_drop": rules.max_slice_drop,
                    "text": f"largest slice drop {worst[0]:+.4f} AUC below {worst[2]} on '{worst[1]}' "
                    f"({worst[3]} samples) {'within' if ok else 'exceeds'} {rules.max_slice_drop:.4f}",
                }
            )
    promote = all(c["passed"] is not False for c in checks)
    on = f"on the same {n:,} samples" if isinstance(n, int) else "on the same samples"
    reason = f"{'promoted' if promote else 'not promoted'} ({chal}, {on}): " + "; ".join(c["text"] for c in checks)
    return {
        "promote": promote,
        "reason": reason,
        "checks": checks,
        "rules": rules.as_dict(),
        "champion": v if status != "none" else None,
        "samples": n,
    }


# ------------------------------------------------------------------ same data set and catalogue
def catalogue_mismatch(theirs: Any, ours: Any) -> str | None:
    """Why two item catalogues (DataFrames with item_id and title) do not describe the same items, or None.

    They match when they share item ids and every shared id has the same title (one catalogue may have
    items the other lacks: a later data version adds items). Either one None: nothing to compare (None)."""
    if theirs is None or ours is None:
        return None
    for df in (theirs, ours):
        if "item_id" not in df.columns or "title" not in df.columns:
            return None
    m = theirs[["item_id", "title"]].merge(ours[["item_id", "title"]], on="item_id", suffixes=("_a", "_b"))
    if m.empty:
        return "the two item catalogues share no item id"
    diff = m[m["title_a"].astype(str) != m["title_b"].astype(str)]
    if len(diff):
        r = diff.iloc[0]
        return (
            f"{len(diff)} of {len(m)} shared item ids name other items (item {int(r.item_id)}: "
            f"{str(r.title_a)!r} vs {str(r.title_b)!r})"
        )
    return None


def data_mismatch(
    theirs: Mapping[str, Any], ours: Mapping[str, Any], their_items: Any = None, our_items: Any = None
) -> str | None:
    """Why two versions (their manifests' ``data``, or any {"dataset": ...}) were not trained on the same
    data set and item catalogue, or None when they were (see :func:`catalogue_mismatch`)."""
    a, b = (theirs or {}).get("dataset"), (ours or {}).get("dataset")
    if a != b:
        return f"data set {a or 'unknown'} vs {b or 'unknown'}"
    why = catalogue_mismatch(their_items, our_items)
    return f"data set {a}, but {why}" if why else None


def read_items(store: Any, manifest: Mapping[str, Any]) -> Any:
    """A registered version's item catalogue (DataFrame), or None when it has none."""
    import pandas as pd

    rel = (manifest.get("layout") or {}).get("items")
    if not rel:
        return None
    raw = store.read_bytes(f"{store.vdir(manifest['version'])}/{rel}")
    return None if raw is None else pd.read_parquet(io.BytesIO(raw))
