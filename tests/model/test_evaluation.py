"""reclora.evaluation: CTR metrics against sklearn and hand-computed values; the report's files."""

from __future__ import annotations

import base64
import html
import json
import re
import struct

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score, roc_curve

from reclora.errors import DataError
from reclora.evaluation import (
    calibration_bins,
    ctr_metrics,
    plots,
    roc_points,
    write_report,
)
from reclora.io import read_json

MODELS = ["CRM", "Vanilla LoRA", "RecLoRA", "RecLoRA (uniform gate)", "RecLoRA (recent-K)"]
PNGS = ["roc.png", "calibration.png", "auc_bar.png"]


def noisy(y: np.ndarray, strength: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = strength * (2 * y - 1) + rng.normal(0, 1.5, len(y))
    return 1 / (1 + np.exp(-z))


@pytest.fixture(scope="module")
def predictions() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 3000)
    return {name: (y, noisy(y, 0.6 + 0.2 * i, seed=i)) for i, name in enumerate(MODELS)}


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# -- ctr_metrics ------------------------------------------------------------------------


def test_tiny_hand_computed_case():
    m = ctr_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    # pairs (pos, neg): (0.35>0.1) (0.35<0.4) (0.8>0.1) (0.8>0.4) -> 3/4
    assert m["auc"] == pytest.approx(0.75)
    expected_ll = -(np.log(0.9) + np.log(0.6) + np.log(0.35) + np.log(0.8)) / 4
    assert m["logloss"] == pytest.approx(expected_ll, rel=1e-12)
    assert m["accuracy"] == pytest.approx(0.75)  # 0.35 is the only miss
    assert m["n"] == 4 and m["positive_rate"] == 0.5
    assert "auc_reason" not in m
    assert set(m) == {"auc", "logloss", "accuracy", "n", "positive_rate"}


def test_ties_count_one_half():
    assert ctr_metrics([0, 1], [0.5, 0.5])["auc"] == 0.5
    assert ctr_metrics([0, 0, 1, 1], [0.2, 0.6, 0.6, 0.9])["auc"] == pytest.approx(0.875)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn_on_random_data(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 2000)
    p = np.round(rng.uniform(0.01, 0.99, 2000), 2)  # rounded: plenty of ties
    m = ctr_metrics(y, p)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m["logloss"] == pytest.approx(log_loss(y, p), rel=1e-10)
    assert m["accuracy"] == pytest.approx(np.mean((p >= 0.5) == y))
    assert m["positive_rate"] == pytest.approx(y.mean())
    assert m["n"] == 2000
    json.dumps(m)  # plain Python types only
    assert all(type(m[k]) is float for k in ("auc", "logloss", "accuracy", "positive_rate"))
    assert type(m["n"]) is int


def test_perfect_predictor_and_clipping():
    y = np.array([0, 0, 0, 1, 1])
    m = ctr_metrics(y, y.astype(float))  # hard 0/1 probabilities
    assert m["auc"] == 1.0 and m["accuracy"] == 1.0
    assert m["logloss"] == pytest.approx(-np.log(1 - 1e-7), rel=1e-6)  # clipped, finite
    worst = ctr_metrics(y, 1.0 - y)
    assert worst["auc"] == 0.0 and worst["accuracy"] == 0.0
    assert worst["logloss"] == pytest.approx(-np.log(1e-7), rel=1e-6)


@pytest.mark.parametrize("label", [0, 1])
def test_single_class_auc_is_none_with_reason(label):
    m = ctr_metrics([label] * 4, [0.2, 0.4, 0.6, 0.9])
    assert m["auc"] is None
    assert "one class" in m["auc_reason"] and f"are {label}" in m["auc_reason"]
    assert m["logloss"] > 0 and m["positive_rate"] == float(label)
    with pytest.raises(ValueError, match="one class"):
        roc_points([label] * 4, [0.2, 0.4, 0.6, 0.9])


