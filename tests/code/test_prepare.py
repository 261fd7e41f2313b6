"""The prepare stage and its CLI: summary line, layout, atomic replacement, clear errors."""

import json

import pandas as pd
import pytest
from helpers import reclora, small_tables, write_ml100k

from reclora.config import load_params
from reclora.data import dvc_hash, prepare, read_prepared
from reclora.data.schema import SAMPLE_COLUMNS, SPLITS


def test_prepare_synthetic_layout_and_summary(tmp_path):
    s = prepare("synthetic", None, tmp_path / "out", load_params())
    tables, samples, meta = read_prepared(tmp_path / "out")
    assert meta == {k: v for k, v in s.items() if k not in ("seconds", "out", "hardware")} | {"seconds": None}
    assert s["hardware"]["threads"] >= 1 and s["hardware"]["cpu"]["logical_cpus"] >= 1  # what ran it, not in meta.json
    assert s["rows"] == len(tables.interactions) and s["users"] == tables.interactions["user_id"].nunique()
    assert sum(s["samples"].values()) == sum(len(df) for df in samples.values())
    for split in SPLITS:
        assert list(samples[split].columns) == list(SAMPLE_COLUMNS)
        assert samples[split]["n_history"].min() >= 5
    assert abs(s["positive_rate"] - (tables.interactions["rating"] >= 4).mean()) < 1e-4


def test_prepare_is_byte_reproducible(tmp_path):
    prepare("synthetic", None, tmp_path / "a", load_params())
    prepare("synthetic", None, tmp_path / "b", load_params())
    assert dvc_hash(tmp_path / "a")["md5"] == dvc_hash(tmp_path / "b")["md5"]


def test_failed_prepare_leaves_the_previous_output_intact(tmp_path, monkeypatch):
    out = tmp_path / "out"
    prepare("synthetic", None, out, load_params())
    before = dvc_hash(out)["md5"]

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(RuntimeError):
        prepare("synthetic", None, out, load_params())
    monkeypatch.undo()
    assert dvc_hash(out)["md5"] == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp dirs left behind


def test_max_users_samples_users(tmp_path):
    s = prepare("synthetic", None, tmp_path / "o", load_params(), max_users=50)
    assert s["users"] == 50


def test_cli_prepare_prints_one_json_line(tmp_path):
    raw = write_ml100k(small_tables(), tmp_path / "raw")
    proc = reclora(
        "data", "prepare", "--dataset", "ml-100k", "--path", str(raw), "--out", str(tmp_path / "p"), check=True
    )
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    s = json.loads(lines[0])
    assert s["rows"] == len(small_tables().interactions) and s["dataset"] == "ml-100k"
    assert set(s["samples"]) == {"train", "valid", "test"}


def test_cli_errors_are_one_line_with_exit_2(tmp_path):
    proc = reclora(
        "data", "prepare", "--dataset", "ml-100k", "--path", str(tmp_path / "nope"), "--out", str(tmp_path / "o")
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: data directory not found: {tmp_path / 'nope'}"
    assert not (tmp_path / "o").exists()
    proc = reclora("data", "prepare", "--dataset", "imdb", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "unknown dataset 'imdb'" in proc.stderr


def test_real_ml100k_counts(ml100k_path, tmp_path):
    s = prepare("ml-100k", ml100k_path, tmp_path / "ml", load_params())
    assert (s["rows"], s["users"], s["items"]) == (100_000, 943, 1_682)
    # the last 10% of ratings by time is the test period (10,000 ratings); samples whose
    # user has fewer than 5 strictly earlier ratings are dropped from it
    assert 9_000 < s["samples"]["test"] <= 10_000
    assert abs(s["positive_rate_by_split"]["test"] - 0.563) < 0.01
    assert s["samples"]["train"] + s["samples"]["valid"] + s["samples"]["test"] < 100_000
