"""`reclora bench ...`: quality and speed benchmarks (print figures, write JSON)."""

from __future__ import annotations

import json

import typer

from reclora.bench.scale import OPTIONAL_STAGES as SCALE_OPTIONAL_STAGES
from reclora.bench.scale import STAGES as SCALE_STAGES
from reclora.cli.common import SET_OPTION, command_params, refuse_outputs, run_guarded

app = typer.Typer(no_args_is_help=True)


@app.command("quality")
def quality_cmd(
    dataset: str = typer.Option(
        ..., help="ml-100k, ml-1m, ml-25m (any MovieLens CSV release), goodbooks-10k, synthetic, table."
    ),
    path: str | None = typer.Option(None, help="Raw data directory."),
    out: str = typer.Option(..., help="JSON file with every figure."),
    work: str | None = typer.Option(None, help="Working directory (default: OUT's stem + '-work')."),
    sample_size: int | None = typer.Option(None, help="Few2Many training sample size (params train.sample_size)."),
    eval_samples: int | None = typer.Option(
        None, help="Test samples every model is scored on (params train.eval_samples)."
    ),
    max_users: int | None = typer.Option(
        None, help="Seeded user sample for large data (params bench.quality.max_users)."
    ),
    ablations: bool | None = typer.Option(
        None, "--ablations/--no-ablations", help="Also uniform-gate and recent-K RecLoRA."
    ),
    model: str | None = typer.Option(None, help="Base LLM path or id (default: the embedded SmolLM2-135M)."),
    set_: list[str] | None = SET_OPTION,
) -> None:
    """CRM vs vanilla LoRA vs RecLoRA (+ CRM residual, two-stage, peer DIN) on one data set: test AUC, LogLoss, bootstrap intervals, wall time."""
    from reclora.bench.quality import bench_quality

    def _run() -> int:
        refuse_outputs({"--out": out, "--work": work})
        r = bench_quality(
            dataset, path, out, work, command_params(), ablations, sample_size, eval_samples, max_users, model
        )
        typer.echo(
            json.dumps({"models": r["models"], "wall_seconds": r["wall_seconds"], "report": r["report"]}, indent=2)
        )
        return 0

    raise typer.Exit(run_guarded(_run))


