"""Every component receives the run's profile and overrides and its stage runs with them (a `--set` of
`reclora pipeline run` reaches every step): for each component, its Python function is called with a
profile and an overrides mapping, the library function it hands the work to records the settings it got
(and stops the step there), and the recorded settings must carry both. Components whose library calls
take no settings at all are listed with that fact checked. One real run (the local features step on
Feast) shows an override changing a step's output."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from helpers import FakeArtifact

from components import build_components

# component -> (the library function it calls, as "module:function", how that call receives the settings)
ENTRY = {
    "prepare": ("reclora.data:prepare", "params"),
    "prepare_spark": ("reclora.spark:prepare_on_spark", "params"),
    "validate": ("reclora.validation:validate_prepared", "validation"),
    "features": ("reclora.features:features_stage", "params"),
    "features_spark": ("reclora.spark:features_on_spark", "params"),
    "retrieve": ("reclora.stages:retrieve_stage", "params"),
    "train_crm": ("reclora.stages:crm_stage", "params"),
    "train_llm": ("reclora.launch:train_llm", "params"),
    "register": ("reclora.stages:register_stage", "params"),
    "evaluate": ("reclora.stages:evaluate_stage", "params"),
}
# components that read no settings: (the library functions they call); checked to take none
NO_SETTINGS = {
    "source_version": ("reclora.storage:source_fingerprint",),
}
PROFILE = "small"  # params.yaml: profiles.small.train.sample_size = 96
OVERRIDES = {"crm": {"embed_dim": 12}, "validation": {"min_interactions": 7}, "model": {"path": "/models/override"}}


class Reached(Exception):
    """Raised by the recorder: the step got as far as its library call."""


def _functions() -> dict[str, Any]:
    c = build_components("cpu:1", "gpu:1")
    return {name: getattr(c, name).python_func for name in vars(c) if getattr(c, name) is not None}


def test_every_component_is_covered_and_takes_profile_and_overrides():
    funcs = _functions()
    assert set(funcs) == set(ENTRY) | set(NO_SETTINGS), "a new component: add it to ENTRY or NO_SETTINGS"
    for name in ENTRY:
        sig = inspect.signature(funcs[name]).parameters
        assert {"profile", "overrides"} <= set(sig), f"component {name} does not take the run's profile and overrides"
    for name, calls in NO_SETTINGS.items():
        src = inspect.getsource(funcs[name])
        for target in calls:
            mod, fn = target.split(":")
            assert fn in src, f"{name} no longer calls {fn}: update NO_SETTINGS"
            params = inspect.signature(getattr(__import__(mod, fromlist=[fn]), fn)).parameters
            assert "params" not in params, f"{fn} now takes settings: component {name} must take profile and overrides"


def _args(name: str, fn: Any, tmp_path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pname, p in inspect.signature(fn).parameters.items():
        if pname == "profile":
            out[pname] = PROFILE
        elif pname == "overrides":
            out[pname] = OVERRIDES
        elif p.annotation in (str, "str"):
            out[pname] = "reclora" if pname == "kind" else ""
        elif p.annotation in (int, "int"):
            out[pname] = 1
        elif p.annotation in (bool, "bool"):
            out[pname] = False
        elif p.annotation in (dict, "dict"):
            out[pname] = {}
        else:  # an Input/Output artifact
            d = tmp_path / pname
            d.mkdir()
            out[pname] = FakeArtifact(d, uri=f"memory://art/{name}/{pname}")
    return out


@pytest.mark.parametrize("name", sorted(ENTRY))
def test_the_runs_profile_and_overrides_reach_the_stage(name, tmp_path, monkeypatch):
    import importlib

    target, how = ENTRY[name]
    mod, attr = target.split(":")
    seen: dict[str, Any] = {}

    def record(*args: Any, **kwargs: Any) -> Any:
        if how == "validation":
            seen["validation"] = kwargs["params"]
        else:
            seen["params"] = next(a for a in [*args, *kwargs.values()] if isinstance(a, dict) and "pipeline" in a)
        seen["args"], seen["kwargs"] = args, kwargs
        raise Reached

    monkeypatch.setattr(importlib.import_module(mod), attr, record)
    monkeypatch.setattr("reclora.storage.fetch_model", lambda p: p)  # model_path stays what the step passes
    fn = _functions()[name]
    with pytest.raises(Reached):
        fn(**_args(name, fn, tmp_path))
    if how == "validation":
        assert seen["validation"]["min_interactions"] == 7
        return
    p = seen["params"]
    assert p["crm"]["embed_dim"] == 12, "the override did not reach the stage"
    assert p["train"]["sample_size"] == 96, "the profile did not reach the stage"
    if name in ("retrieve", "train_llm"):  # model.path of the run is the model these steps load
        got = seen["kwargs"].get("model_path")
        assert got == "/models/override", got


def test_an_override_changes_the_local_features_steps_output(tmp_path):
    """The real step (Feast on a small prepared data set): pit_check_rows from the run's overrides."""
    from reclora.config import deep_merge, load_params
    from reclora.data import prepare

    params = deep_merge(load_params(), {"synthetic": {"n_users": 30, "n_items": 40, "mean_interactions": 20}})
    prepare("synthetic", None, tmp_path / "prepared", params)
    fn = _functions()["features"]
    stats = FakeArtifact(tmp_path / "stats.txt")
    fn(
        data=FakeArtifact(tmp_path / "prepared"),
        profile="",
        overrides={"features": {"pit_check_rows": 7}},
        feature_store=FakeArtifact(tmp_path / "features"),
        stats=stats,
    )
    assert stats.metadata["pit_check_rows"] == 7
