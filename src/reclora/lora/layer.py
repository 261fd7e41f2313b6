"""The personalized LoRA layer: a frozen nn.Linear plus a bank of N meta-LoRAs and a gate.

For a batch of samples (many users) with per-sample mixing weights w [B, N]:

* parameter-level mixing (RecLoRA's official choice)::

      A_u = sum_k w_uk A_k,  B_u = sum_k w_uk B_k,  delta_u = scaling * B_u A_u dropout(x_u)

* output-level mixing::

      delta_u = scaling * sum_k w_uk B_k A_k dropout(x_u)

Both are computed for the whole batch in a few batched matmuls; no [B, out, in]
matrix is ever built and there is no Python loop over samples or experts. The bank
and the gate are fp32 parameters; under ``torch.autocast`` the matmuls run in the
autocast dtype while the gate (a tiny MLP) always runs in fp32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from reclora.lora.config import PersonalizedLoRAConfig


class MixingGate(nn.Module):
    """CRM signal [B, signal_dim] -> mixing weights w [B, N] (rows sum to 1): softmax(logits / temperature).

    ``gate_input`` (see :class:`PersonalizedLoRAConfig`): "hidden": logits = MLP(h), the MLP being
    LayerNorm -> Linear -> ReLU -> Dropout -> Linear; "score": logits = z u + c for the CRM logit z
    (one weight and bias per expert); "hidden+score": signal = [h, z], logits = MLP(h) + z u + c.
    """

    def __init__(
        self,
        signal_dim: int,
        hidden: int,
        n_experts: int,
        dropout: float = 0.0,
        temperature: float = 1.0,
        gate_input: str = "hidden",
        *,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        f32 = torch.float32
        self.gate_input = gate_input
        self.uses_hidden = gate_input in ("hidden", "hidden+score")
        self.uses_score = gate_input in ("score", "hidden+score")
        h_dim = signal_dim - (1 if self.uses_score else 0)
        if self.uses_hidden:
            self.norm = nn.LayerNorm(h_dim, device=device, dtype=f32)
            self.fc1 = nn.Linear(h_dim, hidden, device=device, dtype=f32)
            self.act = nn.ReLU()
            self.drop = nn.Dropout(dropout)
            self.fc2 = nn.Linear(hidden, n_experts, device=device, dtype=f32)
        if self.uses_score:
            # random slopes so that experts differ along z from the start (as fc2's random init does for h)
            self.score_weight = nn.Parameter(0.5 * torch.randn(n_experts, device=device, dtype=f32))
            self.score_bias = nn.Parameter(torch.zeros(n_experts, device=device, dtype=f32))
        self.temperature = float(temperature)

    def logits(self, signal: torch.Tensor) -> torch.Tensor:
        """Gate logits [B, N] (before the temperature) for signal [B, signal_dim]; fp32 even under autocast."""
        # The gate is tiny: run it in fp32 even under autocast, so that low
        # temperatures do not amplify bf16 rounding of the logits.
        with torch.autocast(signal.device.type, enabled=False):
            x = signal.float()
            out = torch.zeros(x.shape[0], 1, device=x.device, dtype=torch.float32)
            if self.uses_hidden:
                h = x[:, :-1] if self.uses_score else x
                out = self.fc2(self.drop(self.act(self.fc1(self.norm(h)))))
            if self.uses_score:
                out = out + x[:, -1:] * self.score_weight + self.score_bias
            return out

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        """Mixing weights w [B, N] over the meta-LoRA bank for signal [B, signal_dim]: softmax(logits /
        temperature), fp32, rows sum to 1."""
        return torch.softmax(self.logits(signal).float() / self.temperature, dim=-1)

    def extra_repr(self) -> str:
        """gate_input and temperature, for the module's repr (as nn.Module.extra_repr)."""
        return f"gate_input={self.gate_input!r}, temperature={self.temperature}"