@app.command("curve")
def curve_cmd(
    dataset: str = typer.Option(..., help="ml-100k, ml-1m, ml-25m, goodbooks-10k, synthetic, table."),
    path: str | None = typer.Option(None, help="Raw data directory."),
    out: str = typer.Option(..., help="JSON file with every point; the plot goes beside it as a PNG."),
    sizes: str = typer.Option("256,1024,4096,8192", help="Few2Many sample sizes, comma-separated."),
    work: str | None = typer.Option(None, help="Working directory (default: OUT's stem + '-work')."),
    eval_samples: int | None = typer.Option(
        None, help="Test samples every model is scored on (params train.eval_samples)."
    ),
    max_users: int | None = typer.Option(
        None, help="Seeded user sample for large data (params bench.quality.max_users)."
    ),
    model: str | None = typer.Option(None, help="Base LLM path or id (default: the embedded SmolLM2-135M)."),
) -> None:
    """Learning curve: vanilla LoRA and RecLoRA test AUC/LogLoss against the Few2Many sample size, CRM as a line."""
    from reclora.bench.curve import bench_curve
    from reclora.errors import ConfigError

    def _run() -> int:
        try:
            ns = [int(x) for x in sizes.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--sizes must be comma-separated integers, got {sizes!r}") from None
        refuse_outputs({"--out": out, "--work": work})
        r = bench_curve(dataset, path, out, ns, work, command_params(), eval_samples, max_users, model)
        typer.echo(json.dumps({"sizes": r["sizes"], "crm": r["crm"], "plot": r["plot"]}, indent=2))
        return 0

    raise typer.Exit(run_guarded(_run))


@app.command("speed")
def speed_cmd(
    out: str = typer.Option(..., help="JSON file with every figure."),
    batch_size: int | None = typer.Option(None, help="Batch (params bench.speed.batch_size)."),
    seq_len: int | None = typer.Option(None, help="Tokens per sample (params bench.speed.seq_len)."),
    steps: int | None = typer.Option(None, help="Timed steps (after warm-up)."),
    model: str | None = typer.Option(None, help="Base LLM path or id (default: the embedded SmolLM2-135M)."),
    dataset: str = typer.Option("synthetic", help="Data set of the real prompts for the Few2Many samples/s figure."),
    path: str | None = typer.Option(
        None, help="Its raw data directory (e.g. ../shared/data/ml-100k with --dataset ml-100k)."
    ),
    few2many_samples: int | None = typer.Option(
        None, help="Prompts in that comparison (params bench.speed.few2many_samples)."
    ),
    set_: list[str] | None = SET_OPTION,
) -> None:
    """Train-step time of vanilla LoRA and RecLoRA in fp32, bf16 and auto (this machine's choice), their ratio,
    tokens/s, MFU against the matmul peak measured at each precision, peak RSS; Few2Many training samples/s on
    real prompts for the reference configuration and the default, and the speedup."""
    from reclora.bench.speed import bench_speed

    raise typer.Exit(
        run_guarded(
            lambda: (
                refuse_outputs({"--out": out})
                or bench_speed(
                    out, command_params(), model, batch_size, seq_len, steps, None, dataset, path, few2many_samples
                )
                and 0
            )
        )
    )


@app.command("scale")
def scale_cmd(
    events: str = typer.Option("1000000,5000000,25000000", help="Data sizes (events), comma-separated."),
    out: str = typer.Option(..., help="JSON file with every figure; the plot goes beside it as a PNG."),
    work: str | None = typer.Option(None, help="Scratch directory (default: OUT's stem + '-work')."),
    mode: str = typer.Option(
        "recent", help="Retrieval mode: recent, or relevance (embeds the catalogue with the base LLM)."
    ),
    crm_batches: int | None = typer.Option(
        None, help="CRM training batches timed per size, the first is warm-up (params bench.scale.crm_batches)."
    ),
    stages: str = typer.Option(
        ",".join(SCALE_STAGES),
        show_default=False,
        help=f"Stages to run, comma-separated (default: {', '.join(SCALE_STAGES)}); {', '.join(SCALE_OPTIONAL_STAGES)} (the catalogue's item embeddings with the base LLM, uncached) is opt-in.",
    ),
    keep: bool = typer.Option(False, "--keep/--no-keep", help="Keep each size's data in the scratch directory."),
    timeout: float | None = typer.Option(None, help="Seconds one stage may run (default: no limit)."),
    repeats: int = typer.Option(
        1,
        help="Rounds over all sizes (each size's data kept until its last round); times are the medians, every run is kept.",
    ),
) -> None:
    """Wall time and peak RSS of prepare, validate, features, retrieve and CRM batches on MovieLens-25M-shaped
    synthetic data of each size (each stage in its own process), CRM samples/s, and a PNG against size."""
    from reclora.bench.scale import bench_scale
    from reclora.errors import ConfigError

    def _run() -> int:
        try:
            ns = [int(x) for x in events.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--events must be comma-separated integers, got {events!r}") from None
        st = tuple(x.strip() for x in stages.split(",") if x.strip())
        refuse_outputs({"--out": out, "--work": work})
        r = bench_scale(
            ns,
            out,
            work,
            mode,
            crm_batches,
            params=command_params(),
            stages=st,
            keep=keep,
            timeout_s=timeout,
            repeats=repeats,
        )
        typer.echo(json.dumps({"sizes": r["sizes"], "ratios": r["ratios"], "plot": r["plot"]}, indent=2))
        return 0

    raise typer.Exit(run_guarded(_run))


@app.command("serve")
def serve_bench_cmd(
    out: str = typer.Option(..., help="JSON file with every figure."),
    url: str | None = typer.Option(None, help="A running `reclora serve` on loopback, e.g. http://127.0.0.1:8080."),
    model: str | None = typer.Option(
        None,
        help="Instead of --url: a registry (or version directory) the benchmark serves itself, once per "
        "--precisions entry, one server at a time on 127.0.0.1.",
    ),
    precisions: str = typer.Option(
        "auto,bf16",
        help="With --model: the servers' --precision, in order (the first is the reference of rows_per_s_ratio).",
    ),
    ref: str = typer.Option("champion", help="With --model: the version ref."),
    feature_store: str | None = typer.Option(None, help="With --model: the servers' --feature-store."),
    threads: int | None = typer.Option(None, help="With --model: the servers' --threads (default: their CPU quota)."),
    requests: int = typer.Option(
        2000, help="Requests per phase (single-user, then mixed-user); the test stops at this count."
    ),
    duration: float = typer.Option(120.0, help="Seconds per phase at most; the test stops at this time."),
    concurrency: int = typer.Option(4, help="Concurrent clients."),
    batch: int = typer.Option(8, help="Rows (user x candidate) per request."),
    single_requests: int | None = typer.Option(
        None, help="Requests of the single-user phase (the throughput reference; default --requests)."
    ),
    set_: list[str] | None = SET_OPTION,
) -> None:
    """Bounded load test: requests/s, rows/s, p50/p95/p99 latency and errors for single- and mixed-user batches;
    tokens per row and the roofline ratio at the server's precision; with --model, one server per precision."""
    from reclora.bench.serve import bench_serve, bench_serve_precisions
    from reclora.errors import ConfigError

    def _show(r: dict, label: str = "") -> None:
        for kind, ph in r["phases"].items():
            typer.echo(
                f"{label}{kind}: {ph['requests']} requests in {ph['seconds']:.0f} s, {ph['requests_per_s']} req/s "
                f"({ph['rows_per_s']} rows/s), p50 {ph['p50_ms']} ms, p95 {ph['p95_ms']} ms, "
                f"p99 {ph['p99_ms']} ms, errors {ph['errors']}, stopped by {ph['stopped_by']}"
            )
        sv = r.get("serve") or {}
        if sv.get("roofline_ratio") is not None:
            typer.echo(
                f"{label}precision {sv['precision']}, {sv['tokens_per_row']} tokens/row, "
                f"{sv['flops_per_row'] / 1e9:.2f} GFLOP/row, roofline ratio {sv['roofline_ratio']} "
                f"(of {sv['matmul_peak_gflops']:.0f} GFLOP/s measured)"
            )
        typer.echo(
            f"{label}mixed/single throughput: {r.get('mixed_vs_single_throughput')}; errors {r['errors']}; "
            f"server healthy afterwards: {r['healthy_after']}"
        )

    def _run() -> int:
        if (url is None) == (model is None):
            raise ConfigError("give exactly one of --url (a running server) and --model (servers started here)")
        refuse_outputs({"--out": out})
        kw = dict(
            requests=requests,
            duration_s=duration,
            concurrency=concurrency,
            batch=batch,
            single_requests=single_requests,
        )
        if url is not None:
            _show(bench_serve(url, out, **kw))
        else:
            precs = [x.strip() for x in precisions.split(",") if x.strip()]
            r = bench_serve_precisions(model, out, precs, ref=ref, feature_store=feature_store, threads=threads, **kw)
            for prec, rr in r["runs"].items():
                _show(rr, f"[{prec}] ")
            typer.echo(f"rows/s ratio: {r['rows_per_s_ratio']}")
        typer.echo(f"JSON: {out}")
        return 0

    raise typer.Exit(run_guarded(_run))


@app.command("pipeline")
def pipeline_bench_cmd(
    out: str = typer.Option(..., help="JSON file with both wall times and their ratio."),
    dataset: str = typer.Option("synthetic", help="Data set."),
    path: str = typer.Option("", help="Raw data directory."),
    profile: str = typer.Option("small", help="params.yaml profile."),
    model: str = typer.Option("", help="Base LLM path or id (default: the embedded SmolLM2-135M)."),
    set_: list[str] | None = SET_OPTION,
) -> None:
    """Wall time of the local KFP pipeline against the same stages called directly from the library."""
    from pipelines.bench import bench_pipeline

    raise typer.Exit(
        run_guarded(lambda: refuse_outputs({"--out": out}) or bench_pipeline(out, dataset, path, profile, model) and 0)
    )
