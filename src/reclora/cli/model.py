"""`reclora model ...`: fetch and inspect the base LLM."""

from __future__ import annotations

import json

import typer

from reclora.cli.common import SET_OPTION, run_guarded

app = typer.Typer(no_args_is_help=True)


@app.command("fetch")
def fetch_cmd(
    cache_dir: str | None = typer.Option(None, help="Cache root (default $RECLORA_CACHE or the user cache dir)."),
    force: bool = typer.Option(False, help="Fetch and convert again even if cached."),
    set_: list[str] | None = SET_OPTION,
) -> None:
    """Get the embedded default LLM (SmolLM2-135M-Instruct), convert it to safetensors, verify it."""
    from reclora.config import load_params
    from reclora.llm.fetch import fetch_default_model
    from reclora.llm.location import model_info

    def _run() -> int:
        path = fetch_default_model(load_params()["model"], cache_dir, force=force)
        typer.echo(json.dumps({"path": str(path), **model_info(path)}, sort_keys=True))
        return 0

    raise typer.Exit(run_guarded(_run))


@app.command("info")
def info_cmd(set_: list[str] | None = SET_OPTION) -> None:
    """Where the default model is and what it is."""
    from reclora.config import load_params
    from reclora.llm.location import default_model_dir, is_fetched, model_info

    def _run() -> int:
        d = default_model_dir(load_params()["model"])
        typer.echo(json.dumps({"path": str(d), "fetched": is_fetched(d), **model_info(d)}, sort_keys=True))
        return 0

    raise typer.Exit(run_guarded(_run))
