"""Promotion a data scientist can trust: paired bootstrap intervals, sliced metrics on the right samples, the
gate on same-sample evidence (baseline, interval, champion re-scored in the same run) and a report that
opens with the decision."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from reclora.evaluation import paired_bootstrap_auc_diff
from reclora.evaluation.metrics import bootstrap_aucs
from reclora.evaluation.slices import SliceInputs, SliceSpec, define_slices, slice_metrics
from reclora.stages import KEY, PREDICTIONS, evaluate_stage


# ------------------------------------------------------------------ paired bootstrap
def _fixed_example(n: int = 80, seed: int = 11):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(float)
    a = np.round(np.clip(0.5 + 0.25 * (y - 0.5) + rng.normal(0, 0.2, n), 0, 1), 2)  # ties on purpose
    b = np.round(np.clip(0.5 + 0.10 * (y - 0.5) + rng.normal(0, 0.2, n), 0, 1), 1)
    return y, a, b


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_paired_bootstrap_interval_equals_an_independent_computation(level):
    """The same resamples (rows drawn as default_rng(seed).integers(0, n, (n_boot, n))), scored by sklearn one
    at a time, and the central interval by np.quantile at (1 - level) / 2 and 1 - (1 - level) / 2."""
    y, a, b = _fixed_example()
    n_boot, seed = 400, 5
    got = paired_bootstrap_auc_diff(y, a, b, n_boot=n_boot, seed=seed, level=level)
    idx = np.random.default_rng(seed).integers(0, len(y), size=(n_boot, len(y)))
    assert all(0 < y[i].sum() < len(y) for i in idx)  # no single-class resample in this example: none redrawn
    d = np.array([roc_auc_score(y[i], a[i]) - roc_auc_score(y[i], b[i]) for i in idx])
    tail = (1 - level) / 2
    assert got["diff"] == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b), abs=1e-6)
    assert got["lo"] == pytest.approx(np.quantile(d, tail), abs=1e-6)
    assert got["hi"] == pytest.approx(np.quantile(d, 1 - tail), abs=1e-6)
    assert got["p_b_better_or_equal"] == pytest.approx(np.mean(d <= 0), abs=1e-4)
    assert (got["n"], got["n_boot"], got["level"]) == (len(y), n_boot, level)


def _delong_se(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """DeLong's standard error of AUC(a) - AUC(b) on the same samples (an asymptotic formula, no resampling)."""
    pos, neg = y == 1, y == 0

    def components(p):
        x, z = p[pos][:, None], p[neg][None, :]
        psi = (x > z) + 0.5 * (x == z)
        return psi.mean(axis=1), psi.mean(axis=0)

    (va, wa), (vb, wb) = components(a), components(b)
    s10 = np.cov(np.vstack([va, vb]))
    s01 = np.cov(np.vstack([wa, wb]))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / pos.sum() + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / neg.sum()
    return float(np.sqrt(var))


def test_paired_bootstrap_width_agrees_with_delong():
    """An independent check of the interval's width: on 2,000 samples the 95% bootstrap interval is close to
    diff +- 1.96 DeLong standard errors (Monte Carlo error of 2,000 resamples: a few per cent)."""
    rng = np.random.default_rng(3)
    n = 2000
    y = (rng.random(n) < 0.55).astype(float)
    shared = rng.normal(0, 1, n)
    a = 1 / (1 + np.exp(-(1.2 * (y - 0.5) + shared + 0.6 * rng.normal(0, 1, n))))
    b = 1 / (1 + np.exp(-(0.9 * (y - 0.5) + shared + 0.6 * rng.normal(0, 1, n))))
    got = paired_bootstrap_auc_diff(y, a, b, n_boot=2000, seed=1)
    se = _delong_se(y, a, b)
    assert (got["hi"] - got["lo"]) / 2 == pytest.approx(1.96 * se, rel=0.1)
    assert (got["lo"] + got["hi"]) / 2 == pytest.approx(got["diff"], abs=0.25 * se)
    # paired: far narrower than the unpaired interval of the two AUCs' own noise
    _, boot = bootstrap_aucs(y, [a, b], n_boot=500, seed=2)
    assert np.std(boot[:, 0] - boot[:, 1]) < 0.7 * np.sqrt(np.var(boot[:, 0]) + np.var(boot[:, 1]))


