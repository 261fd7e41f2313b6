"""The decoder stack of a causal LM split at one layer: adapt only the top L layers, run the frozen
layers below once per sample and cache their output (exact: nothing below the first adapted layer
changes while the adapter trains).

Works for the Llama family's layout (``embed_tokens`` -> ``layers`` -> ``norm``, rotary positions
computed inside the decoder from ``position_ids``): Llama, SmolLM, Mistral, Qwen2/3. Position ids are
taken from the attention mask (``cumsum - 1``), so a left-padded prompt gets the same positions as
the same prompt alone and a cached lower state does not depend on the batch it was computed in.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from reclora.errors import ConfigError

_LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def unwrap(module: nn.Module) -> nn.Module:
    """The HF causal LM inside a peft ``PeftModel`` or a ``PersonalizedLoRAModel`` (itself otherwise)."""
    m = module
    for _ in range(4):
        if hasattr(m, "get_base_model"):  # peft
            m = m.get_base_model()
        elif hasattr(m, "lora_config") and hasattr(m, "base_model"):  # PersonalizedLoRAModel
            m = m.base_model
        else:
            break
    return m


def decoder_stack(module: nn.Module) -> nn.Module:
    """The inner decoder (``embed_tokens``, ``layers``, ``norm``) of a causal LM, wrapped or not.

    Raises ConfigError for an architecture without that layout.
    """
    lm = unwrap(module)
    dec = lm.get_decoder() if hasattr(lm, "get_decoder") else getattr(lm, "model", None)
    if dec is None or not all(hasattr(dec, a) for a in ("embed_tokens", "layers", "norm")):
        raise ConfigError(
            f"{type(lm).__name__} has no Llama-style decoder (embed_tokens, layers, norm); "
            "use adapter.layers: all with this model"
        )
    return dec


def num_layers(module: nn.Module) -> int:
    """Number of decoder layers of a causal LM (wrapped or not)."""
    return len(decoder_stack(module).layers)


def first_adapted_layer(n_layers: int, layers: Any) -> int:
    """Index of the lowest adapted layer for ``adapter.layers``: "all" (or 0) -> 0, an int L -> n - L
    (0 when L >= n: the top L layers of a smaller model are all of them).

    Raises ConfigError for anything else.
    """
    if layers in (None, "all", 0):
        return 0
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 0:
        raise ConfigError(f"adapter.layers must be 'all' or a positive number of top layers, got {layers!r}")
    return max(0, n_layers - layers)


def layer_index(module_name: str) -> int | None:
    """Decoder layer of a module name such as ``model.layers.12.self_attn.q_proj`` (None if none)."""
    m = _LAYER_INDEX.search(module_name)
    return int(m.group(1)) if m else None


def target_names(module: nn.Module, target_modules: list[str], first: int) -> list[str]:
    """Full names of the ``target_modules`` linears in decoder layers >= ``first`` (all when first is 0)."""
    names = []
    for n, m in module.named_modules():
        if not isinstance(m, nn.Linear) or not any(n == t or n.endswith("." + t) for t in target_modules):
            continue
        i = layer_index(n)
        if first == 0 or (i is not None and i >= first):
            names.append(n)
    if not names:
        raise ConfigError(f"no {target_modules} linears in decoder layers >= {first}")
    return names


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, L] positions counted over the real tokens only (left padding gets position 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@contextlib.contextmanager
def only_layers(decoder: nn.Module, start: int, stop: int | None = None, final_norm: bool = True) -> Iterator[None]:
    """Inside the block the decoder runs only ``layers[start:stop]`` (and its final norm if asked).

    Models with per-layer attention kinds (Gemma 3, Qwen 3, ...: ``config.layer_types``) look the
    kind up by the loop index, so the list is sliced the same way, else a full-attention layer
    would get a sliding-window layer's mask and rotary embedding.
    Not thread-safe: the decoder's layer list (and config.layer_types) is swapped for the block's duration.
    """
    layers, norm = decoder.layers, decoder.norm
    config = getattr(decoder, "config", None)
    types = getattr(config, "layer_types", None)
    try:
        decoder.layers = nn.ModuleList(list(layers)[start:stop])
        if isinstance(types, (list, tuple)):
            config.layer_types = list(types)[start:stop]
        if not final_norm:
            decoder.norm = nn.Identity()
        yield
    finally:
        decoder.layers, decoder.norm = layers, norm
        if isinstance(types, (list, tuple)):
            config.layer_types = types
