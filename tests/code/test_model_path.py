"""A registered version records where training found its base model; another machine or image
(the serving container) finds the same embedded default in its own cache; `reclora model fetch` says
whether the model was cached and how long this call took."""

import json

from reclora.config import load_params
from reclora.llm.location import MARKER, default_model_dir, local_model_path, model_info


def test_default_model_recorded_elsewhere_resolves_to_this_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RECLORA_CACHE", str(tmp_path / "cache"))
    model = load_params()["model"]
    here = default_model_dir(model)
    elsewhere = f"/opt/elsewhere/models/{here.name}"
    assert local_model_path(elsewhere, model) == elsewhere  # not fetched here: left as recorded (load says why)
    here.mkdir(parents=True)
    for f in (MARKER, "config.json", "model.safetensors", "tokenizer.json"):
        (here / f).write_text(json.dumps({}))
    assert local_model_path(elsewhere, model) == str(here)
    # anything else stays as recorded: an existing path, another model's missing path, a hub id
    assert local_model_path(str(tmp_path), model) == str(tmp_path)
    assert local_model_path("/opt/elsewhere/models/other-model", model) == "/opt/elsewhere/models/other-model"
    assert local_model_path("HuggingFaceTB/SmolLM2-135M-Instruct", model) == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_model_fetch_of_a_cached_model_reports_this_calls_time(tmp_path, capsys):
    """`reclora model fetch` with the model already cached says so and gives this call's time, not the time of the
    fetch that filled the cache (kept as first_fetch_seconds; a marker written under the older name reads the same)."""
    from reclora.cli import app
    from reclora.cli.common import run_cli

    model = load_params()["model"]
    cache = tmp_path / "cache"
    d = default_model_dir(model, cache)
    d.mkdir(parents=True)
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        (d / f).write_text(json.dumps({}))
    for key in ("fetch_seconds", "first_fetch_seconds"):  # the older marker, and the one a fetch writes now
        (d / MARKER).write_text(json.dumps({"name": model["name"], "parameters": 134_515_008, key: 19.2}))
        before = {f.name: f.read_bytes() for f in d.iterdir()}
        assert run_cli(app, ["model", "fetch", "--cache-dir", str(cache)], prog_name="reclora") == 0
        out = json.loads(capsys.readouterr().out)
        assert out["cached"] is True and out["first_fetch_seconds"] == 19.2 and out["parameters"] == 134_515_008
        assert 0.0 <= out["fetch_seconds"] < 5.0, out  # a cached fetch only checks four files are there
        assert out["path"] == str(d) and {f.name: f.read_bytes() for f in d.iterdir()} == before  # nothing rewritten
        assert model_info(d)["first_fetch_seconds"] == 19.2 and "fetch_seconds" not in model_info(d)
