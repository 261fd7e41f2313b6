"""Personalized LoRA (RecLoRA): a bank of meta-LoRAs per adapted module, mixed per sample by a gate on the CRM signal.

Plain torch, modelled on peft's tuners layout (config / layer / model) but not a fork of it.
"""

from reclora.lora.config import PersonalizedLoRAConfig
from reclora.lora.layer import (
    MixingGate,
    PersonalizedLoRALinear,
    mixing_entropy,
    output_mixing_delta,
    parameter_mixing_delta,
    uniform_weights,
)
from reclora.lora.model import CONFIG_NAME, WEIGHTS_NAME, PersonalizedLoRAModel, find_target_modules

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "MixingGate",
    "PersonalizedLoRAConfig",
    "PersonalizedLoRALinear",
    "PersonalizedLoRAModel",
    "find_target_modules",
    "mixing_entropy",
    "output_mixing_delta",
    "parameter_mixing_delta",
    "uniform_weights",
]
