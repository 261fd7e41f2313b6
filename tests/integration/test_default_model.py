"""The real embedded default LLM, as `reclora model fetch` left it in the cache."""

import json

import pytest

from reclora.llm import load_causal_lm, score_yes_no
from reclora.llm.location import MARKER

pytestmark = pytest.mark.slow


def test_fetched_model_is_smollm2_as_safetensors(default_model_path):
    info = json.loads((default_model_path / MARKER).read_text())
    assert info["parameters"] == 134_515_008 and info["architecture"] == "LlamaForCausalLM"
    assert (default_model_path / "model.safetensors").stat().st_size > 100_000_000
    assert not list(default_model_path.glob("*.bin")) and not list(default_model_path.glob("*.pt"))
    cfg = json.loads((default_model_path / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["num_hidden_layers"] == 30


def test_real_model_scores_yes_no_prompts(default_model_path):
    model, tok = load_causal_lm(default_model_path)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    texts = [
        "A user rated 'Toy Story (1995)' 5 stars and 'Aladdin (1992)' 4 stars. Will the user enjoy 'The Lion King (1994)'? Answer Yes or No.",
        "Is water dry? Answer Yes or No.",
    ]
    batched = score_yes_no(model, tok, texts, batch_size=2)
    single = [score_yes_no(model, tok, [t])[0] for t in texts]
    assert all(0.0 < p < 1.0 for p in batched)
    assert batched == pytest.approx(single, abs=2e-3)
    assert abs(batched[0] - batched[1]) > 1e-3
