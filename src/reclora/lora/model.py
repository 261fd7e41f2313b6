"""Wrap any HF causal LM with personalized LoRA layers on its target modules.

    model = PersonalizedLoRAModel(base_model, PersonalizedLoRAConfig())
    out = model(input_ids, attention_mask, signal=h)       # h: [B, signal_dim], frozen CRM
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    model.save("adapter/")                                 # adapter_model.safetensors + adapter_config.json
    model = PersonalizedLoRAModel.load(base_model, "adapter/")

The base model is frozen; only the meta-LoRA banks and the gates train.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reclora.errors import ConfigError, RecLoRAError
from reclora.lora.config import ADAPTER_TYPE, FORMAT_VERSION, PersonalizedLoRAConfig
from reclora.lora.layer import PersonalizedLoRALinear, mixing_entropy

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"

MixingOverride = torch.Tensor | Mapping[str, torch.Tensor] | None


def _matches(name: str, targets: list[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def find_target_modules(model: nn.Module, target_modules: list[str]) -> list[str]:
    """Names of the modules to adapt (matched on their last dotted components)."""
    names = [n for n, _ in model.named_modules() if n and _matches(n, target_modules)]
    for n in names:
        m = model.get_submodule(n)
        if isinstance(m, PersonalizedLoRALinear):
            raise ConfigError(f"{n} is already a personalized LoRA layer (model wrapped twice?)")
        if not isinstance(m, nn.Linear):
            raise ConfigError(f"target module {n} is a {type(m).__name__}; personalized LoRA adapts nn.Linear only")
    if not names:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ConfigError(
            f"no module of the base model matches target_modules={target_modules}; its nn.Linear names are {linear}"
        )
    return names


class PersonalizedLoRAModel(nn.Module):
    """A frozen causal LM whose target linears carry a bank of meta-LoRAs and a gate each.

    The per-sample signal lives on the layers for the duration of one forward, so one
    instance must not run concurrent forwards from several threads (serialize calls,
    or use one instance per worker). Gradient checkpointing of the base is refused.
    """

    def __init__(self, base_model: nn.Module, config: PersonalizedLoRAConfig) -> None:
        super().__init__()
        if not isinstance(config, PersonalizedLoRAConfig):
            raise TypeError("config must be a PersonalizedLoRAConfig")
        config.validate()
        self.lora_config = config
        targets = find_target_modules(base_model, config.target_modules)
        self._base_requires_grad = {n: p.requires_grad for n, p in base_model.named_parameters()}
        for p in base_model.parameters():
            p.requires_grad_(False)
        for name in targets:
            parent_name, _, child = name.rpartition(".")
            parent = base_model.get_submodule(parent_name) if parent_name else base_model
            setattr(parent, child, PersonalizedLoRALinear(getattr(parent, child), config))
        self.base_model = base_model
        self.adapted_modules: list[str] = targets
        self.train(base_model.training)  # mirror the base model's train/eval mode

    # --- access ---------------------------------------------------------------------

    @property
    def config(self) -> Any:
        """The base model's own (HF) config, for code that expects ``model.config``."""
        return getattr(self.base_model, "config", None)

    @property
    def device(self) -> torch.device:
        """The device of the adapter's parameters (the first bank's)."""
        return next(iter(self.trainable_parameters())).device

    def lora_layers(self) -> Iterator[tuple[str, PersonalizedLoRALinear]]:
        """(module name, layer) of every adapted linear, in ``adapted_modules`` order."""
        for name in self.adapted_modules:
            yield name, self.base_model.get_submodule(name)  # type: ignore[misc]

    def named_trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Bank and gate parameters, named relative to the base model (the saved keys)."""
        for name, layer in self.lora_layers():
            yield f"{name}.lora_A", layer.lora_A
            yield f"{name}.lora_B", layer.lora_B
            if layer.gate is not None:
                for pn, p in layer.gate.named_parameters():
                    yield f"{name}.gate.{pn}", p

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters to hand to the optimizer (banks and gates; the base is frozen)."""
        return [p for _, p in self.named_trainable_parameters()]

    def num_parameters_summary(self) -> dict[str, int]:
        """{"trainable", "total", "base"} parameter counts (numel): banks and gates, all, and the frozen rest."""
        trainable = sum(p.numel() for p in self.trainable_parameters())
        total = sum(p.numel() for p in self.parameters())
        return {"trainable": trainable, "total": total, "base": total - trainable}

    # --- per-forward personalization -------------------------------------------------

    def _check_signal(self, signal: torch.Tensor | None) -> None:
        if signal is None:
            if self.lora_config.gate == "crm":
                raise ValueError("personalized LoRA with gate='crm' needs signal=h [batch, signal_dim]")
            return
        if signal.dim() != 2 or signal.shape[1] != self.lora_config.signal_dim:
            raise ValueError(f"signal must be [batch, {self.lora_config.signal_dim}], got {tuple(signal.shape)}")

    def _base_checkpointing(self) -> bool:
        for attr in ("is_activation_checkpointing", "is_gradient_checkpointing"):
            if hasattr(type(self.base_model), attr):
                return bool(getattr(self.base_model, attr))
        return False

    @contextlib.contextmanager
    def personalize(self, signal: torch.Tensor | None = None, mixing_weights: MixingOverride = None) -> Iterator[None]:
        """Set the per-sample signal (and optional explicit weights) on every layer for the block.

        ``mixing_weights`` overrides the gates: one [B, N] tensor for all modules, or a
        mapping module-name -> [B, N]. The previous state is restored on exit, also when
        the block raises.
        """
        if mixing_weights is None:
            self._check_signal(signal)
        if self.training and torch.is_grad_enabled() and self._base_checkpointing():
            raise RecLoRAError(
                "personalized LoRA does not support gradient checkpointing (the per-sample signal "
                "is only set during the forward); disable it with base_model.gradient_checkpointing_disable()"
            )
        layers = list(self.lora_layers())
        saved = [layer.get_state() for _, layer in layers]
        try:
            for name, layer in layers:
                layer.set_signal(signal)
                if isinstance(mixing_weights, Mapping):
                    layer.set_mixing_weights(mixing_weights.get(name))
                else:
                    layer.set_mixing_weights(mixing_weights)
            yield
        finally:
            for (_, layer), state in zip(layers, saved):
                layer.set_state(state)

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Run the plain base model inside the block (e.g. for a zero-shot baseline)."""
        layers = [layer for _, layer in self.lora_layers()]
        before = [layer.disabled for layer in layers]
        try:
            for layer in layers:
                layer.disabled = True
            yield
        finally:
            for layer, b in zip(layers, before):
                layer.disabled = b

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        signal: torch.Tensor | None = None,
        mixing_weights: MixingOverride = None,
        **kwargs: Any,
    ) -> Any:
        """Run the base model with each sample's personalized update (signal: [B, signal_dim])."""
        with self.personalize(signal, mixing_weights):
            return self.base_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    # --- diagnostics ----------------------------------------------------------------

    def gate_weights(self, signal: torch.Tensor | None, batch: int | None = None) -> dict[str, torch.Tensor]:
        """Mixing weights [B, N] of every adapted module for ``signal`` (uses the current train/eval mode)."""
        if signal is None and batch is None:
            raise ValueError("gate_weights: need a signal (or, for the uniform gate, a batch size)")
        if signal is not None or self.lora_config.gate == "crm":
            self._check_signal(signal)
        return {name: layer.mixing_weights(signal, batch) for name, layer in self.lora_layers()}

    @torch.no_grad()
    def gate_diagnostics(self, signal: torch.Tensor) -> dict[str, float]:
        """Summary of gate behaviour for a batch of signals (eval mode, no grad).

        entropy: mean normalised entropy of w (1 = uniform, 0 = one-hot);
        max_weight: mean largest weight; min_expert_usage / max_expert_usage: the least
        and most used expert's mean weight over the batch and modules (collapse shows
        as min usage near 0 and max usage near 1).
        """
        was_training = self.training
        self.eval()
        try:
            ws = torch.stack(list(self.gate_weights(signal).values()))  # [M, B, N]
        finally:
            self.train(was_training)
        usage = ws.mean(dim=(0, 1))
        return {
            "entropy": float(mixing_entropy(ws).mean()),
            "max_weight": float(ws.max(-1).values.mean()),
            "min_expert_usage": float(usage.min()),
            "max_expert_usage": float(usage.max()),
        }

    def set_temperature(self, temperature: float) -> None:
        """Set every gate's softmax temperature (and the config's); ConfigError unless ``temperature`` > 0."""
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature!r}")
        self.lora_config.temperature = float(temperature)
        for _, layer in self.lora_layers():
            if layer.gate is not None:
                layer.gate.temperature = float(temperature)

    # --- persistence ----------------------------------------------------------------

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The banks and gates as detached, contiguous CPU copies, keyed as :meth:`named_trainable_parameters`
        (the keys of the saved safetensors)."""
        return {k: p.detach().to("cpu", copy=True).contiguous() for k, p in self.named_trainable_parameters()}

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write adapter_model.safetensors and adapter_config.json into ``directory`` (atomically per file)."""
        from safetensors.torch import save_file

        from reclora.io import write_json

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        metadata = {
            "format": "pt",
            "adapter_type": ADAPTER_TYPE,
            "format_version": str(FORMAT_VERSION),
            "base_model_class": type(self.base_model).__name__,
            "adapted_modules": json.dumps(self.adapted_modules),
        }
        fd, tmp = tempfile.mkstemp(prefix=f".{WEIGHTS_NAME}.", dir=d)
        os.close(fd)
        try:
            save_file(self.adapter_state_dict(), tmp, metadata=metadata)
            os.replace(tmp, d / WEIGHTS_NAME)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        write_json(
            d / CONFIG_NAME,
            {"adapter_type": ADAPTER_TYPE, "format_version": FORMAT_VERSION, **self.lora_config.to_dict()},
        )
        return d

    def load_adapter_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy ``state`` (keys of :meth:`adapter_state_dict`) into the banks and gates, cast to their device and
        dtype. Raises RecLoRAError when a key is missing or unexpected or a shape differs."""
        own = dict(self.named_trainable_parameters())
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise RecLoRAError(
                "adapter does not fit this base model: "
                f"{len(missing)} missing tensors (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )
        with torch.no_grad():
            for k, p in own.items():
                t = state[k]
                if t.shape != p.shape:
                    raise RecLoRAError(f"adapter tensor {k} has shape {tuple(t.shape)}, expected {tuple(p.shape)}")
                p.copy_(t.to(device=p.device, dtype=p.dtype))

    @classmethod
    def load(cls, base_model: nn.Module, directory: str | os.PathLike[str]) -> PersonalizedLoRAModel:
        """Rebuild the wrapper around ``base_model`` from a directory written by :meth:`save`."""
        from safetensors.torch import load_file

        d = Path(directory)
        cfg_path, weights_path = d / CONFIG_NAME, d / WEIGHTS_NAME
        for p in (cfg_path, weights_path):
            if not p.is_file():
                raise RecLoRAError(f"personalized LoRA adapter: {p} not found")
        config = PersonalizedLoRAConfig.from_json(cfg_path.read_text())
        model = cls(base_model, config)
        model.load_adapter_state_dict(load_file(str(weights_path)))
        return model

    def unload(self) -> nn.Module:
        """Put the original linears back, restore requires_grad flags, return the base model."""
        for name, layer in list(self.lora_layers()):
            parent_name, _, child = name.rpartition(".")
            parent = self.base_model.get_submodule(parent_name) if parent_name else self.base_model
            setattr(parent, child, layer.base_layer)
        for n, p in self.base_model.named_parameters():
            p.requires_grad_(self._base_requires_grad.get(n, p.requires_grad))
        self.adapted_modules = []
        return self.base_model
