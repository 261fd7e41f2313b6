"""What every command shares: one clear line for a user error, never a traceback."""

from __future__ import annotations

import sys
from typing import Callable

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
