"""Few2Many training settings: :class:`TrainConfig`, the typed form of params.yaml's ``train`` section."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from reclora.errors import ConfigError

LOSSES = ("yes_no", "full_vocab")


@dataclass
class TrainConfig:
    """Few2Many training settings (params.yaml ``train``).

    epochs / patience: passes over the sample; after each the validation subset's AUC is measured
    (when validation data is given) and the best weights are kept; training stops after
    ``patience`` epochs without a gain (0 = run every epoch). bucket: length-bucketed batches (little
    padding). cache_lower: compute the frozen layers below the first adapted one once per sample.
    lr_ratio_b: learning-rate multiplier of the LoRA B matrices (LoRA+, Hayou et al. 2024);
    gate_lr_mult: multiplier for the gates and the crm_residual readout scale.
    text_loss_weight (crm_residual readout only): weight of the text path's own Yes/No log-loss,
    added to the anchored readout's. The anchored loss alone gives the adapter no gradient while
    s = 0 (d loss / d (yes - no) = s (p - y)), so without it the text path starts dead and s stays ~0.
    """

    lr: float = 1e-3
    batch_size: int = 8
    grad_accum: int = 1
    epochs: int = 1
    patience: int = 0
    max_steps: int = 0  # 0 = epochs * ceil(n / (batch_size * grad_accum))
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_length: int = 384
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (see reclora.precision); resolved on the training device
    seed: int = 0
    checkpoint_every: int = 20  # optimizer steps; 0 = never
    max_grad_norm: float = 1.0
    loss: str = "yes_no"  # yes_no: CE over the (Yes, No) logits, the readout's own log-loss | full_vocab
    bucket: bool = True
    cache_lower: bool = True
    lr_ratio_b: float = 1.0
    gate_lr_mult: float = 1.0
    text_loss_weight: float = 0.0

    def __post_init__(self) -> None:
        """Raises ConfigError (a ValueError) naming the setting and its value."""
        if self.loss not in LOSSES:
            raise ConfigError(f"train.loss must be one of {LOSSES}, got {self.loss!r}")
        from reclora.precision import PRECISIONS

        if self.precision not in PRECISIONS:
            raise ConfigError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("batch_size", "grad_accum", "epochs"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)!r}")
        if int(self.patience) < 0:
            raise ConfigError(f"train.patience must be >= 0, got {self.patience!r}")
        positive = ("lr", "lr_ratio_b", "gate_lr_mult")
        for name in (*positive, "text_loss_weight", "weight_decay", "warmup_ratio", "max_grad_norm"):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not ok or (v <= 0 if name in positive else v < 0):  # NaN and inf included: never a silent no-op
                raise ConfigError(
                    f"train.{name} must be a finite number {'>' if name in positive else '>='} 0, got {v!r}"
                )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """From a ``train`` params section (unknown keys ignored; an older file's ``bf16: true|false``
        is read as ``precision: bf16|fp32``, see :func:`reclora.precision.requested_precision`)."""
        from reclora.precision import requested_precision

        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names} | {"precision": requested_precision(d)})