# ------------------------------------------------------------------ slices
def _slice_fixture():
    """Samples whose slice of every feature is set by construction, with scores that give each slice of item
    popularity a known AUC: head items ranked perfectly (1.0), tail items backwards (0.0), unseen items all
    tied (0.5). Training counts: items 1 and 2 are the top 20% of the 10 seen items (head), 3..10 tail, 11
    and 12 unseen; users 1..5 trained, 6 and 7 not."""
    counts = pd.Series({1: 50, 2: 40, 3: 9, 4: 8, 5: 7, 6: 6, 7: 5, 8: 3, 9: 2, 10: 1})
    rng = np.random.default_rng(0)
    rows = []
    for bucket, items in (("head", [1, 2]), ("tail", [3, 4, 5, 6, 7, 8, 9, 10]), ("unseen", [11, 12])):
        for i in range(60):
            label = i % 2
            p = {"head": 0.2 + 0.6 * label, "tail": 0.8 - 0.6 * label, "unseen": 0.5}[bucket] + 0.01 * rng.random() * (
                bucket != "unseen"
            )
            rows.append(
                {
                    "user_id": int(rng.integers(1, 8)),
                    "item_id": items[i % len(items)],
                    "label": label,
                    "p": p,
                    "n_history": int(rng.choice([3, 19, 20, 49, 50, 400])),
                    "bucket": bucket,
                }
            )
    s = pd.DataFrame(rows)
    items = pd.DataFrame(
        {
            "item_id": np.arange(1, 13),
            "title": [f"t{i}" for i in range(1, 13)],
            "genres": ["A|B", "A", "B", "A|C", "B", "A", "B", "A|B", "B", "A", "", None],
        }
    )
    return s, SliceInputs(s[["user_id", "item_id", "n_history"]], counts, np.arange(1, 6), items, None)


def test_each_slice_is_computed_on_the_right_samples():
    s, inputs = _slice_fixture()
    spec = SliceSpec(min_samples=30, head_share=0.2, history_edges=(20, 50), fields=("genres",))
    slices = define_slices(inputs, spec)
    y, p = s["label"].to_numpy(), s["p"].to_numpy()
    rows = {
        (r["feature"], r["value"]): r
        for r in slice_metrics(
            y, {"m": p, "flat": np.full(len(y), 0.5)}, slices, spec, comparisons=[("m", "flat")], n_boot=200
        )
    }
    # the known AUCs of the popularity slices
    assert [rows[("item popularity", v)]["models"]["m"]["auc"] for v in ("head", "tail", "unseen")] == [1.0, 0.0, 0.5]
    assert rows[("unseen in training", "item")]["models"]["m"]["auc"] == 0.5
    # every slice: its samples by the fixture's own definition, its AUC/LogLoss/count computed here
    truth = {
        ("item popularity", "head"): s["bucket"] == "head",
        ("item popularity", "tail"): s["bucket"] == "tail",
        ("item popularity", "unseen"): s["bucket"] == "unseen",
        ("history length", "short"): s["n_history"] < 20,
        ("history length", "medium"): s["n_history"].between(20, 49),
        ("history length", "long"): s["n_history"] >= 50,
        ("unseen in training", "user"): s["user_id"] >= 6,
        ("unseen in training", "item"): s["item_id"] >= 11,
        ("genres", "A"): s["item_id"].isin([1, 2, 4, 6, 8, 10]),
        ("genres", "B"): s["item_id"].isin([1, 3, 5, 7, 8, 9]),
        ("genres", "C"): s["item_id"] == 4,
    }
    assert set(rows) == set(truth)  # items 11 and 12 (no genres) are in no genre slice
    for key, mask in truth.items():
        r, m = rows[key], mask.to_numpy()
        assert (r["n"], r["positives"]) == (int(m.sum()), int(y[m].sum())), key
        if m.sum() < 30:
            assert not r["scored"] and "too small" in r["note"], key
            continue
        assert r["models"]["m"]["auc"] == pytest.approx(roc_auc_score(y[m], p[m]), abs=1e-6), key
        assert r["models"]["m"]["logloss"] == pytest.approx(log_loss(y[m], p[m]), abs=1e-6), key
        assert r["models"]["m"]["lo"] <= r["models"]["m"]["auc"] <= r["models"]["m"]["hi"]
        assert r["diffs"]["m - flat"]["diff"] == pytest.approx(roc_auc_score(y[m], p[m]) - 0.5, abs=1e-6)
    assert rows[("genres", "C")]["n"] < 30  # the fixture has a slice too small to score


