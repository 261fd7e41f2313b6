"""`reclora registry ...`: versions, the champion, promotion and rollback."""

from __future__ import annotations

import json
from typing import Optional

import typer

from reclora.cli.common import SET_OPTION, run_guarded

app = typer.Typer(no_args_is_help=True)


def _uri(uri: Optional[str]) -> str:
    from reclora.config import section

    return uri or section("pipeline")["registry_uri"]


URI = typer.Option(None, "--uri", help="Registry URI (params pipeline.registry_uri; any fsspec URI).")


@app.command("list")
def list_cmd(uri: Optional[str] = URI, set_: Optional[list[str]] = SET_OPTION) -> None:
    """Every version with its status, AUC, LogLoss and creation time."""
    from reclora.registry import list_versions

    def _run() -> int:
        rows = list_versions(_uri(uri))
        if not rows:
            typer.echo("no versions registered")
        for r in rows:
            auc = f"{r['auc']:.4f}" if r.get("auc") is not None else "-"
            ll = f"{r['logloss']:.4f}" if r.get("logloss") is not None else "-"
            typer.echo(f"{r['version']}  {r['status']:<10}  AUC {auc}  LogLoss {ll}  {r['created_at']}")
        return 0

    raise typer.Exit(run_guarded(_run))


@app.command("show")
def show_cmd(
    ref: str = typer.Argument("champion", help="champion, latest or vNNNN."), uri: Optional[str] = URI,
    set_: Optional[list[str]] = SET_OPTION,
) -> None:
    """One version's manifest (files, metrics, lineage) as JSON."""
    from reclora.registry import show

    raise typer.Exit(run_guarded(lambda: typer.echo(json.dumps(show(_uri(uri), ref), indent=2, default=str)) or 0))


@app.command("promote")
def promote_cmd(
    version: str = typer.Argument(..., help="vNNNN"), uri: Optional[str] = URI,
    set_: Optional[list[str]] = SET_OPTION,
) -> None:
    """Make a version the champion by hand (the previous one is kept for rollback)."""
    from reclora.registry import promote

    raise typer.Exit(run_guarded(lambda: typer.echo(json.dumps(promote(_uri(uri), version), default=str)) or 0))


@app.command("rollback")
def rollback_cmd(uri: Optional[str] = URI, set_: Optional[list[str]] = SET_OPTION) -> None:
    """Restore the previous champion."""
    from reclora.registry import rollback

    raise typer.Exit(run_guarded(lambda: typer.echo(json.dumps(rollback(_uri(uri)), default=str)) or 0))
