"""`reclora train ...`: the training stages one by one (what the pipeline components run)."""

from __future__ import annotations

import json

import typer

from reclora.cli.common import (
    FEATURES_ALIAS,
    SET_OPTION,
    command_params,
    feature_store_option,
    refuse_outputs,
    run_guarded,
)

app = typer.Typer(no_args_is_help=True)


def _echo(summary: dict) -> int:
    typer.echo(json.dumps(summary, sort_keys=True, default=str))
    return 0


@app.command("retrieve")
def retrieve_cmd(
    data: str = typer.Option(..., help="Prepared data directory."),
    out: str = typer.Option(..., help="Output directory (samples with long/short histories)."),
    mode: str | None = typer.Option(None, help="relevance | recent (params retrieval.mode)."),
    model: str | None = typer.Option(None, help="Base LLM for item embeddings."),
    set_: list[str] | None = SET_OPTION,
) -> None:
    """Long-short modality retrieval: top-K relevant earlier behaviours per sample, in time order."""
    from reclora.stages import retrieve_stage

    raise typer.Exit(
        run_guarded(
            lambda: (
                refuse_outputs({"--out": out})
                or _echo(retrieve_stage(data, out, command_params(), mode=mode, model_path=model))
            )
        )
    )


@app.command("crm")
def crm_cmd(
    data: str = typer.Option(..., help="Prepared data directory."),
    retrieved: str = typer.Option(..., help="Output of `reclora train retrieve`."),
    out: str = typer.Option(..., help="Output directory (model, predictions, metrics)."),
    feature_store: str | None = typer.Option(
        None, "--feature-store", help="Output of the features stage: user attributes and item genres from Feast."
    ),
    features: str | None = FEATURES_ALIAS,
    ranks: int = typer.Option(1, help="Data-parallel gloo ranks on this machine (under torchrun: its process group)."),
    set_: list[str] | None = SET_OPTION,
) -> None:
    """Train the DIN-style CRM on the full training split (streamed batches; early stopping on valid)."""
    from reclora.stages import crm_stage

    raise typer.Exit(
        run_guarded(
            lambda: (
                refuse_outputs({"--out": out})
                or _echo(
                    crm_stage(
                        data,
                        retrieved,
                        out,
                        command_params(),
                        ranks=ranks,
                        feature_store=feature_store_option(feature_store, features),
                    )
                )
            )
        )
    )


@app.command("llm")
def llm_cmd(
    kind: str = typer.Option("reclora", help="reclora | lora (vanilla peft LoRA baseline)."),
    data: str = typer.Option(..., help="Prepared data directory."),
    retrieved: str = typer.Option(..., help="Output of `reclora train retrieve`."),
    crm: str | None = typer.Option(None, help="Output of `reclora train crm` (RecLoRA needs it)."),
    out: str = typer.Option(..., help="Output directory (adapter, predictions, metrics)."),
    gate: str = typer.Option("crm", help="crm | uniform (ablation without the CRM signal)."),
    model: str | None = typer.Option(None, help="Base LLM path or id."),
    feature_store: str | None = typer.Option(
        None, "--feature-store", help="Output of the features stage: profiles and titles from Feast."
    ),
    features: str | None = FEATURES_ALIAS,
    init_from: str | None = typer.Option(
        None, help="Two-stage RecLoRA: a trained vanilla LoRA (`--kind lora` OUT/adapter) every meta-LoRA starts from."
    ),
    set_: list[str] | None = SET_OPTION,
) -> None:
    """Few2Many: train an adapter on a seeded sample of train; resumes from its checkpoint if killed."""
    from reclora.stages import llm_stage

    raise typer.Exit(
        run_guarded(
            lambda: (
                refuse_outputs({"--out": out})
                or _echo(
                    llm_stage(
                        kind,
                        data,
                        retrieved,
                        crm,
                        out,
                        command_params(),
                        gate=gate,
                        model_path=model,
                        feature_store=feature_store_option(feature_store, features),
                        init_from=init_from,
                    )
                )
            )
        )
    )


@app.command("evaluate")
def evaluate_cmd(
    run: list[str] = typer.Option(..., help="NAME=DIR of a stage output with predictions.parquet; repeat."),
    out: str = typer.Option(..., help="Report directory (metrics.json, PNG plots, report.html)."),
    data: str | None = typer.Option(None, help="Prepared data the models were evaluated on: sliced metrics."),
    registry: str | None = typer.Option(
        None, help="Registry URI: re-score its champion on the same samples (needs --data)."
    ),
    feature_store: str | None = typer.Option(
        None, "--feature-store", help="Output of the features stage: the champion's prompts from Feast."
    ),
    features: str | None = FEATURES_ALIAS,
    challenger: str | None = typer.Option(
        None, help="The model the promotion gate judges (default: the first named *reclora*)."
    ),
    set_: list[str] | None = SET_OPTION,
) -> None:
    """Score the models on their common samples (+ the champion, + slices); write the HTML report and the metrics JSON."""
    from reclora.errors import ConfigError
    from reclora.stages import evaluate_stage

    def _run() -> int:
        pairs = [r.split("=", 1) for r in run]
        if any(len(p) != 2 for p in pairs):
            raise ConfigError("--run takes NAME=DIR")
        refuse_outputs({"--out": out})
        m = evaluate_stage(
            dict(pairs),
            out,
            data_dir=data,
            registry_uri=registry,
            feature_store=feature_store_option(feature_store, features),
            challenger=challenger,
            params=command_params(),
        )
        models = {n: {k: v[k] for k in ("auc", "logloss", "ece", "accuracy", "n")} for n, v in m["models"].items()}
        return _echo({"models": models, "decision": m["gate"]["decision"]["reason"]})

    raise typer.Exit(run_guarded(_run))
