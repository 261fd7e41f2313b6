"""Configuration of the personalized LoRA (RecLoRA's bank of meta-LoRAs plus a gate)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reclora.errors import ConfigError

#: Written into adapter_config.json so a reader knows what the file holds.
ADAPTER_TYPE = "personalized_lora"
FORMAT_VERSION = 1
_METADATA_KEYS = ("adapter_type", "format_version")

MIXING_RULES = ("parameter", "output")
GATE_KINDS = ("crm", "uniform")
GATE_INPUTS = ("hidden", "score", "hidden+score")


def gate_signal_width(hidden_dim: int, gate_input: str) -> int:
    """signal_dim for ``gate_input`` given the CRM's |h|: hidden |h|, score 1, hidden+score |h| + 1."""
    if gate_input not in GATE_INPUTS:
        raise ConfigError(f"gate_input must be one of {GATE_INPUTS}, got {gate_input!r}")
    return {"hidden": hidden_dim, "score": 1, "hidden+score": hidden_dim + 1}[gate_input]


@dataclass
class PersonalizedLoRAConfig:
    """Hyper-parameters of the personalized LoRA.

    n_experts:      N, number of meta-LoRAs in each adapted module's bank.
    rank, alpha:    LoRA rank r and alpha; the update is scaled by alpha / rank.
    dropout:        dropout on the adapter input (as LoRA's ``lora_dropout``).
    target_modules: names of the nn.Linear modules to adapt (matched on the last
                    dotted components, e.g. ``q_proj`` or ``self_attn.q_proj``).
    signal_dim:     width of the per-sample CRM signal fed to the gates (see gate_input).
    gate_input:     what of the CRM the gates read: "hidden" = its last hidden vector h (the
                    paper; signal_dim = |h|); "score" = its logit z only (signal_dim = 1);
                    "hidden+score" = [h, z] (signal_dim = |h| + 1), z entering the gate
                    logits linearly, next to the MLP on h, so it is not LayerNormed away.
    gate_hidden, gate_dropout: the gate MLP on h (LayerNorm -> Linear -> ReLU -> Dropout -> Linear).
    temperature:    softmax temperature of the gate.
    mixing:         "parameter": A_u = sum_k w_k A_k, B_u = sum_k w_k B_k, update B_u A_u x
                    (the official code's choice); "output": update sum_k w_k B_k A_k x.
    gate:           "crm": w = gate(h); "uniform": w = 1/N (ablation without the CRM signal,
                    no gate parameters exist).
    """

    n_experts: int = 8
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    signal_dim: int = 256
    gate_hidden: int = 64
    gate_dropout: float = 0.1
    temperature: float = 1.0
    mixing: str = "parameter"
    gate: str = "crm"
    gate_input: str = "hidden"

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, str):
            self.target_modules = [self.target_modules]
        self.target_modules = list(self.target_modules)
        self.validate()

    @property
    def scaling(self) -> float:
        """alpha / rank, the factor on every low-rank update (as peft's ``lora_alpha / r``)."""
        return float(self.alpha) / float(self.rank)

    def validate(self) -> None:
        """Check every field's type and range and that signal_dim fits gate_input; raises ConfigError naming
        the bad field."""

        def positive_int(name: str) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"personalized LoRA: {name} must be a positive integer, got {v!r}")

        for name in ("n_experts", "rank", "signal_dim", "gate_hidden"):
            positive_int(name)
        for name in ("dropout", "gate_dropout"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 <= float(v) < 1.0:
                raise ConfigError(f"personalized LoRA: {name} must be in [0, 1), got {v!r}")
        if not isinstance(self.alpha, (int, float)) or float(self.alpha) <= 0:
            raise ConfigError(f"personalized LoRA: alpha must be > 0, got {self.alpha!r}")
        if not isinstance(self.temperature, (int, float)) or not float(self.temperature) > 0:
            raise ConfigError(f"personalized LoRA: temperature must be > 0, got {self.temperature!r}")
        if self.mixing not in MIXING_RULES:
            raise ConfigError(f"personalized LoRA: mixing must be one of {MIXING_RULES}, got {self.mixing!r}")
        if self.gate_input not in GATE_INPUTS:
            raise ConfigError(f"personalized LoRA: gate_input must be one of {GATE_INPUTS}, got {self.gate_input!r}")
        if self.gate_input == "score" and self.signal_dim != 1:
            raise ConfigError(
                f"personalized LoRA: gate_input 'score' reads a 1-wide signal, got signal_dim={self.signal_dim}"
            )
        if self.gate_input == "hidden+score" and self.signal_dim < 2:
            raise ConfigError("personalized LoRA: gate_input 'hidden+score' needs signal_dim = |h| + 1 >= 2")
        if self.gate not in GATE_KINDS:
            raise ConfigError(f"personalized LoRA: gate must be one of {GATE_KINDS}, got {self.gate!r}")
        if not self.target_modules or not all(isinstance(t, str) and t for t in self.target_modules):
            raise ConfigError(
                f"personalized LoRA: target_modules must be a non-empty list of names, got {self.target_modules!r}"
            )

    # --- serialisation -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The hyper-parameters as a plain dict (no metadata keys; :meth:`to_json` adds them)."""
        d = dataclasses.asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PersonalizedLoRAConfig:
        """Build from a mapping (e.g. adapter_config.json or a params.yaml section).

        Unknown keys are an error (a typo must not silently fall back to a default);
        the metadata keys written by :meth:`to_json` are accepted and checked.
        """
        d = dict(d)
        adapter_type = d.pop("adapter_type", ADAPTER_TYPE)
        if adapter_type != ADAPTER_TYPE:
            raise ConfigError(f"not a personalized LoRA config (adapter_type={adapter_type!r})")
        version = d.pop("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ConfigError(f"personalized LoRA config format_version {version!r} is not supported")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"personalized LoRA config: unknown keys {unknown}; known: {sorted(names)}")
        return cls(**d)

    def to_json(self) -> str:
        """The text of adapter_config.json: the hyper-parameters plus adapter_type and format_version, keys sorted."""
        d = {"adapter_type": ADAPTER_TYPE, "format_version": FORMAT_VERSION, **self.to_dict()}
        return json.dumps(d, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> PersonalizedLoRAConfig:
        """The config of adapter_config.json's text; ConfigError for text that is not JSON, repeats a key or is
        not an object, and for what :meth:`from_dict` refuses."""
        from reclora.io import loads_json

        try:
            d = loads_json(text)
        except ValueError as e:  # not JSON, or an object that repeats a key
            raise ConfigError(f"personalized LoRA config is not valid JSON: {e}") from e
        if not isinstance(d, dict):
            raise ConfigError("personalized LoRA config JSON must be an object")
        return cls.from_dict(d)
