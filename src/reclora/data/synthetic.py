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

from reclora.data.canonical import Tables

GENRES = [
    "Action",
    "Comedy",
    "Drama",
    "Romance",
    "Thriller",
    "Sci-Fi",
    "Horror",
    "Animation",
    "Documentary",
    "Mystery",
    "Fantasy",
    "Western",
    "Musical",
    "Crime",
    "War",
    "Adventure",
]
_ADJ = [
    "Silent",
    "Crimson",
    "Last",
    "Hidden",
    "Golden",
    "Broken",
    "Midnight",
    "Lost",
    "Wild",
    "Frozen",
    "Electric",
    "Quiet",
    "Burning",
    "Distant",
    "Secret",
    "Iron",
    "Paper",
    "Glass",
    "Velvet",
    "Hollow",
]
_NOUN = [
    "Harbor",
    "Empire",
    "Garden",
    "Signal",
    "River",
    "Kingdom",
    "Letter",
    "Machine",
    "Road",
    "Island",
    "Promise",
    "Shadow",
    "Mirror",
    "Storm",
    "Orchard",
    "Station",
    "Compass",
    "Lantern",
    "Horizon",
    "Circus",
]
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
    """The seeded synthetic data set (module doc): ``n_users`` users with 1-based ids, age, gender and
    occupation; ``n_items`` items with 1-3 of the first ``n_genres`` genres and unique titles; per user
    at least ``min_interactions`` (Poisson mean ``mean_interactions``, at most ``n_items``) ratings in
    1..5 with unix-second timestamps inside ``days`` days from ``start`` (UTC). Other keyword arguments
    (the rest of params ``synthetic``) are ignored. Raises ValueError for ``n_genres`` outside
    [2, 16], no user or fewer than two items."""
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


# ----------------------------------------------------------------------------------------------
# MovieLens-25M-shaped data at any size (the scale benchmark)
ML25M_EVENTS, ML25M_USERS, ML25M_ITEMS = 25_000_095, 162_541, 59_047


