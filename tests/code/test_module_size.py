"""No module of ours over 400 lines without its reason stated at its top.

A long module is allowed when it holds one job; its docstring then says so in a paragraph that starts
``Long because:``. The check reads every ``.py`` file under src/reclora, pipelines and components with
``ast`` (nothing is imported) and is shown to catch a planted long module.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 400


def unexplained_long_modules(paths: list[Path]) -> list[str]:
    """'path: N lines' for each file over LIMIT lines whose module docstring lacks 'Long because:'."""
    out = []
    for p in paths:
        text = p.read_text(encoding="utf-8")
        n = len(text.splitlines())
        if n > LIMIT and "Long because:" not in (ast.get_docstring(ast.parse(text)) or ""):
            out.append(f"{p}: {n} lines")
    return out


def test_no_long_module_without_a_reason():
    files = [p for d in ("src/reclora", "pipelines", "components") for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 50
    assert unexplained_long_modules(files) == []


def test_the_check_catches_a_long_module(tmp_path):
    body = "\n".join(f"x{i} = {i}" for i in range(LIMIT))
    plain = tmp_path / "plain.py"
    plain.write_text('"""A module."""\n' + body + "\n")
    explained = tmp_path / "explained.py"
    explained.write_text('"""A module.\n\nLong because: one job.\n"""\n' + body + "\n")
    comment = tmp_path / "comment.py"  # the reason must be in the docstring, not a comment
    comment.write_text('"""A module."""\n# Long because: one job.\n' + body + "\n")
    short = tmp_path / "short.py"
    short.write_text('"""A module."""\nx = 1\n')
    assert unexplained_long_modules([plain, explained, comment, short]) == [
        f"{plain}: {LIMIT + 1} lines",
        f"{comment}: {LIMIT + 2} lines",
    ]
