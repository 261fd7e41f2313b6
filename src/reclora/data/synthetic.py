"""A seeded synthetic behaviour data set whose ratings a model can learn.

Users have latent genre tastes, items have 1-3 genres and a quality; a rating
is high when the item's genres match the user's tastes. Users also pick items
they are likely to enjoy more often (selection bias), as in real logs. The time
window is fixed, so the same seed gives byte-identical tables.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from reclora.data.loaders import Tables

GENRES = [
    "Action", "Comedy", "Drama", "Romance", "Thriller", "Sci-Fi",
    "Horror", "Animation", "Documentary", "Mystery", "Fantasy", "Western",
    "Musical", "Crime", "War", "Adventure",
]  # fmt: skip
_ADJ = ["Silent", "Crimson", "Last", "Hidden", "Golden", "Broken", "Midnight", "Lost", "Wild", "Frozen",
        "Electric", "Quiet", "Burning", "Distant", "Secret", "Iron", "Paper", "Glass", "Velvet", "Hollow"]  # fmt: skip
_NOUN = ["Harbor", "Empire", "Garden", "Signal", "River", "Kingdom", "Letter", "Machine", "Road", "Island",
         "Promise", "Shadow", "Mirror", "Storm", "Orchard", "Station", "Compass", "Lantern", "Horizon", "Circus"]  # fmt: skip
_OCCUPATIONS = ["student", "engineer", "artist", "doctor", "writer", "retired", "programmer", "educator"]


def generate(
    n_users: int = 300,
    n_items: int = 400,
    mean_interactions: float = 60,
    min_interactions: int = 12,
    n_genres: int = 12,
    seed: int = 7,
    start: str = "2024-01-01",
    days: int = 365,
    **_: Any,
) -> Tables:
    if not 2 <= n_genres <= len(GENRES):
        raise ValueError(f"n_genres must be in [2, {len(GENRES)}]")
    if n_users < 1 or n_items < 2:
        raise ValueError("need at least one user and two items")
    rng = np.random.default_rng(seed)
    genres = GENRES[:n_genres]

    # items: 1-3 genres each, a quality bias, a title with a year
    item_g = np.zeros((n_items, n_genres))
    item_genres = []
    for i in range(n_items):
        k = rng.integers(1, 4)
        gs = np.sort(rng.choice(n_genres, size=k, replace=False))
        item_g[i, gs] = 1.0 / np.sqrt(k)
        item_genres.append("|".join(genres[g] for g in gs))
    quality = rng.normal(0, 0.3, n_items)
    titles = [
        f"The {_ADJ[rng.integers(len(_ADJ))]} {_NOUN[rng.integers(len(_NOUN))]} ({1970 + rng.integers(0, 54)})"
        for _ in range(n_items)
    ]
    seen: dict[str, int] = {}
    for i, t in enumerate(titles):  # keep titles unique: "The Lost River (1990) II"
        seen[t] = seen.get(t, 0) + 1
        if seen[t] > 1:
            titles[i] = f"{t} {'I' * seen[t]}" if seen[t] <= 3 else f"{t} {seen[t]}"
    items = pd.DataFrame({"item_id": np.arange(1, n_items + 1, dtype="int64"), "title": titles, "genres": item_genres})

    # users: tastes in [-1, 1] per genre, a rating bias, simple profile attributes
    taste = rng.normal(0, 1, (n_users, n_genres)).clip(-2.5, 2.5) / 1.5
    bias = rng.normal(0, 0.4, n_users)
    users = pd.DataFrame(
        {
            "user_id": np.arange(1, n_users + 1, dtype="int64"),
            "age": rng.integers(18, 70, n_users).astype("int64"),
            "gender": rng.choice(["F", "M"], n_users),
            "occupation": rng.choice(_OCCUPATIONS, n_users),
        }
    )

    affinity = taste @ item_g.T + quality[None, :]  # [users, items]
    t0 = int(pd.Timestamp(start, tz="UTC").timestamp())
    span = days * 86400
    rows = []
    for u in range(n_users):
        n = int(min(n_items, max(min_interactions, rng.poisson(mean_interactions))))
        p = np.exp(1.5 * affinity[u])
        chosen = rng.choice(n_items, size=n, replace=False, p=p / p.sum())
        score = 2.2 * affinity[u, chosen] + bias[u] + rng.normal(0, 0.6, n)
        rating = np.clip(np.round(2.9 + score), 1, 5)
        # each user is active in a random sub-window; events spread uniformly in it
        a = rng.integers(0, span // 2)
        b = a + rng.integers(span // 8, span // 2)
        ts = np.sort(rng.integers(t0 + a, t0 + b, n))
        rows.append(pd.DataFrame({"user_id": u + 1, "item_id": chosen + 1, "rating": rating, "timestamp": ts}))
    inter = pd.concat(rows, ignore_index=True).astype(
        {"user_id": "int64", "item_id": "int64", "rating": "float64", "timestamp": "int64"}
    )
    return Tables(inter, items, users)