def generate_ml25m_like(n_events: int, seed: int = 7, n_genres: int = 16) -> Tables:
    """Synthetic data shaped like MovieLens-25M, about ``n_events`` interactions, vectorized.

    Users and items scale with the size as in ML-25M (162,541 users and 59,047 items at 25,000,095
    events: about 155 events per user); events per user are long-tailed (20 + lognormal, as ML's
    "at least 20 ratings"), item popularity is Zipf-like, ratings are half stars in [0.5, 5] from
    user genre tastes x item genres + item quality + noise (so the CTR task is learnable), each
    (user, item) pair at most once, each user active in a sub-window of 1996-2019. Memory O(events).
    """
    if n_events < 1000:
        raise ValueError(f"n_events must be >= 1000, got {n_events}")
    rng = np.random.default_rng(seed)
    n_users = max(20, round(n_events * ML25M_USERS / ML25M_EVENTS))
    n_items = max(200, round(n_events * ML25M_ITEMS / ML25M_EVENTS))
    genres = GENRES[:n_genres]
    # events per user: 20 + lognormal, scaled to the requested total, at most the catalogue
    raw = rng.lognormal(mean=4.0, sigma=1.25, size=n_users)
    counts = 20 + raw * max(n_events - 20 * n_users, 0) / raw.sum()
    counts = np.minimum(np.round(counts).astype(np.int64), n_items // 2)
    # Zipf-like popularity over a random item order; draw 1.6x, keep each (user, item) once, then a
    # random subset of each user's distinct items of the wanted size
    pop = 1.0 / (np.arange(n_items) + 10.0) ** 0.9
    pop = pop[rng.permutation(n_items)]
    users = np.repeat(np.arange(n_users, dtype=np.int64), np.ceil(counts * 1.6).astype(np.int64))
    items = rng.choice(n_items, size=len(users), p=pop / pop.sum())
    key = np.unique(users * n_items + items)
    del users, items
    order = np.lexsort((rng.random(len(key)), key // n_items))
    key = key[order]
    u = key // n_items
    first = np.r_[0, np.flatnonzero(u[1:] != u[:-1]) + 1]
    rank = np.arange(len(key)) - np.repeat(first, np.diff(np.r_[first, len(key)]))
    key = np.sort(key[rank < counts[u]])
    users, items = key // n_items, key % n_items
    n = len(key)
    # genres and tastes: rating = f(taste . genres + quality + bias + noise)
    k = rng.integers(1, 4, n_items)
    item_g = np.zeros((n_items, n_genres), np.float32)
    for j in range(3):  # up to 3 genres per item, vectorized over items
        g = rng.integers(0, n_genres, n_items)
        item_g[np.arange(n_items)[j < k], g[j < k]] = 1.0
    item_g /= np.sqrt(item_g.sum(1, keepdims=True))
    taste = (rng.normal(0, 1, (n_users, n_genres)).clip(-2.5, 2.5) / 1.5).astype(np.float32)
    quality = rng.normal(0, 0.3, n_items).astype(np.float32)
    bias = rng.normal(0, 0.4, n_users).astype(np.float32)
    score = np.empty(n, np.float32)
    for a in range(0, n, 1 << 20):  # bounded temporaries
        u, i = users[a : a + (1 << 20)], items[a : a + (1 << 20)]
        score[a : a + len(u)] = (taste[u] * item_g[i]).sum(1) * 1.6 + quality[i] + bias[u]
    score += rng.normal(0, 0.6, n).astype(np.float32)
    rating = np.clip(np.round((3.4 + score) * 2) / 2, 0.5, 5.0).astype(np.float64)
    # time: each user active in a sub-window of [1996, 2019]; events uniform in it
    t0, span = 820_454_400, 23 * 365 * 86400
    start = rng.integers(0, span - 86400 * 30, n_users)
    length = np.minimum(rng.lognormal(17.0, 1.5, n_users).astype(np.int64) + 86400, span - start)
    ts = t0 + start[users] + (rng.random(n) * length[users]).astype(np.int64)
    years = 1930 + rng.integers(0, 90, n_items)
    titles = [
        f"The {_ADJ[a]} {_NOUN[b]} {i + 1} ({y})"
        for i, (a, b, y) in enumerate(
            zip(rng.integers(0, len(_ADJ), n_items), rng.integers(0, len(_NOUN), n_items), years)
        )
    ]
    genre_text = ["|".join(genres[g] for g in np.flatnonzero(row)) for row in item_g > 0]
    inter = pd.DataFrame({"user_id": users + 1, "item_id": items + 1, "rating": rating, "timestamp": ts})
    item_tab = pd.DataFrame(
        {"item_id": np.arange(1, n_items + 1, dtype=np.int64), "title": titles, "genres": genre_text}
    )
    user_tab = pd.DataFrame({"user_id": np.arange(1, n_users + 1, dtype=np.int64)})
    return Tables(inter, item_tab, user_tab)


def write_ml25m_csv(tables: Tables, directory: Any) -> Any:
    """Write ``tables`` in the MovieLens-25M release format: ratings.csv (userId,movieId,rating,timestamp;
    time order within each user, users ascending) and movies.csv (movieId,title,genres; quoted as needed)."""
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.csv as pacsv

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    r = tables.interactions.sort_values(["user_id", "timestamp"], kind="stable")
    half = np.round(r["rating"].to_numpy(np.float64) * 2).astype(np.int32)
    if half.min(initial=1) < 0 or half.max(initial=0) > 20 or not np.allclose(half / 2, r["rating"]):
        raise ValueError("MovieLens-25M ratings are half stars in [0, 5]")
    labels = pa.array([f"{h / 2:.1f}" for h in range(21)])  # "3.0", "3.5" as in the release
    ratings = pa.table(
        {
            "userId": r["user_id"].to_numpy(np.int64),
            "movieId": r["item_id"].to_numpy(np.int64),
            "rating": pa.DictionaryArray.from_arrays(pa.array(half), labels).cast(pa.string()),
            "timestamp": r["timestamp"].to_numpy(np.int64),
        }
    )
    with open(d / "ratings.csv", "wb") as f:  # the release's header is not quoted
        f.write(b"userId,movieId,rating,timestamp\n")
        pacsv.write_csv(ratings, f, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    movies = tables.items.rename(columns={"item_id": "movieId"})[["movieId", "title", "genres"]]
    movies.assign(genres=movies["genres"].replace("", "(no genres listed)")).to_csv(d / "movies.csv", index=False)
    return d
