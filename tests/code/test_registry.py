"""The adapter registry: immutable versions, atomic and race-free registration, gate, rollback, memory://."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reclora.errors import ConfigError, DataError, RecLoRAError
from reclora.registry import (
    NoChampion,
    NoPreviousChampion,
    PromotionRules,
    RegistryError,
    VersionNotFound,
    champion,
    decide,
    history,
    list_versions,
    promote,
    register,
    register_and_gate,
    resolve,
    rollback,
    show,
    summarize_metrics,
    verify,
)
from reclora.registry import store as store_mod
from reclora.registry.errors import UnverifiedVersion


def reclora_cli(*args: str):
    from helpers import reclora

    return reclora(*args)


# ------------------------------------------------------------------ fake stage outputs
def _report(auc: float, logloss: float) -> dict:
    """An evaluate-report-shaped metrics dict: RecLoRA plus two baselines."""
    return {
        "model_order": ["CRM", "lora", "reclora"],
        "models": {
            "CRM": {"auc": 0.71, "logloss": 0.61, "accuracy": 0.66, "n": 200, "positive_rate": 0.55},
            "lora": {"auc": 0.69, "logloss": 0.63, "accuracy": 0.64, "n": 200, "positive_rate": 0.55},
            "reclora": {"auc": auc, "logloss": logloss, "accuracy": 0.70, "n": 200, "positive_rate": 0.55},
        },
    }


@pytest.fixture
def art(tmp_path: Path) -> dict:
    """Small fake artifact dirs laid out as the stages write them; returns register() kwargs."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    crm = tmp_path / "crm"
    (crm / "model").mkdir(parents=True)
    save_file({"w": rng.normal(size=(8, 4)).astype(np.float32)}, str(crm / "model" / "crm.safetensors"))
    (crm / "model" / "crm_config.json").write_text(json.dumps({"model": "DIN", "hidden_dim": 4}))
    (crm / "model" / "crm_features.json").write_text(json.dumps({"users": [1, 2, 3]}))
    (crm / "metrics.json").write_text(json.dumps({"model": "CRM", "test": {"auc": 0.71, "logloss": 0.61}}))
    llm = tmp_path / "llm"
    (llm / "adapter").mkdir(parents=True)
    save_file(
        {"lora_A": rng.normal(size=(2, 8)).astype(np.float32)}, str(llm / "adapter" / "reclora_adapter.safetensors")
    )
    (llm / "adapter" / "reclora_adapter.json").write_text(json.dumps({"kind": "reclora", "rank": 2}))
    ret = tmp_path / "ret"
    ret.mkdir()
    save_file(
        {"item_ids": np.arange(5), "embeddings": rng.normal(size=(5, 3)).astype(np.float32)},
        str(ret / "item_embeddings.safetensors"),
    )
    (ret / "retrieval.json").write_text(json.dumps({"mode": "relevance", "k_long": 6, "k_short": 3}))
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame({"item_id": [1, 2], "title": ["A", "B"], "genres": ["x", "y|z"]}).to_parquet(data / "items.parquet")
    meta = {
        "dataset": "synthetic",
        "rows": 1234,
        "users": 30,
        "items": 40,
        "label_threshold": 4.0,
        "samples": {"train": 800, "valid": 100, "test": 100},
        "positive_rate": 0.55,
        "min_history": 5,
    }
    (data / "meta.json").write_text(json.dumps(meta))
    return {
        "crm_dir": str(crm),
        "adapter_dir": str(llm),
        "retrieval_dir": str(ret),
        "items_path": str(data / "items.parquet"),
        "params": {
            "adapter": {"rank": 2, "alpha": 4, "n_experts": 3, "target_modules": ["q_proj", "v_proj"]},
            "train": {"sample_size": 64},
            "retrieval": {"k_long": 6, "k_short": 3},
        },
        "metrics": _report(0.75, 0.55),
        "lineage": {"data_version": "0123abcd.dir", "pipeline_run_id": "run-42"},
        "base_model": "tiny-llama",
    }


def _evidence(
    auc: float = 0.75, logloss: float = 0.55, lo: float = 0.01, champion: dict | None = None, slices: list | None = None
) -> dict:
    """The gate block evaluate_stage writes: the challenger against the CRM of its run (interval lower end
    ``lo``) and ``champion`` (default: none yet)."""
    diff = round(auc - 0.71, 6)
    return {
        "challenger": "reclora",
        "auc": auc,
        "logloss": logloss,
        "samples": 200,
        "level": 0.95,
        "n_boot": 1000,
        "baseline": {
            "name": "CRM",
            "auc": 0.71,
            "logloss": 0.61,
            "diff": {"diff": diff, "lo": lo, "hi": diff + 0.04, "level": 0.95},
        },
        "champion": champion or {"status": "none"},
        "slices": slices or [],
    }


def _scored(version: str, auc: float, logloss: float, lo: float, challenger_auc: float = 0.75) -> dict:
    d = round(challenger_auc - auc, 6)
    return {
        "status": "scored",
        "version": version,
        "name": f"champion {version}",
        "auc": auc,
        "logloss": logloss,
        "diff": {"diff": d, "lo": lo, "hi": d + 0.03, "level": 0.95},
    }


