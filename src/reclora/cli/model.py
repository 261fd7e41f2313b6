"""`reclora model ...`: fetch and inspect the base LLM."""

from __future__ import annotations

import json
import time

import typer

from reclora.cli.common import SET_OPTION, run_guarded

app = typer.Typer(no_args_is_help=True)


@app.command("fetch")
def fetch_cmd(
    cache_dir: str | None = typer.Option(None, help="Cache root (default $RECLORA_CACHE or the user cache dir)."),
    force: bool = typer.Option(False, help="Fetch and convert again even if cached."),
    set_: list[str] | None = SET_OPTION,
) -> None:
    """Get the embedded default LLM (SmolLM2-135M-Instruct), convert it to safetensors, verify it.

    Prints what the fetch recorded, ``cached`` (the model was already in the cache, nothing fetched) and
    ``fetch_seconds`` (this call's fetch; ``first_fetch_seconds`` is the one that filled the cache)."""
    from reclora.config import load_params
    from reclora.llm.fetch import fetch_default_model
    from reclora.llm.location import default_model_dir, is_fetched, model_info

    def _run() -> int:
        model = load_params()["model"]
        cached = is_fetched(default_model_dir(model, cache_dir)) and not force
        t0 = time.perf_counter()
        path = fetch_default_model(model, cache_dir, force=force)
        took = round(time.perf_counter() - t0, 1)
        typer.echo(
            json.dumps({"path": str(path), **model_info(path), "cached": cached, "fetch_seconds": took}, sort_keys=True)
        )
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