def test_head_share_and_history_edges_are_the_boundaries():
    s, inputs = _slice_fixture()
    wide = define_slices(inputs, SliceSpec(head_share=0.5, history_edges=(4, 400)))
    head = next(x for x in wide if x.value == "head").mask
    assert set(s.loc[head, "item_id"]) == {1, 2, 3, 4, 5}  # the top 5 of 10 seen items
    short = next(x for x in wide if x.value == "short").mask
    long_ = next(x for x in wide if x.value == "long").mask
    assert set(s.loc[short, "n_history"]) == {3} and set(s.loc[long_, "n_history"]) == {400}
    with pytest.raises(ValueError, match="history_edges"):
        SliceSpec(history_edges=(50, 20))
    with pytest.raises(ValueError, match="neither the items nor the users"):
        define_slices(inputs, SliceSpec(fields=("director",)))


# ------------------------------------------------------------------ the evaluate stage on real prepared data
@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from reclora.config import deep_merge, load_params
    from reclora.data import prepare

    d = tmp_path_factory.mktemp("gate")
    params = deep_merge(
        load_params(),
        {"synthetic": {"n_users": 80, "n_items": 100, "mean_interactions": 30}, "evaluation": {"bootstrap": 500}},
    )
    prepare("synthetic", None, d / "data", params)
    test = pd.read_parquet(d / "data" / "samples" / "test.parquet")
    return d / "data", test, params


def _predictions(d: Path, test: pd.DataFrame, strength: float, seed: int) -> Path:
    """A model's predictions on the test split: the label's signal with this strength plus noise."""
    rng = np.random.default_rng(seed)
    z = strength * (test["label"].to_numpy() - 0.5) + rng.normal(0, 1, len(test))
    d.mkdir(parents=True, exist_ok=True)
    test[KEY + ["label"]].assign(p=1 / (1 + np.exp(-z))).to_parquet(d / PREDICTIONS, index=False)
    return d


def _rules(params: dict, **promotion) -> dict:
    from reclora.config import deep_merge

    return deep_merge(params, {"pipeline": {"promotion": promotion}})


