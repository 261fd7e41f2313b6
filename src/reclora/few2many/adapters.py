"""The two LLM adapters trained in the same harness: vanilla LoRA (peft) and RecLoRA.

Both expose the same small interface so the trainer and the predictor treat them
alike; only RecLoRA reads the per-sample CRM signal.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reclora.errors import ConfigError, RecLoRAError
from reclora.io import atomic_dir, loads_json, read_json
from reclora.lora import PersonalizedLoRAConfig, PersonalizedLoRAModel

KINDS = ("lora", "reclora")


READOUTS = ("llm", "crm_residual")
READOUT_WEIGHTS = "readout.safetensors"


class AdapterModel:
    """A base causal LM with a trainable adapter; ``answer_logits`` gives fp32 answer logits at the end.

    ``config["readout"]`` (params ``adapter.readout``): "llm" = the paper's readout, the Yes and No
    logits of the LLM; "crm_residual" = a CRM-anchored readout, logit = z_crm + s * (yes - no) with a
    learned scalar s that starts at 0 (so the untrained model is exactly the CRM).
    The lowest adapted decoder layer is ``first_layer``: everything below it is frozen, so its output
    can be computed once per sample and cached (see ``lower_states``).
    """

    def __init__(self, kind: str, module: nn.Module, config: dict[str, Any]) -> None:
        from reclora.llm.layers import decoder_stack, layer_index

        if kind not in KINDS:
            raise RecLoRAError(f"unknown adapter kind {kind!r}; expected one of {KINDS}")
        self.kind, self.module, self.config = kind, module, config
        self.readout = str(config.get("readout", "llm"))
        if self.readout not in READOUTS:
            raise ConfigError(f"adapter.readout must be one of {READOUTS}, got {self.readout!r}")
        self.readout_scale: nn.Parameter | None = None
        if self.readout == "crm_residual":
            dev = next(module.parameters()).device
            self.readout_scale = nn.Parameter(torch.zeros((), dtype=torch.float32, device=dev))
        self.decoder = decoder_stack(module)
        idx = [layer_index(n) for n, _ in module.named_parameters() if "lora_" in n or ".gate." in n]
        self.first_layer = min(idx, default=0) if idx and None not in idx else 0

    @property
    def uses_signal(self) -> bool:
        """True when the model reads each sample's CRM signal h: RecLoRA with ``gate`` "crm" (not vanilla LoRA,
        not the uniform-gate ablation)."""
        return self.kind == "reclora" and self.config.get("gate", "crm") == "crm"

    @property
    def uses_anchor(self) -> bool:
        """True when the readout needs each sample's CRM logit (``anchor``)."""
        return self.readout == "crm_residual"

    def named_trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) of every trainable tensor: the adapter's (LoRA, or banks and gates) and, with the
        crm_residual readout, ``readout.scale``."""
        yield from ((n, p) for n, p in self.module.named_parameters() if p.requires_grad)
        if self.readout_scale is not None:
            yield "readout.scale", self.readout_scale

    def train(self, mode: bool = True) -> None:
        """Put the wrapped module in train (``mode`` True) or eval mode, as nn.Module.train."""
        self.module.train(mode)

    def output_head(self) -> nn.Linear:
        """The base model's lm_head (the output embedding)."""
        m = self.module
        head = m.get_output_embeddings() if hasattr(m, "get_output_embeddings") else None
        if head is None:
            head = m.base_model.get_output_embeddings()
        return head

    def _personalized(self, signal: torch.Tensor | None):
        if self.kind != "reclora":
            return contextlib.nullcontext()
        if self.uses_signal and signal is None:
            raise RecLoRAError("RecLoRA needs the CRM signal h for every sample")
        return self.module.personalize(signal if self.uses_signal else None)  # uniform gate: w = 1/N

    @torch.no_grad()
    def lower_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, L, D] input of decoder layer ``first_layer`` (the frozen layers' output; no grad).

        Padding-independent: positions come from the mask (``reclora.llm.layers.position_ids``).
        """
        from reclora.llm.layers import only_layers, position_ids

        with only_layers(self.decoder, 0, self.first_layer, final_norm=False):
            out = self.decoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids(attention_mask),
                use_cache=False,
            )
        return out.last_hidden_state.float()

    def answer_hidden(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor,
        signal: torch.Tensor | None = None,
        lower: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[B, D] final (normed) hidden state at the last position, the lm_head's input.

        With ``lower`` ([B, L, D] from :meth:`lower_states`) only the adapted layers run; the result
        equals the full forward. No vocabulary projection is computed.
        """
        from reclora.llm.layers import only_layers, position_ids

        pos = position_ids(attention_mask)
        with self._personalized(signal):
            if lower is None:
                out = self.decoder(
                    input_ids=input_ids, attention_mask=attention_mask, position_ids=pos, use_cache=False
                )
            else:
                with only_layers(self.decoder, self.first_layer):
                    out = self.decoder(
                        inputs_embeds=lower, attention_mask=attention_mask, position_ids=pos, use_cache=False
                    )
        return out.last_hidden_state[:, -1, :]

    def answer_logits(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor,
        signal: torch.Tensor | None = None,
        token_ids: Sequence[int] | None = None,
        lower: torch.Tensor | None = None,
        anchor: torch.Tensor | None = None,
        readout: bool = True,
    ) -> torch.Tensor:
        """fp32 answer logits at the last position (prompts are left-padded: the answer slot).

        ``token_ids``: only these lm_head rows ([B, len(token_ids)]), e.g. (yes, no); None = the
        whole vocabulary ([B, vocab]). The body runs under whatever autocast is active, but the
        readout is one fp32 product of the final hidden state with the chosen lm_head rows: bf16
        logits (steps of 1/16 at magnitude 16-32) would quantize p(Yes) into a few dozen values.
        ``lower``: cached frozen-layer states (see :meth:`answer_hidden`). ``anchor`` [B] or [B, 1]:
        the CRM logit, required by the crm_residual readout, which returns [B, 2] = [z + s (yes - no), 0]
        (so softmax(...)[:, 0] = sigmoid(z + s (yes - no))); ``token_ids`` must then be (yes, no).
        ``readout=False``: the text path's own logits, without the anchor (see :meth:`anchored`).
        """
        last = self.answer_hidden(input_ids, attention_mask, signal, lower)
        head = self.output_head()
        weight = head.weight if token_ids is None else head.weight[list(token_ids)]
        with torch.autocast(last.device.type, enabled=False):
            logits = nn.functional.linear(last.float(), weight.float())
        if self.readout_scale is None or not readout:
            return logits
        if token_ids is None or len(token_ids) != 2 or anchor is None:
            raise RecLoRAError("the crm_residual readout needs token_ids=(yes, no) and the CRM logit (anchor)")
        return self.anchored(logits, anchor)

    def anchored(self, logits: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        """The crm_residual readout of the text path's (yes, no) logits [B, 2] and the CRM logit z [B]
        or [B, 1]: [B, 2] fp32 = [z + s (yes - no), 0], so softmax(...)[:, 0] = sigmoid(z + s (yes - no)).
        Raises RecLoRAError when the readout is the LLM's own (no s)."""
        if self.readout_scale is None:
            raise RecLoRAError("anchored(): this adapter's readout is 'llm' (no CRM anchor)")
        with torch.autocast(logits.device.type, enabled=False):
            z = anchor.reshape(-1).float().to(logits.device)
            out = z + self.readout_scale * (logits[:, 0].float() - logits[:, 1].float())
            return torch.stack([out, torch.zeros_like(out)], dim=-1)

    def save(self, directory: str | Path) -> Path:
        """Adapter weights (safetensors) + config (JSON); the base model is referenced, not copied."""
        directory = Path(directory)
        with atomic_dir(directory) as tmp:
            if self.kind == "lora":
                self.module.save_pretrained(str(tmp), safe_serialization=True)
            else:
                self.module.save(tmp)
            if self.readout_scale is not None:
                from safetensors.torch import save_file

                save_file({"scale": self.readout_scale.detach().cpu().reshape(1)}, str(tmp / READOUT_WEIGHTS))
            (tmp / "reclora_adapter.json").write_text(json.dumps({"kind": self.kind, **self.config}, indent=2))
        return directory


def build_adapter(kind: str, base_model: nn.Module, config: dict[str, Any]) -> AdapterModel:
    """Attach a fresh adapter to ``base_model`` (which it modifies in place and freezes).

    ``config["layers"]`` ("all" or L): adapt ``target_modules`` in every decoder layer (the paper's
    form) or only in the top L layers. Raises ConfigError for an unknown kind, readout or layers.
    """
    from reclora.llm.layers import first_adapted_layer, num_layers, target_names

    for p in base_model.parameters():
        p.requires_grad_(False)
    config = dict(config)
    layers = config.get("layers", "all")
    if layers not in ("all", None, 0):
        first = first_adapted_layer(num_layers(base_model), layers)
        config["target_modules"] = target_names(base_model, list(config["target_modules"]), first)
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


def check_shared_lora_dir(lora_dir: str | Path) -> Path:
    """``lora_dir`` as a saved vanilla LoRA adapter for two-stage RecLoRA, checked before any model
    loads. Raises RecLoRAError saying what is there instead: nothing, a run directory (pass its
    adapter/), a RecLoRA adapter, or something else."""
    d = Path(lora_dir)
    if not str(lora_dir).strip():
        raise RecLoRAError("--init-from / init_from is empty: give the OUT/adapter of a `train llm --kind lora` run")
    if not d.is_dir():
        raise RecLoRAError(f"{d} does not exist: give the OUT/adapter of a `train llm --kind lora` run")
    meta = d / "reclora_adapter.json"
    if not meta.is_file():
        if (d / "adapter" / "reclora_adapter.json").is_file():
            raise RecLoRAError(f"{d} is a training run's output; pass its adapter directory: {d / 'adapter'}")
        raise RecLoRAError(
            f"{d} is not a saved adapter (no reclora_adapter.json); give the OUT/adapter of a `train llm --kind lora` run"
        )
    try:
        kind = loads_json(meta.read_text()).get("kind")
    except (ValueError, AttributeError) as e:
        raise RecLoRAError(f"{meta} is not valid adapter JSON: {e}") from None
    if kind != "lora":
        raise RecLoRAError(
            f"{d} is a {kind!r} adapter; two-stage RecLoRA starts from a vanilla LoRA (`train llm --kind lora`)"
        )
    if not ((d / "adapter_config.json").is_file() and (d / "adapter_model.safetensors").is_file()):
        raise RecLoRAError(f"{d}: the peft files adapter_config.json and adapter_model.safetensors are missing")
    return d


def init_from_shared_lora(adapter: AdapterModel, lora_dir: str | Path) -> int:
    """Two-stage RecLoRA: every meta-LoRA of every bank starts as the trained shared (vanilla) LoRA saved
    in ``lora_dir`` (``AdapterModel.save`` of kind "lora"), as the official code's finetune mode does.

    Module by module, A [r, in] is copied into all N slots of the bank's A [N, r, in] and B [out, r]
    into B [N, out, r] (rescaled when the two scalings alpha / r differ), so whatever the gates say
    the mixed update equals the shared LoRA's: the untrained RecLoRA predicts what the vanilla LoRA
    does, and training then learns the CRM-conditioned mixing (the experts part as the gates weigh
    them differently). Returns the number of banks set. Raises RecLoRAError when ``adapter`` is not a
    RecLoRA, ``lora_dir`` holds no vanilla LoRA, or their modules or ranks differ.
    """
    from safetensors.torch import load_file

    from reclora.lora.layer import PersonalizedLoRALinear

    if adapter.kind != "reclora":
        raise RecLoRAError(f"init_from_shared_lora: the adapter is {adapter.kind!r}, not a RecLoRA")
    d = check_shared_lora_dir(lora_dir)
    cfg, weights = d / "adapter_config.json", d / "adapter_model.safetensors"
    pc = read_json(cfg)
    shared_scale = float(pc["lora_alpha"]) / float(pc["r"])
    w = load_file(str(weights))
    shared = {
        k[: -len(".lora_A.weight")].removeprefix("base_model.model."): (w[k], w[k.replace(".lora_A.", ".lora_B.")])
        for k in w
        if k.endswith(".lora_A.weight")
    }
    banks = {
        n.removeprefix("base_model."): m
        for n, m in adapter.module.named_modules()
        if isinstance(m, PersonalizedLoRALinear)
    }
    if set(banks) != set(shared):
        only_b, only_s = sorted(set(banks) - set(shared))[:3], sorted(set(shared) - set(banks))[:3]
        raise RecLoRAError(
            f"{d}: the shared LoRA adapts other modules than this RecLoRA (only here: {only_b}; only there: {only_s})"
        )
    with torch.no_grad():
        for name, bank in banks.items():
            a, b = shared[name]
            if tuple(a.shape) != tuple(bank.lora_A.shape[1:]) or tuple(b.shape) != tuple(bank.lora_B.shape[1:]):
                raise RecLoRAError(
                    f"{d}: {name} has A {tuple(a.shape)}, B {tuple(b.shape)}; the bank needs "
                    f"{tuple(bank.lora_A.shape[1:])}, {tuple(bank.lora_B.shape[1:])} (same rank and targets)"
                )
            bank.lora_A.copy_(a.to(bank.lora_A).expand_as(bank.lora_A))
            bank.lora_B.copy_((b.float() * (shared_scale / float(bank.scaling))).to(bank.lora_B).expand_as(bank.lora_B))
    return len(banks)


def load_adapter(base_model: nn.Module, directory: str | Path) -> AdapterModel:
    """Load a saved adapter onto ``base_model`` (safetensors + JSON only)."""
    directory = Path(directory)
    meta_path = directory / "reclora_adapter.json"
    if not meta_path.is_file():
        raise RecLoRAError(f"{directory} is not a saved adapter (no reclora_adapter.json)")
    meta = read_json(meta_path)
    kind = meta.pop("kind")
    for p in base_model.parameters():
        p.requires_grad_(False)
    if kind == "lora":
        from peft import PeftModel

        module = PeftModel.from_pretrained(base_model, str(directory), is_trainable=False)
        adapter = AdapterModel(kind, module, meta)
    else:
        adapter = AdapterModel(kind, PersonalizedLoRAModel.load(base_model, directory), meta)
    if adapter.readout_scale is not None:
        from safetensors.torch import load_file

        f = directory / READOUT_WEIGHTS
        if not f.is_file():
            raise RecLoRAError(f"{directory}: the crm_residual readout's {READOUT_WEIGHTS} is missing")
        with torch.no_grad():
            adapter.readout_scale.copy_(load_file(str(f))["scale"].reshape(()))
    return adapter
