"""Yes/No readout on a tiny Llama: probabilities, left padding, model resolution."""

import pytest
import torch

from reclora.errors import RecLoRAError
from reclora.llm import load_causal_lm, resolve_model_path, score_yes_no, yes_no_token_ids
from reclora.llm.model import chat_prompt


def test_yes_no_readout_matches_a_manual_softmax(tiny_llama_dir):
    model, tok = load_causal_lm(tiny_llama_dir)
    yes, no = yes_no_token_ids(tok)
    assert tok.convert_ids_to_tokens([yes, no]) == ["Yes", "No"]
    text = "the user likes action movies . will the user enjoy the target movie ?"
    p = score_yes_no(model, tok, [text])[0]
    ids = tok(chat_prompt(tok, text), return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        logits = model(**ids).logits[0, -1]
    manual = torch.softmax(torch.stack([logits[yes], logits[no]]), 0)[0].item()
    assert p == pytest.approx(manual, abs=1e-6)


def test_batched_scores_equal_one_by_one_with_left_padding(tiny_llama_dir):
    model, tok = load_causal_lm(tiny_llama_dir)
    texts = ["action", "the user watched the lost river and the golden empire . yes or no ?", "comedy drama romance"]
    batched = score_yes_no(model, tok, texts, batch_size=3)
    single = [score_yes_no(model, tok, [t])[0] for t in texts]
    assert batched == pytest.approx(single, abs=1e-5)
    assert len(set(round(p, 6) for p in batched)) == 3  # different prompts, different scores


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(RecLoRAError, match="cannot load a causal LM"):
        load_causal_lm(tmp_path / "nothing-here")


def test_resolve_prefers_an_explicit_path():
    assert resolve_model_path("/models/llama", {"name": "x", "path": "/elsewhere"}) == "/models/llama"
