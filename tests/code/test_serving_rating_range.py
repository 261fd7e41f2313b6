"""The rating range a served version checks inline history ratings against: its own params' validation.rating_range,
else the serving machine's (passed in by the edge, ``reclora serve``), else none (ratings need only be finite)."""

from __future__ import annotations

import pytest
from kserve.errors import InvalidInput

from reclora.serving import RecLoRAPredictor


def _predictor(version_params: dict, machine: dict | None) -> RecLoRAPredictor:
    p = RecLoRAPredictor("unused-version-dir", rating_ranges=machine)
    p.params = version_params  # what load() reads from the version's params.json
    p.item_set = {1, 2}
    p.rating_range = p._rating_range("ml-1m")
    return p


def test_the_versions_range_wins_then_the_machines_then_none():
    own = {"validation": {"rating_range": {"ml-1m": [0.5, 5]}}}
    assert _predictor(own, {"ml-1m": [1, 10]}).rating_range == (0.5, 5.0)
    assert _predictor({}, {"ml-1m": [1, 10]}).rating_range == (1.0, 10.0)
    assert _predictor({}, {"ml-25m": [0.5, 5]}).rating_range is None  # no range for this data set
    assert _predictor({}, None).rating_range is None


def test_a_rating_outside_the_machines_range_is_a_400_naming_the_field():
    p = _predictor({}, {"ml-1m": [1, 5]})
    inst = {"user_id": 1, "candidates": [2], "history": [{"item_id": 1, "rating": 7}]}
    with pytest.raises(InvalidInput, match=r"instances\[0\]\.history\[0\]\.rating must be within \[1, 5\]"):
        p.parse_instances([inst])
    assert _predictor({}, None).parse_instances([inst])[0]["history"] == [(1, 7.0, 0)]


def test_reclora_serve_hands_this_machines_params_to_the_server(monkeypatch, tmp_path):
    """The serve command loads this machine's params once (with --set) and passes down what the predictor reads:
    the precision request, the rating ranges and the model section (where the base LLM is here)."""
    import torch

    from reclora.cli.common import run_cli
    from reclora.cli.main import app
    from reclora.config import load_params, set_cli_overrides
    from reclora.hardware import THREAD_VARS

    seen = {}
    monkeypatch.setattr("reclora.serving.server.serve", lambda model_uri, **kw: seen.update(kw, model_uri=model_uri))
    for k in THREAD_VARS:  # run_cli sets the process up: restored after
        monkeypatch.delenv(k, raising=False)
    n = torch.get_num_threads()
    args = ["serve", "--model", str(tmp_path), "--set", "model.path=/models/here", "--set", "train.precision=fp32"]
    try:
        assert run_cli(app, args, prog_name="reclora") == 0
        assert seen["model"].path == "/models/here" and seen["model"].name == load_params()["model"]["name"]
        assert seen["precision"] == "fp32" and seen["model_uri"] == str(tmp_path)
        ranges = load_params()["validation"]["rating_range"]
        assert {k: list(v) for k, v in seen["rating_ranges"].items()} == ranges
        assert run_cli(app, [*args[:3], "--precision", "bf16"], prog_name="reclora") == 0
        assert seen["precision"] == "bf16" and seen["model"].path == load_params()["model"]["path"]  # no --set now
    finally:
        set_cli_overrides(None)  # the --set items live for the process: none for the next test
        torch.set_num_threads(n)
