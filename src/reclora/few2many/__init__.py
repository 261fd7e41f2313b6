"""Few2Many: train an LLM adapter (vanilla LoRA or RecLoRA) on a small sample; predict p(Yes)."""

from reclora.few2many.adapters import KINDS, AdapterModel, build_adapter, init_from_shared_lora, load_adapter
from reclora.few2many.trainer import (
    TrainConfig, PromptSet, encode, length_batches, pad_left, predict_adapter, sample_few, tokenize, train_adapter,
)

__all__ = [
    "KINDS", "AdapterModel", "TrainConfig", "build_adapter", "encode", "init_from_shared_lora", "load_adapter",
    "predict_adapter", "sample_few", "train_adapter", "PromptSet", "length_batches", "pad_left", "tokenize",
]  # fmt: skip
