"""params.yaml handling: deep merge, profiles, KFP's float-typed dict parameters."""

import pytest

from reclora.config import deep_merge, load_params, load_params_with
from reclora.errors import ConfigError


def test_deep_merge_keeps_siblings_and_does_not_mutate():
    base = {"a": {"x": 1, "y": 2}, "b": [1, 2]}
    out = deep_merge(base, {"a": {"y": 3}})
    assert out == {"a": {"x": 1, "y": 3}, "b": [1, 2]} and base["a"]["y"] == 2


def test_kfp_floats_become_ints_where_params_yaml_has_ints():
    out = deep_merge({"n": 5, "r": 0.5, "mlp": [512, 256], "flag": True}, {"n": 80.0, "r": 1.0, "mlp": [64.0, 32.0]})
    assert out == {"n": 80, "r": 1.0, "mlp": [64, 32], "flag": True}
    assert isinstance(out["n"], int) and isinstance(out["r"], float) and all(isinstance(x, int) for x in out["mlp"])


def test_profiles_and_overrides_stack():
    base = load_params()
    small = load_params_with(profile="small")
    assert small["train"]["sample_size"] == base["profiles"]["small"]["train"]["sample_size"]
    assert small["train"]["lr"] == base["train"]["lr"]
    both = load_params_with({"train": {"sample_size": 7}}, profile="small")
    assert both["train"]["sample_size"] == 7
    with pytest.raises(ConfigError, match="unknown profile"):
        load_params_with(profile="nope")
