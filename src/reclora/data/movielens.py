"""Loaders of the MovieLens releases: 100K (``u.data``, ``u.item``, ``u.user``), 1M (``::``-separated
``.dat`` files) and the CSV releases (25M, 20M, latest, latest-small: ``ratings.csv``, ``movies.csv``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from reclora.data.canonical import Tables, canonical_interactions, interaction_users
from reclora.data.cells import exact_int64, id_column
from reclora.data.files import csv_header, need_file, read_csv, read_csv_arrow, read_sep, read_typed_csv

ML100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


def load_ml100k(path: str | Path) -> Tables:
    """MovieLens-100K: u.data (tab), u.item and u.user ('|'; UTF-8, else latin-1 as released)."""
    path = Path(path)
    inter = read_sep(need_file(path, "u.data"), "\t", ["user_id", "item_id", "rating", "timestamp"])
    inter = canonical_interactions(inter, path / "u.data")
    item_cols = ["item_id", "title", "release_date", "video_release_date", "url", *ML100K_GENRES]
    items = read_sep(need_file(path, "u.item"), "|", item_cols)
    flags = items[ML100K_GENRES].apply(pd.to_numeric, errors="coerce").fillna(0).astype(int).to_numpy()
    genres = ["|".join(g for g, f in zip(ML100K_GENRES, row) if f) for row in flags]
    items = pd.DataFrame(
        {
            "item_id": id_column(items, "item_id", path / "u.item"),
            "title": items["title"],
            "genres": genres,
            "release_date": items["release_date"],
        }
    )
    users = read_sep(need_file(path, "u.user"), "|", ["user_id", "age", "gender", "occupation", "zip"])
    users = pd.DataFrame(
        {
            "user_id": id_column(users, "user_id", path / "u.user"),
            "age": exact_int64(users["age"], path / "u.user", "age", "ages"),
            "gender": users["gender"],
            "occupation": users["occupation"],
        }
    )
    return Tables(inter, items, users)


ML1M_OCCUPATIONS = [
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
]


def load_ml1m(path: str | Path) -> Tables:
    """MovieLens-1M: ratings.dat, movies.dat, users.dat ('::'-separated; UTF-8, else latin-1 as released)."""
    path = Path(path)
    inter = read_sep(need_file(path, "ratings.dat"), "::", ["user_id", "item_id", "rating", "timestamp"])
    inter = canonical_interactions(inter, path / "ratings.dat")
    items = read_sep(need_file(path, "movies.dat"), "::", ["item_id", "title", "genres"])
    items["item_id"] = id_column(items, "item_id", path / "movies.dat")
    users = read_sep(need_file(path, "users.dat"), "::", ["user_id", "gender", "age", "occupation", "zip"])
    occ = exact_int64(users["occupation"], path / "users.dat", "occupation", "occupation codes")
    users = pd.DataFrame(
        {
            "user_id": id_column(users, "user_id", path / "users.dat"),
            "age": exact_int64(users["age"], path / "users.dat", "age", "ages"),
            "gender": users["gender"],
            "occupation": [
                ML1M_OCCUPATIONS[o] if not pd.isna(o) and 0 <= o < len(ML1M_OCCUPATIONS) else "other" for o in occ
            ],
        }
    )
    return Tables(inter, items, users)


def load_ml25m(path: str | Path) -> Tables:
    """MovieLens CSV releases (25M, 20M, latest, latest-small): ratings.csv + movies.csv."""
    path = Path(path)
    csv_header(need_file(path, "ratings.csv"))  # a repeated column is refused before either reader picks a copy
    ratings = read_typed_csv(
        path / "ratings.csv", {"userId": "int64", "movieId": "int64", "rating": "float64", "timestamp": "int64"}
    )
    if ratings is None:  # not plainly typed: read every cell as text, so the exact parsers name the bad values
        ratings = read_csv_arrow(path / "ratings.csv", ["userId", "movieId", "rating", "timestamp"])
    ratings = ratings.rename(columns={"userId": "user_id", "movieId": "item_id"})
    inter = canonical_interactions(ratings, path / "ratings.csv", {"user_id": "userId", "item_id": "movieId"})
    return Tables(inter, ml25m_items(path), interaction_users(inter))


def ml25m_items(path: str | Path) -> pd.DataFrame:
    """The items table of a MovieLens CSV release (movies.csv): item_id, title, genres ("" for none)."""
    path = Path(path)
    movies = read_csv(need_file(path, "movies.csv"), ["movieId", "title", "genres"])
    return pd.DataFrame(
        {
            "item_id": id_column(movies, "movieId", path / "movies.csv"),
            "title": movies["title"],
            "genres": movies["genres"].replace("(no genres listed)", ""),
        }
    )
