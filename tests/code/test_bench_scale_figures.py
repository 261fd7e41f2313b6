"""The figures `reclora bench scale` derives from its runs: medians over repeats and the linearity ratios."""

from reclora.bench.scale import _combine_runs, scale_ratios


def test_combine_runs_takes_medians_and_the_largest_peak():
    runs = [
        {"seconds": 10.0, "peak_rss_gb": 1.0, "batches": 5, "crm_samples_per_s": 900.0},
        {"seconds": 30.0, "peak_rss_gb": 1.5, "batches": 5, "crm_samples_per_s": 1000.0},
        {"seconds": 12.0, "peak_rss_gb": 1.2, "batches": 5, "crm_samples_per_s": 2000.0},
    ]
    e = _combine_runs(runs)
    assert e["seconds"] == 12.0 and e["peak_rss_gb"] == 1.5 and e["crm_samples_per_s"] == 1000.0
    assert e["seconds_runs"] == [10.0, 30.0, 12.0] and e["crm_samples_per_s_runs"] == [900.0, 1000.0, 2000.0]
    assert e["batches"] == 5
    one = _combine_runs(runs[:1])
    assert one["seconds"] == 10.0 and "seconds_runs" not in one


def test_combine_runs_reports_a_failure():
    e = _combine_runs([{"seconds": 1.0, "peak_rss_gb": 1.0}, {"error": "exit 1: boom", "seconds": 0.5}])
    assert e == {"error": "exit 1: boom", "seconds": 0.5}


def test_scale_ratios_between_consecutive_sizes():
    result = {
        "stages": ["prepare", "crm"],
        "sizes": {
            "1000": {
                "data": {"events": 1000},
                "prepare": {"seconds": 2.0},
                "crm": {"seconds": 5.0, "batches": 9},
                "crm_samples_per_s": 1000.0,
            },
            "5000": {
                "data": {"events": 4000},
                "prepare": {"seconds": 9.0},
                "crm": {"error": "killed"},
                "crm_samples_per_s": None,
            },
            "25000": {
                "data": {"events": 24000},
                "prepare": {"seconds": 54.0},
                "crm": {"seconds": 6.0, "batches": 9},
                "crm_samples_per_s": 750.0,
            },
            "50000": {"prepare": {"seconds": 108.0}, "crm": {"seconds": 7.0, "batches": 4}, "crm_samples_per_s": 900.0},
        },
    }
    r = scale_ratios(result)
    assert r["time"]["5000/1000"] == {"events": 4.0, "prepare": 4.5}  # a failed stage has no ratio
    assert r["time"]["25000/5000"] == {"events": 6.0, "prepare": 6.0}  # the events actually generated
    assert r["time"]["50000/25000"]["events"] == round(50000 / 24000, 3)  # no data figures: the size asked for
    assert r["crm_samples_per_s"] == {"25000/1000": 0.75}  # 50000 ran fewer batches: no ratio


def test_every_stage_process_gets_the_params_bench_scale_was_given(tmp_path, monkeypatch):
    """The run's params (here with an override) reach every stage's process, which checks them at its edge."""
    import json

    import pytest

    from reclora.bench import scale
    from reclora.config import Params, deep_merge, load_params
    from reclora.errors import ConfigError

    params = deep_merge(load_params(), {"data": {"min_history": 3}, "bench": {"scale": {"crm_batches": 9}}})
    seen = []

    def child(name, work, opts, timeout_s):
        seen.append((name, opts))
        return {"events": 1000} if name == "generate" else {"seconds": 1.0, "peak_rss_gb": 0.1}

    monkeypatch.setattr(scale, "_run_child", child)
    r = scale.bench_scale([1000], tmp_path / "s.json", params=params, stages=("prepare",), progress=False)
    assert [n for n, _ in seen] == ["generate", "prepare"] and r["crm_batches"] == 9
    for _, opts in seen:
        assert Params.from_dict(json.loads(json.dumps(opts, default=str))["params"]) == Params.from_dict(params)
    bad = dict(seen[-1][1], params=deep_merge(params, {"crm": {"lr": -1}}))
    with pytest.raises(ConfigError, match=r"^crm\.lr must be > 0, got -1$"):  # the child's own check, before work
        scale._child_main(["prepare", str(tmp_path / "w"), json.dumps(bad), str(tmp_path / "r.json")])
    assert not (tmp_path / "w").exists() and not (tmp_path / "r.json").exists()
