"""Champion/challenger: the promotion gate, promote, rollback and the champion pointer.

``<uri>/<name>/champion.json`` (replaced atomically, never edited in place)::

    {"champion": "v0003", "promoted_at": "...Z", "reason": "...",
     "history": [{"version": "v0001", "promoted_at": ..., "reason": ..., "retired_at": ...}, ...],   # past champions
     "events":  [{"at": ..., "action": "promote"|"gate"|"rollback", "version": ..., "reason": ...}, ...]}

``history`` is a stack: :func:`promote` pushes the outgoing champion, :func:`rollback` pops it back.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

from reclora.errors import ConfigError
from reclora.registry.metrics import headline
from reclora.registry.store import (
    DEFAULT_NAME,
    NoChampion,
    NoPreviousChampion,
    Store,
    open_store,
    register,
    show,
    utc_now,
    verified_ref,
    version_ref,
)

EPS = 1e-12  # the gate's comparisons are inclusive; this absorbs float noise in "champion - tolerance"


def _tol(name: str, v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {v!r}") from None
    if not math.isfinite(f) or f < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {v!r}")
    return f


def decide(
    new_metrics: Mapping[str, Any],
    champion_metrics: Mapping[str, Any] | None,
    auc_tolerance: float = 0.0,
    logloss_tolerance: float = 0.0,
) -> tuple[bool, str]:
    """(promote, reason): promote iff new AUC >= champion AUC - auc_tolerance and new LogLoss <=
    champion LogLoss + logloss_tolerance; with no champion, promote.

    Metrics may be in any shape :func:`reclora.registry.metrics.summarize_metrics` accepts
    (a manifest's ``metrics``, a stage's metrics.json, or ``{"auc", "logloss"}``). A metric the
    champion lacks is not compared (and the reason says so); a metric the new model lacks while
    the champion has it blocks promotion.
    """
    at, lt = _tol("auc_tolerance", auc_tolerance), _tol("logloss_tolerance", logloss_tolerance)
    new_auc, new_ll = headline(new_metrics)
    if champion_metrics is None:
        return True, f"promoted: there is no champion yet (new AUC {_f(new_auc)}, LogLoss {_f(new_ll)})."
    ch_auc, ch_ll = headline(champion_metrics)
    ok, parts = True, []
    if ch_auc is None:
        parts.append(f"AUC not compared (the champion has none; new AUC {_f(new_auc)})")
    elif new_auc is None:
        ok = False
        parts.append(f"the new model has no AUC (champion AUC {_f(ch_auc)})")
    else:
        floor = ch_auc - at
        good = new_auc >= floor - EPS
        ok &= good
        parts.append(
            f"AUC {_f(new_auc)} {'>=' if good else '<'} {_f(floor)} "
            f"(champion AUC {_f(ch_auc)} - tolerance {_f(at)})"
        )
    if ch_ll is None:
        parts.append(f"LogLoss not compared (the champion has none; new LogLoss {_f(new_ll)})")
    elif new_ll is None:
        ok = False
        parts.append(f"the new model has no LogLoss (champion LogLoss {_f(ch_ll)})")
    else:
        ceiling = ch_ll + lt
        good = new_ll <= ceiling + EPS
        ok &= good
        parts.append(
            f"LogLoss {_f(new_ll)} {'<=' if good else '>'} {_f(ceiling)} "
            f"(champion LogLoss {_f(ch_ll)} + tolerance {_f(lt)})"
        )
    head = "promoted" if ok else "not promoted, stays challenger"
    return ok, f"{head}: " + "; ".join(parts) + "."


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


# ------------------------------------------------------------------ champion pointer
def _promoted(doc: dict[str, Any], version: str, reason: str, action: str = "promote") -> dict[str, Any]:
    now = utc_now()
    cur = doc.get("champion")
    if cur and cur != version:
        doc.setdefault("history", []).append(
            {"version": cur, "promoted_at": doc.get("promoted_at"), "reason": doc.get("reason"), "retired_at": now}
        )
    doc.update(champion=version, promoted_at=now, reason=reason)
    doc.setdefault("events", []).append({"at": now, "action": action, "version": version, "previous": cur, "reason": reason})
    return doc


def champion(uri: str | os.PathLike[str], name: str = DEFAULT_NAME) -> dict[str, Any] | None:
    """The champion's manifest (with ``status`` and ``path``), or None when there is none."""
    store = open_store(uri, name)
    if store.current_champion() is None:
        return None
    return show(uri, "champion", name)


def history(uri: str | os.PathLike[str], name: str = DEFAULT_NAME) -> dict[str, Any]:
    """champion.json as stored (an empty document when nothing was ever promoted)."""
    from reclora.registry.store import new_champion_doc

    store = open_store(uri, name)
    return store.champion_doc() or new_champion_doc(name)


