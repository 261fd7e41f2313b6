"""Entry point: `reclora <area> <command>`; see `reclora --help`."""

from __future__ import annotations

import sys

import typer

from reclora.cli import bench as bench_cli
from reclora.cli import data as data_cli
from reclora.cli import model as model_cli
from reclora.cli import pipeline as pipeline_cli
from reclora.cli import registry as registry_cli
from reclora.cli import serve as serve_cli
from reclora.cli import train as train_cli
from reclora.cli.common import SET_OPTION, command_params, refuse_outputs, run_cli, run_guarded

app = typer.Typer(
    help="RecLoRA: a Kubeflow training pipeline for LLM recommenders with personalized LoRA.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_cli.app, name="data", help="Prepare, validate and version behaviour data.")
app.add_typer(model_cli.app, name="model", help="Fetch and inspect the base LLM.")
app.add_typer(train_cli.app, name="train", help="Training stages: retrieve, crm, llm, evaluate.")
app.add_typer(bench_cli.app, name="bench", help="Quality and speed benchmarks.")
app.add_typer(registry_cli.app, name="registry", help="Registered adapter versions: list, show, promote, rollback.")
app.command("serve")(serve_cli.serve)
app.add_typer(pipeline_cli.app, name="pipeline", help="The KFP pipeline: run locally, compile, submit, schedule.")


@app.command()
def demo(
    out: str = typer.Option("runs/demo", help="Directory for the demo's outputs."),
    set_: list[str] | None = SET_OPTION,
) -> None:
    """Run the data stages (prepare + validate) on the synthetic data set and say what was done."""
    from pathlib import Path

    from reclora.cli.data import print_failures
    from reclora.data import dvc_hash, prepare
    from reclora.validation import validate_prepared

    def _run() -> int:
        data_dir, report_dir = Path(out) / "prepared", Path(out) / "validation"
        refuse_outputs({"--out": data_dir, "its report": report_dir})
        params = command_params()
        s = prepare("synthetic", None, data_dir, params)
        typer.echo(
            f"prepared  {s['rows']:,} synthetic interactions of {s['users']} users on {s['items']} items -> {data_dir}\n"
            f"          samples train/valid/test = {s['samples']['train']:,}/{s['samples']['valid']:,}/"
            f"{s['samples']['test']:,}, positive rate {s['positive_rate']:.3f}"
        )
        r = validate_prepared(data_dir, report_dir, params=params["validation"])
        version = dvc_hash(data_dir)["md5"]
        typer.echo(f"validated {'PASS' if r.success else 'FAIL'}; report {r.report_html}")
        typer.echo(f"version   data {version} (DVC md5 of {data_dir})")
        if not r.success:
            print_failures(r.failures)
            return 1
        typer.echo("next      the pipeline stages (features, CRM, RecLoRA, evaluate, register) build on this data.")
        return 0

    raise typer.Exit(run_guarded(_run))


def main() -> None:
    """The `reclora` command: bad input is one `error:` line and exit 2, never a usage box or a traceback."""
    sys.exit(run_cli(app))
