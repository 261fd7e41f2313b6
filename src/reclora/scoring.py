"""The one path from samples to p(click): the LLM stage's evaluation, the champion re-score and the KServe
predictor all score through :func:`score_samples`, so a served score is the offline one.

    samples (+ item/user features) -> CRM signals h / anchors z -> prompts -> personalized LoRA -> p(click)

    inputs = scoring_inputs(samples, items, users, style, crm, gate_input="hidden", anchors=False)
    p = score_samples(model, samples, items, users, batch_size=16, precision="fp32")

``samples`` are retrieved samples: one row per (user, target item) with the retrieved histories the prompt
and the CRM read (``short_item_ids``/``short_ratings``, ``long_item_ids``/``long_ratings``: see
:mod:`reclora.retrieval`) besides user_id, item_id and timestamp.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from reclora.crm import CRMFeaturizer, crm_signals
from reclora.crm.model import DIN
from reclora.errors import RecLoRAError
from reclora.few2many import AdapterModel, predict_adapter
from reclora.precision import Precision
from reclora.prompts import build_prompts


@dataclass(frozen=True)
class PromptStyle:
    """How a data set's prompt reads: the item ``noun`` ("movie", "book") and the rating ``threshold`` at or
    above which a history item counts as liked (the data set's label threshold, in stars)."""

    noun: str = "movie"
    threshold: float = 4.0


class ScoringInputs(NamedTuple):
    """What the adapter reads per sample.

    Attributes:
        prompts: the CTR prompt of each sample (:func:`reclora.prompts.build_prompts`), [n].
        signals: the CRM signal the gates read (:func:`reclora.crm.crm_signals`), float32 [n, signal_dim];
            None when the adapter reads none (vanilla LoRA, RecLoRA with a uniform gate).
        anchors: the CRM logit of each sample, float32 [n], for the crm_residual readout; else None.
    """

    prompts: list[str]
    signals: np.ndarray | None
    anchors: np.ndarray | None


@dataclass
class ScoringModel:
    """A trained model ready to score: the adapter on its base LLM, the tokenizer, the CRM that feeds its
    gates and anchors, how its prompts read, and the prompt length it was trained with (tokens)."""

    adapter: AdapterModel
    tokenizer: Any
    crm: DIN | None
    featurizer: CRMFeaturizer | None
    style: PromptStyle
    max_length: int

    @property
    def gate_input(self) -> str | None:
        """What of the CRM the gates read (``adapter.gate_input``), or None when the adapter reads no signal."""
        return str(self.adapter.config.get("gate_input", "hidden")) if self.adapter.uses_signal else None


def scoring_inputs(
    samples: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame | None,
    style: PromptStyle,
    crm: tuple[DIN, CRMFeaturizer] | None = None,
    gate_input: str | None = None,
    anchors: bool = False,
) -> ScoringInputs:
    """The prompts of ``samples`` (titles from ``items``, profiles from ``users``, when given), with the CRM's
    signals (``gate_input``: "hidden" | "score" | "hidden+score"; None = no signals) and anchors (its logits,
    when ``anchors``), from ``crm`` = (model, featurizer). Raises RecLoRAError when signals or anchors are
    asked for without a CRM."""
    if crm is None and (gate_input is not None or anchors):
        raise RecLoRAError("the CRM signals and anchors need a trained CRM")
    prompts = build_prompts(samples, items, users, noun=style.noun, threshold=style.threshold)
    sig = crm_signals(crm[0], crm[1], samples, gate_input) if crm is not None and gate_input is not None else None
    z = crm_signals(crm[0], crm[1], samples, "score")[:, 0] if crm is not None and anchors else None
    return ScoringInputs(prompts, sig, z)


def score_samples(
    model: ScoringModel,
    samples: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame | None,
    *,
    batch_size: int,
    precision: Precision | str = "auto",
    progress: bool = False,
    distributed: bool | None = False,
    cache_dir: str | Path | None = None,
    on_inputs: Callable[[ScoringInputs], None] | None = None,
) -> np.ndarray:
    """p(click) of every row of the retrieved ``samples``, float64 [n]: the inputs the adapter reads
    (:func:`scoring_inputs`: prompts, and the CRM's signals/anchors when ``model.adapter`` uses them), then
    :func:`reclora.few2many.predict_adapter` in batches of ``batch_size`` (prompts sorted by length).

    ``precision``: a chosen :class:`~reclora.precision.Precision` or auto | fp32 | bf16 | fp16 (decided on
    the adapter's device). ``distributed``: as :func:`~reclora.few2many.predict_adapter` (None = every rank of
    a torchrun process group scores its share; every rank must call it). ``cache_dir``: frozen-layer states
    shared with other runs on the same prompts. ``on_inputs``: called with the inputs before the forward (the
    predictor counts rows and tokens there). Raises RecLoRAError when the adapter needs a CRM it lacks.
    """
    crm = (model.crm, model.featurizer) if model.crm is not None and model.featurizer is not None else None
    inputs = scoring_inputs(samples, items, users, model.style, crm, model.gate_input, model.adapter.uses_anchor)
    if on_inputs is not None:
        on_inputs(inputs)
    return predict_adapter(
        model.adapter,
        model.tokenizer,
        inputs.prompts,
        inputs.signals,
        batch_size=batch_size,
        max_length=model.max_length,
        precision=precision,
        progress=progress,
        distributed=distributed,
        anchors=inputs.anchors,
        cache_dir=cache_dir,
    )
