"""Item text embeddings: decoder only (no LM head), batched by length, in the caller's order."""

import numpy as np
import torch

from reclora.llm import load_causal_lm
from reclora.retrieval.embeddings import embed_texts


def test_embeddings_keep_order_and_do_not_depend_on_the_batch(tiny_llama_dir):
    model, tok = load_causal_lm(tiny_llama_dir)
    texts = ["action comedy drama romance thriller", "lost river", "the empire garden . action", "horror", "sci-fi animation"]
    batched = embed_texts(model, tok, texts, batch_size=2, progress=False)
    alone = np.vstack([embed_texts(model, tok, [t], batch_size=1, progress=False) for t in texts])
    assert batched.shape == (5, 64) and batched.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batched, alone, atol=2e-2)  # bf16 autocast: batch composition changes rounding only
    assert tok.padding_side == "left"  # restored for the prompts
    # the same as mean-pooling the full causal LM's last hidden state by hand
    tok.padding_side = "right"
    enc = tok(texts[:1], return_tensors="pt")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        hs = model(**enc, output_hidden_states=True).hidden_states[-1].float()[0]
    ref = torch.nn.functional.normalize(hs.mean(0), dim=-1).numpy()
    np.testing.assert_allclose(batched[0], ref, atol=2e-2)


def test_first_layers_only(tiny_llama_dir):
    """``layers=k`` embeds with the first k decoder layers and the final norm; the model is whole again after."""
    import pytest

    from reclora.errors import ConfigError
    from reclora.llm.layers import decoder_stack

    model, tok = load_causal_lm(tiny_llama_dir)
    n = len(decoder_stack(model).layers)
    texts = ["lost river", "the empire garden . action"]
    one = embed_texts(model, tok, texts, progress=False, layers=1)
    assert len(decoder_stack(model).layers) == n  # restored
    tok.padding_side = "right"
    enc = tok(texts[:1], return_tensors="pt")
    dec = decoder_stack(model)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        hs = dec(**enc, output_hidden_states=True).hidden_states[1]  # after layer 1, before the norm
        ref = torch.nn.functional.normalize(dec.norm(hs).float()[0].mean(0), dim=-1).numpy()
    tok.padding_side = "left"
    np.testing.assert_allclose(one[0], ref, atol=2e-2)
    assert not np.allclose(one, embed_texts(model, tok, texts, progress=False), atol=1e-3)  # not the full stack
    np.testing.assert_array_equal(embed_texts(model, tok, texts, progress=False, layers=n + 1),
                                  embed_texts(model, tok, texts, progress=False))  # fmt: skip  # >= n: all layers
    with pytest.raises(ConfigError, match="embedding_layers"):
        embed_texts(model, tok, texts, progress=False, layers=-1)
