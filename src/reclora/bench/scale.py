"""`reclora bench scale`: wall time and peak RSS of each data-plane stage against the data size.

For each size (events) a MovieLens-25M-shaped synthetic data set (reclora.data.synthetic.
generate_ml25m_like) is written in the real ML-25M CSV format (not timed), then each stage runs in a
child process of its own, which reports the stage's wall seconds and its own peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``, so one stage's peak is never another's):

    prepare    reclora.data.prepare(ml-25m)               raw CSV -> events + sample index
    validate   reclora.validation.validate_prepared         the Great Expectations gate
    features   reclora.features.stage.features_stage        Feast repo, materialize, PIT check
    retrieve   reclora.stages.retrieve_stage                positions of the retrieved histories
    crm        streaming featurizer fit + a fixed number of CRM training batches (samples/s)
    embed      (opt-in: ``--stages prepare,embed``) the catalogue's item text embeddings with the base
               LLM, no cache (issue target: 59,000 items, ML-25M's catalogue, in <= 5 minutes)

Output JSON: ``sizes.<events>.<stage>.{seconds, peak_rss_gb}`` (+ ``error`` when a stage fails: the
benchmark goes on with the next size), ``sizes.<events>.crm_samples_per_s``, the data shape, and a PNG
of time and memory against size beside the JSON. A benchmark, never a test.

Repeats (``--repeats N``): this VM's run-to-run spread is larger than some targets' margins, so the
benchmark can run every size's stage sequence N times over the same generated data, round robin (1M,
5M, 25M, then 1M, 5M, 25M again: a slow spell of the machine then hits every size, not one; every
size's data stays on disk until its last run). Then ``seconds`` and ``crm_samples_per_s``
are the medians, ``seconds_runs`` / ``crm_samples_per_s_runs`` every run, and ``peak_rss_gb`` the
largest. ``ratios`` gives, from those figures, each stage's time ratio between consecutive sizes and
the CRM samples/s of each size over the smallest's (the issue's linearity targets).

Long because: one job, the scale benchmark (a child process per stage and size, the ratios and the
plot); each stage it times is the library's own.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reclora.config import Params, as_params

STAGES = ("prepare", "validate", "features", "retrieve", "crm")
OPTIONAL_STAGES = ("embed",)


# ------------------------------------------------------------------ the stages (run in a child process)
def _stage(name: str, work: Path, params: Params | Mapping[str, Any], opts: dict[str, Any]) -> dict[str, Any]:
    """Run one stage on ``work`` (raw/, prepared/, ...) with the run's ``params`` (a :class:`~reclora.config.Params`
    or its mapping); returns extra figures."""
    params = as_params(params)
    if name == "generate":
        from reclora.data.synthetic import generate_ml25m_like, write_ml25m_csv

        t = generate_ml25m_like(int(opts["events"]), seed=int(opts["seed"]))
        write_ml25m_csv(t, work / "raw")
        return {"events": int(len(t.interactions)), "users": int(len(t.users)), "items": int(len(t.items))}
    if name == "prepare":
        from reclora.data import prepare

        s = prepare("ml-25m", work / "raw", work / "prepared", params)
        return {"samples": s["samples"]}
    if name == "validate":
        from reclora.validation import validate_prepared

        r = validate_prepared(work / "prepared", work / "validation", params=params.validation)
        return {"passed": bool(r.success), "failures": len(r.failures)}
    if name == "features":
        from reclora.features.stage import features_stage

        s = features_stage(work / "prepared", work / "features", params=params)
        return {"samples": s.get("samples")}
    if name == "retrieve":
        from reclora.stages import retrieve_stage

        s = retrieve_stage(work / "prepared", work / "retrieved", params, mode=opts["mode"], progress=False)
        return {"samples": s["samples"], "mode": s["mode"]}
    if name == "crm":
        return _crm_batches(work, params, int(opts["crm_batches"]))
    if name == "embed":
        return _embed_items(work, params)
    raise ValueError(f"unknown stage {name!r}")


def _crm_batches(work: Path, params: Params, n_batches: int) -> dict[str, Any]:
    """Fit the featurizer (one streaming pass over train) and run ``n_batches`` training steps."""
    import torch

    from reclora.crm import DIN
    from reclora.crm.stream import EventArrays, StreamingBatches, fit_featurizer
    from reclora.crm.train import crm_optimizer
    from reclora.data import read_prepared
    from reclora.retrieval.layout import open_retrieved
    from reclora.stages.crm import crm_config

    tables, _, _ = read_prepared(work / "prepared", histories=False)
    s = open_retrieved(work / "retrieved")
    cfg = crm_config(params)  # as the CRM stage configures it
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    events = EventArrays(s["train"].events.frame)
    feat = fit_featurizer(s["train"], events, tables.items, tables.users, cfg.max_len)
    torch.manual_seed(cfg.seed)
    model = DIN.from_featurizer(cfg, feat)
    opt = crm_optimizer(model, cfg)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    done, t_first, n_timed = 0, None, 0
    for batch, y in StreamingBatches(s["train"], events, feat, cfg.batch_size, seed=cfg.seed):
        batch.pop("n_global")
        loss = loss_fn(model(batch), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done += 1
        if done == 1:
            t_first = time.perf_counter()  # the first batch is warm-up
        else:
            n_timed += len(y)
        if done >= n_batches:
            break
    dt = time.perf_counter() - t_first if t_first is not None else 0.0
    return {
        "batches": done,
        "batch_size": cfg.batch_size,
        "crm_samples_per_s": round(n_timed / dt, 1) if dt > 0 else None,
    }


def _embed_items(work: Path, params: Params) -> dict[str, Any]:
    """Embed every catalogue item's text with the retriever's model (the base LLM by default),
    without the cache (a fresh cache directory that is then removed); items/s."""
    import tempfile

    import pandas as pd

    from reclora.llm import resolve_model_path
    from reclora.precision import choose
    from reclora.retrieval.embeddings import load_or_embed_items

    items = pd.read_parquet(work / "prepared" / "items.parquet")
    retrieval = params.retrieval
    model = retrieval.embedding_model or resolve_model_path(None, params.model)
    with tempfile.TemporaryDirectory(dir=work) as cache:
        t0 = time.perf_counter()
        prec = choose(params.train.precision, "cpu")
        _, emb = load_or_embed_items(
            items,
            model,
            retrieval.embedding_batch_size,
            Path(cache),
            progress=False,
            layers=retrieval.embedding_layers,
            precision=prec,
        )
        dt = time.perf_counter() - t0
    return {
        "items": int(len(items)),
        "dim": int(emb.shape[1]),
        "items_per_s": round(len(items) / dt, 1),
        "layers": retrieval.embedding_layers,
        "precision": prec.name,
    }


_IMPORTS = {
    "generate": ["reclora.data.synthetic"],
    "prepare": ["reclora.data"],
    "validate": ["reclora.validation"],
    "features": ["reclora.features.stage"],
    "retrieve": ["reclora.stages", "reclora.retrieval", "reclora.llm"],
    "crm": ["torch", "reclora.crm", "reclora.crm.stream", "reclora.retrieval.layout", "reclora.stages.crm"],
    "embed": ["torch", "transformers", "reclora.retrieval.embeddings", "reclora.llm"],
}


def _child_main(argv: list[str]) -> int:
    """``python -m reclora.bench.scale STAGE WORK OPTS_JSON RESULT_JSON``: run and report one stage.

    The child process's entry point, an edge: the run's params come in ``OPTS_JSON`` (``params``, as the parent
    :func:`bench_scale` was given them) and are checked here once (:meth:`reclora.config.Params.from_dict`,
    a ConfigError naming the key) before the stage."""
    name, work, opts_json, result = argv
    opts = json.loads(opts_json)
    params = Params.from_dict(opts["params"])
    import importlib

    for m in _IMPORTS.get(name, []):  # imports are not the stage's time
        importlib.import_module(m)
    t0 = time.perf_counter()
    extra = _stage(name, Path(work), params, opts)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30  # Linux: KiB
    Path(result).write_text(json.dumps({"seconds": round(seconds, 2), "peak_rss_gb": round(peak, 3), **extra}))
    return 0


def _run_child(name: str, work: Path, opts: dict[str, Any], timeout_s: float | None) -> dict[str, Any]:
    res = work / f".{name}.json"
    res.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "reclora.bench.scale", name, str(work), json.dumps(opts, default=str), str(res)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s} s", "seconds": round(time.perf_counter() - t0, 2)}
    if p.returncode != 0 or not res.is_file():
        if p.returncode < 0:
            why = f"killed by signal {-p.returncode} (out of memory, or stopped from outside)"
        else:
            why = f"exit {p.returncode}: " + " | ".join((p.stderr or p.stdout).strip().splitlines()[-3:])
        return {"error": why, "seconds": round(time.perf_counter() - t0, 2)}
    return json.loads(res.read_text())


# ------------------------------------------------------------------ the benchmark
def bench_scale(
    sizes: list[int],
    out: str | Path,
    work: str | Path | None = None,
    mode: str = "recent",
    crm_batches: int | None = None,
    seed: int = 7,
    *,
    params: Params | Mapping[str, Any],
    stages: tuple[str, ...] = STAGES,
    keep: bool = False,
    timeout_s: float | None = None,
    progress: bool = True,
    repeats: int = 1,
) -> dict[str, Any]:
    """Run the stages at each size (events) and write OUT (JSON) and OUT's stem + '.png'.

    ``mode``: retrieval mode (recent | relevance: relevance embeds the catalogue with the base LLM
    first, cached). ``crm_batches``: CRM training steps timed per size (default params
    ``bench.scale.crm_batches``). ``work``: scratch directory (default OUT's stem + '-work'); each size's data is
    deleted after it unless ``keep``. ``repeats``: rounds over all sizes (module docstring). ``params`` (keyword,
    required): the run's params (a :class:`~reclora.config.Params` or its mapping), handed to every stage's process.
    Raises ConfigError on bad sizes/stages/mode/repeats.
    """
    from reclora.errors import ConfigError
    from reclora.hardware import hardware_info
    from reclora.io import write_json
    from reclora.precision import choose

    if not sizes or any(int(n) < 1000 for n in sizes):
        raise ConfigError(f"--events: sizes must be integers >= 1000, got {sizes}")
    bad = [s for s in stages if s not in STAGES + OPTIONAL_STAGES]
    if bad:
        raise ConfigError(f"unknown stage(s) {bad}; choose from {', '.join(STAGES + OPTIONAL_STAGES)}")
    if mode not in ("recent", "relevance"):
        raise ConfigError(f"--mode must be recent or relevance, got {mode!r}")
    if repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {repeats}")
    params = as_params(params)
    if crm_batches is None:
        crm_batches = params.bench.scale.crm_batches
    if crm_batches < 2:
        raise ConfigError("--crm-batches must be >= 2 (the first batch is warm-up)")
    out = Path(out)
    work = Path(work) if work else out.with_name(out.stem + "-work")
    result: dict[str, Any] = {
        "benchmark": "scale",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "hardware": hardware_info(),
        "precision": choose(params.train.precision, "cpu", log=False).as_dict(),  # the embed stage's
        "mode": mode,
        "crm_batches": crm_batches,
        "seed": seed,
        "stages": list(stages),
        "repeats": repeats,
        "sizes": {},
    }
    opts_base = {"mode": mode, "crm_batches": crm_batches, "seed": seed, "params": params.to_dict()}
    runs: dict[int, dict[str, list[dict[str, Any]]]] = {}
    failed: set[int] = set()
    for rep in range(repeats):  # the repeats go round all sizes, so slow spells of the machine hit every size
        for n in sizes:
            d = work / str(n)
            opts = {**opts_base, "events": int(n)}
            if rep == 0:
                shutil.rmtree(d, ignore_errors=True)
                d.mkdir(parents=True)
                gen = _run_child("generate", d, opts, timeout_s)
                result["sizes"][str(n)] = {"data": {k: gen.get(k) for k in ("events", "users", "items")}}
                runs[n] = {st: [] for st in stages}
                if "error" in gen:
                    result["sizes"][str(n)]["error"] = f"generate: {gen['error']}"
                    failed.add(n)
            if n not in failed:
                for st in stages:
                    r = _run_child(st, d, opts, timeout_s)
                    runs[n][st].append(r)
                    if progress:
                        msg = r.get("error") or f"{r['seconds']} s, peak RSS {r['peak_rss_gb']} GB"
                        tag = f" (run {rep + 1}/{repeats})" if repeats > 1 else ""
                        print(f"[{n} events] {st}{tag}: {msg}", file=sys.stderr, flush=True)
                    if "error" in r:
                        failed.add(n)  # later stages (and repeats) would read its missing output
                        break
                entry = result["sizes"][str(n)]
                for st, rs in runs[n].items():
                    if rs:
                        entry[st] = _combine_runs(rs)
                if "crm_samples_per_s" in entry.get("crm", {}):
                    entry["crm_samples_per_s"] = entry["crm"]["crm_samples_per_s"]
            result["ratios"] = scale_ratios(result)
            write_json(out, result)  # what is done so far survives a later failure
            if not keep and (rep == repeats - 1 or n in failed):
                shutil.rmtree(d, ignore_errors=True)
    if not keep and work.is_dir() and not any(work.iterdir()):
        work.rmdir()  # the scratch directory this run made, now empty
    result["plot"] = str(plot_scale(result, out.with_suffix(".png")))
    write_json(out, result)
    return result


def _combine_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One stage's runs -> its entry: the first failure if any, else the last run's extra figures with
    the median ``seconds`` (and ``crm_samples_per_s``), the largest ``peak_rss_gb``, and every run's
    figures under ``*_runs`` when there is more than one run."""
    import statistics

    failed = [r for r in runs if "error" in r]
    if failed:
        return failed[0]
    out = dict(runs[-1])
    out["seconds"] = round(statistics.median(r["seconds"] for r in runs), 2)
    out["peak_rss_gb"] = max(r["peak_rss_gb"] for r in runs)
    if len(runs) > 1:
        out["seconds_runs"] = [r["seconds"] for r in runs]
        out["peak_rss_gb_runs"] = [r["peak_rss_gb"] for r in runs]
    if all(r.get("crm_samples_per_s") for r in runs):
        out["crm_samples_per_s"] = round(statistics.median(r["crm_samples_per_s"] for r in runs), 1)
        if len(runs) > 1:
            out["crm_samples_per_s_runs"] = [r["crm_samples_per_s"] for r in runs]
    return out


def scale_ratios(result: dict[str, Any]) -> dict[str, Any]:
    """Linearity figures of a result: ``time.<big>/<small>.<stage>`` (seconds ratio between consecutive
    sizes, with ``events`` the ratio of the event counts the generator actually made) and
    ``crm_samples_per_s.<size>/<smallest>`` (only between sizes that ran the same number of CRM
    batches: a tiny size can run out of samples first, and a ratio over a shorter window means nothing)."""
    sizes = sorted(int(k) for k in result["sizes"])

    def _events(n: int) -> int:
        return int((result["sizes"][str(n)].get("data") or {}).get("events") or n)

    time_ratios: dict[str, dict[str, float]] = {}
    for small, big in zip(sizes, sizes[1:]):
        a, b = result["sizes"][str(small)], result["sizes"][str(big)]
        key = f"{big}/{small}"
        time_ratios[key] = {"events": round(_events(big) / _events(small), 3)}
        for st in result["stages"]:
            ok = st in a and st in b and "error" not in a[st] and "error" not in b[st]
            if ok and a[st].get("seconds"):
                time_ratios[key][st] = round(b[st]["seconds"] / a[st]["seconds"], 2)
    sps = {}
    first = result["sizes"][str(sizes[0])] if sizes else {}
    base = first.get("crm_samples_per_s")
    for n in sizes[1:]:
        e = result["sizes"][str(n)]
        v = e.get("crm_samples_per_s")
        if base and v and e.get("crm", {}).get("batches") == first.get("crm", {}).get("batches"):
            sps[f"{n}/{sizes[0]}"] = round(v / base, 3)
    return {"time": time_ratios, "crm_samples_per_s": sps}


def plot_scale(result: dict[str, Any], path: Path) -> Path:
    """Two panels: wall seconds and peak RSS (GB) of each stage against the number of events (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(int(k) for k in result["sizes"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for st in result["stages"]:
        xs, ts, ms, lo, hi = [], [], [], [], []
        for n in sizes:
            r = result["sizes"][str(n)].get(st, {})
            if "peak_rss_gb" in r:
                xs.append(n)
                ts.append(r["seconds"])
                ms.append(r["peak_rss_gb"])
                runs = r.get("seconds_runs") or [r["seconds"]]
                lo.append(r["seconds"] - min(runs))
                hi.append(max(runs) - r["seconds"])
        if xs:  # with repeats: the median, and a bar from the fastest to the slowest run
            axes[0].errorbar(xs, ts, yerr=[lo, hi], marker="o", capsize=3, label=st)
            axes[1].plot(xs, ms, marker="o", label=st)
    for ax, what in zip(axes, ("wall time (s)", "peak RSS (GB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("events")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    reps = int(result.get("repeats", 1))
    fig.suptitle(
        f"reclora bench scale (retrieval: {result['mode']}, CRM: {result['crm_batches']} batches"
        + (f", median of {reps} runs)" if reps > 1 else ")")
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    raise SystemExit(_child_main(sys.argv[1:]))
