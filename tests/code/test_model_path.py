"""A registered version records where training found its base model; another machine or image
(the serving container) finds the same embedded default in its own cache."""

import json

from reclora.config import load_params
from reclora.llm.location import MARKER, default_model_dir, local_model_path


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
