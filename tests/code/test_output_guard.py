"""An output never destroys an input (issue 24, kind 1).

Every command that writes a directory refuses, before touching anything, an output that is, contains or
lies inside one of its inputs (symlinks resolved): a table over every command and every relation, run
in-process through the `reclora` entry point; the input tree must be byte-for-byte what it was and
nothing may be left beside it. Then the atomic directory write itself: a symlinked output is written
into its target, and no temporary or `.old-*` directory is left behind on success or failure.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reclora.cli import app
from reclora.cli.common import run_cli
from reclora.errors import ConfigError
from reclora.io import atomic_dir, refuse_overlap

# the handed case out_is_input/, rewritten here: a generic `table` data set
INTERACTIONS = "user_id,item_id,rating,timestamp\n" + "".join(
    f"{u},{i},{(u + i) % 5 + 1}.0,{900000000 + 3600 * (8 * u + i)}\n" for u in (1, 2, 3) for i in range(2, 10)
)
ITEMS = "item_id,title,genres\n" + "".join(f"{i},Movie {i} (1995),Drama\n" for i in range(1, 10))


def _tree(d: Path) -> dict[str, str]:
    """Every entry under ``d`` (hidden ones too): relative path -> sha256 of a file, 'dir' or 'link'."""
    out = {}
    for root, dirs, files in os.walk(d):
        for n in dirs + files:
            p = Path(root) / n
            rel = p.relative_to(d).as_posix()
            out[rel] = "link" if p.is_symlink() else "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def raw(tmp_path) -> Path:
    d = tmp_path / "work" / "raw"
    d.mkdir(parents=True)
    (d / "interactions.csv").write_text(INTERACTIONS)
    (d / "items.csv").write_text(ITEMS)
    return d


def _out(raw: Path, relation: str, file_out: bool) -> str:
    """The output path in ``relation`` to ``raw``: is / contains / inside / link (a symlink to raw)."""
    if relation == "is":
        return str(raw)
    if relation == "contains":
        return str(raw.parent)
    if relation == "inside":
        return str(raw / ("o.json" if file_out else "out"))
    link = raw.parent.parent / "link"
    link.symlink_to(raw, target_is_directory=True)
    return str(link / "o.json") if file_out else str(link)


def _other(i: str, name: str) -> str:
    """A path for the command's other arguments, outside every output of the table."""
    return str(Path(i).parent.parent / f"other-{name}")


# command -> (args for input DIR and output OUT, whether OUT is a file, how the input is named in the error)
COMMANDS = {
    "data prepare": (lambda i, o: ["data", "prepare", "--dataset", "table", "--path", i, "--out", o], False, "--path"),
    "data validate": (lambda i, o: ["data", "validate", "--data", i, "--report", o], False, "--data"),
    "train retrieve": (lambda i, o: ["train", "retrieve", "--data", i, "--out", o], False, "--data"),
    "train crm (--data)": (
        lambda i, o: ["train", "crm", "--data", i, "--retrieved", _other(i, "r"), "--out", o],
        False,
        "--data",
    ),
    "train crm (--retrieved)": (
        lambda i, o: ["train", "crm", "--data", _other(i, "d"), "--retrieved", i, "--out", o],
        False,
        "--retrieved",
    ),
    "train crm (--feature-store)": (
        lambda i, o: [
            "train",
            "crm",
            "--data",
            _other(i, "d"),
            "--retrieved",
            _other(i, "r"),
            "--feature-store",
            i,
            "--out",
            o,
        ],
        False,
        "--feature-store",
    ),
    "train llm (--data)": (
        lambda i, o: ["train", "llm", "--data", i, "--retrieved", _other(i, "r"), "--out", o],
        False,
        "--data",
    ),
    "train llm (--crm)": (
        lambda i, o: ["train", "llm", "--data", _other(i, "d"), "--retrieved", _other(i, "r"), "--crm", i, "--out", o],
        False,
        "--crm",
    ),
    "train llm (--init-from)": (
        lambda i, o: [
            "train",
            "llm",
            "--data",
            _other(i, "d"),
            "--retrieved",
            _other(i, "r"),
            "--init-from",
            i,
            "--out",
            o,
        ],
        False,
        "--init-from",
    ),
    "train evaluate": (lambda i, o: ["train", "evaluate", "--run", f"crm={i}", "--out", o], False, "--run crm"),
    "bench quality --out": (
        lambda i, o: ["bench", "quality", "--dataset", "table", "--path", i, "--out", o],
        True,
        "--path",
    ),
    "bench quality --work": (
        lambda i, o: ["bench", "quality", "--dataset", "table", "--path", i, "--out", _other(i, "q.json"), "--work", o],
        False,
        "--path",
    ),
    "bench curve --work": (
        lambda i, o: ["bench", "curve", "--dataset", "table", "--path", i, "--out", _other(i, "c.json"), "--work", o],
        False,
        "--path",
    ),
    "bench speed": (lambda i, o: ["bench", "speed", "--dataset", "table", "--path", i, "--out", o], True, "--path"),
    "bench pipeline": (
        lambda i, o: ["bench", "pipeline", "--dataset", "table", "--path", i, "--out", o],
        True,
        "--path",
    ),
    "pipeline run --pipeline-root": (
        lambda i, o: ["pipeline", "run", "--dataset", "table", "--path", i, "--pipeline-root", o],
        False,
        "--path",
    ),
    "pipeline run --registry": (
        lambda i, o: ["pipeline", "run", "--dataset", "table", "--path", i, "--registry", o],
        False,
        "--path",
    ),
}
RELATIONS = {"is": "is the same path as", "contains": "contains", "inside": "lies inside", "link": None}


