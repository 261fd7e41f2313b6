"""Run the whole pipeline on this machine with kfp.local: one line per stage, the full log in the run directory."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from reclora.config import load_params, params_path


def _latest_run_dir(root: Path, name: str, after: float) -> Path | None:
    runs = [d for d in root.glob(f"{name}-*") if d.is_dir() and d.stat().st_mtime >= after - 1]
    return max(runs, key=lambda d: d.stat().st_mtime) if runs else None


def _runs_newest_first(run_dir: Path) -> list[Path]:
    """This run, then the earlier runs: a cached step's outputs live in the run that computed them."""
    name = load_params()["pipeline"]["name"]
    earlier = sorted(
        (d for d in run_dir.parent.glob(f"{name}-*") if d != run_dir), key=lambda d: d.stat().st_mtime, reverse=True
    )
    return [run_dir, *earlier]


def _find(run_dir: Path, task: str, output: str) -> Path | None:
    for d in _runs_newest_first(run_dir):
        if (d / task / output).exists():
            return d / task / output
    return None


def _executor_output(run_dir: Path, task: str) -> dict[str, Any]:
    f = _find(run_dir, task, "executor_output.json")
    return json.loads(f.read_text()) if f else {}


def _figure(task: str, outputs: dict[str, Any]) -> str:
    """The stage's key figure for its one line (rows, PASS/FAIL, AUC, version), from its outputs."""

    def meta(name: str) -> dict[str, Any]:
        return dict(getattr(outputs.get(name), "metadata", None) or {})

    try:
        if task == "prepare":
            m = meta("data")
            return f"{int(m['rows']):,} rows, {int(m['users'])} users, {int(m['items'])} items"
        if task == "validate":
            return "PASS" if outputs.get("Output") else "FAIL (stopped before training)"
        if task == "features":
            m = meta("stats")
            return (
                f"{int(m['samples']):,} sample rows joined, {int(m['users'])} users, "
                f"point-in-time leaks {int(m['pit_leaks'])} of {int(m['pit_check_rows']):,} checked"
            )
        if task == "retrieve":
            m = meta("retrieved")
            return f"{m['mode']}, K long/short {int(m['k_long'])}/{int(m['k_short'])}"
        if task == "train-crm":
            m = meta("stats")
            n = f" ({int(m['test_n']):,} samples)" if "test_n" in m else ""
            return f"CRM AUC {m['test_auc']:.4f} on the whole test split{n}"
        if task in ("train-lora", "train-reclora"):
            m = meta("stats")
            kind = "RecLoRA" if meta("adapter").get("kind") == "reclora" else "LoRA"
            on = f"a {int(m['eval_n']):,}-sample subset of test" if "eval_n" in m else "the evaluation subset of test"
            return f"{kind} AUC {m['eval_auc']:.4f} on {on} ({int(m['train_samples'])} training samples)"
        if task == "evaluate":
            return _evaluate_line(meta("stats"), outputs)
        if task == "register":
            line = f"{outputs['version']} ({'champion' if outputs.get('promoted') else 'challenger'})"
            reason = str(outputs.get("reason") or "").removeprefix(f"{outputs['version']}: ")
            return f"{line}: {reason}" if reason else line
    except (KeyError, TypeError, ValueError):
        pass
    return ""


def _evaluate_line(stats: dict[str, Any], outputs: dict[str, Any]) -> str:
    """Every model's AUC on the evaluation's shared samples, RecLoRA's ECE beside it (from the step's metrics)."""
    names = {"reclora": "RecLoRA", "crm": "CRM", "vanilla_lora": "Vanilla LoRA"}
    aucs = {
        k[: -len("_auc")]: v for k, v in stats.items() if k.endswith("_auc") and not k.startswith(("slice_", "auc_"))
    }
    if "reclora" not in aucs:
        return f"RecLoRA AUC {outputs['auc']:.4f}, LogLoss {outputs['logloss']:.4f}"
    n = f" {int(stats['evaluated_samples']):,}" if "evaluated_samples" in stats else ""
    ece = f" (ECE {stats['reclora_ece']:.4f})" if "reclora_ece" in stats else ""
    order = [k for k in ("crm", "vanilla_lora") if k in aucs] + sorted(k for k in aucs if k not in names)
    others = [f"{names.get(k, k.replace('_', ' '))} {aucs[k]:.4f}" for k in order]
    return f"AUC on the same{n} samples: RecLoRA {aucs['reclora']:.4f}{ece}" + "".join(f", {o}" for o in others)


