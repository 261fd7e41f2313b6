"""The CTR prompt of RecLoRA/ReLLa: profile, short history with stars, target, Yes/No question.

The text goes into the model's chat template as the user turn; the answer
("Yes"/"No") is the assistant's first token.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

NOUNS = {"ml-100k": "movie", "ml-1m": "movie", "ml-25m": "movie", "goodbooks-10k": "book", "synthetic": "movie"}


def _stars(r: float) -> str:
    r = float(r)
    s = f"{r:g}"
    return f"{s} star" if r == 1 else f"{s} stars"


def profile_text(user: Mapping[str, Any] | None) -> str:
    """'The user is a 24-year-old male technician.' from whatever attributes exist.

    A mapping that carries ``profile_text`` (the Feast ``user_profile`` feature, which is computed
    by this function once, when the feature sources are built) is answered with it as is.
    """
    if not user:
        return ""
    if "profile_text" in user:
        return str(user["profile_text"] or "")
    parts = []
    age = user.get("age")
    if age is not None and not (isinstance(age, float) and np.isnan(age)):
        parts.append(f"{int(age)}-year-old")
    g = str(user.get("gender") or "").upper()
    if g in ("M", "F"):
        parts.append({"M": "male", "F": "female"}[g])
    occ = user.get("occupation")
    if occ and str(occ) not in ("none", "other", "nan"):
        parts.append(str(occ))
    return f"The user is a {' '.join(parts)}." if parts else ""


def build_prompt(
    history_titles: Iterable[str],
    history_ratings: Iterable[float],
    target_title: str,
    user: Mapping[str, Any] | None = None,
    noun: str = "movie",
    threshold: float = 4.0,
) -> str:
    """The compact CTR prompt: profile, liked and disliked history titles, the mean star rating, one question.

    The history (oldest first) is split at ``threshold`` into "Liked" and "Disliked" titles, each
    list kept in time order, and summarised by its mean rating: the same facts as one line per
    title with its stars, in about a third fewer tokens (the LLM's cost is linear in them).
    """
    lines = []
    prof = profile_text(user)
    if prof:
        lines.append(prof)
    titles, ratings = list(history_titles), [float(r) for r in history_ratings]
    if titles:
        liked = [t for t, r in zip(titles, ratings) if r >= threshold]
        disliked = [t for t, r in zip(titles, ratings) if r < threshold]
        lines.append(f"Liked: {'; '.join(liked) if liked else 'none'}.")
        lines.append(f"Disliked: {'; '.join(disliked) if disliked else 'none'}.")
        lines.append(f"Mean rating: {sum(ratings) / len(ratings):.1f} stars over {len(ratings)} {noun}s.")
    else:
        lines.append(f"The user has not rated any {noun}s yet.")
    lines.append(f'Will the user rate the {noun} "{target_title}" {threshold:g} stars or more? Answer Yes or No.')
    return "\n".join(lines)


def build_prompts(
    samples: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame | None = None,
    history_col: str = "short_item_ids",
    ratings_col: str = "short_ratings",
    noun: str = "movie",
    threshold: float = 4.0,
) -> list[str]:
    """One prompt per sample row (history from the retrieved short columns by default)."""
    titles = dict(zip(items["item_id"].to_numpy(), items["title"].astype(str)))
    profiles: dict[int, dict] = {}
    if users is not None and len(users.columns) > 1:
        profiles = users.set_index("user_id").to_dict("index")
    out = []
    for uid, iid, hist, rats in zip(samples["user_id"], samples["item_id"], samples[history_col], samples[ratings_col]):
        out.append(
            build_prompt(
                [titles.get(i, f"{noun} #{i}") for i in hist],
                rats,
                titles.get(iid, f"{noun} #{iid}"),
                profiles.get(uid),
                noun=noun,
                threshold=threshold,
            )
        )
    return out
