"""`reclora serve`: serve a registered RecLoRA version over KServe's V1 and V2 protocols.

Register in cli/main.py with ``app.command("serve")(serve_cli.serve)``; also runnable alone as
``python -m reclora.cli.serve --model URI ...``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from reclora.cli.common import SET_OPTION, run_cli, run_guarded

if TYPE_CHECKING:
    from reclora.config import Params


def serve(
    model: str = typer.Option(..., "--model", help="Registry URI (local directory) or a version directory."),
    ref: str = typer.Option("champion", "--ref", help="Version ref in the registry: champion, latest or vNNNN."),
    port: int = typer.Option(8080, "--port", help="HTTP port."),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address (0.0.0.0 inside a container)."),
    base_model: str | None = typer.Option(None, "--base-model", help="Base LLM path (default: the manifest's)."),
    feature_store: str | None = typer.Option(
        None, "--feature-store", help="Feast repo (the features stage's output or its repo/) for user histories."
    ),
    name: str = typer.Option("reclora", "--name", help="Model name in the URLs (/v1/models/NAME:predict)."),
    max_candidates: int = typer.Option(100, "--max-candidates", help="Most candidates per user in one request."),
    threads: int | None = typer.Option(
        None, "--threads", help="torch CPU threads (default: the CPU quota of the container, else the CPUs it may use)."
    ),
    precision: str | None = typer.Option(
        None,
        "--precision",
        help="auto, fp32, bf16 or fp16 (default: train.precision of this machine's params.yaml, "
        "else auto: decided by this server's hardware, never by the precision the version was trained in).",
    ),
    request_timeout: float = typer.Option(
        30.0,
        "--request-timeout",
        help="Seconds a request may take to arrive whole (headers and body); a slower one gets a 408 and is closed.",
    ),
    set_: list[str] | None = SET_OPTION,
) -> None:
    """Serve a registered RecLoRA version (V1 /v1/models/NAME:predict, V2 /v2/models/NAME/infer, /metrics)."""
    from reclora.serving.server import serve as _serve

    if not 0 < port < 65536:
        print(f"error: --port must be in 1..65535, got {port}", file=sys.stderr)
        raise typer.Exit(2)
    if not request_timeout > 0:
        print(f"error: --request-timeout must be > 0 seconds, got {request_timeout:g}", file=sys.stderr)
        raise typer.Exit(2)

    def _run() -> int:
        from reclora.errors import ConfigError
        from reclora.precision import PRECISIONS

        if precision is not None and precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if threads is not None and threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {threads}")
        params = _machine_params()
        req = precision or (params.train.precision if params is not None else "auto")
        _serve(
            model,
            port=port,
            host=host,
            ref=ref,
            base_model=base_model,
            feature_store=feature_store,
            name=name,
            max_candidates=max_candidates,
            num_threads=threads,
            request_timeout=request_timeout,
            precision=req,
            rating_ranges=params.validation.rating_range if params is not None else None,
            model=params.model if params is not None else None,
        )
        return 0

    raise typer.Exit(run_guarded(_run))


def _machine_params() -> Params | None:
    """This machine's params (params.yaml with ``--set``, checked), loaded once here: ``train.precision`` (the
    default of ``--precision``), ``validation.rating_range`` (for a served version whose params lack it) and
    ``model`` (where the base LLM is on this machine). None without a params.yaml where the server runs (an
    image without one): its own hardware decides the precision, inline history ratings need only be finite, and
    the base LLM is the one the version records. Raises ConfigError for a bad params file, or a missing one that
    $RECLORA_PARAMS names."""
    import os

    from reclora.cli.common import command_params
    from reclora.config import PARAMS_ENV, as_params, params_path
    from reclora.errors import ConfigError

    try:
        params_path()
    except ConfigError:
        if os.environ.get(PARAMS_ENV):
            raise
        return None
    return as_params(command_params())


def main() -> None:
    """`python -m reclora.cli.serve`: ``serve`` as a command of its own; exits with its exit code."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(serve)
    sys.exit(run_cli(app))


if __name__ == "__main__":
    main()