@pytest.mark.parametrize("relation", list(RELATIONS))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_refuses_an_output_over_its_input(command, relation, raw, capsys):
    args, file_out, name = COMMANDS[command]
    if relation == "contains" and file_out:
        pytest.skip("a file output cannot contain a directory")
    out = _out(raw, relation, file_out)
    before, around = _tree(raw), sorted(os.listdir(raw.parent))
    rc = run_cli(app, args(str(raw), out), prog_name="reclora")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    want = RELATIONS[relation] or ("lies inside" if file_out else "is the same path as")
    assert f"{want} the input {name} " in err[0], err[0]
    assert str(raw) in err[0] and "must never replace or write into an input" in err[0]
    if relation == "link":
        assert f"(-> {raw}" in err[0]  # where the link really leads
    assert _tree(raw) == before  # not a byte changed, nothing added
    assert sorted(os.listdir(raw.parent)) == around  # no temporary or .old-* directory beside it


def test_an_output_over_the_params_file_is_refused(raw, tmp_path, capsys):
    params = raw / "params.yaml"
    params.write_text(Path(__file__).resolve().parents[2].joinpath("params.yaml").read_text())
    before = _tree(raw)
    for args in (
        ["data", "prepare", "--dataset", "synthetic", "--params", str(params), "--out", str(raw)],
        ["data", "validate", "--data", str(tmp_path / "nope"), "--params", str(params), "--report", str(raw.parent)],
    ):
        assert run_cli(app, args, prog_name="reclora") == 2
        err = capsys.readouterr().err
        assert f"the input --params {params}" in err, err
    assert _tree(raw) == before


def test_demo_refuses_to_replace_the_params_file_it_reads(tmp_path, monkeypatch, capsys):
    out = tmp_path / "d"
    (out / "prepared").mkdir(parents=True)
    params = out / "prepared" / "params.yaml"
    params.write_text(Path(__file__).resolve().parents[2].joinpath("params.yaml").read_text())
    monkeypatch.setenv("RECLORA_PARAMS", str(params))
    assert run_cli(app, ["demo", "--out", str(out)], prog_name="reclora") == 2
    assert "the input (the params file)" in capsys.readouterr().err
    assert params.is_file()


def test_features_stage_and_registration_refuse_too(raw, tmp_path):
    from reclora.config import load_params
    from reclora.features import features_stage
    from reclora.registry import register

    with pytest.raises(ConfigError, match="--out .* is the same path as the input --data"):
        features_stage(raw, raw, params=load_params())
    before = _tree(raw)
    with pytest.raises(ConfigError, match="the registry .* lies inside the input crm_dir"):
        register(
            raw, crm_dir=raw.parent, adapter_dir=tmp_path / "a", params={}, metrics={}, lineage=None, base_model="m"
        )
    assert _tree(raw) == before


