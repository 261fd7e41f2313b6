"""The canonical tables and the prepared-data layout every later stage reads.

Prepared directory (written atomically by ``reclora data prepare``)::

    OUT/
      interactions.parquet   user_id:int64 item_id:int64 rating:float64 timestamp:int64 (unix s)
      items.parquet          item_id:int64 title:str genres:str ("A|B", may be "") [+ extra cols]
      users.parquet          user_id:int64 [+ optional attributes: age, gender, occupation, ...]
      events.parquet         the interactions samples are built from, each stored once, sorted by
                             (user_id, timestamp, item_id): a user's events are one block, oldest first
      samples/train.parquet  one CTR sample per row as an index into events.parquet (SAMPLE_INDEX_COLUMNS):
                             its history is events[history_start : history_start + history_length]
      samples/valid.parquet
      samples/test.parquet
      meta.json              dataset, label threshold, counts, params used (see prepare.py)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

INTERACTIONS = "interactions.parquet"
ITEMS = "items.parquet"
USERS = "users.parquet"
SAMPLES_DIR = "samples"
META = "meta.json"
SPLITS = ("train", "valid", "test")

INTERACTION_COLUMNS = {"user_id": "int64", "item_id": "int64", "rating": "float64", "timestamp": "int64"}
ITEM_COLUMNS = {"item_id": "int64", "title": "object", "genres": "object"}
USER_COLUMNS = {"user_id": "int64"}

# A CTR sample: the target interaction, its binary label, and the user's strictly
# earlier interactions (timestamp < target timestamp), the most recent
# ``max_history`` of them, oldest first.
SAMPLE_COLUMNS = {
    "user_id": "int64",
    "item_id": "int64",
    "rating": "float64",
    "timestamp": "int64",
    "label": "int8",
    "n_history": "int64",  # number of strictly earlier interactions (before truncation)
    "hist_item_ids": "list<int64>",
    "hist_ratings": "list<float64>",
    "hist_timestamps": "list<int64>",
}


EVENTS = "events.parquet"
EVENT_COLUMNS = dict(INTERACTION_COLUMNS)

# What samples/<split>.parquet holds: the target, its label and where its history lies in events.parquet
# (rows history_start .. history_start + history_length - 1, all strictly earlier than the target).
# read_prepared() turns it into SAMPLE_COLUMNS (histories as lists) for the rows a caller asks for.
SAMPLE_INDEX_COLUMNS = {
    "user_id": "int64",
    "item_id": "int64",
    "rating": "float64",
    "timestamp": "int64",
    "label": "int8",
    "n_history": "int64",
    "event_pos": "int64",  # the target's own row in events.parquet
    "history_start": "int64",  # first history row in events.parquet
    "history_length": "int64",  # min(n_history, max_history)
}


def arrow_schema(columns: dict[str, str]) -> pa.Schema:
    """The pyarrow schema of a ``{column: dtype}`` table above ("int64", "list<float64>", ...), so that an
    empty table is written with the same column types as a full one."""
    import pyarrow as pa

    def one(t: str) -> pa.DataType:
        if t.startswith("list<"):
            return pa.list_(one(t[5:-1]))
        return pa.string() if t == "object" else pa.from_numpy_dtype(t)

    return pa.schema([(c, one(t)) for c, t in columns.items()])


def split_path(split: str) -> str:
    """The sample index file of ``split`` inside a prepared directory ("samples/<split>.parquet");
    ValueError for a split other than train, valid, test."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return f"{SAMPLES_DIR}/{split}.parquet"