def _with(art: dict, auc: float, logloss: float, **gate: object) -> dict:
    """register() kwargs with an evaluate report carrying the gate's evidence (``_evidence(**gate)``)."""
    return {**art, "metrics": _report(auc, logloss) | {"gate": _evidence(auc, logloss, **gate)}}


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _snapshot(d: Path) -> dict:
    return {str(f.relative_to(d)): (f.stat().st_mtime_ns, _sha(f)) for f in sorted(d.rglob("*")) if f.is_file()}


# ------------------------------------------------------------------ register
def test_register_twice_gives_numbered_versions_with_hashed_files(tmp_path, art):
    reg = tmp_path / "reg"
    m1 = register(reg, **art)
    m2 = register(reg, **art)
    assert (m1["version"], m2["version"]) == ("v0001", "v0002")
    for m in (m1, m2):
        vdir = reg / "reclora" / "versions" / m["version"]
        assert m["path"] == str(vdir)
        for rel in (
            "crm/crm.safetensors",
            "crm/crm_config.json",
            "crm/crm_features.json",
            "adapter/reclora_adapter.safetensors",
            "adapter/reclora_adapter.json",
            "retrieval/item_embeddings.safetensors",
            "items.parquet",
            "params.json",
            "metrics.json",
            "MODEL_CARD.md",
        ):
            assert rel in m["files"], rel
        assert set(m["files"]) == {str(f.relative_to(vdir)) for f in vdir.rglob("*") if f.is_file()} - {"manifest.json"}
        for rel, e in m["files"].items():
            assert e["sha256"] == _sha(vdir / rel) and e["size"] == (vdir / rel).stat().st_size
        on_disk = json.loads((vdir / "manifest.json").read_text())
        assert on_disk == {k: v for k, v in m.items() if k != "path"}
        assert on_disk["status"] == "challenger" and on_disk["base_model"] == "tiny-llama"
        assert on_disk["created_at"].endswith("Z")
        assert on_disk["metrics"]["model"] == "reclora" and on_disk["metrics"]["test"]["auc"] == 0.75
        assert set(on_disk["metrics"]["baselines"]) == {"CRM", "lora"}
        assert (
            on_disk["lineage"]["pipeline_run_id"] == "run-42" and on_disk["lineage"]["data_version"] == "0123abcd.dir"
        )
        assert len(on_disk["lineage"].get("git_commit", "")) == 40  # the tests run inside the git checkout
        assert on_disk["data"]["dataset"] == "synthetic" and on_disk["data"]["data_version"] == "0123abcd.dir"
        assert verify(reg, m["version"])["ok"]
    assert [r["version"] for r in list_versions(reg)] == ["v0001", "v0002"]
    assert resolve(reg, "latest") == m2["path"] and resolve(reg, "v1") == m1["path"]
    # only the version dirs (and nothing hidden) are left in versions/
    assert sorted(os.listdir(reg / "reclora" / "versions")) == ["v0001", "v0002"]


def test_versions_are_immutable_and_repromoting_is_a_noop(tmp_path, art):
    reg = tmp_path / "reg"
    register(reg, **art)
    v1 = reg / "reclora" / "versions" / "v0001"
    before = _snapshot(v1)
    register(reg, **art)
    assert promote(reg, "v0001")["changed"] is True
    again = promote(reg, "v0001")
    assert again["changed"] is False and again["version"] == "v0001"
    promote(reg, "v0002")
    rollback(reg)
    assert _snapshot(v1) == before  # never touched, although it was promoted, demoted and restored
    assert json.loads((v1 / "manifest.json").read_text())["status"] == "challenger"  # as registered
    assert show(reg, "v0001")["status"] == "champion" and show(reg, "v0002")["status"] == "challenger"


def test_collision_on_a_stale_listing_takes_the_next_number(tmp_path, art, monkeypatch):
    reg = tmp_path / "reg"
    register(reg, **art)
    real = store_mod.Store.numbered
    calls = {"n": 0}

    def stale(self):  # the first listing misses v0001, as if another writer renamed it just after
        calls["n"] += 1
        return [] if calls["n"] == 1 else real(self)

    monkeypatch.setattr(store_mod.Store, "numbered", stale)
    m = register(reg, **art)
    assert m["version"] == "v0002" and verify(reg, "v0002")["ok"] and verify(reg, "v0001")["ok"]
    assert json.loads((reg / "reclora/versions/v0002/manifest.json").read_text())["version"] == "v0002"
    assert "# Model card: reclora v0002" in (reg / "reclora/versions/v0002/MODEL_CARD.md").read_text()


KILL_CHILD = r"""
import json, sys, time
from pathlib import Path
import reclora.registry.store as s
reg, marker, kw = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
real = s._copy_file
def slow(src, dst):
    out = real(src, dst)
    marker.write_text("copying")
    time.sleep(120)
    return out
s._copy_file = slow
s.register(reg, **kw)
"""


