"""The base causal LLM: fetching the embedded default, loading any HF causal LM, Yes/No scoring."""

from reclora.llm.fetch import default_model_dir, fetch_default_model
from reclora.llm.model import load_causal_lm, resolve_model_path, score_yes_no, yes_no_token_ids

__all__ = [
    "default_model_dir", "fetch_default_model", "load_causal_lm", "resolve_model_path",
    "score_yes_no", "yes_no_token_ids",
]  # fmt: skip
