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


def _parse(*items):
    from reclora.config import parse_overrides

    return parse_overrides(list(items), load_params())


def test_set_items_are_typed_by_params_yaml():
    out = _parse(
        "train.sample_size=64",
        "train.lr=1e-2",
        "train.bf16=false",
        "crm.mlp=[64, 32]",
        "data.dataset=ml-100k",
        "data.path=",
        "data.label_threshold.ml-100k=3",
        "pipeline.gpu={}",
    )
    assert out["train"] == {"sample_size": 64, "lr": 0.01, "precision": "fp32"}  # the old key, renamed
    assert isinstance(out["train"]["sample_size"], int) and isinstance(out["train"]["lr"], float)
    assert out["crm"] == {"mlp": [64, 32]} and out["data"]["dataset"] == "ml-100k" and out["data"]["path"] == ""
    assert out["data"]["label_threshold"] == {"ml-100k": 3.0} and isinstance(
        out["data"]["label_threshold"]["ml-100k"], float
    )
    assert out["pipeline"]["gpu"] == {}
    # a string stays a string even when it looks like a number; the last item for a key wins
    assert _parse("synthetic.start=2024", "train.epochs=1", "train.epochs=3") == {
        "synthetic": {"start": "2024"},
        "train": {"epochs": 3},
    }


def test_the_old_bf16_key_still_sets_the_precision():
    """params.yaml has `train.precision` now; `--set train.bf16=true|false` means bf16|fp32, and an older
    params file that still has `bf16` keeps it (read as the precision by requested_precision)."""
    import copy

    from reclora.config import parse_overrides
    from reclora.precision import requested_precision

    assert "bf16" not in load_params()["train"] and load_params()["train"]["precision"] == "auto"
    assert _parse("train.bf16=true") == {"train": {"precision": "bf16"}}
    assert _parse("train.bf16=false", "train.precision=fp16") == {"train": {"precision": "fp16"}}  # the last word
    old = copy.deepcopy(load_params())
    del old["train"]["precision"]
    old["train"]["bf16"] = True
    assert parse_overrides(["train.bf16=false"], old) == {"train": {"bf16": False}}
    assert requested_precision(old["train"]) == "bf16" and requested_precision({"bf16": False}) == "fp32"
    assert requested_precision({"precision": "auto", "bf16": False}) == "fp32"  # defaults merged under an old file
    assert requested_precision({"precision": "fp16", "bf16": True}) == "fp16"  # an explicit precision wins
    assert requested_precision({}) == requested_precision(None) == "auto"
    for bad in ({"precision": "fp8"}, {"precision": 16}, {"bf16": "yes"}):
        with pytest.raises(ConfigError, match="train"):
            requested_precision(bad)


