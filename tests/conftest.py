import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("FEAST_USAGE", "False")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[1]
ML100K = REPO.parent / "shared" / "data" / "ml-100k"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def ml100k_path() -> Path:
    """The real MovieLens-100K, read in place (never copied); tests using it skip without it."""
    if not (ML100K / "u.data").is_file():
        pytest.skip("real MovieLens-100K not present at ../shared/data/ml-100k")
    return ML100K


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """The fetched embedded default LLM (`make test` fetches it first)."""
    from reclora.llm.fetch import default_model_dir, is_fetched

    d = default_model_dir()
    if not is_fetched(d):
        pytest.fail(f"default model not fetched into {d}: run `reclora model fetch` (make test does)")
    return d


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A tiny random Llama with the real model's tokenizer is too slow to build per test; this one is
    built from a config with a small word-level tokenizer and saved once per session."""
    from helpers import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
