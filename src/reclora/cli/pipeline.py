"""`reclora pipeline ...`: run locally, compile, submit to a KFP backend, schedule retraining."""

from __future__ import annotations

import sys

import typer

from reclora.cli.common import SET_OPTION, run_guarded

app = typer.Typer(no_args_is_help=True)


def _overrides(text: str | None, option: str = "--overrides") -> dict:
    from reclora.errors import ConfigError

    if not text:
        return {}
    from reclora.io import loads_json

    try:
        d = loads_json(text)
    except ValueError as e:  # not JSON, or an object that repeats a key
        raise ConfigError(f"{option} must be a JSON object: {e}") from e
    if not isinstance(d, dict):
        raise ConfigError(f"{option} must be a JSON object, got {type(d).__name__}")
    return d


def _arguments(text: str | None) -> dict:
    """Pipeline arguments (JSON) with the command line's --set items merged into their `overrides`."""
    from reclora.config import cli_overrides, deep_merge

    args = _overrides(text, "--arguments")
    sets = cli_overrides()
    if sets:
        args["overrides"] = deep_merge(args.get("overrides") or {}, sets)
    return args


@app.command("run")
def run_cmd(
    local: bool = typer.Option(
        True, "--local/--no-local", help="Run with kfp.local on this machine (the only mode here)."
    ),
    runner: str = typer.Option(
        "subprocess",
        "--runner",
        help="subprocess: components in this environment; "
        "docker: each in its image (docker, or podman's Docker API; `make images` first).",
    ),
    dataset: str = typer.Option("synthetic", help="Data set (see `reclora data prepare`)."),
    path: str = typer.Option("", help="Raw data directory (not needed for synthetic)."),
    profile: str = typer.Option("small", help="Named overrides from params.yaml `profiles:` ('' for none)."),
    model: str = typer.Option("", help="Base LLM path or id (default: the embedded SmolLM2-135M)."),
    overrides: str | None = typer.Option(
        None, help='JSON merged into params.yaml, e.g. \'{"train": {"sample_size": 64}}\'.'
    ),
    pipeline_root: str | None = typer.Option(None, help="Where task outputs go (params pipeline.pipeline_root)."),
    registry: str | None = typer.Option(None, help="Registry URI (params pipeline.registry_uri)."),
    verbose: bool = typer.Option(
        False, "--verbose", help="Stream the full logs (kfp, components) here instead of into <run dir>/pipeline.log."
    ),
    set_: list[str] | None = SET_OPTION,
) -> None:
    """Run the whole pipeline on this machine: one line per stage, then where the outputs and reports are."""
    from reclora.errors import ConfigError

    def _run() -> int:
        if not local:
            raise ConfigError("only --local runs here; for a cluster use `reclora pipeline submit --host URL`")
        from pipelines.local import run_local
        from reclora.config import cli_overrides, deep_merge, load_params_with, validated

        # --set items travel to the components as part of the pipeline's `overrides`
        merged = deep_merge(_overrides(overrides), cli_overrides())
        validated(load_params_with(merged, profile or None))  # the run's params, checked before any step starts
        try:
            r = run_local(
                dataset,
                path,
                profile,
                model,
                merged,
                pipeline_root,
                registry,
                runner=runner,
                terminal=sys.stdout,
                log_file=not verbose,
            )
        except RuntimeError as e:  # a task failed; kfp says which, the log says why
            typer.echo(f"pipeline run FAILED: {e}", err=True)
            return 1
        typer.echo(
            f"pipeline run finished in {r['seconds']:.0f} s ({r['runner']} runner); outputs under {r['run_dir']}"
        )
        if r["cached_steps"]:
            typer.echo(f"reused cached data steps: {', '.join(r['cached_steps'])}")
        if r.get("log"):
            typer.echo(f"full log:           {r['log']}")
        typer.echo(f"validation report:  {r.get('validation_report')}")
        if not r.get("validation_passed"):
            typer.echo(
                "STOPPED at validation: the data failed the Great Expectations gate; nothing was trained or registered.",
                err=True,
            )
            for line in (r.get("validation_failures") or "").splitlines():
                typer.echo(f"FAILED {line}", err=True)
            return 1
        typer.echo(f"evaluation report:  {r.get('evaluation_report')}")
        typer.echo(
            f"registered adapter: {r.get('registered_version')} in {r.get('registry')} "
            f"({'champion' if r.get('promoted') else 'challenger'}: {r.get('promotion_reason')})"
        )
        typer.echo(f"data version:       {r.get('data_version')}")
        return 0

    raise typer.Exit(run_guarded(_run))


@app.command("compile")
def compile_cmd(
    out: str = typer.Option("pipeline.yaml", help="IR YAML to write."),
    cpu_image: str | None = typer.Option(None, help="Image of the data steps (params pipeline.cpu_image)."),
    gpu_image: str | None = typer.Option(None, help="Image of the training steps (params pipeline.gpu_image)."),
    profile: str | None = typer.Option(None, help="params.yaml profile for the defaults, e.g. cluster."),
    set_: list[str] | None = SET_OPTION,
) -> None:
    """Compile the pipeline to KFP v2 IR YAML (the GPU node-pool settings come from params.yaml)."""
    from pipelines.remote import compile_pipeline
    from reclora.config import load_params_with, validated

    def _run() -> int:
        validated(load_params_with(None, profile))  # the pipeline's defaults, checked before compiling
        typer.echo(str(compile_pipeline(out, cpu_image, gpu_image, profile)))
        return 0

    raise typer.Exit(run_guarded(_run))


@app.command("submit")
def submit_cmd(
    host: str = typer.Option(..., help="KFP API endpoint, e.g. http://ml-pipeline.kubeflow:8888."),
    package: str = typer.Option("pipeline.yaml", help="Compiled pipeline (see `compile`)."),
    arguments: str | None = typer.Option(None, help='Pipeline arguments as JSON, e.g. \'{"dataset": "ml-1m"}\'.'),
    namespace: str | None = typer.Option(None, help="Kubeflow profile namespace."),
    set_: list[str] | None = SET_OPTION,
) -> None:
    """Start one run on a KFP v2 backend."""
    from pipelines.remote import submit

    def _run() -> int:
        r = submit(host, package, _arguments(arguments), namespace=namespace)
        typer.echo(f"submitted run {getattr(r, 'run_id', r)}")
        return 0

    raise typer.Exit(run_guarded(_run))


@app.command("schedule")
def schedule_cmd(
    host: str = typer.Option(..., help="KFP API endpoint."),
    cron: str = typer.Option("0 0 3 * * *", help="KFP cron (6 fields, seconds first): daily at 03:00 by default."),
    package: str = typer.Option("pipeline.yaml", help="Compiled pipeline (see `compile`)."),
    arguments: str | None = typer.Option(None, help="Pipeline arguments as JSON."),
    namespace: str | None = typer.Option(None, help="Kubeflow profile namespace."),
    set_: list[str] | None = SET_OPTION,
) -> None:
    """Create the recurring run for scheduled retraining (no catch-up, one run at a time)."""
    from pipelines.remote import schedule

    def _run() -> int:
        r = schedule(host, package, cron, _arguments(arguments), namespace=namespace)
        typer.echo(f"scheduled recurring run {getattr(r, 'recurring_run_id', r)} with cron {cron!r}")
        return 0

    raise typer.Exit(run_guarded(_run))