def test_challenger_below_the_baseline_is_not_promoted_and_the_report_opens_with_the_decision(prepared, tmp_path):
    data, test, params = prepared
    runs = {
        "CRM": _predictions(tmp_path / "crm", test, 2.5, 1),
        "RecLoRA": _predictions(tmp_path / "rec", test, 0.5, 2),
    }
    m = evaluate_stage(
        runs, tmp_path / "report", data_dir=data, params=_rules(params, baseline="CRM", baseline_margin=0.0)
    )
    gate = m["gate"]
    d = gate["decision"]
    auc_rec, auc_crm = m["models"]["RecLoRA"]["auc"], m["models"]["CRM"]["auc"]
    assert auc_rec < auc_crm and not d["promote"]
    assert f"RecLoRA {auc_rec:.4f} vs CRM {auc_crm:.4f}" in d["reason"] and "does not clear" in d["reason"]
    assert gate["samples"] == len(test) == m["context"]["evaluated_samples"]
    # the interval is the paired bootstrap's on the same rows
    want = paired_bootstrap_auc_diff(
        test["label"],
        pd.read_parquet(runs["RecLoRA"] / PREDICTIONS)["p"],
        pd.read_parquet(runs["CRM"] / PREDICTIONS)["p"],
        n_boot=500,
    )
    assert gate["baseline"]["diff"] | {"n": want["n"]} == want
    # one page: the decision and why first, then the slices (table and plot), then the rest
    page = (tmp_path / "report" / "report.html").read_text()
    body = page[page.index("<body>") :]
    order = [
        body.index(x)
        for x in (
            "<h1>",
            "Decision: not promoted",
            "<h2>Slices</h2>",
            'alt="AUC per slice"',
            "<h2>Metrics</h2>",
            "<h2>Plots</h2>",
        )
    ]
    assert order == sorted(order)
    assert re.search(r"<h1>[^<]*</h1>\s*<p class=\"meta\">[^\n]*</p>\s*<section class=\"decision hold\">", body)
    assert (tmp_path / "report" / "slices.png").read_bytes()[:4] == b"\x89PNG"
    assert "<th>ECE</th>" in page
    # the slices in metrics.json are the test split's: counts from the prepared data, independently
    rows = {(r["feature"], r["value"]): r for r in m["slices"]["rows"]}
    train = pd.read_parquet(data / "samples" / "train.parquet")
    seen_items = set(train["item_id"])
    assert rows[("unseen in training", "item")]["n"] == int((~test["item_id"].isin(seen_items)).sum())
    assert rows[("unseen in training", "user")]["n"] == int((~test["user_id"].isin(set(train["user_id"]))).sum())
    assert rows[("history length", "short")]["n"] == int((test["n_history"] < 20).sum())
    items = pd.read_parquet(data / "items.parquet")
    drama = test["item_id"].isin(items.loc[items["genres"].str.split("|").apply(lambda g: "Drama" in g), "item_id"])
    assert rows[("genres", "Drama")]["n"] == int(drama.sum())
    n_pop = sum(rows[("item popularity", v)]["n"] for v in ("unseen", "tail", "head"))
    assert n_pop == len(test)


def test_an_interval_that_straddles_the_margin_does_not_promote(prepared, tmp_path):
    data, test, params = prepared
    runs = {
        "CRM": _predictions(tmp_path / "crm", test, 1.0, 3),
        "RecLoRA": _predictions(tmp_path / "rec", test, 1.6, 4),
    }
    first = evaluate_stage(runs, tmp_path / "r0", data_dir=data, params=params)
    d = first["gate"]["baseline"]["diff"]
    assert d["lo"] < d["diff"] and d["diff"] > 0
    straddled = (d["lo"] + d["diff"]) / 2  # the point estimate clears it, the interval's lower end does not
    m = evaluate_stage(runs, tmp_path / "r1", data_dir=data, params=_rules(params, baseline_margin=round(straddled, 6)))
    assert not m["gate"]["decision"]["promote"] and "does not clear" in m["gate"]["decision"]["reason"]
    cleared = d["lo"] - 0.001
    m = evaluate_stage(runs, tmp_path / "r2", data_dir=data, params=_rules(params, baseline_margin=round(cleared, 6)))
    assert m["gate"]["decision"]["promote"] and "Decision: promote" in (tmp_path / "r2" / "report.html").read_text()


