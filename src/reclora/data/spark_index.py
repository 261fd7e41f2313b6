"""The event store and the sample index on Spark: :func:`spark_sample_index`, the distributed form of
:func:`reclora.data.samples.build_sample_index` (the same windows, orders, ranks and splits)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from reclora.data import schema
from reclora.data.samples import check_fractions, check_history, split_cuts

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def _ranked(df: DataFrame, keys: Sequence[str], name: str) -> tuple[DataFrame, DataFrame]:
    """``df`` sorted by ``keys`` (unique together) with ``name``: each row's 0-based rank in that order,
    consecutive over the whole frame (partition offsets + the row's place in its partition), and the
    persisted sorted frame (unpersist it when done). The result keeps the sorted partitions in order."""
    from pyspark.sql import functions as F

    s = (
        df.orderBy(*keys)
        .withColumn("_part", F.spark_partition_id())
        .withColumn("_mono", F.monotonically_increasing_id())
        .persist()
    )
    counts = {int(p): int(n) for p, n in s.groupBy("_part").count().collect()}
    offsets, acc = [], 0
    for p in range(max(counts) + 1 if counts else 0):
        offsets.append(acc)
        acc += counts.get(p, 0)
    offset = F.element_at(F.array(*[F.lit(o).cast("bigint") for o in offsets or [0]]), F.col("_part") + 1)
    local = F.col("_mono") - F.shiftleft(F.col("_part").cast("bigint"), 33)  # the id's low 33 bits: row in partition
    return s.withColumn(name, offset + local).drop("_part", "_mono"), s


def spark_sample_index(
    src: DataFrame,
    threshold: float,
    min_history: int = 5,
    max_history: int = 100,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    repeat_is_same_event: bool = False,
) -> tuple[DataFrame, DataFrame, list[DataFrame]]:
    """:func:`reclora.data.samples.build_sample_index` on Spark: ``(events, samples, persisted)``.

    ``src``: user_id, item_id, timestamp (bigint, no nulls), rating (double, may be null) and ``rid``
    (unique; the rows' original order, which breaks every tie as the pandas path's stable sorts do).
    ``events``: EVENT_COLUMNS + ``event_pos`` (0..n-1), its partitions in event order (user_id,
    timestamp, item_id, rid). ``samples``: SAMPLE_INDEX_COLUMNS + ``t_rank`` (the rank in global time
    order: timestamp, user_id, item_id, rid) + ``split`` (0 train, 1 valid, 2 test: ranks below
    round(n * f0), below round(n * (f0 + f1)), the rest), unsorted. ``persisted``: frames to unpersist.
    Raises ValueError on bad fractions or history bounds (the pandas path's messages).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    check_fractions(fractions)
    check_history(min_history, max_history)
    user = Window.partitionBy("user_id")
    df = src.select("rid", "user_id", "item_id", "rating", "timestamp")
    # strictly earlier events of the user (ties at the same second are not history); place in the user's block
    df = df.withColumn("n_history", (F.rank().over(user.orderBy("timestamp")) - 1).cast("bigint"))
    df = df.withColumn("_in_block", F.row_number().over(user.orderBy("timestamp", "item_id", "rid")).cast("bigint"))
    if repeat_is_same_event:  # a (user, item) pair's later copies in event order get no sample
        pair = Window.partitionBy("user_id", "item_id").orderBy("timestamp", "rid")
        df = df.withColumn("_repeat", F.row_number().over(pair) > 1)
    timed, p1 = _ranked(df, ["timestamp", "user_id", "item_id", "rid"], "t_rank")
    n = p1.count()
    c1, c2 = split_cuts(n, fractions)
    ev, p2 = _ranked(timed, ["user_id", "timestamp", "item_id", "rid"], "event_pos")
    ev = ev.withColumn("block_start", F.col("event_pos") - F.col("_in_block") + 1)
    keep = F.col("n_history") >= max(min_history, 1)
    if repeat_is_same_event:
        keep = keep & ~F.col("_repeat")
    length = F.least(F.col("n_history"), F.lit(max_history).cast("bigint"))
    split = F.when(F.col("t_rank") < c1, 0).when(F.col("t_rank") < c2, 1).otherwise(2).cast("byte")
    samples = ev.where(keep).select(
        "user_id",
        "item_id",
        "rating",
        "timestamp",
        F.coalesce(F.col("rating") >= threshold, F.lit(False)).cast("byte").alias("label"),
        "n_history",
        "event_pos",
        (F.col("block_start") + F.col("n_history") - length).alias("history_start"),
        length.alias("history_length"),
        "t_rank",
        split.alias("split"),
    )
    events = ev.select(*schema.EVENT_COLUMNS, "event_pos")
    return events, samples, [p1, p2]
