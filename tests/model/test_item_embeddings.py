"""Item text embeddings: decoder only (no LM head), batched by length, in the caller's order."""

import numpy as np
import pytest
import torch

from reclora.llm import load_causal_lm
from reclora.retrieval.embeddings import embed_texts

# Tolerances (unit vectors, entries <= 1): in fp32 two evaluations of the tiny Llama (64-wide, 2 layers) that
# differ only in batch composition reassociate sums of at most a few hundred terms, an error of order
# 1e-7..1e-6 (fp32's unit roundoff is 6e-8); 1e-5 leaves margin on any CPU and is far below what a wrong
# pooling or a dropped layer changes (> 1e-2). Under bf16 autocast every matmul input is rounded to 8 bits
# (unit roundoff 2^-8 = 3.9e-3), and a batch change can flip such roundings: a few units of 2^-8.
FP32_ATOL = 1e-5
BF16_ATOL = 5 * 2.0**-8
TEXTS = [
    "action comedy drama romance thriller",
    "lost river",
    "the empire garden . action",
    "horror",
    "sci-fi animation",
]


@pytest.mark.parametrize("precision, atol", [("fp32", FP32_ATOL), ("bf16", BF16_ATOL)])
def test_embeddings_keep_order_and_do_not_depend_on_the_batch(tiny_llama_dir, precision, atol):
    model, tok = load_causal_lm(tiny_llama_dir)
    texts = TEXTS
    batched = embed_texts(model, tok, texts, batch_size=2, progress=False, precision=precision)
    alone = np.vstack([embed_texts(model, tok, [t], batch_size=1, progress=False, precision=precision) for t in texts])
    assert batched.shape == (5, 64) and batched.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-6)  # normalised in fp32
    np.testing.assert_allclose(batched, alone, atol=atol)  # batch composition changes rounding only
    assert tok.padding_side == "left"  # restored for the prompts
    # the same as mean-pooling the full causal LM's last hidden state by hand
    tok.padding_side = "right"
    enc = tok(texts[:1], return_tensors="pt")
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else torch.autocast("cpu", enabled=False)
    with torch.no_grad(), ctx:
        hs = model(**enc, output_hidden_states=True).hidden_states[-1].float()[0]
    ref = torch.nn.functional.normalize(hs.mean(0), dim=-1).numpy()
    np.testing.assert_allclose(batched[0], ref, atol=atol)


def test_bf16_and_fp32_embeddings_differ_by_bf16_rounding_only(tiny_llama_dir):
    model, tok = load_causal_lm(tiny_llama_dir)
    a = embed_texts(model, tok, TEXTS, progress=False, precision="fp32")
    b = embed_texts(model, tok, TEXTS, progress=False, precision="bf16")
    assert not np.array_equal(a, b)  # the precision is applied
    np.testing.assert_allclose(a, b, atol=BF16_ATOL)


def test_first_layers_only(tiny_llama_dir):
    """``layers=k`` embeds with the first k decoder layers and the final norm; the model is whole again after."""
    import pytest

    from reclora.errors import ConfigError
    from reclora.llm.layers import decoder_stack

    model, tok = load_causal_lm(tiny_llama_dir)
    n = len(decoder_stack(model).layers)
    texts = ["lost river", "the empire garden . action"]
    one = embed_texts(model, tok, texts, progress=False, layers=1, precision="fp32")
    assert len(decoder_stack(model).layers) == n  # restored
    tok.padding_side = "right"
    enc = tok(texts[:1], return_tensors="pt")
    dec = decoder_stack(model)
    with torch.no_grad():
        hs = dec(**enc, output_hidden_states=True).hidden_states[1]  # after layer 1, before the norm
        ref = torch.nn.functional.normalize(dec.norm(hs).float()[0].mean(0), dim=-1).numpy()
    tok.padding_side = "left"
    np.testing.assert_allclose(one[0], ref, atol=FP32_ATOL)
    full = embed_texts(model, tok, texts, progress=False, precision="fp32")
    assert not np.allclose(one, full, atol=1e-3)  # not the full stack
    np.testing.assert_array_equal(
        embed_texts(model, tok, texts, progress=False, layers=n + 1, precision="fp32"), full
    )  # >= n: all layers
    with pytest.raises(ConfigError, match="embedding_layers"):
        embed_texts(model, tok, texts, progress=False, layers=-1)
