"""The data gate: run the GE suites on a prepared directory and write the report.

Report layout (``report_dir`` is owned by the gate and replaced as a whole)::

    report_dir/
      index.html       Great Expectations Data Docs site (built by GE), open in a browser
      expectations/    one page per suite (reclora.interactions, .items, .users, .samples)
      validations/     one page per validation run
      static/
      summary.json     success, counts, per-table stats, failures, GE statistics

The GE context is ephemeral (in-memory stores); the only files GE writes are the
Data Docs pages, into a temporary directory beside ``report_dir`` that replaces it
atomically when everything has been written (:func:`reclora.io.atomic_dir`).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reclora.config.data_sections import ValidationSection
from reclora.errors import ConfigError, ValidationFailed
from reclora.io import atomic_dir, refuse_overlap, write_json
from reclora.validation import reasons
from reclora.validation.load import PreparedTables, add_derived_columns, load_prepared
from reclora.validation.suites import TableCheck, build_checks

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

SITE_NAME = "reclora_data_gate"
SUMMARY = "summary.json"
INDEX = "index.html"
PARTIAL_UNEXPECTED_COUNT = 10


@dataclass
class ValidationResult:
    """The data gate's outcome: ``success``, ``failures`` (one dict per failed expectation, with its ``reason``
    line), the Data Docs ``report_html`` and ``summary_json`` paths, and the summary itself."""

    success: bool
    failures: list[dict[str, Any]]
    report_html: Path
    summary_json: Path
    summary: dict[str, Any] = field(default_factory=dict, repr=False)

    def describe(self) -> str:
        """A few lines for a terminal: verdict, one line per failure, where the report is."""
        stats = self.summary.get("statistics", {})
        n = stats.get("evaluated_expectations", "?")
        if self.success:
            head = f"data gate passed: {n} expectations on {len(self.summary.get('tables', {}))} tables"
        else:
            head = f"data gate FAILED: {len(self.failures)} of {n} expectations failed"
        lines = [head, *(f"  - {f['reason']}" for f in self.failures)]
        lines.append(f"report: {self.report_html}")
        return "\n".join(lines)

    def raise_for_failure(self) -> None:
        """Raise :class:`ValidationFailed` (one line per failure) unless the gate passed."""
        if not self.success:
            raise ValidationFailed(self.describe())


def gate_settings(validation: ValidationSection, dataset: str) -> dict[str, Any]:
    """What the suites check ``dataset``'s prepared data against (and the summary records): params ``validation``
    as a mapping, with ``min_timestamp_seconds`` (its ``min_timestamp`` of the data set, in unix seconds). Raises
    ConfigError when the section has no rating range or lower time bound for the data set, or a bound that is
    not a date or unix seconds."""
    for key, per_dataset in (("rating_range", validation.rating_range), ("min_timestamp", validation.min_timestamp)):
        if dataset not in per_dataset:
            known = ", ".join(per_dataset) or "none"
            raise ConfigError(f"validation.{key} has no entry for dataset {dataset!r} (has: {known})")
    earliest = min_timestamp_seconds(validation.min_timestamp[dataset], f"validation.min_timestamp.{dataset}")
    return {**validation.to_dict(), "min_timestamp_seconds": earliest}


def min_timestamp_seconds(value: Any, key: str) -> int:
    """A lower time bound from params (unix seconds, or an ISO date/datetime, naive = UTC) as unix seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{key} must be a date (YYYY-MM-DD) or unix seconds, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):  # YAML reads an unquoted date as a date
        value = dt.datetime(value.year, value.month, value.day)
    try:
        when = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    except ValueError as e:
        raise ConfigError(f"{key} must be a date (YYYY-MM-DD) or unix seconds, got {value!r}") from e
    return int((when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp())


def _context(site_dir: Path) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    cfg = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites={
            SITE_NAME: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(site_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )
    return gx.get_context(project_config=cfg, mode="ephemeral")


def _run_checks(ctx: Any, checks: list[TableCheck], run_name: str) -> dict[str, Any]:
    import great_expectations as gx
    import pandas as pd
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier

    source = ctx.data_sources.add_pandas("prepared")
    run_time = dt.datetime.now(dt.UTC)
    results = {}
    # Batch parameters (the dataframe) are shared by every validation definition of a
    # checkpoint, so each table gets its own checkpoint.
    for check in checks:
        batch_def = source.add_dataframe_asset(check.table).add_batch_definition_whole_dataframe("whole")
        suite = ctx.suites.add(check.suite)
        vd = ctx.validation_definitions.add(
            gx.ValidationDefinition(name=f"{check.suite.name}.validation", data=batch_def, suite=suite)
        )
        checkpoint = ctx.checkpoints.add(
            gx.Checkpoint(
                name=f"{check.suite.name}.checkpoint",
                validation_definitions=[vd],
                actions=[UpdateDataDocsAction(name="update_data_docs", site_names=[SITE_NAME])],
                result_format={"result_format": "SUMMARY", "partial_unexpected_count": PARTIAL_UNEXPECTED_COUNT},
            )
        )
        # pandas Copy-on-Write: GE's pandas engine takes the rows of a column-pair / multicolumn domain
        # with DataFrame.dropna, which without CoW deep-copies the whole table when nothing is dropped
        # (40 s of the 25M-event gate); with CoW that copy is lazy and GE never writes to it
        with pd.option_context("mode.copy_on_write", True):
            cp_result = checkpoint.run(
                batch_parameters={"dataframe": check.frame},
                run_id=RunIdentifier(run_name=run_name, run_time=run_time),
            )
        (results[check.table],) = cp_result.run_results.values()
    return results


def _num(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _iso(ts: Any) -> str | None:
    ts = _num(ts)
    if ts is None:
        return None
    try:
        return dt.datetime.fromtimestamp(int(ts), tz=dt.UTC).isoformat()
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _table_stats(t: PreparedTables) -> dict[str, dict[str, Any]]:
    i, s = t.interactions, t.samples
    ts_min, ts_max = (i["timestamp"].min(), i["timestamp"].max()) if len(i) else (None, None)
    per_split = {}
    for split, n in t.split_rows.items():
        part = s[s["split"] == split]
        per_split[split] = {
            "rows": n,
            "positive_rate": _num(part["label"].mean()) if n else None,
            "n_history_mean": _num(part["n_history"].mean()) if n else None,
        }
    return {
        "interactions": {
            "rows": len(i),
            "users": _num(i["user_id"].nunique()),
            "items": _num(i["item_id"].nunique()),
            "rating_min": _num(i["rating"].min()),
            "rating_max": _num(i["rating"].max()),
            "rating_mean": _num(i["rating"].mean()),
            "positive_rate": _num(i["positive_rating"].notna().mean()),
            "timestamp_min": _num(ts_min),
            "timestamp_max": _num(ts_max),
            "time_min": _iso(ts_min),
            "time_max": _iso(ts_max),
        },
        "items": {"rows": len(t.items), "unique_item_ids": _num(t.items["item_id"].nunique())},
        "users": {"rows": len(t.users), "unique_user_ids": _num(t.users["user_id"].nunique())},
        "samples": {"rows": len(s), "splits": per_split},
    }


def validate_prepared(
    data_dir: str | os.PathLike[str],
    report_dir: str | os.PathLike[str],
    *,
    now: int | None = None,
    params: ValidationSection | Mapping[str, Any],
) -> ValidationResult:
    """Run the Great Expectations data gate on a prepared directory.

    ``params`` (keyword, required): the run's params ``validation`` section (a
    :class:`~reclora.config.data_sections.ValidationSection` or its mapping, loaded at
    the edge); the dataset name and label threshold come from ``data_dir/meta.json``;
    ``now`` (unix seconds, default the current time) bounds the timestamps.

    Always writes the Data Docs site (``report_dir/index.html``) and
    ``report_dir/summary.json``, for a pass and a fail. Raises
    :class:`~reclora.errors.DataError` when the directory, a file or a column is
    missing and :class:`~reclora.errors.ConfigError` for bad params; a failed gate
    is *returned* (``result.success`` False; see ``raise_for_failure``).
    """
    started = time.perf_counter()
    data_dir = Path(data_dir)
    refuse_overlap({"--report": report_dir}, {"--data": data_dir})
    report_dir = Path(report_dir).absolute()
    validation = params if isinstance(params, ValidationSection) else ValidationSection.from_dict(params)
    tables = load_prepared(data_dir)
    settings = gate_settings(validation, tables.dataset)
    now = int(time.time()) if now is None else int(now)
    add_derived_columns(tables)
    checks = build_checks(tables, settings, now)
    frames = {c.table: c.frame for c in checks}

    with atomic_dir(report_dir) as site:
        ctx = _context(site)
        results = _run_checks(ctx, checks, run_name=f"{tables.dataset}-data-gate")
        failures = []
        per_table: dict[str, dict[str, Any]] = {}
        stats = _table_stats(tables)
        totals: dict[str, Any] = {
            "evaluated_expectations": 0,
            "successful_expectations": 0,
            "unsuccessful_expectations": 0,
        }
        for table, vr in results.items():
            failed = [reasons.failure(table, r, frames[table]) for r in vr.results if not r.success]
            failures += failed
            for k in totals:
                totals[k] += int(vr.statistics.get(k, 0))
            per_table[table] = {
                "suite": vr.suite_name,
                "success": bool(vr.success),
                "evaluated_expectations": int(vr.statistics.get("evaluated_expectations", 0)),
                "failed_expectations": len(failed),
                "stats": stats[table],
            }
        totals["success_percent"] = (
            100.0 * totals["successful_expectations"] / totals["evaluated_expectations"]
            if totals["evaluated_expectations"]
            else None
        )
        success = not failures and all(vr.success for vr in results.values())
        if not (site / INDEX).is_file():  # UpdateDataDocsAction builds it; never hand back a dead link
            ctx.build_data_docs(site_names=[SITE_NAME])
        import great_expectations as gx

        from reclora.hardware import hardware_info

        summary = {
            "success": success,
            "dataset": tables.dataset,
            "label_threshold": tables.label_threshold,
            "data_dir": str(data_dir.absolute()),
            "now": now,
            "counts": {
                "interactions": len(tables.interactions),
                "items": len(tables.items),
                "users": len(tables.users),
                "samples": dict(tables.split_rows),
            },
            "tables": per_table,
            "failures": failures,
            "statistics": totals,
            "params": settings,
            "report_html": INDEX,
            "great_expectations_version": gx.__version__,
            "seconds": round(time.perf_counter() - started, 3),
            "hardware": hardware_info(),
        }
        write_json(site / SUMMARY, summary)

    return ValidationResult(
        success=success,
        failures=failures,
        report_html=report_dir / INDEX,
        summary_json=report_dir / SUMMARY,
        summary=summary,
    )
