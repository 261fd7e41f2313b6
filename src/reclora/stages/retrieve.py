"""The retrieve stage: prepared data -> for every sample, the positions of its retrieved long/short histories."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd

from reclora.config import Params, as_params
from reclora.data.schema import SPLITS
from reclora.errors import DataError
from reclora.hardware import hardware_info
from reclora.io import atomic_dir, read_json, refuse_overlap, write_json


class RetrieveResult(TypedDict):
    """What :func:`retrieve_stage` returns (also OUT/retrieval.json).

    Attributes:
        mode: "relevance" (by item-embedding similarity to the target) or "recent" (the K most recent).
        k_long: behaviours retrieved per sample for the CRM (``long_pos``).
        k_short: behaviours retrieved per sample for the prompt (``short_pos``).
        dataset: the prepared data set's name (its meta.json).
        samples: samples written per split, {"train": n, "valid": n, "test": n}.
        seconds: wall time of the stage.
        precision: the item embeddings' precision choice (relevance mode; ``Precision.as_dict``), else None.
        hardware: the machine the stage ran on (:func:`reclora.hardware.hardware_info`).
    """

    mode: str
    k_long: int
    k_short: int
    dataset: str
    samples: dict[str, int]
    seconds: float
    precision: dict[str, Any] | None
    hardware: dict[str, Any]


def retrieve_stage(
    data_dir: str | Path,
    out_dir: str | Path,
    params: Params | Mapping[str, Any],
    mode: str | None = None,
    model_path: str | None = None,
    progress: bool = True,
) -> RetrieveResult:
    """Prepared data -> retrieved directory (layout: reclora.retrieval.layout): for every sample the
    positions of its k_long / k_short retrieved behaviours in the event store. Reads the sample index
    one row group at a time and writes it the same way: memory O(events + row group), not O(samples).

    ``params``: the run's params (``retrieval``, ``model``, and ``train`` for the embedding precision; a
    :class:`~reclora.config.Params` or its mapping); ``mode``
    (default ``retrieval.mode``): relevance | recent. Raises DataError for a directory that is not
    prepared data (or prepared by an older version)."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from reclora.data import schema
    from reclora.data.prepare import read_events
    from reclora.llm import resolve_model_path
    from reclora.retrieval import load_or_embed_items, retrieve_positions
    from reclora.retrieval.layout import ROW_GROUP, positions_column, retrieved_schema
    from reclora.retrieval.retriever import _Embeddings

    refuse_overlap({"--out": out_dir}, {"--data": data_dir, "--model": model_path})
    params = as_params(params)
    retrieval = params.retrieval
    mode = mode or retrieval.mode
    k_long, k_short = retrieval.k_long, retrieval.k_short
    t0 = time.perf_counter()
    data_dir = Path(data_dir)
    tables_check = [data_dir / schema.META, data_dir / schema.ITEMS] + [data_dir / schema.split_path(x) for x in SPLITS]
    missing = [str(f.name) for f in tables_check if not f.is_file()]
    if missing:
        raise DataError(
            f"{data_dir}: not a prepared data directory (missing {', '.join(missing)}); run `reclora data prepare`"
        )
    meta = read_json(data_dir / schema.META)
    ids = emb = event_rows = prec = None
    event_items = np.zeros(0, np.int64)  # recent mode reads no event: positions follow from the lengths
    if mode == "relevance":
        event_items = read_events(data_dir, ["item_id"])["item_id"].to_numpy(np.int64)
        from reclora.precision import choose

        src = retrieval.embedding_model or resolve_model_path(model_path, params.model)
        items = pd.read_parquet(data_dir / schema.ITEMS)
        prec = choose(params.train.precision, "cpu")  # the embedding model runs on the CPU
        ids, emb = load_or_embed_items(
            items,
            src,
            batch_size=retrieval.embedding_batch_size,
            progress=progress,
            layers=retrieval.embedding_layers,
            precision=prec,
        )
        event_rows = _Embeddings(ids, emb).rows(event_items)
    out = Path(out_dir)
    counts: dict[str, int] = {}
    out_schema = retrieved_schema(k_long, k_short)
    cols = list(schema.SAMPLE_INDEX_COLUMNS)
    with atomic_dir(out) as tmp:
        (tmp / "samples").mkdir()
        shutil.copyfile(data_dir / schema.EVENTS, tmp / schema.EVENTS)
        for split in SPLITS:
            src_file = pq.ParquetFile(data_dir / schema.split_path(split))
            if "history_start" not in src_file.schema_arrow.names:
                raise DataError(
                    f"{data_dir}: prepared by an older version (no sample index); run `reclora data prepare` again"
                )
            counts[split] = 0
            with pq.ParquetWriter(tmp / "samples" / f"{split}.parquet", out_schema) as w:
                for batch in src_file.iter_batches(batch_size=ROW_GROUP, columns=cols):
                    t = pa.Table.from_batches([batch]).select(cols)
                    lp, sp = retrieve_positions(
                        t.column("history_start").to_numpy(),
                        t.column("history_length").to_numpy(),
                        t.column("item_id").to_numpy(),
                        event_items,
                        k_long,
                        k_short,
                        mode,
                        ids,
                        emb,
                        event_rows=event_rows,
                    )
                    t = t.append_column("long_pos", positions_column(lp)).append_column(
                        "short_pos", positions_column(sp)
                    )
                    w.write_table(t.cast(out_schema), row_group_size=ROW_GROUP)
                    counts[split] += t.num_rows
        if emb is not None:
            from safetensors.numpy import save_file

            save_file({"item_ids": ids, "embeddings": emb}, str(tmp / "item_embeddings.safetensors"))
        summary: RetrieveResult = {
            "mode": mode,
            "k_long": k_long,
            "k_short": k_short,
            "dataset": meta["dataset"],
            "samples": counts,
            "seconds": round(time.perf_counter() - t0, 2),
            "precision": prec.as_dict() if prec is not None else None,  # of the item embeddings (relevance mode)
            "hardware": hardware_info(),
        }
        write_json(tmp / "retrieval.json", summary)
    return summary
