"""`reclora data ...`: prepare, validate, version."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from reclora.cli.common import SET_OPTION, command_params, refuse_outputs, run_guarded
from reclora.data.loaders import DATASETS

app = typer.Typer(no_args_is_help=True)


@app.command("prepare")
def prepare_cmd(
    dataset: str = typer.Option(..., help=f"One of: {', '.join(DATASETS)}."),
    path: str | None = typer.Option(None, help="Raw data directory (not needed for synthetic)."),
    out: str = typer.Option(..., help="Output directory (replaced atomically)."),
    min_history: int | None = typer.Option(None, help="Drop samples with fewer earlier interactions."),
    max_history: int | None = typer.Option(None, help="Most recent earlier interactions kept per sample."),
    max_users: int | None = typer.Option(None, help="Seeded sample of N users (0 = all)."),
    engine: str | None = typer.Option(
        None,
        help="pandas (one machine) or spark (Spark local mode here; the `spark` extra). Default: params data.engine.",
    ),
    params: str | None = typer.Option(None, help="params.yaml to use (default: the repository's)."),
    set_: list[str] | None = SET_OPTION,
) -> None:
    """Write canonical tables and train/valid/test CTR samples; print one JSON summary line."""
    from reclora.config import load_params, validated
    from reclora.data import prepare
    from reclora.data.spark_prepare import data_engine, prepare_spark

    def _run() -> int:
        refuse_outputs({"--out": out}, params)
        p = load_params(params)
        if engine is not None:
            p["data"]["engine"] = engine
        p = validated(p)  # once, here: a bad key or value names itself before any work
        run = prepare_spark if data_engine(p) == "spark" else prepare
        summary = run(
            dataset,
            path,
            out,
            p,
            min_history=min_history,
            max_history=max_history,
            max_users=max_users,
        )
        typer.echo(json.dumps(summary, sort_keys=True))
        return 0

    raise typer.Exit(run_guarded(_run))


def print_failures(failures: list[dict]) -> None:
    """Print each failed expectation's ``reason`` to stderr, one ``FAILED <reason>`` line each."""
    for f in failures:
        print(f"FAILED {f['reason']}", file=sys.stderr)


@app.command("validate")
def validate_cmd(
    data: str = typer.Option(..., help="A prepared data directory."),
    report: str = typer.Option(..., help="Where to write the Data Docs HTML and summary.json."),
    params: str | None = typer.Option(None, help="params.yaml to use (default: the repository's)."),
    set_: list[str] | None = SET_OPTION,
) -> None:
    """Run the Great Expectations suites. Exit 0 = pass, 1 = fail (reasons on stderr), 2 = bad input."""
    from reclora.data import dvc_hash
    from reclora.io import read_json, write_json
    from reclora.validation import validate_prepared

    def _run() -> int:
        refuse_outputs({"--report": report}, params)
        result = validate_prepared(data, report, params=command_params(params)["validation"])
        # record the data version (DVC's md5 of the prepared directory) for lineage
        summary = read_json(result.summary_json)
        summary["data_version"] = dvc_hash(data)
        write_json(result.summary_json, summary)
        if not result.success:
            print_failures(result.failures)
        status = "PASS" if result.success else f"FAIL ({len(result.failures)} failed expectations)"
        typer.echo(f"validation {status}; report: {Path(result.report_html).resolve()}")
        return 0 if result.success else 1

    raise typer.Exit(run_guarded(_run))


@app.command("version")
def version_cmd(data: str = typer.Option(..., help="A directory or file.")) -> None:
    """Print the DVC content hash of a directory (the data version used in lineage)."""
    from reclora.data import dvc_hash

    raise typer.Exit(run_guarded(lambda: typer.echo(json.dumps(dvc_hash(data)))))
