"""Few2Many: train an LLM adapter (vanilla LoRA or RecLoRA) on a small sample; predict p(Yes).

config.py       TrainConfig (params ``train``)
data.py         the seeded sample, tokenizing and padding, length batches, PromptSet
trainer.py      Few2ManyRecipe (setup, train loop, checkpoint/resume, validation) and train_adapter
predict.py      predict_adapter
adapters.py     the adapter kinds on a base LLM; checkpoint.py, distributed.py, diagnostics.py
"""

from reclora.few2many.adapters import KINDS, AdapterModel, build_adapter, init_from_shared_lora, load_adapter
from reclora.few2many.config import TrainConfig
from reclora.few2many.data import PromptSet, encode, length_batches, pad_left, sample_few, tokenize
from reclora.few2many.predict import predict_adapter
from reclora.few2many.trainer import Few2ManyRecipe, train_adapter

__all__ = [
    "KINDS",
    "AdapterModel",
    "Few2ManyRecipe",
    "TrainConfig",
    "build_adapter",
    "encode",
    "init_from_shared_lora",
    "load_adapter",
    "predict_adapter",
    "sample_few",
    "train_adapter",
    "PromptSet",
    "length_batches",
    "pad_left",
    "tokenize",
]