def test_a_writer_killed_mid_copy_leaves_no_visible_version(tmp_path, art):
    reg = tmp_path / "reg"
    marker = tmp_path / "copying"
    child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(reg), str(marker), json.dumps(art)])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, "the writer exited before it was killed"
            assert time.monotonic() < deadline, "the writer never started copying"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()  # reap it: a zombie would still look alive
    versions = reg / "reclora" / "versions"
    leftovers = [n for n in os.listdir(versions) if n.startswith(".tmp-")]
    assert len(leftovers) == 1 and any((versions / leftovers[0]).rglob("*"))  # half written, hidden
    assert list_versions(reg) == []
    with pytest.raises(VersionNotFound):
        resolve(reg, "latest")
    m = register(reg, **art)  # the next registration works and sweeps the dead writer's temp dir
    assert m["version"] == "v0001" and verify(reg, "v0001")["ok"]
    assert os.listdir(versions) == ["v0001"]


def _register_in_child(reg: str, kw: dict, barrier, q) -> None:
    try:
        barrier.wait(timeout=30)
        q.put(register(reg, **kw)["version"])
    except BaseException as e:  # report instead of dying silently
        q.put(f"error: {e!r}")


def test_two_concurrent_processes_both_land(tmp_path, art):
    reg = str(tmp_path / "reg")
    ctx = mp.get_context("fork")
    barrier, q = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_register_in_child, args=(reg, art, barrier, q)) for _ in range(2)]
    for p in procs:
        p.start()
    results = sorted(q.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert results == ["v0001", "v0002"]
    assert [r["version"] for r in list_versions(reg)] == ["v0001", "v0002"]
    assert all(verify(reg, v)["ok"] for v in ("v0001", "v0002"))
    assert sorted(os.listdir(Path(reg) / "reclora" / "versions")) == ["v0001", "v0002"]


# ------------------------------------------------------------------ gate, promotion, rollback
def test_decide_on_same_sample_evidence():
    rules = PromotionRules(baseline="CRM", baseline_margin=0.0, champion_margin=-0.002, logloss_tolerance=0.01)
    # no champion: the baseline's interval decides; the reason names both AUCs and the interval
    d = decide(_evidence(0.75, lo=0.004), rules)
    assert d["promote"] and d["champion"] is None
    assert "AUC reclora 0.7500 vs CRM 0.7100: +0.0400 (95% interval +0.0040 to +0.0800) clears" in d["reason"]
    assert "no champion yet" in d["reason"] and "same 200 samples" in d["reason"]
    # below the baseline: registered, not promoted, both figures named
    d = decide(_evidence(0.70, lo=-0.03), rules)
    assert not d["promote"] and "reclora 0.7000 vs CRM 0.7100" in d["reason"] and "does not clear" in d["reason"]
    # the point estimate clears the margin but the interval straddles it: not promoted
    d = decide(_evidence(0.75, lo=-0.001), rules)
    assert not d["promote"] and [c["passed"] for c in d["checks"]] == [False, None]
    assert decide(_evidence(0.75, lo=0.0), rules)["promote"] is False  # "clears" is strict
    assert decide(_evidence(0.75, lo=-0.001), PromotionRules(baseline_margin=-0.01))["promote"]
    # the champion re-scored on the same samples: its interval and LogLoss
    ok = _evidence(0.75, 0.55, lo=0.01, champion=_scored("v0003", 0.74, 0.55, lo=-0.0015))
    d = decide(ok, rules)
    assert d["promote"] and d["champion"] == "v0003"
    assert (
        "vs champion v0003 0.7400: +0.0100 (95% interval -0.0015 to +0.0400) clears the margin -0.0020" in d["reason"]
    )
    assert not decide(_evidence(0.75, 0.55, champion=_scored("v0003", 0.76, 0.55, lo=-0.0021)), rules)["promote"]
    d = decide(_evidence(0.75, 0.57, champion=_scored("v0003", 0.74, 0.55, lo=0.001)), rules)
    assert not d["promote"] and "LogLoss 0.5700 > 0.5600" in d["reason"]
    # a champion of other data is never replaced automatically; an unscorable one follows unscored_champion
    other = {
        "status": "not comparable",
        "version": "v0002",
        "reason": "trained on another data set (data set ml-100k vs goodbooks-10k)",
    }
    d = decide(_evidence(0.9, lo=0.1, champion=other), rules)
    assert not d["promote"] and "ml-100k vs goodbooks-10k" in d["reason"] and "--allow-other-data" in d["reason"]
    broken = {
        "status": "unscorable",
        "version": "v0002",
        "reason": "its version cannot be loaded here: base LLM missing",
    }
    assert not decide(_evidence(lo=0.01, champion=broken), rules)["promote"]
    d = decide(_evidence(lo=0.01, champion=broken), PromotionRules(unscored_champion="baseline"))
    assert d["promote"] and "not compared" in d["reason"] and "base LLM missing" in d["reason"]
    # max_slice_drop: any slice with enough samples losing more than that to the baseline or the champion
    slices = [
        {"slice": "item popularity: tail", "n": 80, "auc": 0.70, "baseline_auc": 0.74, "champion_auc": None},
        {"slice": "history length: short", "n": 50, "auc": 0.80, "baseline_auc": 0.78, "champion_auc": None},
    ]
    assert decide(_evidence(lo=0.01, slices=slices), PromotionRules(max_slice_drop=0.05))["promote"]
    d = decide(_evidence(lo=0.01, slices=slices), PromotionRules(max_slice_drop=0.03))
    assert (
        not d["promote"]
        and "+0.0400 AUC below CRM on 'item popularity: tail' (80 samples) exceeds 0.0300" in d["reason"]
    )
    # no evidence: registered, never promoted
    assert not decide({"auc": 0.9}, rules)["promote"] and "no same-sample evidence" in decide(None, rules)["reason"]
    with pytest.raises(ConfigError, match="champion_margin"):
        PromotionRules(champion_margin=float("nan"))
    with pytest.raises(ConfigError, match="auc_tolerance"):
        PromotionRules.from_params({"auc_tolerance": 0.002})  # the old setting is refused, not ignored
    with pytest.raises(ConfigError, match="unscored_champion"):
        PromotionRules(unscored_champion="maybe")


def test_register_and_gate_records_the_decision_and_refuses_stale_evidence(tmp_path, art):
    reg = tmp_path / "reg"
    rules = PromotionRules(champion_margin=-0.002, logloss_tolerance=0.01)
    r1 = register_and_gate(reg, rules=rules, **_with(art, 0.75, 0.55))
    assert r1["promoted"] and r1["version"] == "v0001" and "no champion yet" in r1["reason"]
    assert r1["path"] == resolve(reg, "champion")
    m1 = show(reg, "v0001")
    assert m1["promotion"]["decision"]["promote"] is True
    assert m1["promotion"]["evidence"]["baseline"]["diff"]["lo"] == 0.01  # every figure in the manifest
    card = (Path(m1["path"]) / "MODEL_CARD.md").read_text()
    assert (
        "## Promotion decision" in card and "| reclora - CRM | 0.7500 | 0.7100 | +0.0400 | +0.0100 to +0.0800 |" in card
    )
    # below the baseline: registered, stays challenger
    r2 = register_and_gate(
        reg, rules=rules, **_with(art, 0.70, 0.55, lo=-0.02, champion=_scored("v0001", 0.75, 0.55, -0.08, 0.70))
    )
    assert not r2["promoted"] and r2["version"] == "v0002" and "reclora 0.7000 vs CRM 0.7100" in r2["reason"]
    assert champion(reg)["version"] == "v0001" and show(reg, "v0002")["status"] == "challenger"
    # better than the re-scored champion v0001 on the same samples: promoted
    r3 = register_and_gate(
        reg, rules=rules, **_with(art, 0.78, 0.54, champion=_scored("v0001", 0.75, 0.55, 0.005, 0.78))
    )
    assert r3["promoted"] and r3["previous_champion"] == "v0001" and champion(reg)["version"] == "v0003"
    # evidence against v0001, but v0003 is the champion now: not promoted, the reason says why
    r4 = register_and_gate(
        reg, rules=rules, **_with(art, 0.80, 0.50, champion=_scored("v0001", 0.75, 0.55, 0.02, 0.80))
    )
    assert not r4["promoted"] and "champion is v0003 now" in r4["reason"] and "evaluated against v0001" in r4["reason"]
    assert show(reg, "v0004")["promotion"]["decision"]["promote"] is True  # the gate passed on its evidence
    # metrics without evidence: registered, not promoted
    r5 = register_and_gate(reg, rules=rules, **_with(art, 0.9, 0.4) | {"metrics": _report(0.9, 0.4)})
    assert not r5["promoted"] and "no same-sample evidence" in r5["reason"]
    doc = history(reg)
    assert [h["version"] for h in doc["history"]] == ["v0001"]
    assert any(e["version"] == "v0002" and e["promoted"] is False for e in doc["events"])
    statuses = {r["version"]: r["status"] for r in list_versions(reg)}
    assert statuses == {
        "v0001": "challenger",
        "v0002": "challenger",
        "v0003": "champion",
        "v0004": "challenger",
        "v0005": "challenger",
    }


def test_manual_promotion_of_another_data_set_needs_the_flag(tmp_path, art):
    """A GoodBooks version does not silently replace a MovieLens champion, by hand either."""
    from reclora.registry import OtherData

    reg = tmp_path / "reg"
    books = tmp_path / "books"
    books.mkdir()
    pd.DataFrame({"item_id": [1, 2], "title": ["Dune", "Emma"], "genres": ["", ""]}).to_parquet(books / "items.parquet")
    (books / "meta.json").write_text(json.dumps({"dataset": "goodbooks-10k", "rows": 99, "label_threshold": 4.0}))
    register(reg, **art)  # synthetic
    register(reg, **{**art, "items_path": str(books / "items.parquet")})  # goodbooks-10k
    same = tmp_path / "same"
    same.mkdir()
    pd.DataFrame({"item_id": [2, 3], "title": ["B", "C"], "genres": ["", ""]}).to_parquet(same / "items.parquet")
    (same / "meta.json").write_text((Path(art["items_path"]).parent / "meta.json").read_text())
    register(reg, **{**art, "items_path": str(same / "items.parquet")})  # synthetic, catalogue grown: comparable
    promote(reg, "v0001")
    with pytest.raises(OtherData, match=r"v0002 .*data set synthetic vs goodbooks-10k.*--allow-other-data"):
        promote(reg, "v0002")
    assert champion(reg)["version"] == "v0001"
    proc = reclora_cli("registry", "promote", "v0002", "--uri", str(reg))
    assert proc.returncode == 2 and "--allow-other-data" in proc.stderr and champion(reg)["version"] == "v0001"
    assert promote(reg, "v0003")["changed"]  # same data set, shared items with the same titles
    out = json.loads(reclora_cli("registry", "promote", "v0002", "--uri", str(reg), "--allow-other-data").stdout)
    assert out["version"] == "v0002" and "allowed by hand" in out["reason"] and champion(reg)["version"] == "v0002"
    # same data set name, but the shared ids name other items: another catalogue
    other = tmp_path / "other"
    other.mkdir()
    pd.DataFrame({"item_id": [1, 2], "title": ["A", "Zed"], "genres": ["", ""]}).to_parquet(other / "items.parquet")
    (other / "meta.json").write_text((Path(art["items_path"]).parent / "meta.json").read_text())
    register(reg, **{**art, "items_path": str(other / "items.parquet")})
    promote(reg, "v0001", allow_other_data=True)
    with pytest.raises(OtherData, match=r"1 of 2 shared item ids name other items \(item 2: 'B' vs 'Zed'\)"):
        promote(reg, "v0004")


def test_rollback_restores_the_previous_champion(tmp_path, art):
    reg = tmp_path / "reg"
    with pytest.raises(NoChampion):
        rollback(reg)
    assert champion(reg) is None
    with pytest.raises(NoChampion):
        resolve(reg, "champion")
    register(reg, **art)
    register(reg, **art)
    promote(reg, "v0001")
    with pytest.raises(NoPreviousChampion, match="no previous champion"):
        rollback(reg)
    promote(reg, 2)
    r = rollback(reg)
    assert (r["version"], r["previous"]) == ("v0001", "v0002")
    assert champion(reg)["version"] == "v0001" and resolve(reg) == r["path"]
    with pytest.raises(NoPreviousChampion):
        rollback(reg)
    assert issubclass(NoPreviousChampion, RecLoRAError)
    doc = json.loads((reg / "reclora" / "champion.json").read_text())
    assert doc["champion"] == "v0001" and [e["action"] for e in doc["events"]] == ["promote", "promote", "rollback"]


# ------------------------------------------------------------------ memory:// and errors
def test_memory_uri_register_list_show(art):
    import fsspec

    uri = f"memory://reg-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    root = uri.removeprefix("memory://")
    try:
        m1 = register(uri, **art)
        m2 = register_and_gate(uri, **_with(art, 0.8, 0.5))
        assert (m1["version"], m2["version"]) == ("v0001", "v0002") and m2["promoted"]  # v0001 was never promoted
        assert m1["path"] == f"memory:///{root}/reclora/versions/v0001"
        assert [r["version"] for r in list_versions(uri)] == ["v0001", "v0002"]
        shown = show(uri, "v0001")
        assert shown["files"] == m1["files"] and shown["status"] == "challenger"
        assert resolve(uri) == m2["path"] and champion(uri)["version"] == "v0002"
        assert (
            fs.cat_file(f"/{root}/reclora/versions/v0001/crm/crm.safetensors")
            == Path(art["crm_dir"], "model", "crm.safetensors").read_bytes()
        )
        assert verify(uri, "v0001")["ok"]
        # a half-written version (no manifest.json) is invisible and its number is not reused
        fs.pipe_file(f"/{root}/reclora/versions/v0003/crm/crm.safetensors", b"partial")
        assert [r["version"] for r in list_versions(uri)] == ["v0001", "v0002"]
        with pytest.raises(VersionNotFound):
            show(uri, "v0003")
        assert register(uri, **art)["version"] == "v0004"
        # an abandoned claim older than stale_after is swept by the next registration
        fs.pipe_file(f"/{root}/reclora/versions/v0005/.claim", json.dumps({"created": time.time() - 10}).encode())
        assert register(uri, **art, stale_after=1.0)["version"] == "v0005"
        assert promote(uri, "v0001")["previous"] == "v0002" and rollback(uri)["version"] == "v0002"
    finally:
        fs.rm(f"/{root}", recursive=True)


def test_model_card_has_data_metrics_use_limits_lineage(tmp_path, art):
    m = register(tmp_path / "reg", **art)
    card = (Path(m["path"]) / "MODEL_CARD.md").read_text()
    assert card.startswith("# Model card: reclora v0001")
    assert "| **reclora** (this version) | 0.7500 | 0.5500 | 0.7000 | 200 |" in card
    assert "| CRM | 0.7100 | 0.6100 | 0.6600 | 200 |" in card and "| lora | 0.6900 | 0.6300 |" in card
    for text in (
        "## Data",
        "synthetic",
        "1234",
        "0123abcd.dir",
        "## Intended use",
        "## Limits",
        "CPU",
        "Offline CTR evaluation only",
        "Cold start",
        "## Lineage",
        "run-42",
        "git_commit",
    ):
        assert text in card, text


def test_clear_errors(tmp_path, art):
    reg = tmp_path / "reg"
    with pytest.raises(DataError, match="CRM directory"):
        register(reg, **{**art, "crm_dir": str(tmp_path / "nope")})
    empty = tmp_path / "empty-adapter"
    empty.mkdir()
    with pytest.raises(DataError, match="safetensors"):
        register(reg, **{**art, "adapter_dir": str(empty)})
    with pytest.raises(DataError, match="items table"):
        register(reg, **{**art, "items_path": str(tmp_path / "missing.parquet")})
    with pytest.raises(DataError, match="AUC/LogLoss"):
        register(reg, **{**art, "metrics": {"note": "nothing"}})
    assert not (reg / "reclora" / "versions").exists() or os.listdir(reg / "reclora" / "versions") == []
    register(reg, **art)
    with pytest.raises(VersionNotFound, match="v0007 not found.*v0001"):
        show(reg, "v0007")
    with pytest.raises(RegistryError, match="bad version reference"):
        resolve(reg, "yesterday")
    with pytest.raises(RegistryError, match="bad model name"):
        list_versions(reg, name="../x")
    try:
        import model_registry  # noqa: F401
    except ImportError:
        with pytest.raises(RegistryError, match="pip install model-registry"):
            register(reg, **art, model_registry_url="https://mr.example.invalid")
        assert [r["version"] for r in list_versions(reg)] == ["v0001"]  # nothing was written


def test_summarize_metrics_shapes():
    s = summarize_metrics(_report(0.75, 0.55))
    assert s["model"] == "reclora" and s["test"]["auc"] == 0.75 and set(s["baselines"]) == {"CRM", "lora"}
    s = summarize_metrics(
        {
            "model": "reclora",
            "eval": {"auc": 0.7, "logloss": 0.6, "accuracy": 0.6, "n": 10},
            "baselines": {"CRM": {"model": "CRM", "test": {"auc": 0.72, "logloss": 0.58}}},
        }
    )
    assert s["test"] == {"auc": 0.7, "logloss": 0.6, "accuracy": 0.6, "n": 10} and s["baselines"]["CRM"]["auc"] == 0.72
    assert summarize_metrics(_report(0.75, 0.55), model="CRM")["test"]["auc"] == 0.71
    with pytest.raises(DataError):
        summarize_metrics(_report(0.75, 0.55), model="nope")


# ------------------------------------------------------------------ issue 24: a registry that verifies itself
def _cut(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])


