"""Test helpers: write small data sets in each real raw format, from a synthetic Tables."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import strategies as st

from reclora.data.loaders import ML1M_OCCUPATIONS, ML100K_GENRES, Tables
from reclora.data.synthetic import generate

BIN = Path(sys.executable).parent


def small_tables(seed: int = 3, n_users: int = 40, n_items: int = 60) -> Tables:
    t = generate(n_users=n_users, n_items=n_items, mean_interactions=25, min_interactions=10, n_genres=8, seed=seed)
    # an accented title exercises latin-1 decoding
    t.items.loc[0, "title"] = "Amélie (2001)"
    return t


def _ml_genres(genres: str) -> list[int]:
    gs = set(genres.split("|")) if genres else set()
    return [int(g in gs) for g in ML100K_GENRES]


def write_ml100k(t: Tables, d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    inter = t.interactions.astype({"rating": "int64"})
    inter.to_csv(d / "u.data", sep="\t", header=False, index=False)
    lines = []
    for r in t.items.itertuples():
        flags = "|".join(map(str, _ml_genres(r.genres)))
        lines.append(f"{r.item_id}|{r.title}|01-Jan-1995||http://example.invalid/{r.item_id}|{flags}")
    (d / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    ulines = [f"{r.user_id}|{r.age}|{r.gender}|{r.occupation}|12345" for r in t.users.itertuples()]
    (d / "u.user").write_text("\n".join(ulines) + "\n")
    return d


def write_ml1m(t: Tables, d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    rows = [f"{r.user_id}::{r.item_id}::{int(r.rating)}::{r.timestamp}" for r in t.interactions.itertuples()]
    (d / "ratings.dat").write_text("\n".join(rows) + "\n")
    movies = [f"{r.item_id}::{r.title}::{r.genres}" for r in t.items.itertuples()]
    (d / "movies.dat").write_bytes(("\n".join(movies) + "\n").encode("latin-1"))
    users = [
        f"{r.user_id}::{r.gender}::{r.age}::{i % len(ML1M_OCCUPATIONS)}::02139"
        for i, r in enumerate(t.users.itertuples())
    ]
    (d / "users.dat").write_text("\n".join(users) + "\n")
    return d


def write_ml25m(t: Tables, d: Path, half_stars: bool = True) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    r = t.interactions.rename(columns={"user_id": "userId", "item_id": "movieId"})
    if half_stars:
        r = r.assign(rating=np.where(r["rating"] > 1, r["rating"] - 0.5 * (r.index % 2), r["rating"]))
    r.to_csv(d / "ratings.csv", index=False)
    m = t.items.rename(columns={"item_id": "movieId"})[["movieId", "title", "genres"]]
    m.to_csv(d / "movies.csv", index=False)
    return d


def write_goodbooks(t: Tables, d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    order = t.interactions.sort_values("timestamp", kind="stable")
    order.rename(columns={"item_id": "book_id"})[["user_id", "book_id", "rating"]].astype({"rating": "int64"}).to_csv(
        d / "ratings.csv", index=False
    )
    b = pd.DataFrame({"book_id": t.items["item_id"], "title": t.items["title"], "authors": "Jane Doe"})
    b.to_csv(d / "books.csv", index=False)
    return d


def reclora(
    *args: str, cwd: Path | None = None, check: bool = False, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run the installed `reclora` command in a subprocess (as a user would)."""
    proc = subprocess.run([str(BIN / "reclora"), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"reclora {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


TINY_WORDS = (
    "yes no the a of and to is user movie title stars star rated likes watched will enjoy target "
    "assistant system or answer question history profile gender age occupation recent following movies given would "
    "action comedy drama romance thriller sci-fi horror animation lost river empire garden"
).split()


def build_tiny_llama(d: Path, seed: int = 0) -> Path:
    """A 2-layer random Llama + a word-level tokenizer with a chat template, saved as safetensors."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
    words = specials + ["Yes", "No"] + TINY_WORDS + [str(i) for i in range(10)] + list(".,:;?!()|-'\"/\n")
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", bos_token="<|im_start|>", eos_token="<|im_end|>"
    )
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|>{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
    )
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=vocab["<pad>"],
        bos_token_id=vocab["<|im_start|>"],
        eos_token_id=vocab["<|im_end|>"],
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(cfg).save_pretrained(d, safe_serialization=True)
    tok.save_pretrained(d)
    return d


def llm_stage_inputs(d: Path) -> tuple[Path, Path, dict]:
    """Prepared synthetic data, its recent-K retrieval, and params for a seconds-long LLM stage on the tiny
    Llama (fp32, no dropout, a checkpoint every step): (data_dir, retrieved_dir, params)."""
    from reclora.config import deep_merge, load_params
    from reclora.data import prepare
    from reclora.stages import retrieve_stage

    params = deep_merge(
        load_params(),
        {
            "synthetic": {"n_users": 30, "n_items": 40, "mean_interactions": 20, "min_interactions": 10},
            "retrieval": {"mode": "recent", "k_long": 8, "k_short": 3},
            "adapter": {"dropout": 0.0},
            "train": {
                "sample_size": 24,
                "batch_size": 4,
                "epochs": 1,
                "precision": "fp32",
                "checkpoint_every": 1,
                "eval_samples": 16,
                "predict_batch_size": 8,
                "max_length": 256,
                "lr": 0.005,
            },
        },
    )
    data, ret = d / "prepared", d / "retrieved"
    prepare("synthetic", None, data, params)
    retrieve_stage(data, ret, params, mode="recent", progress=False)
    return data, ret, params


class FakeArtifact:
    """A KFP Input/Output artifact as a component function sees it: path, uri, metadata, log_metric."""

    def __init__(self, path: Path, uri: str = ""):
        self.path, self.uri, self.metadata = str(path), uri or str(path), {}

    def log_metric(self, key: str, value: float) -> None:
        self.metadata[key] = value


# The handed bad-input cases (../shared/cases/bad-input, modelled on public bug reports), rewritten
# here as small equivalents so the tests never read ../shared.
_MOVIES = "movieId,title,genres\n1,A (1995),Drama\n2,B (1996),Drama\n"


def write_bad_input_case(name: str, d: Path) -> Path:
    """Write the raw files of one handed bad-input case into ``d``; returns ``d``.

    float_id / inf_id / one_row: MovieLens CSV (``ml-25m``); parquet_ts_ms: generic ``table`` whose
    timestamp column is Arrow timestamp[ms] (2024-03-01 13:00 UTC); goodbooks_dup: ``goodbooks-10k``
    with the same (user, book) rating twice.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    d.mkdir(parents=True, exist_ok=True)
    header = "userId,movieId,rating,timestamp\n"
    if name == "float_id":
        (d / "ratings.csv").write_text(header + "2.9,1,4.0,978300000\n1,2.5,4.0,978300060\n")
    elif name == "inf_id":
        (d / "ratings.csv").write_text(header + "inf,1,4.0,978300000\n")
    elif name == "one_row":
        (d / "ratings.csv").write_text(header + "1,1,4.0,978300000\n")
    elif name == "parquet_ts_ms":
        ts = pa.array([1709298000000], pa.timestamp("ms"))
        table = pa.table(
            {
                "user_id": pa.array([1], pa.int64()),
                "item_id": pa.array([1], pa.int64()),
                "rating": pa.array([4.0]),
                "timestamp": ts,
            }
        )
        pq.write_table(table, d / "interactions.parquet")
        return d
    elif name == "goodbooks_dup":
        (d / "ratings.csv").write_text("user_id,book_id,rating\n1,1,1\n1,2,4\n1,3,4\n1,4,2\n1,5,3\n1,1,1\n")
        (d / "books.csv").write_text("book_id,title\n" + "".join(f"{i},B{i}\n" for i in range(1, 6)))
        return d
    else:
        raise ValueError(f"unknown bad-input case {name!r}")
    (d / "movies.csv").write_text(_MOVIES)
    return d


# Hostile values for every field of a serving request (issue 10): shared by the parser's property test
# and the same property over HTTP (tests/integration/test_serving.py).
MAX_TIMESTAMP = 253402300799  # the serving bound on unix seconds: 9999-12-31T23:59:59Z
INT64 = (-(2**63), 2**63 - 1)
HOSTILE = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from(
        [0, -1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), -(2**63) - 1, MAX_TIMESTAMP, MAX_TIMESTAMP + 1, 1, 8]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1.0, 4.5, 0.5, 5.0, 5.5, float("nan"), float("inf")]),
    st.text(max_size=4),
    st.booleans(),
    st.none(),
    st.lists(st.integers(0, 9), max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(0, 3), max_size=2),
)
FIELDS = (
    "user_id",
    "candidates",
    "candidates[]",
    "timestamp",
    "history",
    "history.item_id",
    "history.rating",
    "history.timestamp",
)