def _fake_version(tmp_path: Path, data: Path | None, dataset: str) -> dict:
    """register() kwargs of a version whose files are not a loadable model (a CRM of random bytes)."""
    from safetensors.numpy import save_file

    crm, llm, meta = tmp_path / "fcrm" / "model", tmp_path / "fllm" / "adapter", tmp_path / "fdata"
    for x in (crm, llm, meta):
        x.mkdir(parents=True, exist_ok=True)
    save_file({"w": np.zeros((2, 2), np.float32)}, str(crm / "crm.safetensors"))
    save_file({"w": np.zeros((2, 2), np.float32)}, str(llm / "reclora_adapter.safetensors"))
    if data is not None:
        pd.read_parquet(data / "items.parquet").to_parquet(meta / "items.parquet")
    else:
        pd.DataFrame({"item_id": [1], "title": ["Dune"], "genres": [""]}).to_parquet(meta / "items.parquet")
    (meta / "meta.json").write_text(json.dumps({"dataset": dataset}))
    return {
        "crm_dir": str(crm.parent),
        "adapter_dir": str(llm.parent),
        "items_path": str(meta / "items.parquet"),
        "params": {},
        "metrics": {"auc": 0.99, "logloss": 0.1, "n": 5000},
        "lineage": {},
        "base_model": "nowhere",
    }


@pytest.mark.parametrize("case", ["other data set", "unreadable"])
def test_a_champion_that_cannot_be_scored_is_reported_and_the_gate_falls_back(prepared, tmp_path, case):
    from reclora.registry import promote, register

    data, test, params = prepared
    # on an object store (memory://) the champion's version is downloaded before it is read
    reg = f"memory://reg-{uuid.uuid4().hex}" if case == "unreadable" else tmp_path / "reg"
    register(
        reg,
        **_fake_version(
            tmp_path, data if case == "unreadable" else None, "synthetic" if case == "unreadable" else "goodbooks-10k"
        ),
    )
    promote(reg, "v0001")
    runs = {
        "CRM": _predictions(tmp_path / "crm", test, 1.0, 5),
        "RecLoRA": _predictions(tmp_path / "rec", test, 3.0, 6),
    }
    m = evaluate_stage(runs, tmp_path / "rep", data_dir=data, registry_uri=str(reg), params=_rules(params))
    champ, d = m["gate"]["champion"], m["gate"]["decision"]
    assert champ["version"] == "v0001" and "champion v0001" not in m["models"]  # not re-scored: no row of its own
    assert m["gate"]["baseline"]["diff"]["lo"] > 0 and not d["promote"]  # beats the CRM, yet refused
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "stored figure, its own test split, not re-scored" in page and "not on these samples" in page
    if case == "other data set":
        assert champ["status"] == "not comparable" and "goodbooks-10k vs synthetic" in d["reason"]
        assert "--allow-other-data" in d["reason"]
    else:
        assert champ["status"] == "unscorable" and "cannot be loaded" in champ["reason"]
        fallback = evaluate_stage(
            runs,
            tmp_path / "rep2",
            data_dir=data,
            registry_uri=str(reg),
            params=_rules(params, unscored_champion="baseline"),
        )
        assert fallback["gate"]["decision"]["promote"] and "not compared" in fallback["gate"]["decision"]["reason"]


