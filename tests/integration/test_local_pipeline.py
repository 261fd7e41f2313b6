"""A real kfp.local run of the whole pipeline (tiny Llama, small synthetic data): it registers an
adapter, a second run reuses the cached data steps, and bad data stops it at validation."""

import json

import pytest
from helpers import reclora, small_tables, write_ml100k
from test_validate_cli import corrupt_ml100k

pytestmark = pytest.mark.slow

SMALL = json.dumps(
    {
        "synthetic": {"n_users": 80, "n_items": 100, "mean_interactions": 30},
        "validation": {"min_interactions": 100},
        "crm": {"max_epochs": 2, "mlp": [64, 32], "embed_dim": 16},
        "train": {
            "sample_size": 16,
            "eval_samples": 32,
            "checkpoint_every": 2,
            "precision": "fp32",
        },  # the same on any CPU
        "adapter": {"n_experts": 4, "rank": 4},
        # the tiny random Llama is no better than its CRM: let the first run promote (any interval clears -1), so
        # the second run re-scores a champion; the gate's own rules are tested in tests/model/test_promotion_evidence.py
        "pipeline": {"promotion": {"baseline_margin": -1.0}},
        "evaluation": {"bootstrap": 200},
    }
)


def _run(tmp_path, tiny, *extra):
    return reclora(
        "pipeline",
        "run",
        "--local",
        "--model",
        str(tiny),
        "--pipeline-root",
        str(tmp_path / "root"),
        "--registry",
        str(tmp_path / "registry"),
        "--overrides",
        SMALL,
        *extra,
        timeout=900,
    )


def test_local_pipeline_registers_and_caches(tmp_path, tiny_llama_dir):
    first = _run(tmp_path, tiny_llama_dir)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    assert "registered adapter: v0001" in out and "champion" in out
    # every AUC says which samples it is on; the registration line gives the gate's decision with its interval
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "on the whole test split" in lines["train-crm"] and "-sample subset of test" in lines["train-reclora"]
    assert "AUC on the same 32 samples: RecLoRA" in lines["evaluate"] and "ECE" in lines["evaluate"]
    assert "v0001 (champion): promoted" in lines["register"] and "vs CRM" in lines["register"]
    assert "95% interval" in lines["register"] and "no champion yet" in lines["register"]
    report = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("evaluation report"))
    html = open(report).read()
    assert "RecLoRA" in html and "Vanilla LoRA" in html and "CRM" in html
    assert html.index("Decision: promote") < html.index("<h2>Slices</h2>") < html.index("<h2>Metrics</h2>")
    version = tmp_path / "registry" / "reclora" / "versions" / "v0001"
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["lineage"]["data_version"].endswith(".dir")
    assert (version / "MODEL_CARD.md").is_file()
    # what ran: the precision and the hardware, in the manifest, the model card and every model stage's summary
    from reclora.hardware import cpu_model

    rt = manifest["runtime"]
    assert rt["precision"]["chosen"] == rt["precision"]["requested"] == "fp32"
    assert rt["hardware"]["cpu"]["model"] == cpu_model()[0] and rt["hardware"]["threads"] >= 1
    card = (version / "MODEL_CARD.md").read_text()
    assert "## Training hardware and precision" in card and "fp32 (requested fp32" in card and cpu_model()[0] in card
    run = next((tmp_path / "root").glob("reclora-training-*"))
    summaries = [
        json.loads(f.read_text()) for f in (*run.glob("train-*/*/metrics.json"), *run.glob("retrieve/*/retrieval.json"))
    ]
    assert len(summaries) == 4  # CRM, vanilla LoRA, RecLoRA, retrieval
    for sm in summaries:
        assert sm["hardware"]["cpu"]["flags"] == cpu_model()[1] and sm["precision"]["chosen"] == "fp32", sm.get("model")

    second = _run(tmp_path, tiny_llama_dir)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "reused cached data steps: features, prepare, retrieve, validate" in second.stdout
    assert "registered adapter: v0002" in second.stdout
    # the second run re-scores the champion v0001 on its own evaluation samples
    ev = next(line for line in second.stdout.splitlines() if line.startswith("evaluate"))
    assert "champion v0001" in ev
    reg = next(line for line in second.stdout.splitlines() if line.startswith("register"))
    assert "vs champion v0001" in reg and "95% interval" in reg
    manifest2 = json.loads((tmp_path / "registry" / "reclora" / "versions" / "v0002" / "manifest.json").read_text())
    assert manifest2["promotion"]["evidence"]["champion"]["status"] == "scored"
    assert manifest2["promotion"]["evidence"]["champion"]["version"] == "v0001"
    listing = reclora("registry", "list", "--uri", str(tmp_path / "registry"), check=True).stdout
    assert "v0001" in listing and "v0002" in listing


def test_bad_data_stops_the_pipeline_at_validation(tmp_path, tiny_llama_dir):
    raw = corrupt_ml100k(write_ml100k(small_tables(n_users=60), tmp_path / "raw"), tmp_path / "bad")
    proc = _run(tmp_path, tiny_llama_dir, "--dataset", "ml-100k", "--path", str(raw))
    assert proc.returncode == 1
    assert "STOPPED at validation" in proc.stderr
    assert "interactions.rating" in proc.stderr and "items.title" in proc.stderr
    report = next(
        line.split(":", 1)[1].strip() for line in proc.stdout.splitlines() if line.startswith("validation report")
    )
    assert report.endswith("index.html") and open(report).read()
    run_dirs = list((tmp_path / "root").glob("reclora-training-*"))
    assert len(run_dirs) == 1
    trained = {p.name for p in run_dirs[0].iterdir()}
    assert not trained & {"train-crm", "train-lora", "train-reclora", "register"}, trained
    assert not (tmp_path / "registry" / "reclora" / "versions").exists() or not any(
        (tmp_path / "registry" / "reclora" / "versions").iterdir()
    )