@pytest.mark.parametrize(
    ("labels", "probs", "match"),
    [
        ([0, 1, 1], [0.2, 0.3], "differ in length"),
        ([0, 1], [0.2, float("nan")], "NaN"),
        ([0, float("nan")], [0.2, 0.3], "NaN"),
        ([0, 1], [0.2, 1.3], "outside"),
        ([0, 1], [-0.1, 0.5], "outside"),
        ([0, 2], [0.2, 0.5], "outside"),
        ([0, 0.5], [0.2, 0.5], "0 or 1"),
        ([], [], "empty"),
        ([[0, 1], [1, 0]], [[0.1, 0.2], [0.3, 0.4]], "one-dimensional"),
        (["a", "b"], [0.1, 0.2], "numeric"),
    ],
)
def test_invalid_input_raises(labels, probs, match):
    with pytest.raises(ValueError, match=match) as info:
        ctr_metrics(labels, probs)
    assert isinstance(info.value, DataError)  # the CLI reports it in one line


def test_accepts_bool_labels_and_column_vectors():
    y = np.array([False, True, True, False])
    p = np.array([[0.3], [0.7], [0.6], [0.2]])
    assert ctr_metrics(y, p)["auc"] == 1.0


# -- calibration_bins ---------------------------------------------------------------------


def test_calibration_of_a_calibrated_predictor_is_near_the_diagonal():
    rng = np.random.default_rng(7)
    p = rng.uniform(0, 1, 200_000)
    y = (rng.uniform(0, 1, p.size) < p).astype(int)
    cal = calibration_bins(y, p, n_bins=10)
    assert cal["n_bins"] == 10 and len(cal["edges"]) == 11 and cal["edges"][0] == 0 and cal["edges"][-1] == 1
    assert sum(cal["count"]) == p.size
    assert all(18_000 < c < 22_000 for c in cal["count"])  # uniform p: ~20k per bin
    for i, (mp, ob) in enumerate(zip(cal["mean_predicted"], cal["observed_rate"])):
        assert cal["edges"][i] <= mp < cal["edges"][i + 1]
        assert mp == pytest.approx(cal["edges"][i] + 0.05, abs=0.005)
        assert ob == pytest.approx(mp, abs=0.015)
    assert cal["ece"] < 0.01


def test_calibration_of_an_overconfident_predictor_and_empty_bins():
    # predicts 0.9 always, truth is 50/50: one bin, far off the diagonal
    y = np.array([0, 1] * 50)
    cal = calibration_bins(y, np.full(100, 0.9), n_bins=5)
    assert cal["count"] == [0, 0, 0, 0, 100]
    assert cal["mean_predicted"][:4] == [None] * 4 and cal["observed_rate"][:4] == [None] * 4
    assert cal["mean_predicted"][4] == pytest.approx(0.9) and cal["observed_rate"][4] == 0.5
    assert cal["ece"] == pytest.approx(0.4)
    # 1.0 falls in the last bin, 0.0 in the first
    cal = calibration_bins([0, 1], [0.0, 1.0], n_bins=4)
    assert cal["count"] == [1, 0, 0, 1]
    with pytest.raises(ValueError, match="n_bins"):
        calibration_bins([0, 1], [0.1, 0.2], n_bins=0)


# -- roc_points ---------------------------------------------------------------------------


def test_roc_points_match_sklearn_on_small_data():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    p = np.round(rng.uniform(0, 1, 200), 2)
    fpr, tpr = roc_points(y, p)
    sk_fpr, sk_tpr, _ = roc_curve(y, p)  # drop_intermediate=True, like ours
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_roc_points_are_downsampled():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 50_000)
    p = noisy(y, 1.0, seed=5)
    fpr, tpr = roc_points(y, p)
    assert 100 < len(fpr) <= 500 and len(fpr) == len(tpr)
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(y, p), abs=2e-3)
    assert len(roc_points(y, p, max_points=50)[0]) <= 50