@pytest.mark.parametrize(
    "item, message",
    [
        ("train.sample_size", "section.key=value"),
        ("=3", "section.key=value"),
        ("train..lr=1", "section.key=value"),
        ("train.sampel_size=3", "train has no key 'sampel_size'"),
        ("nosuch.key=1", "params.yaml has no key 'nosuch'"),
        ("train.lr.x=1", "train.lr has no key 'x'"),
        ("train.sample_size=1.5", "integer"),
        ("train.sample_size=true", "integer"),
        ("train.lr=fast", "number"),
        ("train.bf16=1", "boolean"),
        ("crm.mlp=64", "list"),
        ("crm.mlp=[64", "not a valid value"),
    ],
)
def test_bad_set_items_are_config_errors(item, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        _parse(item)


def test_cli_sets_apply_to_every_load_and_win_over_profiles():
    from reclora.config import cli_overrides, section, set_cli_overrides

    try:
        set_cli_overrides(["train.sample_size=50", "crm.max_epochs=1"])
        assert load_params()["train"]["sample_size"] == 50 and section("crm")["max_epochs"] == 1
        small = load_params_with(profile="small")  # the profile sets both; --set has the last word
        assert small["train"]["sample_size"] == 50 and small["crm"]["max_epochs"] == 1
        assert load_params_with({"train": {"sample_size": 7}})["train"]["sample_size"] == 50
        assert cli_overrides() == {"train": {"sample_size": 50}, "crm": {"max_epochs": 1}}
    finally:
        set_cli_overrides([])
    assert load_params()["train"]["sample_size"] != 50 and cli_overrides() == {}


# ------------------------------------------------------------------ issue 24: old params files keep working
def _leaves(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _leaves(v, (*prefix, k))
        else:
            yield (*prefix, k)


def _without(d, path):
    import copy

    out = copy.deepcopy(d)
    node = out
    for k in path[:-1]:
        node = node[k]
    del node[path[-1]]
    return out


def test_a_params_file_lacking_newer_keys_gets_their_defaults(tmp_path):
    """Drop keys (a file written for an earlier version): every dropped key comes back with its packaged
    default; every key the file has keeps the file's value."""
    import random

    import yaml

    full = load_params()
    leaves = list(_leaves(full))
    rng = random.Random(24)
    for trial in range(30):
        old = full
        dropped = rng.sample(leaves, k=rng.randint(1, 12))
        for path in dropped:
            try:
                old = _without(old, path)
            except KeyError:  # a parent already dropped
                pass
        old = deep_merge(old, {"train": {"sample_size": 7}})  # and one value the user chose
        f = tmp_path / f"old{trial}.yaml"
        f.write_text(yaml.safe_dump(old))
        got = load_params(f)
        assert got == deep_merge(full, {"train": {"sample_size": 7}}), dropped


def test_the_handed_min_timestamp_case_validates_with_an_old_params_file(tmp_path):
    """`error: validation params missing: min_timestamp` for a params file from before that key."""
    import yaml
    from helpers import reclora

    p = load_params()
    del p["validation"]["min_timestamp"]
    p["validation"]["min_interactions"] = 1
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump(p))
    out = tmp_path / "prepared"
    assert reclora("data", "prepare", "--dataset", "synthetic", "--out", str(out), "--params", str(old)).returncode == 0
    v = reclora("data", "validate", "--data", str(out), "--report", str(tmp_path / "rep"), "--params", str(old))
    assert v.returncode == 0, v.stderr
    assert "min_timestamp" not in v.stderr


@pytest.mark.parametrize(
    "args,words",
    [
        (["pipeline", "run", "--overrides", '{"train": {"lr": 1}, "train": {"lr": 2}}'], "repeats the key 'train'"),
        (
            ["pipeline", "submit", "--host", "http://127.0.0.1:9", "--arguments", '{"dataset": "a", "dataset": "b"}'],
            "repeats the key 'dataset'",
        ),
    ],
)
def test_json_options_that_repeat_a_key_are_refused(args, words, capsys):
    from reclora.cli import app
    from reclora.cli.common import run_cli

    assert run_cli(app, args, prog_name="reclora") == 2
    err = capsys.readouterr().err
    assert words in err and err.startswith("error: "), err


def test_a_json_file_that_repeats_a_key_is_refused_naming_it(tmp_path):
    from reclora.errors import DataError
    from reclora.io import read_json

    f = tmp_path / "meta.json"
    f.write_text('{"dataset": "ml-100k", "rows": 1, "dataset": "synthetic"}')
    with pytest.raises(DataError, match=r"meta.json: JSON object repeats the key 'dataset'"):
        read_json(f)


@pytest.mark.parametrize(
    "text, key, line",
    [
        ("train:\n  lr: 0.01\n  epochs: 2\n  lr: 0.5\n", "lr", 4),  # the later copy used to win silently
        ("train: {lr: 0.01}\ntrain: {lr: 0.5}\n", "train", 2),
        ("data:\n  table:\n    columns: {user_id: u, user_id: v}\n", "user_id", 3),
    ],
)
def test_a_params_file_that_repeats_a_key_is_refused_naming_it(tmp_path, text, key, line):
    from reclora.config import load_params

    f = tmp_path / "params.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=rf"params.yaml: repeats the key '{key}' in one mapping \(line {line};"):
        load_params(f)


def test_yaml_anchors_and_merge_keys_still_load():
    from reclora.io import loads_yaml

    assert loads_yaml("a: &x {k: 1}\nb:\n  <<: *x\n  j: 2\n") == {"a": {"k": 1}, "b": {"k": 1, "j": 2}}