# ------------------------------------------------------------------ the champion re-scored in the same run
def test_the_champion_is_rescored_on_the_challengers_samples(tmp_path, tiny_llama_dir):
    """A champion whose stored AUC (0.99, on its own old split) beats the challenger's, but which is worse on
    the challenger's samples, loses: the gate compares the two on the same rows, and the champion's scores
    there are exactly what its own model gives for those rows."""
    from helpers import llm_stage_inputs

    from reclora.config import deep_merge
    from reclora.data import prepare
    from reclora.registry import PromotionRules, champion, promote, register, register_and_gate
    from reclora.stages import crm_stage, llm_stage, retrieve_stage

    _, _, params = llm_stage_inputs(tmp_path / "inputs")
    params = deep_merge(
        params,
        {
            "synthetic": {"n_users": 60},
            "train": {"eval_samples": 0},
            "crm": {"max_epochs": 1, "mlp": [32, 16], "embed_dim": 8},
            "evaluation": {"bootstrap": 300, "slices": {"min_samples": 10}},
            "pipeline": {"promotion": {"baseline_margin": -1.0}},
        },
    )
    data, ret = tmp_path / "prepared", tmp_path / "retrieved"  # twice the helper's users: ~60 evaluated samples
    prepare("synthetic", None, data, params)
    retrieve_stage(data, ret, params, mode="recent", progress=False)
    crm_stage(data, ret, tmp_path / "crm", params, progress=False)
    llm_stage(
        "reclora", data, ret, tmp_path / "crm", tmp_path / "old", params, model_path=str(tiny_llama_dir), progress=False
    )
    reg = tmp_path / "reg"
    kept = {k: params[k] for k in ("data", "retrieval", "crm", "adapter", "train", "validation")}
    register(
        reg,
        crm_dir=tmp_path / "crm",
        adapter_dir=tmp_path / "old",
        retrieval_dir=ret,
        items_path=data,
        params=kept,
        metrics={"auc": 0.99, "logloss": 0.2, "n": 5000},
        lineage={},
        base_model=str(tiny_llama_dir),
    )
    promote(reg, "v0001")

    own = pd.read_parquet(tmp_path / "old" / PREDICTIONS)  # the champion's scores on the whole test split
    sub = own.iloc[::2].reset_index(drop=True)  # the challenger is evaluated on every other test sample
    rng = np.random.default_rng(0)
    z = 2.5 * (sub["label"].to_numpy() - 0.5) + rng.normal(0, 1, len(sub))
    (tmp_path / "new").mkdir()
    sub[KEY + ["label"]].assign(p=1 / (1 + np.exp(-z))).to_parquet(tmp_path / "new" / PREDICTIONS, index=False)
    m = evaluate_stage(
        {"CRM": tmp_path / "crm", "RecLoRA": tmp_path / "new"},
        tmp_path / "report",
        data_dir=data,
        registry_uri=str(reg),
        params=params,
    )

    champ = m["gate"]["champion"]
    assert champ["status"] == "scored" and champ["version"] == "v0001" and champ["stored"]["auc"] == 0.99
    assert m["models"]["champion v0001"]["n"] == len(sub) == m["gate"]["samples"]
    rescored = pd.read_parquet(tmp_path / "new" / PREDICTIONS)[KEY].merge(own, on=KEY)
    y = rescored["label"].to_numpy()
    assert m["models"]["champion v0001"]["auc"] == pytest.approx(roc_auc_score(y, rescored["p"]), abs=1e-4)
    ch_auc, rec_auc = m["models"]["champion v0001"]["auc"], m["models"]["RecLoRA"]["auc"]
    assert rec_auc < champ["stored"]["auc"] and ch_auc < rec_auc  # better on its old split, worse on the new one
    d = m["gate"]["decision"]
    assert d["promote"] and f"vs champion v0001 {ch_auc:.4f}" in d["reason"]
    assert m["gate"]["champion"]["diff"]["lo"] > -0.002
    # the champion's own model gave exactly these scores for these rows (the served path = the stage's path)
    from reclora.evaluation.champion import rescore_champion
    from reclora.stages import evaluated_samples

    samples = evaluated_samples(data, sub[KEY])
    items, users = pd.read_parquet(data / "items.parquet"), pd.read_parquet(data / "users.parquet")
    again = rescore_champion(str(reg), samples, items, users, "synthetic", precision=params["train"]["precision"])
    assert again["version"] == "v0001"
    np.testing.assert_allclose(again["p"], sub["p"].to_numpy(), atol=1e-5)
    # the registration applies it and keeps every figure
    r = register_and_gate(
        reg,
        rules=PromotionRules.from_params(params["pipeline"]["promotion"]),
        crm_dir=tmp_path / "crm",
        adapter_dir=tmp_path / "old",
        retrieval_dir=ret,
        items_path=data,
        params=kept,
        metrics=m,
        lineage={},
        base_model=str(tiny_llama_dir),
    )
    assert r["promoted"] and r["previous_champion"] == "v0001" and champion(reg)["version"] == "v0002"
    ev = champion(reg)["promotion"]["evidence"]
    assert ev["champion"]["auc"] == pytest.approx(ch_auc) and ev["champion"]["stored"]["auc"] == 0.99


