"""`reclora data validate` end to end on raw files: a corrupted copy fails naming each problem."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import reclora, small_tables, write_ml100k

FUTURE = 4102444800  # 2100-01-01


def corrupt_ml100k(src: Path, dst: Path) -> Path:
    """Copy ML-100K-format files to dst with ratings 0 and 9, an empty title, a duplicated block, a future time."""
    dst.mkdir(parents=True)
    for f in ("u.data", "u.item", "u.user"):
        shutil.copy(src / f, dst / f)
    rows = (dst / "u.data").read_text().splitlines()
    u, i, _, t = rows[0].split("\t")
    rows[0] = f"{u}\t{i}\t0\t{t}"
    u, i, _, t = rows[1].split("\t")
    rows[1] = f"{u}\t{i}\t9\t{t}"
    u, i, r, _ = rows[2].split("\t")
    rows[2] = f"{u}\t{i}\t{r}\t{FUTURE}"
    rows += rows[10:40]  # a duplicated block of 30 events
    (dst / "u.data").write_text("\n".join(rows) + "\n")
    items = (dst / "u.item").read_bytes().decode("latin-1").splitlines()
    f = items[4].split("|")
    f[1] = ""
    items[4] = "|".join(f)
    (dst / "u.item").write_bytes(("\n".join(items) + "\n").encode("latin-1"))
    return dst


@pytest.fixture()
def small_params(repo, tmp_path) -> Path:
    p = yaml.safe_load((repo / "params.yaml").read_text())
    p["validation"]["min_interactions"] = 100
    out = tmp_path / "params.yaml"
    out.write_text(yaml.safe_dump(p))
    return out


def _prepare_and_validate(raw: Path, tmp: Path, params: Path | None) -> tuple:
    extra = ["--params", str(params)] if params else []
    reclora(
        "data", "prepare", "--dataset", "ml-100k", "--path", str(raw), "--out", str(tmp / "prep"), *extra, check=True
    )
    proc = reclora("data", "validate", "--data", str(tmp / "prep"), "--report", str(tmp / "report"), *extra)
    return proc, json.loads((tmp / "report" / "summary.json").read_text())


def _assert_each_problem_named(proc, summary):
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    assert "interactions.rating" in err and "0.0" in err and "9.0" in err
    assert "items.title" in err and "empty" in err
    assert "repeat an event" in err
    assert "interactions.timestamp" in err and "2100-01-01" in err
    failed = {(f["table"], f["column"]) for f in summary["failures"]}
    assert {("interactions", "rating"), ("items", "title"), ("interactions", "timestamp")} <= failed
    assert summary["success"] is False
    assert proc.stdout.strip().endswith("index.html")


def test_clean_fixture_passes_and_corrupted_fails(tmp_path, small_params):
    raw = write_ml100k(small_tables(n_users=60), tmp_path / "raw")
    proc, summary = _prepare_and_validate(raw, tmp_path / "clean", small_params)
    assert proc.returncode == 0, proc.stderr
    assert summary["success"] is True and summary["data_version"]["md5"].endswith(".dir")
    assert summary["hardware"]["threads"] >= 1  # what ran the gate
    assert (tmp_path / "clean" / "report" / "index.html").is_file()

    bad = corrupt_ml100k(raw, tmp_path / "bad-raw")
    proc, summary = _prepare_and_validate(bad, tmp_path / "bad", small_params)
    _assert_each_problem_named(proc, summary)
    assert (tmp_path / "bad" / "report" / "index.html").is_file()  # the report is written on failure too


@pytest.mark.slow
def test_real_ml100k_clean_passes_corrupted_fails(ml100k_path, tmp_path):
    proc, summary = _prepare_and_validate(ml100k_path, tmp_path / "clean", None)
    assert proc.returncode == 0, proc.stderr
    assert summary["counts"]["interactions"] == 100_000
    bad = corrupt_ml100k(ml100k_path, tmp_path / "bad-raw")  # a corrupted copy in tmp, never in the repo
    proc, summary = _prepare_and_validate(bad, tmp_path / "bad", None)
    _assert_each_problem_named(proc, summary)


def test_validate_bad_input_exit_2(tmp_path):
    proc = reclora("data", "validate", "--data", str(tmp_path / "missing"), "--report", str(tmp_path / "r"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")
