"""`reclora bench quality`: CRM, vanilla LoRA and RecLoRA in one harness on one data set.

prepare -> validate -> retrieve -> CRM (full train) -> vanilla LoRA and RecLoRA (same
Few2Many sample, same prompt, same steps) -> [ablations] -> one report + one JSON, with
metrics per slice (item popularity, history length, unseen users/items, genre) and their
paired bootstrap intervals.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reclora.config import Params, as_params
from reclora.errors import ValidationFailed
from reclora.evaluation.slices import slice_table_text
from reclora.io import refuse_overlap, write_json

SLICE_TABLE = ("CRM", "Vanilla LoRA", "RecLoRA")  # the models of the printed slice table (the JSON has every model)
CONFIG_SECTIONS = ("retrieval", "crm", "adapter", "train")  # the params a benchmark JSON records


def run_info(params: Params | Mapping[str, Any]) -> dict[str, Any]:
    """What a benchmark JSON records of the run's machine: {"hardware": :func:`reclora.hardware.hardware_info`
    + platform and Python, "precision": the LLM's precision for ``params``' train.precision (a
    :class:`~reclora.config.Params` or its mapping) on this process's device (:func:`reclora.precision.choose`)}."""
    from reclora.hardware import hardware_info
    from reclora.precision import choose

    hw = {"platform": platform.platform(), "python": platform.python_version(), **hardware_info()}
    return {"hardware": hw, "precision": choose(as_params(params).train.precision, log=False).as_dict()}


class Timer:
    """``timed(name, fn, *a, **kw)``: call fn, record its wall seconds under name, print one line."""

    def __init__(self, secs: dict[str, float], label: str) -> None:
        self.secs, self.label = secs, label

    def __call__(self, name: str, fn: Any, *a: Any, **kw: Any) -> Any:
        """fn(*a, **kw)'s result; its wall seconds (rounded to 0.1 s) go into ``secs[name]`` and one line
        "[label] name: S s" is printed."""
        t = time.perf_counter()
        r = fn(*a, **kw)
        self.secs[name] = round(time.perf_counter() - t, 1)
        print(f"[{self.label}] {name}: {self.secs[name]} s", flush=True)
        return r


def prepare_and_train_crm(
    dataset: str,
    path: str | Path | None,
    work: Path,
    params: Params,
    timed: Timer,
    max_users: int,
    model_path: str | None,
    progress: bool,
) -> tuple[dict, dict]:
    """The shared first half of the quality and curve benchmarks: prepare -> validate (a failure
    raises ValidationFailed) -> retrieve -> CRM, into ``work``. Returns (prepare summary, CRM summary)."""
    from reclora.data import prepare
    from reclora.stages import crm_stage, retrieve_stage
    from reclora.validation import validate_prepared

    data = timed("prepare", prepare, dataset, path, work / "prepared", params, max_users=max_users)
    v = timed("validate", validate_prepared, work / "prepared", work / "validation", params=params.validation)
    if not v.success:
        raise ValidationFailed(v.describe())
    retrieved = work / "retrieved"
    timed("retrieve", retrieve_stage, work / "prepared", retrieved, params, model_path=model_path, progress=progress)
    crm = timed("crm", crm_stage, work / "prepared", work / "retrieved", work / "crm", params, progress=progress)
    return data, crm


def auc_diff_intervals(
    runs: Mapping[str, Path], reference: str, names: list[str], n_boot: int = 1000
) -> dict[str, Any]:
    """Paired bootstrap 95% interval of AUC(name) - AUC(reference) on the samples both scored."""
    import pandas as pd

    from reclora.evaluation import paired_bootstrap_auc_diff
    from reclora.stages import KEY, PREDICTIONS

    ref = pd.read_parquet(Path(runs[reference]) / PREDICTIONS).drop_duplicates(KEY)
    out = {}
    for n in names:
        m = ref.merge(pd.read_parquet(Path(runs[n]) / PREDICTIONS).drop_duplicates(KEY), on=KEY, suffixes=("_ref", ""))
        out[n] = paired_bootstrap_auc_diff(m["label"], m["p"], m["p_ref"], n_boot=n_boot)
    return out


