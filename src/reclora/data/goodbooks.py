"""The loader of GoodBooks-10K (``ratings.csv`` + ``books.csv``; no timestamps: the row order is the event
order)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reclora.data.canonical import Tables, canonical_interactions, interaction_users
from reclora.data.cells import id_column
from reclora.data.files import csv_header, need_file, read_csv, read_csv_arrow


def load_goodbooks(path: str | Path) -> Tables:
    """GoodBooks-10K: ratings.csv (user_id, book_id, rating) + books.csv.

    The release has no timestamps; the row order of ratings.csv is used as the
    event order (timestamp = row number, ``time_source`` "row_order"), as is usual
    for this data set. A repeated (user, book) pair is then the same event twice:
    the gate refuses it and no sample is built from the later copy.
    """
    path = Path(path)
    header = csv_header(need_file(path, "ratings.csv"))
    ratings = read_csv_arrow(
        path / "ratings.csv", ["user_id", "book_id", "rating"] + (["timestamp"] if "timestamp" in header else [])
    )
    time_source = "timestamp"
    if "timestamp" not in ratings.columns:
        ratings["timestamp"] = np.arange(len(ratings)).astype(str)
        time_source = "row_order"
    names = {"item_id": "book_id", "timestamp": "timestamp" if time_source == "timestamp" else "(row number)"}
    inter = canonical_interactions(ratings.rename(columns={"book_id": "item_id"}), path / "ratings.csv", names)
    books = read_csv(need_file(path, "books.csv"), ["book_id", "title"])
    title = books["title"].where(books["title"].str.strip() != "", books.get("original_title", books["title"]))
    items = pd.DataFrame(
        {
            "item_id": id_column(books, "book_id", path / "books.csv"),
            "title": title,
            "genres": books["authors"] if "authors" in books.columns else "",
        }
    )
    return Tables(inter, items, interaction_users(inter), time_source=time_source)