def test_the_evaluate_component_logs_the_decision_and_the_slices(prepared, tmp_path):
    """The KFP step (called as a function, artifacts as paths): its Metrics hold the decision, the interval and
    the per-slice AUCs; its Markdown summary opens with the decision."""
    from helpers import FakeArtifact

    from components.evaluate.component import evaluate

    data, test, params = prepared
    runs = {
        k: _predictions(tmp_path / k, test, s, i)
        for i, (k, s) in enumerate((("crm", 1.0), ("lora", 0.5), ("rec", 2.5)))
    }
    from kfp.dsl import ClassificationMetrics, Metrics

    out = {k: FakeArtifact(tmp_path / "out" / k) for k in ("report", "report_files", "summary")}
    out["stats"] = Metrics(name="stats", uri=str(tmp_path / "out" / "stats"))
    out["roc"] = ClassificationMetrics(name="roc", uri=str(tmp_path / "out" / "roc"))
    (tmp_path / "out").mkdir()
    r = evaluate(
        crm=FakeArtifact(runs["crm"]),
        lora=FakeArtifact(runs["lora"]),
        reclora=FakeArtifact(runs["rec"]),
        data=FakeArtifact(data),
        registry_uri="",
        data_version="abc",
        profile="",
        overrides=params,
        **out,
    )
    m = json.loads((tmp_path / "out" / "report_files" / "metrics.json").read_text())
    stats = out["stats"].metadata
    assert r.promote is True and stats["promote"] == 1.0 and r.decision == m["gate"]["decision"]["reason"]
    assert stats["auc_lo_vs_baseline"] == m["gate"]["baseline"]["diff"]["lo"] > 0
    assert stats["reclora_ece"] == m["models"]["RecLoRA"]["ece"] and stats["evaluated_samples"] == len(test)
    drama = next(x for x in m["slices"]["rows"] if x["value"] == "Drama")
    assert stats["slice_genres_drama_n"] == drama["n"]
    assert stats["slice_genres_drama_vanilla_lora_auc"] == drama["models"]["Vanilla LoRA"]["auc"]
    assert out["roc"].metadata["confidenceMetrics"]  # the ROC curve of RecLoRA
    summary = Path(out["summary"].path).read_text()
    assert summary.startswith("**Promote**: promoted (RecLoRA") and f"same {len(test)} samples" in summary
    assert Path(out["report"].path).read_text().count("Decision: promote") == 1


def test_train_evaluate_cli_prints_the_decision(prepared, tmp_path):
    from helpers import reclora

    data, test, _ = prepared
    crm, rec = _predictions(tmp_path / "crm", test, 1.0, 7), _predictions(tmp_path / "rec", test, 3.0, 8)
    proc = reclora(
        "train",
        "evaluate",
        "--run",
        f"CRM={crm}",
        "--run",
        f"RecLoRA={rec}",
        "--out",
        str(tmp_path / "rep"),
        "--data",
        str(data),
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["decision"].startswith("promoted (RecLoRA, on the same") and set(out["models"]) == {"CRM", "RecLoRA"}
    assert out["models"]["RecLoRA"]["ece"] >= 0 and (tmp_path / "rep" / "slices.png").is_file()
    proc = reclora(
        "train", "evaluate", "--run", f"CRM={crm}", "--out", str(tmp_path / "rep2"), "--registry", str(tmp_path)
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "needs the prepared data" in proc.stderr
    assert not (tmp_path / "rep2").exists()
