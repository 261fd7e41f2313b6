"""Which ``# fmt: skip`` markers ``ruff format`` makes unnecessary: a read-only report, it changes no file.

    .venv/bin/python scripts/fmt_skip_report.py [PATH ...]        (default: every tracked *.py file)

A marker is unnecessary when the formatter, with that one marker removed, leaves its statement exactly as
it is written (so removing it changes nothing but the comment); it is needed when the formatter would lay
the statement out otherwise; it is ignored when it does not end a statement (the formatter rewrites the
line anyway: a marker inside a bracketed expression has no effect). Prints one line per marker
(``unneeded``, ``needed`` or ``ignored``, ``path:line``) and the counts per top-level folder; uses the ruff
configuration in pyproject.toml.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tokenize
from collections import Counter
from pathlib import Path

MARKER = "  # fmt: skip"
ROOT = Path(__file__).resolve().parents[1]
RUFF = str(Path(sys.executable).with_name("ruff"))


def ruff_format(text: str, path: str) -> str:
    """``text`` as ``ruff format`` would write it for ``path`` (stdin to stdout; raises on a syntax error)."""
    done = subprocess.run(
        [RUFF, "format", "--stdin-filename", path, "-"], input=text, capture_output=True, text=True, cwd=ROOT
    )
    if done.returncode != 0:
        raise RuntimeError(f"ruff format {path}: {done.stderr.strip()}")
    return done.stdout


def comment_lines(text: str) -> list[int]:
    """0-based numbers of the lines whose comment starts with ``# fmt: skip`` (comments only, not strings)."""
    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    return [t.start[0] - 1 for t in tokens if t.type == tokenize.COMMENT and t.string.startswith(MARKER.strip())]


def markers(path: str) -> list[tuple[int, str]]:
    """(1-based line, "unneeded" | "needed" | "ignored") for every marker of the file at ``path`` (from the root)."""
    text = (ROOT / path).read_text()
    lines = text.splitlines(keepends=True)
    base = ruff_format(text, path).splitlines(keepends=True)
    found = []
    for i in comment_lines(text):
        line = lines[i]
        stripped = line.replace(MARKER, "", 1)
        # the skipped line is kept verbatim by the formatter: find the same occurrence of it in its output
        nth = sum(1 for earlier in lines[:i] if earlier == line)
        kept = [j for j, out in enumerate(base) if out == line]
        if len(kept) <= nth:  # the formatter rewrote the line: the marker has no effect
            found.append((i + 1, "ignored"))
            continue
        at = kept[nth]
        expected = "".join(base[:at] + [stripped] + base[at + 1 :])
        got = ruff_format("".join(lines[:i] + [stripped] + lines[i + 1 :]), path)
        found.append((i + 1, "unneeded" if got == expected else "needed"))
    return found


def main(paths: list[str]) -> int:
    """Print the report for ``paths`` (default: the tracked Python files); returns the exit status (0)."""
    if not paths:
        tracked = subprocess.run(["git", "ls-files", "*.py"], capture_output=True, text=True, cwd=ROOT, check=True)
        paths = [p for p in tracked.stdout.split() if comment_lines((ROOT / p).read_text())]
    counts: Counter[tuple[str, str]] = Counter()
    for path in paths:
        for line, kind in markers(path):
            print(f"{kind:8}  {path}:{line}")
            counts[(path.split("/")[0], kind)] += 1
    kinds = ("unneeded", "needed", "ignored")
    for top in sorted({t for t, _ in counts}):
        print(f"{top}: " + ", ".join(f"{counts[(top, k)]} {k}" for k in kinds))
    print("all: " + ", ".join(f"{sum(n for (_, kk), n in counts.items() if kk == k)} {k}" for k in kinds))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
