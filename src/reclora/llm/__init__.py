"""The base causal LLM: where it is (``location``), fetching the embedded default (``fetch``), loading any HF
causal LM and Yes/No scoring (``model``), its decoder layers (``layers``)."""

from reclora.llm.fetch import fetch_default_model
from reclora.llm.location import default_model_dir, resolve_model_path
from reclora.llm.model import load_causal_lm, score_yes_no, yes_no_token_ids

__all__ = [
    "default_model_dir",
    "fetch_default_model",
    "load_causal_lm",
    "resolve_model_path",
    "score_yes_no",
    "yes_no_token_ids",
]