def test_a_good_output_beside_the_input_still_works(raw, capsys):
    """The guard refuses only overlaps: a sibling whose name starts with the input's name is fine."""
    out = raw.parent / "raw-prepared"  # a string prefix of nothing: "raw" is not a parent of "raw-prepared"
    rc = run_cli(
        app,
        [
            "data",
            "prepare",
            "--dataset",
            "table",
            "--path",
            str(raw),
            "--out",
            str(out),
            "--set",
            "validation.min_interactions=1",
        ],
        prog_name="reclora",
    )
    assert rc == 0, capsys.readouterr().err
    assert (out / "events.parquet").is_file()
    assert sorted(os.listdir(raw.parent)) == ["raw", "raw-prepared"]  # nothing else left behind


# ------------------------------------------------------------------ the relation, against an oracle
SEGMENTS = st.lists(st.sampled_from(["a", "b", "a-b", "ab", ".", ".."]), min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(out=SEGMENTS, inp=SEGMENTS)
def test_refuse_overlap_matches_the_path_relation(out, inp, tmp_path_factory):
    root = tmp_path_factory.mktemp("rel")
    o, i = root.joinpath(*out), root.joinpath(*inp)
    ro, ri = Path(os.path.normpath(o)), Path(os.path.normpath(i))  # nothing exists: resolve() is normpath here
    overlap = ro == ri or ro.is_relative_to(ri) or ri.is_relative_to(ro)
    if overlap:
        with pytest.raises(ConfigError):
            refuse_overlap({"--out": o}, {"--path": i})
    else:
        refuse_overlap({"--out": o}, {"--path": i})


@pytest.mark.parametrize(
    "out,inp,refused",
    [
        ("s3://b/runs/x", "s3://b/runs", True),
        ("s3://b/runs", "s3://b/runs/raw/", True),
        ("s3://b/runs2", "s3://b/runs", False),
        ("s3://b/runs", "gs://b/runs", False),
        ("s3://b//runs/./x", "s3://b/runs", True),
    ],
)
def test_uris_compare_by_scheme_and_key_prefix(out, inp, refused):
    if refused:
        with pytest.raises(ConfigError):
            refuse_overlap({"--out": out}, {"--path": inp})
    else:
        refuse_overlap({"--out": out}, {"--path": inp})


# ------------------------------------------------------------------ the atomic directory write
def test_a_symlinked_output_is_written_into_its_target(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "old.txt").write_text("old")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    with atomic_dir(link) as d:
        (d / "new.txt").write_text("new")
    assert link.is_symlink() and link.resolve() == real  # the link stays a link
    assert sorted(os.listdir(real)) == ["new.txt"]
    assert sorted(os.listdir(tmp_path)) == ["link", "real"]  # no .tmp-/.old- left


def test_a_failed_write_leaves_the_previous_output_and_nothing_else(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("previous")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as d:
            (d / "half.txt").write_text("half")
            raise RuntimeError("killed half-way")
    assert _tree(target) == {"keep.txt": hashlib.sha256(b"previous").hexdigest()}
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_a_failed_swap_puts_the_previous_output_back(tmp_path, monkeypatch):
    """The rename of the new directory into place fails (e.g. the disk goes read-only): the previous
    output, already moved aside, is put back and no .old-/.tmp- directory stays."""
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("previous")
    real_replace = os.replace

    def replace(src, dst):
        if ".tmp-" in os.fspath(src):
            raise OSError(30, "Read-only file system")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        with atomic_dir(target) as d:
            (d / "new.txt").write_text("new")
    assert (target / "keep.txt").read_text() == "previous" and sorted(os.listdir(tmp_path)) == ["out"]


def test_success_leaves_nothing_beside_the_output(tmp_path):
    target = tmp_path / "out"
    for _ in range(2):  # a fresh output, then one that replaces it
        with atomic_dir(target) as d:
            (d / "f.txt").write_text("x")
    assert sorted(os.listdir(tmp_path)) == ["out"] and sorted(os.listdir(target)) == ["f.txt"]
