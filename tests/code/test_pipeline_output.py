"""What `reclora pipeline run` prints: the full output goes to the log file (this process's and its
children's), one line per stage goes to the terminal with the stage's key figure; --set items
travel to the pipeline as its `overrides`."""

import subprocess
import sys
from types import SimpleNamespace

from pipelines.local import _figure, _output_to


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
    assert (
        _figure("retrieve", {"retrieved": _art(mode="relevance", k_long=60.0, k_short=10.0)})
        == "relevance, K long/short 60/10"
    )
    assert (
        _figure(
            "features", {"stats": _art(users=80.0, items=100.0, samples=1933.0, pit_leaks=0.0, pit_check_rows=1900.0)}
        )
        == "1,933 sample rows joined, 80 users, point-in-time leaks 0 of 1,900 checked"
    )
    # every AUC says which samples it is on: the CRM's whole test split, the LLMs' evaluation subset...
    assert (
        _figure("train-crm", {"stats": _art(test_auc=0.62909, test_n=1798.0)})
        == "CRM AUC 0.6291 on the whole test split (1,798 samples)"
    )
    assert (
        _figure(
            "train-reclora",
            {"stats": _art(eval_auc=0.5, eval_n=200.0, train_samples=16.0), "adapter": _art(kind="reclora")},
        )
        == "RecLoRA AUC 0.5000 on a 200-sample subset of test (16 training samples)"
    )
    assert (
        _figure(
            "train-lora", {"stats": _art(eval_auc=0.25, eval_n=32.0, train_samples=16.0), "adapter": _art(kind="lora")}
        )
        == "LoRA AUC 0.2500 on a 32-sample subset of test (16 training samples)"
    )
    # ... and the evaluation puts every model side by side on the same samples, ECE beside RecLoRA
    stats = _art(
        evaluated_samples=200.0,
        crm_auc=0.6945,
        vanilla_lora_auc=0.68,
        reclora_auc=0.7071,
        reclora_ece=0.031,
        champion_v0001_auc=0.701,
        auc_diff_vs_baseline=0.0126,
        slice_genres_drama_reclora_auc=0.9,
    )
    assert (
        _figure("evaluate", {"auc": 0.7071, "logloss": 0.6, "stats": stats})
        == "AUC on the same 200 samples: RecLoRA 0.7071 (ECE 0.0310), CRM 0.6945, Vanilla LoRA 0.6800, champion v0001 0.7010"
    )
    assert _figure("evaluate", {"auc": 0.7, "logloss": 0.6}) == "RecLoRA AUC 0.7000, LogLoss 0.6000"
    # the registration line gives the gate's decision
    assert _figure("register", {"version": "v0003", "promoted": False}) == "v0003 (challenger)"
    assert (
        _figure("register", {"version": "v0003", "promoted": False, "reason": "v0003: not promoted (RecLoRA): x"})
        == "v0003 (challenger): not promoted (RecLoRA): x"
    )
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
