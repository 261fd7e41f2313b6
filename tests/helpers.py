"""Test helpers: write small data sets in each real raw format, from a synthetic Tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

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
    users = [f"{r.user_id}::{r.gender}::{r.age}::{i % len(ML1M_OCCUPATIONS)}::02139" for i, r in enumerate(t.users.itertuples())]
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


def reclora(*args: str, cwd: Path | None = None, check: bool = False, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the installed `reclora` command in a subprocess (as a user would)."""
    proc = subprocess.run(
        [str(BIN / "reclora"), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
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
        vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=vocab["<pad>"], bos_token_id=vocab["<|im_start|>"], eos_token_id=vocab["<|im_end|>"],
        tie_word_embeddings=True,
    )  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(d, safe_serialization=True)
    tok.save_pretrained(d)
    return d


def llm_stage_inputs(d: Path) -> tuple[Path, Path, dict]:
    """Prepared synthetic data, its recent-K retrieval, and params for a seconds-long LLM stage on the tiny
    Llama (fp32, no dropout, a checkpoint every step): (data_dir, retrieved_dir, params)."""
    from reclora.config import deep_merge, load_params
    from reclora.data import prepare
    from reclora.stages import retrieve_stage

    params = deep_merge(load_params(), {
        "synthetic": {"n_users": 30, "n_items": 40, "mean_interactions": 20, "min_interactions": 10},
        "retrieval": {"mode": "recent", "k_long": 8, "k_short": 3},
        "adapter": {"dropout": 0.0},
        "train": {"sample_size": 24, "batch_size": 4, "epochs": 1, "bf16": False, "checkpoint_every": 1,
                  "eval_samples": 16, "predict_batch_size": 8, "max_length": 256, "lr": 0.005},
    })  # fmt: skip
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
