"""Champion/challenger: the promotion gate, promote, rollback and the champion pointer.

``<uri>/<name>/champion.json`` (replaced atomically, never edited in place)::

    {"champion": "v0003", "promoted_at": "...Z", "reason": "...",
     "history": [{"version": "v0001", "promoted_at": ..., "reason": ..., "retired_at": ...}, ...],   # past champions
     "events":  [{"at": ..., "action": "promote"|"gate"|"rollback", "version": ..., "reason": ...}, ...]}

``history`` is a stack: :func:`promote` pushes the outgoing champion, :func:`rollback` pops it back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from reclora.registry.backend import DEFAULT_NAME, Store, new_champion_doc, open_store, utc_now
from reclora.registry.errors import NoChampion, NoPreviousChampion, RegistryError
from reclora.registry.gate import PromotionRules, data_mismatch, decide, read_items
from reclora.registry.manifest import verified_ref
from reclora.registry.store import register, show


class OtherData(RegistryError):
    """A manual promotion would replace a champion trained on another data set or item catalogue."""


# ------------------------------------------------------------------ champion pointer
def _promoted(doc: dict[str, Any], version: str, reason: str, action: str = "promote") -> dict[str, Any]:
    now = utc_now()
    cur = doc.get("champion")
    if cur and cur != version:
        doc.setdefault("history", []).append(
            {"version": cur, "promoted_at": doc.get("promoted_at"), "reason": doc.get("reason"), "retired_at": now}
        )
    doc.update(champion=version, promoted_at=now, reason=reason)
    doc.setdefault("events", []).append(
        {"at": now, "action": action, "version": version, "previous": cur, "reason": reason}
    )
    return doc


def champion(uri: str | os.PathLike[str], name: str = DEFAULT_NAME) -> dict[str, Any] | None:
    """The champion's manifest (with ``status`` and ``path``), or None when there is none."""
    store = open_store(uri, name)
    if store.current_champion() is None:
        return None
    return show(uri, "champion", name)


def history(uri: str | os.PathLike[str], name: str = DEFAULT_NAME) -> dict[str, Any]:
    """champion.json as stored (an empty document when nothing was ever promoted)."""
    store = open_store(uri, name)
    return store.champion_doc() or new_champion_doc(name)


def other_data(store: Store, version: str, champion_version: str | None) -> str | None:
    """Why ``version`` was not trained on the same data set and item catalogue as ``champion_version``
    (:func:`reclora.registry.gate.data_mismatch` on their manifests and items.parquet), or None."""
    if champion_version is None or champion_version == version:
        return None
    a, b = store.manifest(champion_version), store.manifest(version)
    return data_mismatch(a.get("data") or {}, b.get("data") or {}, read_items(store, a), read_items(store, b))


def promote(
    uri: str | os.PathLike[str],
    version: str | int,
    name: str = DEFAULT_NAME,
    reason: str | None = None,
    allow_other_data: bool = False,
) -> dict[str, Any]:
    """Make ``version`` the champion (the outgoing one goes on the rollback stack).

    Promoting the current champion again changes nothing. A version trained on another data set or item
    catalogue than the current champion raises :class:`OtherData` unless ``allow_other_data`` (then the
    reason records it). Returns {"version", "previous", "changed", "path", "reason"}.
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
        why_other = other_data(store, v, prev)
        if why_other and not allow_other_data:
            raise OtherData(
                f"{v} was not trained on the champion {prev}'s data ({why_other}): promoting it replaces the served "
                "model with one for other data; pass --allow-other-data (allow_other_data=True) to do it anyway"
            )
        why = reason or (
            f"manual promotion (previous champion {prev})" if prev else "manual promotion (no previous champion)"
        )
        if why_other:
            why += f"; other data than {prev}, allowed by hand ({why_other})"
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
        doc.setdefault("events", []).append(
            {"at": now, "action": "rollback", "version": restored, "previous": cur, "reason": why}
        )
        out.update(version=restored, previous=cur, reason=why)
        return doc

    store.update_champion(fn)
    return {**out, "path": store.url(store.vdir(out["version"]))}


# ------------------------------------------------------------------ register + gate
def register_and_gate(
    uri: str | os.PathLike[str],
    *,
    rules: PromotionRules | None = None,
    name: str = DEFAULT_NAME,
    **register_kwargs: Any,
) -> dict[str, Any]:
    """Register a new version and promote it when the gate passes (:func:`reclora.registry.gate.decide`).

    The evidence is the ``gate`` block of ``register_kwargs["metrics"]`` (the evaluate report: the challenger,
    the same-run baseline and the champion re-scored on the same samples, with paired bootstrap intervals);
    metrics without it are registered and not promoted. The decision, with every figure behind it, goes into
    the version's manifest (``promotion``) and model card. The champion is re-read under champion.json's lock:
    when it is no longer the version the evaluation compared against (another run promoted one meanwhile),
    the new version is not promoted and the reason says so. ``register_kwargs`` are
    :func:`reclora.registry.store.register`'s. Returns {"version", "promoted", "reason", "path", "champion",
    "previous_champion", "decision"}.
    """
    rules = rules if rules is not None else PromotionRules()
    metrics = register_kwargs.get("metrics")
    evidence = metrics.get("gate") if isinstance(metrics, Mapping) else None
    decision = decide(evidence, rules)
    evidence_figures = (
        {k: v for k, v in (evidence or {}).items() if k != "decision"} if isinstance(evidence, Mapping) else None
    )
    manifest = register(
        uri, name=name, promotion={"decision": decision, "evidence": evidence_figures}, **register_kwargs
    )
    store: Store = open_store(uri, name)
    v = manifest["version"]
    out: dict[str, Any] = {"decision": decision}

    def fn(doc: dict[str, Any]) -> dict[str, Any]:
        cur = doc.get("champion")
        promote_it, why = decision["promote"], decision["reason"]
        if promote_it and evidence_figures is not None and cur != decision["champion"]:
            promote_it = False
            why = (
                f"not promoted: the champion is {cur or 'none'} now, but this run was evaluated against "
                f"{decision['champion'] or 'no champion'} (another run promoted one meanwhile); run again"
            )
        why = f"{v}: {why}"
        out.update(promoted=promote_it, reason=why, previous_champion=cur, champion=v if promote_it else cur)
        if promote_it:
            return _promoted(doc, v, why, action="gate")
        doc.setdefault("events", []).append(
            {"at": utc_now(), "action": "gate", "version": v, "promoted": False, "reason": why}
        )
        return doc

    store.update_champion(fn)
    return {"version": v, **out, "path": manifest["path"]}