@contextlib.contextmanager
def _around_each_task(wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Iterator[bool]:
    """Run every kfp.local task through ``wrap(execute)`` while the block runs; yields whether it could.

    kfp 2.17's public kfp.local API (``init``, ``SubprocessRunner``, ``DockerRunner``) has no task hook,
    so this replaces ``kfp.local.orchestrator.task_executor.execute_single_task`` (the function the DAG
    orchestrators look up at call time, with the task name first and ``pipeline_root`` and
    ``pipeline_resource_name`` as keywords; it returns (outputs, status)) and restores it on exit.
    The only place that touches kfp.local's internals: in another kfp layout the block runs unwrapped.
    """
    try:
        from kfp.local.orchestrator import task_executor
    except ImportError:  # another kfp layout: no per-stage lines, the log has everything
        yield False
        return
    original = task_executor.execute_single_task
    task_executor.execute_single_task = wrap(original)
    try:
        yield True
    finally:
        task_executor.execute_single_task = original


@contextlib.contextmanager
def _stage_lines(terminal: TextIO | None, cache_hits: list[str], seen: dict[str, Any]) -> Iterator[None]:
    """Write one line per task to ``terminal`` as each finishes: stage (the task's name), status, seconds,
    key figure. ``seen`` gets the run directory at the first task (and ``seen["on_run_dir"]`` is called)."""

    def wrap(execute: Callable[..., Any]) -> Callable[..., Any]:
        def run_task(task_name: str, *args: Any, **kwargs: Any) -> Any:
            if "run_dir" not in seen:
                seen["run_dir"] = Path(kwargs["pipeline_root"]) / kwargs["pipeline_resource_name"]
                if seen.get("on_run_dir"):
                    seen["on_run_dir"](seen["run_dir"])
            if terminal:
                terminal.write(f"{task_name:<15}")
                terminal.flush()
            t0 = time.time()
            try:
                outputs, st = execute(task_name, *args, **kwargs)
            except BaseException:
                if terminal:
                    terminal.write(f"{'FAILED':<7}{time.time() - t0:7.1f} s\n")
                raise
            ok = getattr(st, "name", str(st)) == "SUCCESS"
            status = ("cached" if task_name in cache_hits else "ok") if ok else "FAILED"
            if terminal:
                figure = _figure(task_name, outputs) if ok else ""
                terminal.write(f"{status:<7}{time.time() - t0:7.1f} s  {figure}".rstrip() + "\n")
                terminal.flush()
            return outputs, st

        return run_task

    with _around_each_task(wrap):
        yield


@contextlib.contextmanager
def _output_to(log: Path | None) -> Iterator[TextIO | None]:
    """Send this process's and its children's stdout and stderr to ``log`` (file descriptors 1 and
    2), and yield a stream to the real terminal; with ``log=None`` nothing is redirected."""
    if log is None:
        yield sys.stdout
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(1), "w", buffering=1)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)  # children (SubprocessRunner tasks) inherit these
    os.dup2(fd, 2)
    os.close(fd)
    streams = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = open(log, "a", buffering=1)  # also where sys.stdout is not fd 1
    try:
        yield terminal
    finally:
        sys.stdout.close()
        sys.stdout, sys.stderr = streams
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in saved:
            os.close(f)
        terminal.close()


