"""The `reclora` command line (typer). One sub-app per area."""

from reclora.cli.main import app, main

__all__ = ["app", "main"]