def uniform_weights(batch: int, n_experts: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The no-signal ablation: w = 1/N for every sample."""
    return torch.full((batch, n_experts), 1.0 / n_experts, device=device, dtype=torch.float32)


def mixing_entropy(weights: torch.Tensor, normalized: bool = True) -> torch.Tensor:
    """Per-sample entropy of mixing weights [B, N] (divided by log N when ``normalized``).

    1 = uniform mixing, 0 = one expert only (a collapsed gate).
    """
    w = weights.float()
    ent = -torch.special.xlogy(w, w).sum(-1)  # 0 * log 0 = 0
    n = weights.shape[-1]
    return ent / math.log(n) if normalized and n > 1 else ent


def parameter_mixing_delta(
    x: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, weights: torch.Tensor, scaling: float
) -> torch.Tensor:
    """scaling * (sum_k w_k B_k) (sum_k w_k A_k) x for each sample, batched.

    x [B, T, in], lora_A [N, r, in], lora_B [N, out, r], weights [B, N] -> [B, T, out].
    Cost: two [B, N] x [N, r*in | out*r] matmuls for the mixing plus the usual
    rank-r LoRA products (as bmm), i.e. about a vanilla LoRA step.
    """
    n, r, d_in = lora_A.shape
    d_out = lora_B.shape[1]
    bsz = x.shape[0]
    w = weights.to(lora_A.dtype)
    a_u = (w @ lora_A.reshape(n, r * d_in)).view(bsz, r, d_in)  # [B, r, in]
    b_u = ((w * scaling) @ lora_B.reshape(n, d_out * r)).view(bsz, d_out, r)  # [B, out, r]
    return torch.bmm(torch.bmm(x, a_u.transpose(1, 2)), b_u.transpose(1, 2))


def output_mixing_delta(
    x: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, weights: torch.Tensor, scaling: float
) -> torch.Tensor:
    """scaling * sum_k w_k B_k A_k x for each sample, batched.

    Computed as one rank-(N*r) LoRA whose middle is scaled per sample:
    z = x [A_1; ...; A_N]^T  ([B, T, N*r]), z *= w (per sample, per expert),
    delta = z [B_1, ..., B_N]^T. Cost: about N times a rank-r LoRA.
    """
    n, r, d_in = lora_A.shape
    d_out = lora_B.shape[1]
    bsz, t = x.shape[0], x.shape[1]
    z = F.linear(x, lora_A.reshape(n * r, d_in)).view(bsz, t, n, r)
    z = z * (weights * scaling).to(z.dtype).view(bsz, 1, n, 1)
    b_cat = lora_B.permute(1, 0, 2).reshape(d_out, n * r)  # [out, N*r], expert-major like z
    return F.linear(z.view(bsz, t, n * r), b_cat)


class PersonalizedLoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a personalized low-rank update.

    The per-sample signal (CRM hidden vector h, [B, signal_dim]) or explicit mixing
    weights ([B, N]) are set from outside for the duration of a forward
    (:class:`reclora.lora.model.PersonalizedLoRAModel` does this); the layer itself
    keeps the ordinary ``forward(x)`` signature so it can sit inside any HF model.
    """

    def __init__(self, base_layer: nn.Linear, config: PersonalizedLoRAConfig) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"PersonalizedLoRALinear wraps nn.Linear, got {type(base_layer).__name__}")
        self.base_layer = base_layer
        for p in self.base_layer.parameters():
            p.requires_grad_(False)
        self.in_features = base_layer.in_features
        self.out_features = base_layer.out_features
        self.n_experts = config.n_experts
        self.rank = config.rank
        self.scaling = config.scaling
        self.mixing = config.mixing
        device = base_layer.weight.device
        f32 = torch.float32
        n, r = config.n_experts, config.rank
        self.lora_A = nn.Parameter(torch.empty(n, r, self.in_features, device=device, dtype=f32))
        self.lora_B = nn.Parameter(torch.zeros(n, self.out_features, r, device=device, dtype=f32))
        self.lora_dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.gate: MixingGate | None = None
        if config.gate == "crm":
            self.gate = MixingGate(
                config.signal_dim,
                config.gate_hidden,
                config.n_experts,
                config.gate_dropout,
                config.temperature,
                config.gate_input,
                device=device,
            )
        self.signal_dim = config.signal_dim
        self.disabled = False
        self._signal: torch.Tensor | None = None
        self._weights: torch.Tensor | None = None
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        """A_k: kaiming-uniform(a=sqrt(5)) per expert, as LoRA's A; B_k: zero."""
        with torch.no_grad():
            for k in range(self.n_experts):
                nn.init.kaiming_uniform_(self.lora_A[k], a=math.sqrt(5))
            self.lora_B.zero_()

    # --- per-forward state ----------------------------------------------------------

    def set_signal(self, signal: torch.Tensor | None) -> None:
        """Set the CRM signal [B, signal_dim] the gate reads on the next forwards (None clears it)."""
        self._signal = signal

    def set_mixing_weights(self, weights: torch.Tensor | None) -> None:
        """Explicit mixing weights [B, N], overriding the gate (diagnostics, ablations)."""
        self._weights = weights

    def get_state(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The (signal, explicit mixing weights) set on the layer, each possibly None; :meth:`set_state` restores it."""
        return self._signal, self._weights

    def set_state(self, state: tuple[torch.Tensor | None, torch.Tensor | None]) -> None:
        """Restore a (signal, mixing weights) pair taken by :meth:`get_state`."""
        self._signal, self._weights = state

    def clear(self) -> None:
        """Drop the signal and any explicit mixing weights."""
        self._signal = None
        self._weights = None

    def mixing_weights(self, signal: torch.Tensor | None, batch: int | None = None) -> torch.Tensor:
        """The gate's weights for ``signal`` [B, signal_dim] -> [B, N] (fp32)."""
        if self.gate is None:
            if batch is None:
                if signal is None:
                    raise ValueError("uniform gate: need a signal or a batch size")
                batch = signal.shape[0]
            return uniform_weights(batch, self.n_experts, self.lora_A.device)
        if signal is None:
            raise RuntimeError(
                "personalized LoRA: no signal set; call the wrapping PersonalizedLoRAModel "
                "with signal=h (the CRM hidden vector) or pass mixing weights"
            )
        if signal.dim() != 2 or signal.shape[-1] != self.signal_dim:
            raise ValueError(f"signal must be [batch, {self.signal_dim}], got {tuple(signal.shape)}")
        return self.gate(signal)

    def _current_weights(self, batch: int) -> torch.Tensor:
        w = self._weights if self._weights is not None else self.mixing_weights(self._signal, batch)
        if w.dim() != 2 or w.shape[1] != self.n_experts:
            raise ValueError(f"mixing weights must be [batch, {self.n_experts}], got {tuple(w.shape)}")
        if w.shape[0] != batch:
            raise ValueError(f"personalized LoRA: the signal has {w.shape[0]} rows but the input batch has {batch}")
        return w

    # --- forward --------------------------------------------------------------------

    def delta(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The personalized update for x [B, ..., in] with weights [B, N] (no dropout)."""
        bsz = x.shape[0]
        x3 = x.reshape(bsz, -1, self.in_features)
        if not torch.is_autocast_enabled(x.device.type) and x3.dtype != self.lora_A.dtype:
            x3 = x3.to(self.lora_A.dtype)
        fn = parameter_mixing_delta if self.mixing == "parameter" else output_mixing_delta
        out = fn(x3, self.lora_A, self.lora_B, weights, self.scaling)
        return out.reshape(*x.shape[:-1], self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """base_layer(x) + the personalized update of dropout(x), as peft's LoraLayer.forward: x [B, ..., in] ->
        [B, ..., out] in the base output's dtype (the base alone when ``disabled``). Raises RuntimeError when
        the gate has no signal, ValueError when the weights are not [B, N] for this batch."""
        result = self.base_layer(x)
        if self.disabled:
            return result
        w = self._current_weights(x.shape[0])
        return result + self.delta(self.lora_dropout(x), w).to(result.dtype)

    def extra_repr(self) -> str:
        """Sizes, number of experts, rank, scaling and mixing rule, for the module's repr."""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"n_experts={self.n_experts}, rank={self.rank}, scaling={self.scaling}, mixing={self.mixing!r}"
        )
