"""A registered version records where training found its base model; another machine or image
(the serving container) finds the same embedded default in its own cache."""

import json

from reclora.llm.fetch import MARKER, default_model_dir
from reclora.llm.model import local_model_path


def test_default_model_recorded_elsewhere_resolves_to_this_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RECLORA_CACHE", str(tmp_path / "cache"))
    here = default_model_dir()
    elsewhere = f"/opt/elsewhere/models/{here.name}"
    assert local_model_path(elsewhere) == elsewhere  # not fetched here: left as recorded (load says why)
    here.mkdir(parents=True)
    for f in (MARKER, "config.json", "model.safetensors", "tokenizer.json"):
        (here / f).write_text(json.dumps({}))
    assert local_model_path(elsewhere) == str(here)
    # anything else stays as recorded: an existing path, another model's missing path, a hub id
    assert local_model_path(str(tmp_path)) == str(tmp_path)
    assert local_model_path("/opt/elsewhere/models/other-model") == "/opt/elsewhere/models/other-model"
    assert local_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
