"""`reclora pipeline ...`: run locally, compile, submit to a KFP backend, schedule retraining."""

from __future__ import annotations

import json
from typing import Optional

import typer

from reclora.cli.common import SET_OPTION, run_guarded

app = typer.Typer(no_args_is_help=True)


def _overrides(text: Optional[str]) -> dict:
    from reclora.errors import ConfigError

    if not text:
        return {}
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--overrides must be a JSON object: {e}") from e
    if not isinstance(d, dict):
        raise ConfigError("--overrides must be a JSON object")
    return d


@app.command("run")
def run_cmd(
    local: bool = typer.Option(True, "--local/--no-local", help="Run with kfp.local's SubprocessRunner (the only mode here)."),
    dataset: str = typer.Option("synthetic", help="Data set (see `reclora data prepare`)."),
    path: str = typer.Option("", help="Raw data directory (not needed for synthetic)."),
    profile: str = typer.Option("small", help="Named overrides from params.yaml `profiles:` ('' for none)."),
    model: str = typer.Option("", help="Base LLM path or id (default: the embedded SmolLM2-135M)."),
    overrides: Optional[str] = typer.Option(None, help='JSON merged into params.yaml, e.g. \'{"train": {"sample_size": 64}}\'.'),
    pipeline_root: Optional[str] = typer.Option(None, help="Where task outputs go (params pipeline.pipeline_root)."),
    registry: Optional[str] = typer.Option(None, help="Registry URI (params pipeline.registry_uri)."),
    set_: Optional[list[str]] = SET_OPTION,
) -> None:
    """Run the whole pipeline on this machine; print where the outputs and reports are."""
    from reclora.errors import ConfigError

    def _run() -> int:
        if not local:
            raise ConfigError("only --local runs here; for a cluster use `reclora pipeline submit --host URL`")
        from pipelines.run import run_local

        r = run_local(dataset, path, profile, model, _overrides(overrides), pipeline_root, registry)
        typer.echo(f"pipeline run finished in {r['seconds']:.0f} s; outputs under {r['run_dir']}")
        if r["cached_steps"]:
            typer.echo(f"reused cached data steps: {', '.join(r['cached_steps'])}")
        typer.echo(f"validation report:  {r.get('validation_report')}")
        if not r.get("validation_passed"):
            typer.echo("STOPPED at validation: the data failed the Great Expectations gate; nothing was trained or registered.", err=True)
            for line in (r.get("validation_failures") or "").splitlines():
                typer.echo(f"FAILED {line}", err=True)
            return 1
        typer.echo(f"evaluation report:  {r.get('evaluation_report')}")
        typer.echo(f"registered adapter: {r.get('registered_version')} in {r.get('registry')} "
                   f"({'champion' if r.get('promoted') else 'challenger'}: {r.get('promotion_reason')})")  # fmt: skip
        typer.echo(f"data version:       {r.get('data_version')}")
        return 0

    raise typer.Exit(run_guarded(_run))


@app.command("compile")
def compile_cmd(
    out: str = typer.Option("pipeline.yaml", help="IR YAML to write."),
    cpu_image: Optional[str] = typer.Option(None, help="Image of the data steps (params pipeline.cpu_image)."),
    gpu_image: Optional[str] = typer.Option(None, help="Image of the training steps (params pipeline.gpu_image)."),
    set_: Optional[list[str]] = SET_OPTION,
) -> None:
    """Compile the pipeline to KFP v2 IR YAML (the GPU node-pool settings come from params.yaml)."""
    from pipelines.run import compile_pipeline

    raise typer.Exit(run_guarded(lambda: typer.echo(str(compile_pipeline(out, cpu_image, gpu_image))) or 0))


@app.command("submit")
def submit_cmd(
    host: str = typer.Option(..., help="KFP API endpoint, e.g. http://ml-pipeline.kubeflow:8888."),
    package: str = typer.Option("pipeline.yaml", help="Compiled pipeline (see `compile`)."),
    arguments: Optional[str] = typer.Option(None, help='Pipeline arguments as JSON, e.g. \'{"dataset": "ml-1m"}\'.'),
    namespace: Optional[str] = typer.Option(None, help="Kubeflow profile namespace."),
    set_: Optional[list[str]] = SET_OPTION,
) -> None:
    """Start one run on a KFP v2 backend."""
    from pipelines.run import submit

    def _run() -> int:
        r = submit(host, package, _overrides(arguments), namespace=namespace)
        typer.echo(f"submitted run {getattr(r, 'run_id', r)}")
        return 0

    raise typer.Exit(run_guarded(_run))


@app.command("schedule")
def schedule_cmd(
    host: str = typer.Option(..., help="KFP API endpoint."),
    cron: str = typer.Option("0 0 3 * * *", help="KFP cron (6 fields, seconds first): daily at 03:00 by default."),
    package: str = typer.Option("pipeline.yaml", help="Compiled pipeline (see `compile`)."),
    arguments: Optional[str] = typer.Option(None, help="Pipeline arguments as JSON."),
    namespace: Optional[str] = typer.Option(None, help="Kubeflow profile namespace."),
    set_: Optional[list[str]] = SET_OPTION,
) -> None:
    """Create the recurring run for scheduled retraining (no catch-up, one run at a time)."""
    from pipelines.run import schedule

    def _run() -> int:
        r = schedule(host, package, cron, _overrides(arguments), namespace=namespace)
        typer.echo(f"scheduled recurring run {getattr(r, 'recurring_run_id', r)} with cron {cron!r}")
        return 0

    raise typer.Exit(run_guarded(_run))