def _quiet_warnings() -> None:
    """Hide warnings that mean nothing to a user of the local runner (they stay out of the log too)."""
    import warnings

    # SubprocessRunner: "... base_image ... is ignored"; no-op GPU settings on a CPU-only local run
    warnings.filterwarnings("ignore", message=r".*(non-Python base image|no effect in the current local runner)")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    # the same for the components' own processes (SubprocessRunner children inherit the environment)
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning,ignore::FutureWarning")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def run_local(
    dataset: str = "synthetic",
    source_path: str = "",
    profile: str = "small",
    model_path: str = "",
    overrides: dict[str, Any] | None = None,
    pipeline_root: str | None = None,
    registry_uri: str | None = None,
    runner: str = "subprocess",
    cpu_image: str | None = None,
    gpu_image: str | None = None,
    terminal: TextIO | None = None,
    log_file: bool = False,
) -> dict[str, Any]:
    """Execute the whole pipeline with kfp.local on this machine.

    ``runner="subprocess"``: every component in this environment (kfp.local.SubprocessRunner);
    ``runner="docker"``: every component in its image (kfp.local.DockerRunner against a Docker
    engine, or podman's Docker-compatible socket, started and stopped here; see pipelines.containers).
    Data steps are cached across runs (kfp.local's file cache under the pipeline root).
    ``terminal``: where one line per stage goes as it finishes (None: no lines).
    ``log_file``: send the full output of kfp, the components and the libraries to
    ``<run dir>/pipeline.log`` instead of the terminal.
    Returns where the outputs, reports, log and the registered adapter are.
    Raises ConfigError for an unknown runner or a missing image.
    """
    import logging
    import tempfile

    from kfp import local

    from pipelines.pipeline import build_pipeline
    from reclora.errors import ConfigError

    if runner not in ("subprocess", "docker"):
        raise ConfigError(f"--runner must be subprocess or docker, got {runner!r}")
    p = load_params()["pipeline"]
    root = Path(pipeline_root or p["pipeline_root"]).resolve()
    registry = registry_uri or str(Path(p["registry_uri"]).resolve())
    from reclora.io import refuse_overlap

    refuse_overlap(
        {"--pipeline-root": pipeline_root or p["pipeline_root"], "--registry": registry},
        {"--path": source_path if dataset != "synthetic" else None, "--model": model_path},
    )
    cpu_image, gpu_image = cpu_image or p["cpu_image"], gpu_image or p["gpu_image"]
    # the components run `python3 -m kfp.dsl.executor_main` from PATH: use this environment's
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ.setdefault("RECLORA_PARAMS", str(params_path()))
    if log_file:
        _quiet_warnings()
    cache_hits: list[str] = []
    seen: dict[str, Any] = {}

    class _Hits(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            msg = record.getMessage()
            if "cache hit" in msg:
                cache_hits.append(msg.split()[1])

    root.mkdir(parents=True, exist_ok=True)
    log = None
    if log_file:
        fd, name = tempfile.mkstemp(prefix=".pipeline-", suffix=".log", dir=root)
        os.close(fd)
        log = Path(name)

    def _move_log(run_dir: Path) -> None:  # into the run directory as soon as kfp names it
        if log is not None and log.exists():
            run_dir.mkdir(parents=True, exist_ok=True)
            os.replace(log, run_dir / "pipeline.log")
            seen["log"] = run_dir / "pipeline.log"
            if terminal:
                terminal.write(f"full log: {seen['log']}\n")

    seen["on_run_dir"] = _move_log
    handler = _Hits()
    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.INFO)  # kfp.local reports cache hits at INFO on the root logger
    started = time.time()
    with contextlib.ExitStack() as stack:
        if runner == "docker":
            from pipelines.containers import docker_runner

            if "://" not in registry:
                Path(registry).mkdir(parents=True, exist_ok=True)  # bind-mounted: it must exist
            local_runner = stack.enter_context(
                docker_runner(
                    [cpu_image, gpu_image], root, binds=[registry, source_path, model_path], params=params_path()
                )
            )
        else:
            local_runner = local.SubprocessRunner(use_venv=False)
        to_stdout = terminal is sys.stdout
        real = stack.enter_context(_output_to(log))
        if to_stdout:  # sys.stdout now goes to the log: write to the real terminal
            terminal = real
        stack.enter_context(_stage_lines(terminal, cache_hits, seen))
        local.init(runner=local_runner, pipeline_root=str(root), enable_caching=True, raise_on_error=True)
        try:
            fn = build_pipeline(cpu_image, gpu_image, gpu=False)
            fn(
                dataset=dataset,
                source_path=str(source_path or ""),
                profile=profile,
                model_path=model_path,
                overrides=overrides or {},
                registry_uri=registry,
            )
        except Exception as e:  # a failed task: say where its log is, keep kfp's message
            where = seen.get("log") or log
            raise RuntimeError(f"{e}{f' (full log: {where})' if where else ''}") from e
        finally:
            root_logger.removeHandler(handler)
            root_logger.setLevel(level)
            if log is not None and log.exists() and "log" not in seen:  # failed before the first task
                seen["log"] = log
    seconds = time.time() - started
    run_dir = seen.get("run_dir") or _latest_run_dir(root, p["name"], started)
    out: dict[str, Any] = {
        "pipeline_root": str(root),
        "run_dir": str(run_dir) if run_dir else None,
        "seconds": round(seconds, 1),
        "cached_steps": sorted(set(cache_hits)),
        "runner": runner,
        "log": str(seen["log"]) if seen.get("log") else None,
    }
    if run_dir is None:
        return out
    out["validation_passed"] = _executor_output(run_dir, "validate").get("parameterValues", {}).get("Output")
    out["data_version"] = _executor_output(run_dir, "prepare").get("parameterValues", {}).get("Output")
    site = _find(run_dir, "validate", "report_site")
    out["validation_report"] = str(site / "index.html") if site else None
    summary = site / "summary.json" if site else None
    failures = json.loads(summary.read_text()).get("failures", []) if summary and summary.is_file() else []
    out["validation_failures"] = "\n".join(f["reason"] for f in failures)
    ev = _find(run_dir, "evaluate", "report_files")
    out["evaluation_report"] = str(ev / "report.html") if ev else None
    reg = _executor_output(run_dir, "register").get("parameterValues", {})
    if reg:
        out["registered_version"] = reg.get("version")
        out["promoted"] = reg.get("promoted")
        out["promotion_reason"] = reg.get("reason")
        out["registry"] = registry
    return out


__all__ = ["run_local"]
