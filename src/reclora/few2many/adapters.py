"""The two LLM adapters trained in the same harness: vanilla LoRA (peft) and RecLoRA.

Both expose the same small interface so the trainer and the predictor treat them
alike; only RecLoRA reads the per-sample CRM signal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from reclora.errors import RecLoRAError
from reclora.io import atomic_dir
from reclora.lora import PersonalizedLoRAConfig, PersonalizedLoRAModel

KINDS = ("lora", "reclora")


class AdapterModel:
    """A base causal LM with a trainable adapter; ``answer_logits`` gives fp32 next-token logits at the end."""

    def __init__(self, kind: str, module: nn.Module, config: dict[str, Any]) -> None:
        if kind not in KINDS:
            raise RecLoRAError(f"unknown adapter kind {kind!r}; expected one of {KINDS}")
        self.kind, self.module, self.config = kind, module, config

    @property
    def uses_signal(self) -> bool:
        return self.kind == "reclora" and self.config.get("gate", "crm") == "crm"

    def named_trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.module.named_parameters() if p.requires_grad)

    def train(self, mode: bool = True) -> None:
        self.module.train(mode)

    def output_head(self) -> nn.Linear:
        """The base model's lm_head (the output embedding)."""
        m = self.module
        head = m.get_output_embeddings() if hasattr(m, "get_output_embeddings") else None
        if head is None:
            head = m.base_model.get_output_embeddings()
        return head

    def answer_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        signal: torch.Tensor | None = None,
        token_ids: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """fp32 next-token logits at the last position (prompts are left-padded: the answer slot).

        ``token_ids``: only these vocabulary rows ([B, len(token_ids)]), e.g. (yes, no); None = the
        whole vocabulary ([B, vocab]). The body runs under whatever autocast is active, but the
        readout is one fp32 product of the final hidden state with the lm_head rows: bf16 logits
        (steps of 1/16 at magnitude 16-32) would quantize p(Yes) into a few dozen values.
        """
        kw: dict[str, Any] = {
            "input_ids": input_ids, "attention_mask": attention_mask, "logits_to_keep": 1, "use_cache": False,
        }  # fmt: skip
        if self.kind == "reclora":
            if self.uses_signal and signal is None:
                raise RecLoRAError("RecLoRA needs the CRM signal h for every sample")
            kw["signal"] = signal if self.uses_signal else None  # uniform gate: w = 1/N
        head = self.output_head()
        seen: list[torch.Tensor] = []
        hook = head.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
        try:
            self.module(**kw)
        finally:
            hook.remove()
        last = seen[-1][:, -1, :]
        weight = head.weight if token_ids is None else head.weight[list(token_ids)]
        with torch.autocast(last.device.type, enabled=False):
            return nn.functional.linear(last.float(), weight.float())

    def save(self, directory: str | Path) -> Path:
        """Adapter weights (safetensors) + config (JSON); the base model is referenced, not copied."""
        directory = Path(directory)
        with atomic_dir(directory) as tmp:
            if self.kind == "lora":
                self.module.save_pretrained(str(tmp), safe_serialization=True)
            else:
                self.module.save(tmp)
            (tmp / "reclora_adapter.json").write_text(json.dumps({"kind": self.kind, **self.config}, indent=2))
        return directory


def build_adapter(kind: str, base_model: nn.Module, config: dict[str, Any]) -> AdapterModel:
    """Attach a fresh adapter to ``base_model`` (which it modifies in place and freezes)."""
    for p in base_model.parameters():
        p.requires_grad_(False)
    if kind == "lora":
        from peft import LoraConfig, get_peft_model

        peft_cfg = LoraConfig(
            r=int(config["rank"]),
            lora_alpha=float(config["alpha"]),
            lora_dropout=float(config.get("dropout", 0.0)),
            target_modules=list(config["target_modules"]),
            bias="none",
            task_type="CAUSAL_LM",
        )
        return AdapterModel(kind, get_peft_model(base_model, peft_cfg), dict(config))
    if kind == "reclora":
        fields = PersonalizedLoRAConfig.__dataclass_fields__
        cfg = PersonalizedLoRAConfig(**{k: v for k, v in config.items() if k in fields})
        return AdapterModel(kind, PersonalizedLoRAModel(base_model, cfg), dict(config))
    raise RecLoRAError(f"unknown adapter kind {kind!r}; expected one of {KINDS}")


def load_adapter(base_model: nn.Module, directory: str | Path) -> AdapterModel:
    """Load a saved adapter onto ``base_model`` (safetensors + JSON only)."""
    directory = Path(directory)
    meta_path = directory / "reclora_adapter.json"
    if not meta_path.is_file():
        raise RecLoRAError(f"{directory} is not a saved adapter (no reclora_adapter.json)")
    meta = json.loads(meta_path.read_text())
    kind = meta.pop("kind")
    for p in base_model.parameters():
        p.requires_grad_(False)
    if kind == "lora":
        from peft import PeftModel

        module = PeftModel.from_pretrained(base_model, str(directory), is_trainable=False)
        return AdapterModel(kind, module, meta)
    return AdapterModel(kind, PersonalizedLoRAModel.load(base_model, directory), meta)