def is_int(v, lo, hi) -> bool:
    """An int (not a bool) within [lo, hi]."""
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def valid_field(field: str, v, items: set[int], rating_range: tuple[float, float] = (1.0, 5.0), first: int = 1) -> bool:
    """Whether the serving parser must accept ``v`` in ``field`` of :func:`hostile_instance` (else a 400);
    ``first``: the instance's first candidate (a second equal one is a duplicate)."""
    if field == "user_id":
        return is_int(v, *INT64)
    if field == "candidates":
        return (
            isinstance(v, list)
            and 0 < len(v)
            and all(is_int(c, *INT64) and c in items for c in v)
            and len(set(v)) == len(v)
        )
    if field == "candidates[]":
        return is_int(v, *INT64) and v in items and v != first
    if field in ("timestamp", "history.timestamp"):
        return (v is None and field == "timestamp") or is_int(v, 0, MAX_TIMESTAMP)
    if field == "history":
        return v is None or v == []
    if field == "history.item_id":
        return is_int(v, *INT64) and v in items
    if field == "history.rating":
        num = isinstance(v, (int, float)) and not isinstance(v, bool)
        return num and math.isfinite(v) and rating_range[0] <= v <= rating_range[1]
    raise AssertionError(field)


def hostile_instance(field: str, v, candidates: tuple[int, int] = (1, 2), known: int = 3) -> dict:
    """A V1 instance whose ``field`` holds ``v`` and every other field a valid value."""
    inst = {
        "user_id": 7,
        "candidates": list(candidates),
        "timestamp": 900_000_000,
        "history": [{"item_id": known, "rating": 4.0, "timestamp": 800_000_000}],
    }
    if field == "candidates[]":
        inst["candidates"] = [candidates[0], v]
    elif field.startswith("history."):
        inst["history"][0][field.split(".")[1]] = v
    else:
        inst[field] = v
    return inst


# the words the 400 must contain for a hostile value in each field
NAMED = {
    "user_id": "instances[0].user_id",
    "candidates": "instances[0].candidates",
    "candidates[]": "instances[0].candidates",
    "timestamp": "instances[0].timestamp",
    "history": "instances[0].history",
    "history.item_id": "instances[0].history[0]",
    "history.rating": "instances[0].history[0].rating",
    "history.timestamp": "instances[0].history[0].timestamp",
}