def test_roc_of_perfect_predictor_is_the_corner():
    fpr, tpr = roc_points([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert fpr.tolist() == [0.0, 0.0, 0.0, 1.0] and tpr.tolist() == [0.0, 0.5, 1.0, 1.0]
    assert np.trapezoid(tpr, fpr) == 1.0


# -- write_report -------------------------------------------------------------------------


def test_report_writes_every_file(tmp_path, predictions):
    out = tmp_path / "eval"
    context = {"dataset": "ml-1m", "n_test_samples": np.int64(3000), "data_version": "abc123"}
    champion = {"name": "RecLoRA v3", "auc": 0.70, "logloss": 0.6, "run_id": "run-42"}
    m = write_report(out, predictions, title="Nightly evaluation", context=context, champion=champion)

    assert sorted(p.name for p in out.iterdir()) == sorted(["metrics.json", "report.html", *PNGS])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left

    # metrics.json is exactly the returned dict, with every figure in it
    assert read_json(out / "metrics.json") == m
    assert m["title"] == "Nightly evaluation"
    assert m["model_order"] == MODELS and list(m["models"]) == MODELS
    assert m["context"] == {"dataset": "ml-1m", "n_test_samples": 3000, "data_version": "abc123"}
    for name, (y, p) in predictions.items():
        got = m["models"][name]
        assert got["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert got["logloss"] == pytest.approx(log_loss(y, p), rel=1e-10)
        assert got["n"] == 3000
        assert sum(got["calibration"]["count"]) == 3000
        assert 2 < len(got["roc"]["fpr"]) == len(got["roc"]["tpr"]) <= 500
    aucs = {n: m["models"][n]["auc"] for n in MODELS}
    best = max(aucs, key=aucs.get)
    assert m["best"]["auc"] == best
    assert m["best"]["logloss"] == min(MODELS, key=lambda n: m["models"][n]["logloss"])
    ch = m["champion"]
    assert ch["name"] == "RecLoRA v3" and ch["auc"] == 0.70 and ch["details"] == {"run_id": "run-42"}
    assert ch["best_model"] == best
    assert ch["per_model"]["CRM"]["auc_delta"] == pytest.approx(aucs["CRM"] - 0.70)
    assert ch["per_model"]["CRM"]["logloss_delta"] == pytest.approx(m["models"]["CRM"]["logloss"] - 0.6)
    assert ch["best_model_beats_champion"] is True

    # valid PNGs, non-trivial, plausible dimensions
    for name in PNGS:
        data = (out / name).read_bytes()
        w, h = png_size(data)
        assert len(data) > 10_000, name
        assert 400 <= w <= 3000 and 300 <= h <= 3000, (name, w, h)

    # one self-contained page: the three plots embedded, each model with its AUC as in the table
    page = (out / "report.html").read_text()
    imgs = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(imgs) == 3
    assert sorted(base64.b64decode(b) for b in imgs) == sorted((out / n).read_bytes() for n in PNGS)
    assert "<script" not in page and 'src="http' not in page and "<link" not in page
    assert "Nightly evaluation" in page
    for name in MODELS:
        row = re.search(rf"<tr><td>{re.escape(html.escape(name))}</td>(.*?)</tr>", page)
        assert row, name
        cells = re.findall(r"<td[^>]*>([^<]*)</td>", row.group(1))
        mm = m["models"][name]
        assert cells[:5] == [
            f"{mm['auc']:.4f}",
            f"{mm['logloss']:.4f}",
            f"{mm['ece']:.4f}",
            f"{mm['accuracy']:.4f}",
            "3,000",
        ]
        assert mm["ece"] == mm["calibration"]["ece"]  # ECE in the headline table
    # best per column highlighted: exactly the best model's AUC cell in the AUC column
    assert f'<td class="num best">{aucs[best]:.4f}</td>' in page
    assert page.count('class="num best"') == 4
    # a stored champion figure is shown as such: not on these samples
    assert '<tr class="champion"><td>RecLoRA v3</td><td class="num">0.7000</td>' in page
    assert "not on these samples" in page and "same 3,000 samples" in page
    for v in ("ml-1m", "abc123", "run-42"):
        assert v in page


def test_report_html_escapes_names(tmp_path):
    y = np.array([0, 1, 0, 1])
    m = write_report(tmp_path / "r", {"<b>A&B</b>": (y, [0.1, 0.9, 0.2, 0.8])})
    page = (tmp_path / "r" / "report.html").read_text()
    assert "&lt;b&gt;A&amp;B&lt;/b&gt;" in page and "<b>A&B</b>" not in page
    assert m["models"]["<b>A&B</b>"]["auc"] == 1.0


def test_report_with_a_single_class_model(tmp_path):
    preds = {"ok": ([0, 1, 0, 1], [0.2, 0.7, 0.4, 0.9]), "all-positive": ([1, 1, 1], [0.6, 0.7, 0.8])}
    m = write_report(tmp_path / "r", preds, champion={"model": "old", "auc": 0.9})
    assert m["models"]["all-positive"]["auc"] is None and m["models"]["all-positive"]["roc"] is None
    assert m["champion"]["per_model"]["all-positive"]["auc_delta"] is None
    assert m["champion"]["name"] == "old" and m["champion"]["best_model"] == "ok"
    assert m["champion"]["best_model_beats_champion"] is True  # AUC 1.0 > 0.9
    assert read_json(tmp_path / "r" / "metrics.json") == m
    page = (tmp_path / "r" / "report.html").read_text()
    assert "n/a" in page and page.count("data:image/png;base64,") == 3


def test_report_rejects_bad_input_and_writes_nothing(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(ValueError, match="empty"):
        write_report(out, {})
    with pytest.raises(ValueError, match=r"'RecLoRA'.*differ in length"):
        write_report(out, {"CRM": ([0, 1], [0.1, 0.9]), "RecLoRA": ([0, 1, 1], [0.1, 0.9])})
    with pytest.raises(ValueError, match=r"'CRM'.*NaN"):
        write_report(out, {"CRM": ([0, 1], [0.1, float("nan")])})
    with pytest.raises(ValueError, match="champion"):
        write_report(out, {"CRM": ([0, 1], [0.1, 0.9])}, champion={"name": "x"})
    with pytest.raises(ValueError, match=r"\(labels, probs\)"):
        write_report(out, {"CRM": [0.1, 0.9, 0.3]})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("plot", ["_plot_roc", "_plot_calibration", "_plot_auc_bar"])
def test_failure_mid_write_leaves_previous_report_intact(tmp_path, predictions, monkeypatch, plot):
    small = {n: (y[:200], p[:200]) for n, (y, p) in list(predictions.items())[:2]}

    def boom(*_a, **_k):
        raise RuntimeError("plot failed")

    # no previous report: nothing is left behind
    fresh = tmp_path / "fresh"
    with monkeypatch.context() as mp:
        mp.setattr(plots, plot, boom)
        with pytest.raises(RuntimeError, match="plot failed"):
            write_report(fresh, small)
    assert list(tmp_path.iterdir()) == []

    # a previous report stays exactly as it was
    out = tmp_path / "eval"
    first = write_report(out, small)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with monkeypatch.context() as mp:
        mp.setattr(plots, plot, boom)
        with pytest.raises(RuntimeError, match="plot failed"):
            write_report(out, predictions, title="second")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert read_json(out / "metrics.json") == first
    assert [p.name for p in tmp_path.iterdir()] == ["eval"]


def test_auc_axis_is_zoomed_around_the_values():
    lo, hi = plots._auc_ylim([0.74, 0.76, 0.78])
    assert 0.6 < lo < 0.74 and 0.78 < hi < 0.85
    lo, hi = plots._auc_ylim([0.999, 1.0])  # room for the labels, still near 1
    assert lo < 0.999 and 1.0 < hi <= 1.01
    lo, _ = plots._auc_ylim([0.05, 0.9])
    assert lo == 0.0
