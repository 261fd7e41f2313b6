"""The typed params: :class:`Params`, one frozen dataclass section per top-level key of params.yaml, and
:func:`validated`, what every edge (CLI command, KFP component, torchrun entry point, Spark driver) runs once
on the params it loaded before any work.

    params = validated(load_params_with(overrides, profile))   # a plain dict, checked; ConfigError naming the key
    typed = Params.from_dict(params)                            # the sections: typed.train.lr, typed.pipeline.gpu

The library's entry points take either (``params: Params | Mapping[str, Any]``) and read the sections through
:func:`as_params`: a :class:`Params` passes through, a mapping is read by :meth:`Params.from_dict`.

The values live in params.yaml only: the sections have no defaults (except :class:`PromotionRules`, whose
defaults a test keeps equal to params.yaml's). ``profiles`` stays a mapping of named overrides; each is
checked by applying it (:meth:`Params.from_dict`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from reclora.config.data_sections import DataSection, FeaturesSection, SyntheticSection, ValidationSection
from reclora.config.fields import Section, setting
from reclora.config.loader import deep_merge
from reclora.config.model_sections import (
    AdapterSection,
    BenchSection,
    CRMSection,
    EvaluationSection,
    ModelSection,
    RetrievalSection,
    TrainSection,
)
from reclora.config.pipeline_sections import PipelineSection
from reclora.errors import ConfigError


@dataclass(frozen=True)
class Params(Section):
    """The whole of params.yaml, typed (see the module docstring).

    :meth:`from_dict` is strict: an unknown section or key is a ConfigError naming it and the known ones, a
    value of the wrong type or out of range one naming its key (``train.lr must be > 0, got -1``); every
    profile must give valid params when applied. :meth:`to_dict` gives the mapping back (equal to the input
    for params.yaml and each of its profiles applied).
    """

    KEY: ClassVar[str] = ""

    data: DataSection = setting("Which behaviour data and how it is cut into CTR samples.")
    synthetic: SyntheticSection = setting("The seeded synthetic data set.")
    validation: ValidationSection = setting("Bounds on the prepared data (the Great Expectations gate).")
    features: FeaturesSection = setting("Feast: the features training and serving share.")
    model: ModelSection = setting("The base LLM.")
    retrieval: RetrievalSection = setting("Long-short modality retrieval.")
    crm: CRMSection = setting("The DIN-style CRM.")
    adapter: AdapterSection = setting("Vanilla LoRA and RecLoRA adapters.")
    train: TrainSection = setting("Few2Many LLM training.")
    evaluation: EvaluationSection = setting("The evaluate stage.")
    bench: BenchSection = setting("The benchmarks.")
    pipeline: PipelineSection = setting("The KFP pipeline.")
    profiles: dict[str, dict[str, Any]] = setting("Named overrides (`--profile small`), each merged over the rest.")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str | None = None) -> Params:
        """The typed params from a params mapping (params.yaml merged, a profile and overrides applied).

        Raises ConfigError naming the key: an unknown section or key (with the known ones), a missing one, a
        wrong type, a value out of range, or a profile that does not give valid params when applied."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"params must be a mapping of sections, got {d!r}")
        out: Params = super().from_dict(d, where)
        base = {k: v for k, v in d.items() if k != "profiles"}
        for name, overrides in out.profiles.items():
            if "profiles" in overrides:
                raise ConfigError(f"profiles.{name}: a profile cannot hold profiles")
            try:
                super().from_dict({**deep_merge(base, overrides), "profiles": {}}, where)
            except ConfigError as e:
                raise ConfigError(f"profiles.{name}: {e}") from None
        return out

    def updated(self, **sections: Mapping[str, Any]) -> Params:
        """A copy with some keys of some sections replaced, each checked as its section checks it:
        ``params.updated(train={"sample_size": 64}, adapter={"readout": "crm_residual"})``. Raises ConfigError for
        a value the section refuses, TypeError for a key it does not have."""
        return dataclasses.replace(
            self, **{name: dataclasses.replace(getattr(self, name), **changes) for name, changes in sections.items()}
        )


def validated(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` checked through :meth:`Params.from_dict` and returned as they are (the plain dict the
    library functions take). Raises ConfigError naming the key of the first fault."""
    Params.from_dict(params)
    return params if isinstance(params, dict) else copy.deepcopy(dict(params))


def as_params(params: Params | Mapping[str, Any]) -> Params:
    """``params`` typed: a :class:`Params` as it is, a params mapping (params.yaml merged, a profile and overrides
    applied) through :meth:`Params.from_dict`. What a library entry point runs on the ``params`` it is given.
    Raises ConfigError naming the key of the first fault of a mapping."""
    return params if isinstance(params, Params) else Params.from_dict(params)