def promote(
    uri: str | os.PathLike[str], version: str | int, name: str = DEFAULT_NAME, reason: str | None = None
) -> dict[str, Any]:
    """Make ``version`` the champion (the outgoing one goes on the rollback stack).

    Promoting the current champion again changes nothing. Returns
    {"version", "previous", "changed", "path", "reason"}.
    """
    store = open_store(uri, name)
    v = verified_ref(store, version, "promoted")
    out: dict[str, Any] = {}

    def fn(doc: dict[str, Any]) -> dict[str, Any] | None:
        prev = doc.get("champion")
        out.update(previous=prev, changed=prev != v)
        if prev == v:
            out["reason"] = doc.get("reason")
            return None
        why = reason or (f"manual promotion (previous champion {prev})" if prev else "manual promotion (no previous champion)")
        out["reason"] = why
        return _promoted(doc, v, why)

    store.update_champion(fn)
    return {"version": v, **out, "path": store.url(store.vdir(v))}


def rollback_target(uri: str | os.PathLike[str], name: str = DEFAULT_NAME) -> dict[str, Any]:
    """What :func:`rollback` would do, without doing it: {"version" (to restore), "previous" (the champion)}.

    Raises NoChampion / NoPreviousChampion like :func:`rollback`.
    """
    store = open_store(uri, name)
    doc = store.champion_doc() or {}
    cur = doc.get("champion")
    if cur is None:
        raise NoChampion(f"nothing to roll back in {store.where}: there is no champion yet")
    hist = list(doc.get("history") or [])
    while hist and hist[-1].get("version") == cur:
        hist.pop()
    if not hist:
        raise NoPreviousChampion(
            f"nothing to roll back to in {store.where}: {cur} is the champion and there is no previous champion"
        )
    verified_ref(store, hist[-1]["version"], "rolled back to")
    return {"version": hist[-1]["version"], "previous": cur}


def rollback(uri: str | os.PathLike[str], name: str = DEFAULT_NAME) -> dict[str, Any]:
    """Restore the previous champion; raises NoChampion / NoPreviousChampion when there is nothing to restore.

    Returns {"version" (restored), "previous" (the demoted one), "path", "reason"}.
    """
    store = open_store(uri, name)
    out: dict[str, Any] = {}

    def fn(doc: dict[str, Any]) -> dict[str, Any]:
        cur = doc.get("champion")
        if cur is None:
            raise NoChampion(f"nothing to roll back in {store.where}: there is no champion yet")
        hist = doc.setdefault("history", [])
        while hist and hist[-1].get("version") == cur:
            hist.pop()
        if not hist:
            raise NoPreviousChampion(
                f"nothing to roll back to in {store.where}: {cur} is the champion and there is no previous champion"
            )
        entry = hist.pop()
        restored = entry["version"]
        verified_ref(store, restored, "rolled back to")  # it must still be there and verify
        now = utc_now()
        why = f"rollback: {cur} demoted, {restored} restored"
        doc.update(champion=restored, promoted_at=now, reason=why)
        doc.setdefault("events", []).append({"at": now, "action": "rollback", "version": restored, "previous": cur, "reason": why})
        out.update(version=restored, previous=cur, reason=why)
        return doc

    store.update_champion(fn)
    return {**out, "path": store.url(store.vdir(out["version"]))}


# ------------------------------------------------------------------ register + gate
def register_and_gate(
    uri: str | os.PathLike[str],
    *,
    auc_tolerance: float = 0.0,
    logloss_tolerance: float = 0.0,
    name: str = DEFAULT_NAME,
    **register_kwargs: Any,
) -> dict[str, Any]:
    """Register a new version, gate it against the current champion with :func:`decide`, promote it or
    leave it as challenger. Returns {"version", "promoted", "reason", "path", "champion", "previous_champion"}.

    ``register_kwargs`` are :func:`reclora.registry.store.register`'s keyword arguments. The gate reads
    the champion and updates champion.json under one lock, so concurrent runs cannot both promote
    against a stale champion.
    """
    _tol("auc_tolerance", auc_tolerance), _tol("logloss_tolerance", logloss_tolerance)
    manifest = register(uri, name=name, **register_kwargs)
    store: Store = open_store(uri, name)
    v = manifest["version"]
    out: dict[str, Any] = {}

    def fn(doc: dict[str, Any]) -> dict[str, Any]:
        cur = doc.get("champion")
        champ_metrics = store.manifest(cur).get("metrics") if cur else None
        promote_it, why = decide(manifest["metrics"], champ_metrics, auc_tolerance, logloss_tolerance)
        why = f"{v} vs champion {cur}: {why}" if cur else f"{v}: {why}"
        out.update(promoted=promote_it, reason=why, previous_champion=cur, champion=v if promote_it else cur)
        if promote_it:
            return _promoted(doc, v, why, action="gate")
        doc.setdefault("events", []).append({"at": utc_now(), "action": "gate", "version": v, "promoted": False, "reason": why})
        return doc

    store.update_champion(fn)
    return {"version": v, **out, "path": manifest["path"]}