# damage -> (how to do it to a version directory, the words its reason holds)
DAMAGE = {
    "manifest cut short": (lambda v: _cut(v / "manifest.json"), "manifest.json is not valid JSON"),
    "manifest repeats a key": (
        lambda v: (v / "manifest.json").write_text(
            (v / "manifest.json").read_text().replace('"base_model":', '"created_at": "x", "base_model":', 1)
        ),
        "repeats the key 'created_at'",
    ),
    "manifest lacks its files": (
        lambda v: (v / "manifest.json").write_text(
            json.dumps({k: x for k, x in json.loads((v / "manifest.json").read_text()).items() if k != "files"})
        ),
        "lacks 'files'",
    ),
    "manifest of another version": (
        lambda v: (v / "manifest.json").write_text(
            json.dumps({**json.loads((v / "manifest.json").read_text()), "version": "v0009"})
        ),
        "names version 'v0009'",
    ),
    "adapter cut short": (
        lambda v: _cut(v / "adapter" / "reclora_adapter.safetensors"),
        "adapter/reclora_adapter.safetensors: ",
    ),
    "adapter changed, same size": (
        lambda v: (v / "adapter" / "reclora_adapter.json").write_text(
            (v / "adapter" / "reclora_adapter.json").read_text().replace("2", "3")
        ),
        "adapter/reclora_adapter.json: sha256 differs",
    ),
    "crm missing": (lambda v: (v / "crm" / "crm.safetensors").unlink(), "crm/crm.safetensors: missing"),
    "a file the manifest does not list": (
        lambda v: (v / "adapter" / "extra.safetensors").write_bytes(b"x"),
        "adapter/extra.safetensors: not in the manifest",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_version_that_does_not_verify_is_listed_unreadable_and_refused_everywhere(damage, tmp_path, art, capsys):
    from reclora.cli import app
    from reclora.cli.common import run_cli
    from reclora.serving.predictor import resolve_version_dir

    reg = tmp_path / "reg"
    for _ in range(3):
        register(reg, **art)
    promote(reg, "v0001")
    promote(reg, "v0003")  # v0001 is the one to roll back to
    do, words = DAMAGE[damage]
    broken = reg / "reclora" / "versions"
    for v in ("v0001", "v0002"):  # the rollback target and a challenger
        do(broken / v)
    rows = {r["version"]: r for r in list_versions(reg)}
    for v in ("v0001", "v0002"):
        assert rows[v]["status"] == "unreadable" and words in rows[v]["error"], rows[v]
    assert rows["v0003"]["status"] == "champion" and "error" not in rows["v0003"]
    assert not verify(reg, "v0002")["ok"] and words in "; ".join(verify(reg, "v0002")["problems"])
    # the command never crashes and shows every version, the broken ones with their reason
    assert run_cli(app, ["registry", "list", "--uri", str(reg)], prog_name="reclora") == 0
    out = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in out] == ["v0001", "v0002", "v0003"] and words in out[1], out
    # promotion, rollback, deployment (its dry run too) and serving refuse it
    before = (reg / "reclora" / "champion.json").read_bytes()
    with pytest.raises(UnverifiedVersion, match="v0002 .* cannot be promoted: it does not verify"):
        promote(reg, "v0002")
    with pytest.raises(UnverifiedVersion, match="v0001 .* cannot be rolled back to"):
        rollback(reg)
    for args in (
        ["registry", "promote", "v0002"],
        ["registry", "rollback"],
        ["registry", "promote", "v0002", "--deploy", "--dry-run", "--set", "pipeline.serving.storage_root=pvc://reg"],
        ["registry", "rollback", "--deploy", "--dry-run", "--set", "pipeline.serving.storage_root=pvc://reg"],
    ):
        assert run_cli(app, [*args, "--uri", str(reg)], prog_name="reclora") == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "does not verify" in err[0] and words in err[0], err
    assert (reg / "reclora" / "champion.json").read_bytes() == before  # nothing changed
    for ref in ("v0002", "v0001"):
        with pytest.raises(DataError, match="cannot be served: it does not verify"):
            resolve_version_dir(reg, ref)
    if damage != "manifest of another version":  # a copy (KServe's /mnt/models) may have any directory name
        with pytest.raises(DataError, match="cannot be served"):
            resolve_version_dir(broken / "v0002")  # a version directory given directly
    assert resolve_version_dir(reg) == broken / "v0003"  # the champion verifies and is served


def test_the_handed_half_written_version(tmp_path, art, capsys):
    """half_written_version/: v0003's manifest cut in half made `registry list` crash (KeyError
    'created_at') and `promote v0003` succeed; now it is listed with the reason and refused."""
    from reclora.cli import app
    from reclora.cli.common import run_cli

    reg = tmp_path / "reg"
    for _ in range(3):
        register(reg, **art)
    _cut(reg / "reclora" / "versions" / "v0003" / "manifest.json")
    assert run_cli(app, ["registry", "list", "--uri", str(reg)], prog_name="reclora") == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[2].startswith("v0003  unreadable  manifest.json is not valid JSON")
    assert run_cli(app, ["registry", "promote", "v0003", "--uri", str(reg)], prog_name="reclora") == 2
    assert "v0003" in capsys.readouterr().err and not (reg / "reclora" / "champion.json").exists()


def test_an_object_store_version_is_verified_too(art):
    import fsspec

    uri = f"memory://reg-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    root = uri.removeprefix("memory://")
    try:
        register(uri, **art)
        register(uri, **art)
        fs.pipe_file(f"/{root}/reclora/versions/v0002/params.json", b"{}")
        rows = {r["version"]: r for r in list_versions(uri)}
        assert rows["v0001"]["status"] == "challenger"
        assert (
            rows["v0002"]["status"] == "unreadable"
            and "params.json: 2 bytes, the manifest says" in rows["v0002"]["error"]
        )
        with pytest.raises(UnverifiedVersion):
            promote(uri, "v0002")
        assert promote(uri, "v0001")["changed"]
    finally:
        fs.rm(f"/{root}", recursive=True)


# ------------------------------------------------------------------ issue 24: a refused command writes nothing
def _tree(root: Path) -> dict[str, bytes | None] | None:
    """Every name under ``root`` with its bytes (None for a directory); None when ``root`` does not exist."""
    if not root.exists():
        return None
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def _other_data(tmp_path: Path, art: dict) -> dict:
    """register() kwargs for a version trained on another data set (GoodBooks) than ``art``'s."""
    books = tmp_path / "books"
    books.mkdir(exist_ok=True)
    pd.DataFrame({"item_id": [1, 2], "title": ["Dune", "Emma"], "genres": ["", ""]}).to_parquet(books / "items.parquet")
    (books / "meta.json").write_text(json.dumps({"dataset": "goodbooks-10k", "rows": 99, "label_threshold": 4.0}))
    return {**art, "items_path": str(books / "items.parquet")}


# the registry before the commands -> (how to make it, the refused commands with words of their one error line,
# a version promote() refuses)
REFUSED = {
    "no registry at all": (
        lambda reg, tmp_path, art: None,
        [
            (["registry", "rollback"], "nothing to roll back"),
            (["registry", "rollback", "--deploy", "--dry-run"], "nothing to roll back"),
            (["registry", "promote", "v0001"], "version v0001 not found"),
            (["registry", "show", "champion"], "no champion yet"),
        ],
        "v0002",
    ),
    "versions, no champion": (
        lambda reg, tmp_path, art: [register(reg, **art) for _ in range(2)],
        [
            (["registry", "rollback"], "nothing to roll back"),  # the handed case: it left .champion.lock
            (["registry", "rollback", "--dry-run"], "nothing to roll back"),
            (["registry", "promote", "v0009"], "version v0009 not found"),
            (["registry", "promote", "yesterday"], "bad version reference"),
            (["registry", "promote", "v0001", "--deploy"], "storage_root"),
            (["registry", "promote", "v0001", "--deploy", "--dry-run"], "storage_root"),
        ],
        "v0009",
    ),
    "a champion, no previous one": (
        lambda reg, tmp_path, art: [register(reg, **art), register(reg, **_other_data(tmp_path, art)), promote(reg, 1)],
        [
            (["registry", "rollback"], "no previous champion"),
            (["registry", "promote", "v0002"], "--allow-other-data"),  # refused under the lock
            (["registry", "promote", "v0002", "--deploy", "--dry-run"], "--allow-other-data"),
        ],
        "v0002",
    ),
    "a rollback target that does not verify": (
        lambda reg, tmp_path, art: [
            register(reg, **art),
            register(reg, **art),
            promote(reg, 1),
            promote(reg, 2),
            _cut(reg / "reclora" / "versions" / "v0001" / "adapter" / "reclora_adapter.safetensors"),
        ],
        [
            (["registry", "rollback"], "v0001 in"),  # refused under the lock, after reading champion.json
            (["registry", "promote", "v0001"], "cannot be promoted: it does not verify"),
        ],
        "v0001",
    ),
}


@pytest.mark.parametrize("state", list(REFUSED))
def test_a_refused_registry_command_leaves_the_registry_as_it_was(state, tmp_path, art, capsys):
    """Every refused promote, rollback or show (exit 2, one error line) leaves every name and byte under the
    registry as it was: no lock file, no directory, no temp file; a successful change leaves no lock file either."""
    from reclora.cli import app
    from reclora.cli.common import run_cli

    reg = tmp_path / "reg"
    make, commands, refused_version = REFUSED[state]
    make(reg, tmp_path, art)
    before = _tree(reg)
    assert before is None or not any(".champion.lock" in n or ".tmp" in n for n in before), before
    for args, words in commands:
        rc = run_cli(app, [*args, "--uri", str(reg)], prog_name="reclora")
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("error:") and words in err[0], (args, err)
        assert _tree(reg) == before, args
    # the library calls too, the ones refused under champion.json's lock included
    for call in (lambda: rollback(reg), lambda: promote(reg, refused_version)):
        with pytest.raises(RecLoRAError):
            call()
        assert _tree(reg) == before


def test_the_champion_lock_leaves_nothing_and_still_serializes(tmp_path, art):
    """The lock file is removed after every change, and read-modify-write of champion.json by many processes at
    once loses no update (a waiter left holding a removed lock file takes the new one)."""
    from reclora.registry.backend import Store

    reg = tmp_path / "reg"
    register(reg, **art)
    register(reg, **art)
    promote(reg, "v0001")
    promote(reg, "v0002")
    rollback(reg)
    assert sorted(os.listdir(reg / "reclora")) == ["champion.json", "versions"]
    ctx = mp.get_context("fork")
    n_procs, n_each = 6, 15
    barrier, q = ctx.Barrier(n_procs), ctx.Queue()
    procs = [ctx.Process(target=_append_events, args=(str(reg), i, n_each, barrier, q)) for i in range(n_procs)]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert results == ["ok"] * n_procs
    events = Store(reg).champion_doc()["events"]
    mine = sorted((e["proc"], e["n"]) for e in events if e["action"] == "test")
    assert mine == [(i, n) for i in range(n_procs) for n in range(n_each)]  # every update kept, none twice
    assert sorted(os.listdir(reg / "reclora")) == ["champion.json", "versions"]


def _append_events(reg: str, proc: int, n_each: int, barrier, q) -> None:
    from reclora.registry.backend import Store

    def add(n: int):
        def fn(doc: dict) -> dict:
            events = list(doc["events"])
            time.sleep(0.002)  # widen the window in which an unserialized writer would lose an update
            doc["events"] = [*events, {"action": "test", "proc": proc, "n": n}]
            return doc

        return fn

    try:
        barrier.wait(timeout=30)
        store = Store(reg)
        for n in range(n_each):
            store.update_champion(add(n))
        q.put("ok")
    except BaseException as e:  # report instead of dying silently
        q.put(f"error: {e!r}")


def test_a_broken_version_is_named_before_the_serving_settings(tmp_path, art, capsys):
    """`promote v0003 --deploy --dry-run` of a half-written v0003 with no storage_root set: the user learns first
    that v0003 cannot be promoted, not about the serving settings (fixing those would not help)."""
    from reclora.cli import app
    from reclora.cli.common import run_cli

    reg = tmp_path / "reg"
    for _ in range(3):
        register(reg, **art)
    _cut(reg / "reclora" / "versions" / "v0003" / "manifest.json")
    for args in (["--deploy", "--dry-run"], ["--deploy"], ["--dry-run"]):
        rc = run_cli(app, ["registry", "promote", "v0003", *args, "--uri", str(reg)], prog_name="reclora")
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1, err
        assert "v0003 in" in err[0] and "cannot be promoted: it does not verify" in err[0], err
        assert "storage_root" not in err[0], err
    # a version that verifies gets to the serving settings, and with them set, to the patch it would send
    rc = run_cli(app, ["registry", "promote", "v0002", "--deploy", "--dry-run", "--uri", str(reg)], prog_name="reclora")
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "storage_root" in err and "local path" in err, err
    args = ["registry", "promote", "v0002", "--deploy", "--dry-run", "--set", "pipeline.serving.storage_root=pvc://r"]
    assert run_cli(app, [*args, "--uri", str(reg)], prog_name="reclora") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["version"] == "v0002" and out["deploy"]["storageUri"] == "pvc://r/reclora/versions/v0002"
    assert not (reg / "reclora" / "champion.json").exists()  # dry runs changed nothing
