"""What `reclora pipeline run` prints: the full output goes to the log file (this process's and its
children's), one line per stage goes to the terminal with the stage's key figure; --set items
travel to the pipeline as its `overrides`."""

import os
import subprocess
import sys
from types import SimpleNamespace

from pipelines.run import _figure, _output_to


def test_output_goes_to_the_log_and_the_terminal_stream_to_the_terminal(tmp_path, capfd):
    log = tmp_path / "run" / "pipeline.log"
    with _output_to(log) as terminal:
        print("from this process")
        print("a warning", file=sys.stderr)
        subprocess.run([sys.executable, "-c", "import sys; print('from a child'); print('child err', file=sys.stderr)"])
        terminal.write("prepare        ok  1.0 s\n")
    out, err = capfd.readouterr()
    assert out == "prepare        ok  1.0 s\n" and err == ""
    text = log.read_text()
    for line in ("from this process", "a warning", "from a child", "child err"):
        assert line in text
    print("after")  # the real stdout is back
    assert capfd.readouterr().out == "after\n"


def test_output_to_none_redirects_nothing(capfd):
    with _output_to(None) as terminal:
        print("visible")
        assert terminal is sys.stdout
    assert capfd.readouterr().out == "visible\n"


def _art(**metadata):
    return SimpleNamespace(metadata=metadata)


def test_key_figure_per_stage():
    assert _figure("prepare", {"data": _art(rows=2333.0, users=80.0, items=100.0)}) == "2,333 rows, 80 users, 100 items"
    assert _figure("validate", {"Output": True}) == "PASS"
    assert _figure("validate", {"Output": False}).startswith("FAIL")
    assert _figure("retrieve", {"retrieved": _art(mode="relevance", k_long=60.0, k_short=10.0)}) == \
        "relevance, K long/short 60/10"
    assert _figure("features", {"stats": _art(users=80.0, items=100.0, samples=1933.0, pit_leaks=0.0,
                                              pit_check_rows=1900.0)}) == \
        "1,933 sample rows joined, 80 users, point-in-time leaks 0 of 1,900 checked"
    assert _figure("train-crm", {"stats": _art(test_auc=0.62909)}) == "CRM test AUC 0.6291"
    assert _figure("train-llm-2", {"stats": _art(eval_auc=0.5, train_samples=16.0), "adapter": _art(kind="reclora")}) \
        == "RecLoRA eval AUC 0.5000 (16 training samples)"
    assert _figure("train-llm", {"stats": _art(eval_auc=0.25, train_samples=16.0), "adapter": _art(kind="lora")}) \
        == "LoRA eval AUC 0.2500 (16 training samples)"
    assert _figure("evaluate", {"auc": 0.7, "logloss": 0.6}) == "RecLoRA AUC 0.7000, LogLoss 0.6000"
    assert _figure("register", {"version": "v0003", "promoted": False}) == "v0003 (challenger)"
    assert _figure("train-crm", {}) == ""  # missing outputs: no figure, no error


def test_set_items_join_the_pipeline_arguments_overrides():
    from reclora.cli.pipeline import _arguments
    from reclora.config import set_cli_overrides

    try:
        set_cli_overrides(["train.sample_size=32"])
        args = _arguments('{"dataset": "ml-1m", "overrides": {"crm": {"max_epochs": 1}}}')
        assert args == {"dataset": "ml-1m", "overrides": {"crm": {"max_epochs": 1}, "train": {"sample_size": 32}}}
    finally:
        set_cli_overrides([])
    assert _arguments(None) == {}
