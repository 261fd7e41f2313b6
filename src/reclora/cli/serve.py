"""`reclora serve`: serve a registered RecLoRA version over KServe's V1 and V2 protocols.

Register in cli/main.py with ``app.command("serve")(serve_cli.serve)``; also runnable alone as
``python -m reclora.cli.serve --model URI ...``.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from reclora.cli.common import SET_OPTION, run_cli, run_guarded


def serve(
    model: str = typer.Option(..., "--model", help="Registry URI (local directory) or a version directory."),
    ref: str = typer.Option("champion", "--ref", help="Version ref in the registry: champion, latest or vNNNN."),
    port: int = typer.Option(8080, "--port", help="HTTP port."),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address (0.0.0.0 inside a container)."),
    base_model: Optional[str] = typer.Option(None, "--base-model", help="Base LLM path (default: the manifest's)."),
    feature_store: Optional[str] = typer.Option(
        None, "--feature-store", help="Feast repo (the features stage's output or its repo/) for user histories."
    ),
    name: str = typer.Option("reclora", "--name", help="Model name in the URLs (/v1/models/NAME:predict)."),
    max_candidates: int = typer.Option(100, "--max-candidates", help="Most candidates per user in one request."),
    threads: Optional[int] = typer.Option(
        None, "--threads", help="torch CPU threads (default: the CPU quota of the container, else the CPUs it may use)."
    ),
    precision: Optional[str] = typer.Option(
        None, "--precision", help="auto, fp32, bf16 or fp16 (default: train.precision of this machine's params.yaml, "
        "else auto: decided by this server's hardware, never by the precision the version was trained in).",
    ),
    request_timeout: float = typer.Option(30.0, "--request-timeout", help="Seconds a request may take to arrive "
                                          "whole (headers and body); a slower one gets a 408 and is closed."),
    set_: Optional[list[str]] = SET_OPTION,
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
        from reclora.precision import PRECISIONS, requested_precision

        if precision is not None and precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if threads is not None and threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {threads}")
        req = precision
        if req is None:
            import os

            from reclora.cli.common import command_params
            from reclora.config import PARAMS_ENV, params_path

            try:
                params_path()
            except ConfigError:
                if os.environ.get(PARAMS_ENV):
                    raise
                req = "auto"  # no params.yaml where the server runs (an image): its own hardware decides
            else:
                req = requested_precision(command_params().get("train"))
        _serve(model, port=port, host=host, ref=ref, base_model=base_model, feature_store=feature_store,
               name=name, max_candidates=max_candidates, num_threads=threads, request_timeout=request_timeout,
               precision=req, rating_ranges=_rating_ranges())  # fmt: skip
        return 0

    raise typer.Exit(run_guarded(_run))


def _rating_ranges() -> dict | None:
    """validation.rating_range of this machine's params.yaml, for a served version whose params lack it;
    None without a params.yaml (in an image): inline history ratings need only be finite."""
    from reclora.config import load_params
    from reclora.errors import ConfigError

    try:
        return (load_params().get("validation") or {}).get("rating_range")
    except ConfigError:
        return None


def main() -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(serve)
    sys.exit(run_cli(app))


if __name__ == "__main__":
    main()
