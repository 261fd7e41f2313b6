"""Load a causal LM and read p(Yes) at the answer position (where the model is: :mod:`reclora.llm.location`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from reclora.errors import RecLoRAError


def load_causal_lm(path: str | Path, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) from a directory or hub id; the tokenizer pads on the left."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    except OSError as e:
        raise RecLoRAError(f"cannot load a causal LM from {path}: {str(e).splitlines()[0]}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    model.eval()
    return model, tok


def yes_no_token_ids(tokenizer: Any) -> tuple[int, int]:
    """Token ids of "Yes" and "No" as the first token of the answer."""
    ids = []
    for word in ("Yes", "No"):
        toks = tokenizer.encode(word, add_special_tokens=False)
        if not toks:
            raise RecLoRAError(f"tokenizer cannot encode {word!r}")
        ids.append(toks[0])
    if ids[0] == ids[1]:
        raise RecLoRAError("tokenizer maps Yes and No to the same first token")
    return ids[0], ids[1]


def chat_prompt(tokenizer: Any, text: str) -> str:
    """Wrap ``text`` in the model's chat template (if it has one), ready for the answer."""
    if getattr(tokenizer, "chat_template", None):
        user = [{"role": "user", "content": text}]
        try:  # an empty system turn: no template's default system boilerplate (fewer tokens per prompt)
            return tokenizer.apply_chat_template(
                [{"role": "system", "content": ""}] + user, tokenize=False, add_generation_prompt=True
            )
        except Exception:  # a template without a system role
            return tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    return text + "\nAnswer:"


@torch.no_grad()
def score_yes_no(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 8) -> list[float]:
    """p = softmax([logit(Yes), logit(No)])[0] at the answer position of each chat prompt."""
    yes, no = yes_no_token_ids(tokenizer)
    out: list[float] = []
    for i in range(0, len(texts), batch_size):
        prompts = [chat_prompt(tokenizer, t) for t in texts[i : i + batch_size]]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        logits = model(**enc).logits[:, -1, :]
        pair = torch.stack([logits[:, yes], logits[:, no]], dim=-1).float()
        out.extend(torch.softmax(pair, dim=-1)[:, 0].tolist())
    return out
