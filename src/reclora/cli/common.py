"""What every command shares: one clear line for a user error, never a traceback."""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional

import typer

from reclora.errors import RecLoRAError


def run_guarded(fn: Callable[[], int | None]) -> int:
    """Run ``fn``; a RecLoRAError becomes 'error: ...' on stderr and exit code 2."""
    try:
        return int(fn() or 0)
    except RecLoRAError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; outputs were left as they were before this run", file=sys.stderr)
        return 130


def _remember_sets(values: Optional[list[str]]) -> Optional[list[str]]:
    from reclora.config import set_cli_overrides

    set_cli_overrides(values)
    return values


# `--set section.key=value` (repeatable) on every command that reads params.yaml: applied, typed by
# the value params.yaml has there, whenever the command loads its params (bad ones: `error:`, exit 2).
SET_OPTION: Any = typer.Option(
    None, "--set", metavar="SECTION.KEY=VALUE", callback=_remember_sets,
    help="Override one params.yaml value for this run, e.g. --set train.sample_size=64 (repeatable).",
)  # fmt: skip