def bench_quality(
    dataset: str,
    path: str | Path | None,
    out: str | Path,
    work: str | Path | None,
    params: Params | Mapping[str, Any],
    ablations: bool | None = None,
    sample_size: int | None = None,
    eval_samples: int | None = None,
    max_users: int | None = None,
    model_path: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """CRM, vanilla LoRA, RecLoRA (and its variants, a peer DIN, the ablations) on ``dataset`` in one harness:
    one report (``work``/report, default ``work``: OUT's stem + '-work') and ``out`` (JSON: metrics on the same
    evaluated samples, paired bootstrap intervals of AUC(RecLoRA*) - AUC(CRM), slices, timings, the machine).

    ``params``: the run's params (a :class:`~reclora.config.Params` or its mapping); ``ablations``, ``max_users``
    default to params ``bench.quality``'s, ``sample_size`` and ``eval_samples`` replace ``train``'s. Raises
    ValidationFailed when the prepared data fail the gate, ConfigError for bad settings or outputs that overlap
    an input."""
    from reclora.stages import crm_stage, evaluate_stage, llm_stage, retrieve_stage

    params = as_params(params)
    train_changes = {"sample_size": sample_size, "eval_samples": eval_samples}
    params = params.updated(train={k: v for k, v in train_changes.items() if v is not None})
    quality = params.bench.quality
    ablations = quality.ablations if ablations is None else ablations
    out = Path(out)
    work = Path(work) if work else out.parent / f"{out.stem}-work"
    refuse_overlap(
        {"--out": out, "--work": work}, {"--path": path if dataset != "synthetic" else None, "--model": model_path}
    )
    t_all = time.perf_counter()
    secs: dict[str, float] = {}
    timed = Timer(secs, "bench quality")
    max_users = quality.max_users if max_users is None else max_users
    data, crm = prepare_and_train_crm(dataset, path, work, params, timed, max_users, model_path, progress)
    runs = {"CRM": work / "crm"}
    llm: dict[str, dict] = {}
    cache = work / "layer-cache"  # frozen-layer states shared by every LLM run on the same prompts
    common = {"params": params, "model_path": model_path, "progress": progress, "cache_dir": cache}
    residual = params.updated(adapter={"readout": "crm_residual"})

    def llm_run(name: str, key: str, kind: str, retrieved: str, crm_dir: str | None, **kw: Any) -> None:
        llm[name] = timed(
            key,
            llm_stage,
            kind,
            work / "prepared",
            work / retrieved,
            crm_dir and work / crm_dir,
            work / key,
            **(common | kw),
        )
        runs[name] = work / key

    peer_note, peer = None, None
    if quality.peer:
        from reclora.bench.peer import PEER_NAME, peer_available, peer_stage

        if peer_available():
            peer_dir = work / "peer-din"
            peer = timed("peer_din", peer_stage, work / "prepared", work / "retrieved", work / "crm", peer_dir, params)
            runs[PEER_NAME] = work / "peer-din"
        else:
            peer_note = "peer DIN skipped: install the benchmark extra, pip install -e '.[peer]'"
            print(f"[bench quality] {peer_note}", flush=True)
    llm_run("Vanilla LoRA", "lora", "lora", "retrieved", None)
    llm_run("RecLoRA", "reclora", "reclora", "retrieved", "crm")
    llm_run("RecLoRA + CRM residual", "reclora-residual", "reclora", "retrieved", "crm", params=residual)
    # two-stage: every meta-LoRA starts from the vanilla LoRA just trained, then the mixing is learned
    llm_run(
        "RecLoRA (two-stage)", "reclora-two-stage", "reclora", "retrieved", "crm", init_from=work / "lora" / "adapter"
    )
    if ablations:
        llm_run("RecLoRA (uniform gate)", "reclora-uniform", "reclora", "retrieved", "crm", gate="uniform")
        llm_run(
            "RecLoRA + CRM residual (no text path)",
            "reclora-residual-no-text",
            "reclora",
            "retrieved",
            "crm",
            params=residual,
            text_path=False,
        )
        timed("retrieve_recent", retrieve_stage, work / "prepared", work / "retrieved-recent", params, mode="recent")
        recent = work / "retrieved-recent"
        timed("crm_recent", crm_stage, work / "prepared", recent, work / "crm-recent", params, progress=progress)
        llm_run("RecLoRA (recent-K)", "reclora-recent", "reclora", "retrieved-recent", "crm-recent")
    report = timed(
        "evaluate",
        evaluate_stage,
        runs,
        work / "report",
        {"dataset": dataset, "source": str(path) if path else None, "data": data},
        data_dir=work / "prepared",
        challenger="RecLoRA",
        params=params,
    )
    intervals = auc_diff_intervals(runs, "CRM", [n for n in runs if n.startswith("RecLoRA")])
    n_eval = report["context"]["evaluated_samples"]
    for n, ci in intervals.items():
        print(
            f"[bench quality] AUC({n}) - AUC(CRM) = {ci['diff']:+.4f} [{ci['lo']:+.4f}, {ci['hi']:+.4f}] "
            f"(95%, paired bootstrap, on the same {n_eval:,} samples)",
            flush=True,
        )
    table = [m for m in SLICE_TABLE if m in runs]
    print(
        f"[bench quality] slices (AUC [95% paired bootstrap interval] on the same {n_eval:,} samples; "
        f"CRM on the whole test split: AUC {crm['test']['auc']:.4f}, {crm['test']['n']:,} samples):\n"
        + slice_table_text(report["slices"]["rows"], table, ["RecLoRA - CRM"]),
        flush=True,
    )
    models = report["models"]
    result = {
        "benchmark": "quality",
        "dataset": dataset,
        "source": str(path) if path else None,
        "models": {n: {k: m.get(k) for k in ("auc", "logloss", "accuracy", "n")} for n, m in models.items()},
        "crm_full_test": crm["test"],
        "samples": {
            "interactions": data["rows"],
            "users": data["users"],
            "items": data["items"],
            "splits": data["samples"],
            "few2many_train": params.train.sample_size,
            "evaluated": report.get("context", {}).get("evaluated_samples"),
        },
        "auc_diff_vs_crm": intervals,
        "slices": {
            "definitions": report["slices"]["definitions"],
            "min_samples": report["slices"]["min_samples"],
            "rows": report["slices"]["rows"],
        },
        "peer": peer or {"skipped": peer_note},
        "llm_train": {n: r["train"] for n, r in llm.items()},
        "diagnostics": {n: r.get("diagnostics") for n, r in llm.items() if r.get("diagnostics")},
        "readout_scale": {n: r["readout_scale"] for n, r in llm.items() if r.get("readout_scale") is not None},
        "config": {name: getattr(params, name).to_dict() for name in CONFIG_SECTIONS},
        "seconds": secs,
        "wall_seconds": round(time.perf_counter() - t_all, 1),
        "report": str(work / "report" / "report.html"),
        **run_info(params),
    }
    write_json(out, result)
    return result
