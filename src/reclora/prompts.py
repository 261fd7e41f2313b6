"""The CTR prompt of RecLoRA/ReLLa: profile, short history with stars, target, Yes/No question.

The text goes into the model's chat template as the user turn; the answer
("Yes"/"No") is the assistant's first token.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

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
    lines = []
    prof = profile_text(user)
    if prof:
        lines.append(prof)
    hist = [f"{t} ({_stars(r)})" for t, r in zip(history_titles, history_ratings)]
    if hist:
        lines.append(f"The user rated these {noun}s (1 to 5 stars), oldest first:")
        lines.extend(f"{i}. {h}" for i, h in enumerate(hist, 1))
    else:
        lines.append(f"The user has not rated any {noun}s yet.")
    lines.append(
        f"Will the user like the {noun} \"{target_title}\" (rate it {threshold:g} stars or more)? Answer Yes or No."
    )
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
