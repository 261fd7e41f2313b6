"""The docs build (mkdocs, `make docs`) reports every kind of broken reference, so `--strict` fails on it.

The build runs on a copy of the site's sources with faults planted; the real build of the repository's
docs is `make docs` (a prerequisite of `make test`).
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocstrings", reason="the `docs` extra (make install installs it)")

REPO = Path(__file__).resolve().parents[2]
MKDOCS = [sys.executable, "-m", "mkdocs", "build"]


def _site_copy(tmp: Path, strict: bool) -> Path:
    """The docs sources as the repository has them, in ``tmp`` (the library and the infra guide linked)."""
    shutil.copytree(REPO / "docs", tmp / "docs")
    shutil.copytree(REPO / "benchmarks", tmp / "benchmarks", ignore=shutil.ignore_patterns("*.json", "*-work"))
    (tmp / "infra").mkdir()
    shutil.copy(REPO / "infra" / "README.md", tmp / "infra" / "README.md")
    shutil.copy(REPO / "README.md", tmp / "README.md")
    (tmp / "src").symlink_to(REPO / "src")
    config = (REPO / "mkdocs.yml").read_text()
    assert "\nstrict: true\n" in config, "the site must build strictly"
    (tmp / "mkdocs.yml").write_text(config.replace("\nstrict: true\n", f"\nstrict: {str(strict).lower()}\n"))
    return tmp


def _build(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(MKDOCS, cwd=root, capture_output=True, text=True, timeout=300)


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + "\n" + text + "\n")


@pytest.mark.slow  # mkdocs end to end, two builds of about 10 s
def test_every_broken_reference_is_a_warning_and_fails_the_strict_build(tmp_path):
    root = _site_copy(tmp_path / "lenient", strict=False)
    _append(root / "docs" / "index.md", "[a page](no-such-page.md) [an anchor](data.md#no-such-anchor)")
    _append(root / "docs" / "index.md", "[here](#no-such-heading) [an object][reclora.data.no_such_function]")
    _append(root / "README.md", "[gone](docs/no-such-page.md)")
    commands = root / "docs" / "commands.md"
    commands.write_text(commands.read_text().replace("(#reclora-data-version)", "", 1))
    done = _build(root)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
    for expected in (
        "'no-such-page.md', but the target is not found",
        "does not contain an anchor '#no-such-anchor'",
        "'#no-such-heading', but there is no such anchor",
        "Could not find cross-reference target 'reclora.data.no_such_function'",
        "README.md links docs/no-such-page.md",
        "does not link `reclora data version`",
    ):
        assert any(expected in w for w in warnings), (expected, warnings)
    assert len(warnings) == 6, warnings  # the sources as they are add none

    strict = _site_copy(tmp_path / "strict", strict=True)
    _append(strict / "docs" / "index.md", "[a page](no-such-page.md)")
    done = _build(strict)
    assert done.returncode != 0 and "Aborted with 1 warnings in strict mode" in done.stdout + done.stderr, done.stderr


@pytest.mark.slow  # mkdocs end to end
def test_an_api_page_naming_a_missing_object_fails_the_build(tmp_path):
    root = _site_copy(tmp_path, strict=True)
    _append(root / "docs" / "api" / "data.md", "::: reclora.data.no_such_function")
    done = _build(root)
    assert done.returncode != 0 and "Could not collect 'reclora.data.no_such_function'" in done.stderr, done.stderr


def test_the_command_reference_is_generated_from_the_cli(tmp_path):
    sys.path.insert(0, str(REPO / "docs"))
    try:
        import hooks
    finally:
        sys.path.remove(str(REPO / "docs"))
    entries = dict(hooks.cli_commands())
    assert "reclora data prepare" in entries and "reclora registry promote" in entries
    prepare = entries["reclora data prepare"]
    assert "reclora data prepare [OPTIONS]" in prepare  # the usage line
    assert "| `--dataset <str>` |" in prepare and "[required]" in prepare  # an option row with its help
    assert "--help" not in prepare
    # a pipe in a help text is escaped outside code spans only (a table cell; in code it would show)
    assert hooks.cell("a | b `x|y`\n  c") == r"a \| b `x|y` c"


def test_docstrings_read_as_markdown_the_way_they_are_meant():
    import griffe

    sys.path.insert(0, str(REPO / "docs"))
    try:
        from griffe_house import HouseDocstrings
    finally:
        sys.path.remove(str(REPO / "docs"))
    doc = "h [n, H] or [h, z] [n, H + 1]; see :func:`reclora.data.prepare` and [the CRM][reclora.crm]."
    fn = griffe.Function("f", docstring=griffe.Docstring(doc))
    HouseDocstrings().on_instance(node=None, obj=fn, agent=None)
    # a shape after a bracketed group is not a reference link; a role is code; a real cross-reference stays
    assert fn.docstring.value == (
        r"h [n, H] or [h, z] \[n, H + 1]; see `reclora.data.prepare` and [the CRM][reclora.crm]."
    )
