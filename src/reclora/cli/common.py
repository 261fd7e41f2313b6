"""What every command shares: one clear line for a user error, never a traceback.

``run_cli(app)`` is how the ``reclora`` command (and ``python -m reclora.cli.serve``) runs its typer
app: usage errors (an unknown option, a missing or invalid value) become one ``error:`` line and exit
2 instead of click's usage box; a :class:`~reclora.errors.RecLoRAError` is ``error: <message>`` and
exit 2; any other exception is ``error: <Type>: <first line>`` and exit 2, with the traceback only
when ``RECLORA_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import typer

from reclora.errors import RecLoRAError

DEBUG_ENV = "RECLORA_DEBUG"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def error_line(e: BaseException) -> str:
    """The ``error:`` line for an exception: the product's own message, else its type and first line."""
    if isinstance(e, RecLoRAError):  # one line: a multi-line message (pip's stderr, gate failures) joined by "; "
        return "error: " + "; ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())
    first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    return f"error: {type(e).__name__}{': ' + first if first else ''} (run with {DEBUG_ENV}=1 for the traceback)"


def run_guarded(fn: Callable[[], int | None]) -> int:
    """Run ``fn``; a RecLoRAError becomes 'error: ...' on stderr and exit code 2."""
    try:
        return int(fn() or 0)
    except RecLoRAError as e:
        print(error_line(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; outputs were left as they were before this run", file=sys.stderr)
        return 130


def run_cli(app: Any, args: list[str] | None = None, prog_name: str | None = None) -> int:
    """Run a typer ``app`` as a command line (``args`` default: sys.argv[1:]); return its exit code.

    First the process is set up for its machine (:func:`reclora.hardware.setup_process`: threads from the
    CPU quota; a process given a GPU that torch cannot see stops here). See the module docstring for
    what each failure prints."""
    from typer import Abort
    from typer._click.exceptions import ClickException, NoArgsIsHelpError

    from reclora.hardware import setup_process

    try:
        setup_process()
        rv = app(args=args, prog_name=prog_name, standalone_mode=False)
    except NoArgsIsHelpError as e:  # `reclora` or `reclora data` alone: the help, as asked
        print(e.format_message())
        return 0
    except ClickException as e:  # usage: unknown option, missing or invalid value
        where = f" (see '{e.ctx.command_path} --help')" if getattr(e, "ctx", None) is not None else ""
        print(f"error: {_one_line(e.format_message())}{where}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Abort):
        print("interrupted; outputs were left as they were before this run", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the promise: never a traceback, one line and exit 2
        if os.environ.get(DEBUG_ENV) == "1":
            traceback.print_exc()
        print(error_line(e), file=sys.stderr)
        return 2
    return rv if isinstance(rv, int) else 0


def refuse_outputs(outputs: dict[str, Any], params: str | None = None) -> None:
    """Refuse, before anything is written, an output (``{"--out": path}``) that is, contains or lies inside
    the params file the command reads (``--params``, else the one :func:`reclora.config.params_path` finds).
    The stages check their data inputs themselves (:func:`reclora.io.refuse_overlap`)."""
    from reclora.config import params_path
    from reclora.errors import ConfigError
    from reclora.io import refuse_overlap

    try:
        found = params_path(params)
    except ConfigError:  # no params file: loading the params says so
        return
    refuse_overlap(outputs, {"--params" if params else "(the params file)": found})


def _remember_sets(values: list[str] | None) -> list[str] | None:
    from reclora.config import set_cli_overrides

    set_cli_overrides(values)
    return values


# `--set section.key=value` (repeatable) on every command that reads params.yaml: applied, typed by
# the value params.yaml has there, whenever the command loads its params (bad ones: `error:`, exit 2).
SET_OPTION: Any = typer.Option(
    None,
    "--set",
    metavar="SECTION.KEY=VALUE",
    callback=_remember_sets,
    help="Override one params.yaml value for this run, e.g. --set train.sample_size=64 (repeatable).",
)


def command_params(path: str | None = None) -> dict[str, Any]:
    """The command's params, loaded once at this edge and passed down: the params file (``--params``, else
    the one :func:`reclora.config.params_path` finds) merged over the packaged defaults, with the ``--set``
    items applied, checked by :class:`reclora.config.Params` (a bad key or value is a ConfigError naming it,
    before any work). Returns the plain dict the library functions take."""
    from reclora.config import load_params, validated

    return validated(load_params(path))


# The features stage's output is "the feature store" everywhere on the command line: `--feature-store`.
# `--features` (its name before) still works, hidden from the help.
FEATURES_ALIAS: Any = typer.Option(None, "--features", hidden=True, help="Deprecated name of --feature-store.")


def feature_store_option(feature_store: str | None, features: str | None) -> str | None:
    """The ``--feature-store`` value, or the deprecated ``--features`` alias's. Raises ConfigError when both
    are given and differ."""
    from reclora.errors import ConfigError

    if features is not None and feature_store is not None and features != feature_store:
        raise ConfigError("--features is the old name of --feature-store: give one of them")
    return feature_store if feature_store is not None else features
