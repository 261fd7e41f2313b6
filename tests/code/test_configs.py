"""The typed params (reclora.config.schema), in the habit of torchtune's test_configs.py: params.yaml and every
profile validate and round-trip; a typo'd key and a wrong type are refused naming them; every field has help
text and no second copy of params.yaml's values; the library classes the sections hand over to accept what
the sections accept and refuse nothing the sections let through; every edge checks the params it loads."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from reclora.config import Params, deep_merge, load_params, load_params_with, validated
from reclora.config.fields import Section
from reclora.errors import ConfigError

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
RAW = yaml.safe_load(REPO_PARAMS.read_text())


def _sections(cls=Params, seen=None):
    """Every Section class reachable from ``cls`` through its fields' annotations."""
    seen = seen if seen is not None else {}
    seen[cls.__name__] = cls
    for tp in typing.get_type_hints(cls).values():
        for t in (tp, *typing.get_args(tp)):
            if isinstance(t, type) and issubclass(t, Section) and t.__name__ not in seen:
                _sections(t, seen)
    return seen


def _with(params, dotted, value):
    out = copy.deepcopy(params)
    node = out
    *parents, last = dotted.split(".")
    for k in parents:
        node = node[k]
    node[last] = value
    return out


# ------------------------------------------------------------------ params.yaml and its profiles
def test_params_yaml_validates_and_round_trips():
    assert Params.from_dict(RAW).to_dict() == RAW
    assert Params.from_dict(load_params()).to_dict() == load_params()


@pytest.mark.parametrize("profile", sorted(RAW["profiles"]))
def test_every_profile_validates_and_round_trips(profile):
    p = load_params_with(profile=profile)
    typed = Params.from_dict(p)
    assert typed.to_dict() == p
    assert p != load_params()  # the profile changed something, and it is what the typed sections hold
    for section, overrides in RAW["profiles"][profile].items():
        assert getattr(typed, section).to_dict() == deep_merge(RAW[section], overrides)


def test_a_bad_profile_is_refused_naming_it_and_the_key():
    bad = _with(RAW, "profiles.small.train.lr", -1)
    with pytest.raises(ConfigError, match=r"^profiles\.small: train\.lr must be > 0, got -1$"):
        Params.from_dict(bad)
    with pytest.raises(ConfigError, match=r"profiles\.cluster: pipeline: unknown key 'pipeline\.registry'"):
        Params.from_dict(_with(RAW, "profiles.cluster.pipeline.registry", "s3://x"))


def test_the_typed_values_are_params_yamls():
    t = Params.from_dict(RAW)
    assert t.train.lr == RAW["train"]["lr"] and t.crm.mlp == tuple(RAW["crm"]["mlp"])
    assert t.pipeline.spark.executor.instances == RAW["pipeline"]["spark"]["executor"]["instances"]
    assert t.evaluation.slices.history_edges == tuple(RAW["evaluation"]["slices"]["history_edges"])
    assert t.pipeline.promotion.champion_margin == RAW["pipeline"]["promotion"]["champion_margin"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.train.lr = 1.0  # type: ignore[misc]


# ------------------------------------------------------------------ refusals name the key
@pytest.mark.parametrize(
    "dotted, message",
    [
        ("trian", r"params: unknown key 'trian' \(known: data, synthetic, .*, profiles\)"),
        ("train.sampel_size", r"train: unknown key 'train\.sampel_size' \(known: sample_size, lr, .*\)"),
        (
            "pipeline.spark.driver.memroy",
            r"pipeline\.spark\.driver: unknown key 'pipeline\.spark\.driver\.memroy' "
            r"\(known: cores, memory\)",
        ),
        ("pipeline.resources.tarin_llm", r"unknown key 'pipeline\.resources\.tarin_llm' \(known: source_version, .*\)"),
        ("pipeline.promotion.baseline_margn", r"unknown key 'pipeline\.promotion\.baseline_margn'"),
    ],
)
def test_a_typod_key_is_refused_naming_it_and_the_known_keys(dotted, message):
    with pytest.raises(ConfigError, match=message):
        Params.from_dict(_with(RAW, dotted, 1))


@pytest.mark.parametrize(
    "dotted, value, message",
    [
        ("train.lr", "fast", "train.lr must be a number, got 'fast'"),
        ("train.epochs", True, "train.epochs must be an integer, got True"),
        ("train.epochs", 1.5, "train.epochs must be an integer, got 1.5"),
        ("train.bucket", "yes", "train.bucket must be true or false, got 'yes'"),
        ("train.precision", "fp8", "train.precision must be one of auto, fp32, bf16, fp16, got 'fp8'"),
        ("crm.mlp", [64, "x"], "crm.mlp[1] must be an integer, got 'x'"),
        ("crm.mlp", 64, "crm.mlp must be a list (an integer each), got 64"),
        ("data.split", [0.5, 0.5], "data.split must be a list of 3"),
        ("data.dataset", "ml-50m", "data.dataset must be one of ml-100k"),
        ("adapter.layers", "top", "adapter.layers must be an integer or one of all, got 'top'"),
        ("model.path", None, "model.path must be a string, got None"),
        ("pipeline.gpu.node_selector", ["a"], "pipeline.gpu.node_selector must be a mapping"),
        ("pipeline.promotion.max_slice_drop", "a lot", "pipeline.promotion.max_slice_drop must be a number or null"),
        ("validation.rating_range.ml-1m", [1], "validation.rating_range.ml-1m must be a list of 2"),
        ("pipeline", 3, "pipeline must be a mapping (a section), got 3"),
        ("synthetic.start", 7, "synthetic.start must be a string or a date, got 7"),
    ],
)
def test_a_wrong_type_is_refused_naming_the_key(dotted, value, message):
    with pytest.raises(ConfigError) as e:
        Params.from_dict(_with(RAW, dotted, value))
    assert str(e.value).startswith(message), str(e.value)


@pytest.mark.parametrize(
    "dotted, value, message",
    [
        ("train.lr", -1, "train.lr must be > 0, got -1"),
        ("train.lr", math.nan, "train.lr must be > 0, got nan"),
        ("train.batch_size", 0, "train.batch_size must be >= 1, got 0"),
        ("crm.dropout", 1.0, "crm.dropout must be in [0, 1), got 1.0"),
        ("data.split", [0.5, 0.5, 0.5], "data.split must be three non-negative fractions summing to 1"),
        ("synthetic.start", "2024-13-01", "synthetic.start must be a date (YYYY-MM-DD), got '2024-13-01'"),
        ("validation.max_interactions", 10, "validation.max_interactions must be >= min_interactions, got 10"),
        ("evaluation.slices.history_edges", [50, 20], "evaluation.slices.history_edges must be two increasing"),
        ("pipeline.gpu.num_nodes", 0, "pipeline.gpu.num_nodes must be >= 1, got 0"),
        ("pipeline.spark.executor.instances", 0, "pipeline.spark.executor.instances must be >= 1, got 0"),
        ("pipeline.promotion.unscored_champion", "ask", "pipeline.promotion.unscored_champion must be one of refuse"),
    ],
)
def test_a_value_out_of_range_is_refused_naming_the_key(dotted, value, message):
    with pytest.raises(ConfigError) as e:
        Params.from_dict(_with(RAW, dotted, value))
    assert str(e.value).startswith(message), str(e.value)


def test_a_missing_key_is_refused_naming_it():
    p = copy.deepcopy(RAW)
    del p["pipeline"]["trainjob"]["runtime"]
    with pytest.raises(ConfigError, match=r"^pipeline\.trainjob\.runtime is missing"):
        Params.from_dict(p)


# ------------------------------------------------------------------ an older params file
def test_an_older_files_bf16_is_read_as_the_precision(tmp_path):
    old = copy.deepcopy(RAW)
    del old["train"]["precision"]
    old["train"]["bf16"] = True
    f = tmp_path / "old.yaml"
    f.write_text(yaml.safe_dump(old))
    merged = load_params(f)  # the packaged precision (auto) merged under the old key
    assert merged["train"]["bf16"] is True and merged["train"]["precision"] == "auto"
    assert validated(merged) is merged  # accepted, and passed down as it is (requested_precision reads it)
    assert Params.from_dict(merged).train.precision == "bf16"
    assert Params.from_dict(_with(merged, "train.bf16", False)).train.precision == "fp32"
    explicit = _with(_with(merged, "train.bf16", True), "train.precision", "fp16")
    assert Params.from_dict(explicit).train.precision == "fp16"  # an explicit precision wins, as requested_precision
    with pytest.raises(
        ConfigError,
        match=r"train\.bf16 \(the older form of train\.precision\) must be one of true, "
        r"false, got 'yes'",
    ):
        Params.from_dict(_with(merged, "train.bf16", "yes"))


def test_set_typing_and_the_schema_agree():
    """`--set` is typed by the value params.yaml has at its key; the schema then refuses a value out of range."""
    from reclora.config import parse_overrides

    p = load_params()
    ok = deep_merge(
        p,
        parse_overrides(
            ["train.lr=1e-2", "crm.mlp=[64, 32]", "train.bf16=true", "pipeline.promotion.max_slice_drop=0.05"], p
        ),
    )
    t = Params.from_dict(ok)
    assert (t.train.lr, t.crm.mlp, t.train.precision, t.pipeline.promotion.max_slice_drop) == (
        0.01,
        (64, 32),
        "bf16",
        0.05,
    )
    with pytest.raises(ConfigError, match=r"^train\.lr must be > 0, got -0\.5$"):
        Params.from_dict(deep_merge(p, parse_overrides(["train.lr=-0.5"], p)))


# ------------------------------------------------------------------ the sections themselves
def test_every_field_has_help_text():
    sections = _sections()
    assert len(sections) >= 25, sorted(sections)
    for name, cls in sections.items():
        assert (cls.__doc__ or "").strip(), f"{name} has no docstring"
        for f in dataclasses.fields(cls):
            assert len(f.metadata.get("help", "")) > 3, f"{name}.{f.name} has no help text"


def test_the_sections_carry_no_second_copy_of_the_defaults():
    from reclora.config import PromotionRules

    for name, cls in _sections().items():
        for f in dataclasses.fields(cls):
            has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            assert not has_default or cls is PromotionRules, f"{name}.{f.name} has a default: params.yaml holds it"
    # PromotionRules() serves callers without params: its defaults are params.yaml's, to the digit
    assert PromotionRules().to_dict() == RAW["pipeline"]["promotion"]


def test_every_section_is_frozen_and_knows_its_key():
    for name, cls in _sections().items():
        assert cls.__dataclass_params__.frozen, name
    t = Params.from_dict(RAW)
    for dotted in ("data.table", "train", "pipeline.spark.driver", "pipeline.promotion", "evaluation.slices"):
        node = t
        for k in dotted.split("."):
            node = getattr(node, k)
        assert node.KEY == dotted


def test_the_choices_are_the_librarys():
    """The sections' Literal choices equal the constants of the library code that reads the key."""
    from reclora.config.data_sections import DataSection, FeaturesSection
    from reclora.config.model_sections import AdapterSection, TrainSection
    from reclora.data.loaders import DATASETS
    from reclora.data.spark_prepare import ENGINES
    from reclora.features.repo import OFFLINE_STORES
    from reclora.few2many.adapters import READOUTS
    from reclora.few2many.config import LOSSES
    from reclora.lora.config import GATE_INPUTS, MIXING_RULES
    from reclora.precision import PRECISIONS

    def choices(cls, name):
        return set(typing.get_args(typing.get_type_hints(cls)[name]))

    assert choices(DataSection, "dataset") == set(DATASETS)
    assert choices(DataSection, "engine") == set(ENGINES)
    assert choices(FeaturesSection, "offline_store") == set(OFFLINE_STORES)
    assert choices(TrainSection, "loss") == set(LOSSES)
    assert choices(TrainSection, "precision") == set(PRECISIONS)
    assert choices(AdapterSection, "gate_input") == set(GATE_INPUTS)
    assert choices(AdapterSection, "mixing") == set(MIXING_RULES)
    assert choices(AdapterSection, "readout") == set(READOUTS)


def test_the_config_package_does_not_import_torch():
    code = "import sys, reclora.config as c; c.Params.from_dict(c.load_params()); print(sorted(m for m in ('torch', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_promotion_rules_moved_and_still_import_from_the_gate():
    from reclora.config import PromotionRules
    from reclora.registry import PromotionRules as R1
    from reclora.registry.gate import PromotionRules as R2

    assert R1 is R2 is PromotionRules
    assert PromotionRules.from_params({"baseline": None}).baseline == ""  # null: no baseline, as before
    typed = Params.from_dict(_with(RAW, "pipeline.promotion.baseline", None)).pipeline.promotion
    assert typed.baseline == "" and isinstance(typed, PromotionRules)


# ------------------------------------------------------------------ what the library reads
def test_as_params_types_a_mapping_and_passes_params_through():
    from reclora.config import as_params

    p = load_params_with(profile="small")
    typed = as_params(p)
    assert isinstance(typed, Params) and typed == Params.from_dict(p) and typed.to_dict() == p
    assert typed.train.sample_size == RAW["profiles"]["small"]["train"]["sample_size"]  # the profile's, typed
    assert as_params(typed) is typed
    with pytest.raises(ConfigError, match=r"^train\.lr must be > 0, got -1$"):
        as_params(_with(p, "train.lr", -1))
    with pytest.raises(ConfigError, match=r"unknown key 'crm\.attention_hidden'"):  # a key params.yaml lacks
        as_params(_with(p, "crm.attention_hidden", [16]))


def test_updated_replaces_keys_of_sections_and_checks_them():
    typed = Params.from_dict(load_params())
    changed = typed.updated(train={"sample_size": 7}, adapter={"readout": "crm_residual"})
    want = deep_merge(typed.to_dict(), {"train": {"sample_size": 7}, "adapter": {"readout": "crm_residual"}})
    assert changed.to_dict() == want
    assert typed.train.sample_size == RAW["train"]["sample_size"] and typed.adapter.readout == RAW["adapter"]["readout"]
    with pytest.raises(ConfigError, match=r"^train\.lr must be > 0, got -1$"):
        typed.updated(train={"lr": -1})


# ------------------------------------------------------------------ the hand-over to the library's classes
def _library_configs(p):
    """The library's hyper-parameter classes built from params ``p`` the way the stages build them."""
    from reclora.crm import CRMConfig
    from reclora.evaluation.slices import SliceSpec
    from reclora.few2many import TrainConfig
    from reclora.lora import PersonalizedLoRAConfig
    from reclora.lora.config import gate_signal_width

    crm = CRMConfig.from_dict(
        {
            **p["crm"],
            "max_len": int(p["retrieval"]["k_long"]),
            "hist_items_col": "long_item_ids",
            "hist_ratings_col": "long_ratings",
        }
    )
    names = PersonalizedLoRAConfig.__dataclass_fields__
    ap = p["adapter"]
    lora = PersonalizedLoRAConfig(
        **{k: v for k, v in ap.items() if k in names},
        signal_dim=gate_signal_width(crm.hidden_dim, ap["gate_input"]),
        gate="crm",
    )
    slices = [SliceSpec.from_params(p["evaluation"]["slices"], ds) for ds in p["evaluation"]["slices"]["fields"]]
    return TrainConfig.from_dict(p["train"]), crm, lora, slices


@pytest.mark.parametrize("profile", [None, *sorted(RAW["profiles"])])
def test_what_the_sections_accept_the_library_classes_accept(profile):
    p = load_params_with(profile=profile)
    Params.from_dict(p)
    train, crm, lora, slices = _library_configs(p)
    assert train.lr == p["train"]["lr"] and crm.mlp == tuple(p["crm"]["mlp"]) and lora.rank == p["adapter"]["rank"]


# values each library class refuses: the section refuses them first, at the edge, naming the key
LIBRARY_REFUSES = [
    ("train.lr", 0),
    ("train.lr", math.inf),
    ("train.batch_size", 0),
    ("train.grad_accum", 0),
    ("train.epochs", 0),
    ("train.patience", -1),
    ("train.lr_ratio_b", 0),
    ("train.gate_lr_mult", -1),
    ("train.text_loss_weight", -0.5),
    ("train.loss", "hinge"),
    ("train.precision", "fp8"),
    ("crm.embed_dim", 0),
    ("crm.mlp", []),
    ("crm.mlp", [64, 0]),
    ("crm.dropout", 1.0),
    ("crm.lr", 0),
    ("crm.weight_decay", -1e-6),
    ("crm.batch_size", 0),
    ("crm.max_epochs", 0),
    ("crm.patience", -1),
    ("adapter.rank", 0),
    ("adapter.alpha", 0),
    ("adapter.dropout", 1.0),
    ("adapter.n_experts", 0),
    ("adapter.gate_hidden", 0),
    ("adapter.gate_dropout", -0.1),
    ("adapter.temperature", 0),
    ("adapter.mixing", "sum"),
    ("adapter.gate_input", "logit"),
    ("adapter.target_modules", []),
    ("evaluation.slices.min_samples", 1),
    ("evaluation.slices.head_share", 0.0),
    ("evaluation.slices.head_share", 1.0),
    ("evaluation.slices.history_edges", [20, 20]),
]


@pytest.mark.parametrize("dotted, value", LIBRARY_REFUSES)
def test_what_the_library_classes_refuse_the_sections_refuse(dotted, value):
    p = _with(load_params(), dotted, value)
    with pytest.raises((ConfigError, ValueError)):
        _library_configs(p)
    with pytest.raises(ConfigError, match="^" + dotted.replace(".", r"\.") + " must "):
        Params.from_dict(p)


# ------------------------------------------------------------------ every edge checks what it loaded
def _cli(args, capsys):
    from reclora.cli import app
    from reclora.cli.common import run_cli
    from reclora.config import set_cli_overrides

    try:
        rc = run_cli(app, args, prog_name="reclora")
    finally:
        set_cli_overrides(None)  # the --set items live for the process: none for the next test
    return rc, capsys.readouterr()


def test_the_cli_refuses_a_bad_set_or_params_file_before_any_work(tmp_path, capsys):
    out = tmp_path / "prepared"
    rc, cap = _cli(["data", "prepare", "--dataset", "synthetic", "--out", str(out), "--set", "train.lr=-1"], capsys)
    assert rc == 2 and cap.err.strip() == "error: train.lr must be > 0, got -1.0", cap.err
    assert not out.exists()
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump({"validation": {"min_interactons": 5}}))  # merged over the defaults: a typo stays
    rc, cap = _cli(
        ["data", "validate", "--data", str(out), "--report", str(tmp_path / "r"), "--params", str(bad)], capsys
    )
    assert rc == 2 and "unknown key 'validation.min_interactons'" in cap.err and "min_interactions" in cap.err
    assert not (tmp_path / "r").exists()
    rc, cap = _cli(
        ["pipeline", "compile", "--out", str(tmp_path / "p.yaml"), "--set", "pipeline.gpu.num_nodes=0"], capsys
    )
    assert rc == 2 and "pipeline.gpu.num_nodes must be >= 1, got 0" in cap.err and not (tmp_path / "p.yaml").exists()


def test_a_component_refuses_bad_overrides_before_its_stage(tmp_path, monkeypatch):
    from helpers import FakeArtifact

    from components import build_components

    reached = []
    monkeypatch.setattr("reclora.features.features_stage", lambda *a, **k: reached.append(1))
    fn = build_components("cpu:1", "gpu:1").features.python_func
    (tmp_path / "d").mkdir()
    with pytest.raises(ConfigError, match=r"^crm\.mlp\[0\] must be an integer, got 'wide'$"):
        fn(
            data=FakeArtifact(tmp_path / "d"),
            profile="small",
            overrides={"crm": {"mlp": ["wide"]}},
            feature_store=FakeArtifact(tmp_path / "f"),
            stats=FakeArtifact(tmp_path / "s"),
        )
    assert not reached


def test_the_torchrun_entry_point_refuses_bad_params_before_the_process_group(tmp_path, monkeypatch):
    from reclora import launch

    monkeypatch.setattr(launch, "init_from_env", lambda: pytest.fail("the process group formed before the check"))
    args = ["llm", "--kind", "lora", "--data", "d", "--retrieved", "r", "--out", str(tmp_path / "o")]
    with pytest.raises(ConfigError, match=r"^train: unknown key 'train\.sampel_size'"):
        launch.main([*args, "--overrides", json.dumps({"train": {"sampel_size": 8}})])
    f = tmp_path / "params.json"
    f.write_text(json.dumps(_with(load_params(), "adapter.rank", 0)))
    with pytest.raises(ConfigError, match=r"^adapter\.rank must be >= 1, got 0$"):
        launch.main([*args, "--params", str(f)])
    y = tmp_path / "params.yaml"  # a YAML params file is merged over the packaged defaults, as every --params
    y.write_text(yaml.safe_dump({"train": {"sample_size": 5}}))
    got = launch._load_params(launch.parser().parse_args([*args, "--params", str(y)]))
    assert got == deep_merge(load_params(), {"train": {"sample_size": 5}})


def test_the_spark_drivers_refuse_bad_params_before_any_work(tmp_path):
    from reclora.data import spark_job as prepare_job
    from reclora.features import spark_job as features_job

    work = tmp_path / "work"
    with pytest.raises(ConfigError, match=r"^data\.split must be a list of 3"):
        prepare_job.main(
            [
                "--dataset",
                "synthetic",
                "--out",
                str(tmp_path / "o"),
                "--work",
                str(work),
                "--params",
                json.dumps({"data": {"split": [0.5, 0.5]}}),
            ]
        )
    with pytest.raises(ConfigError, match=r"^features\.chunk_rows must be >= 0, got -1$"):
        features_job.main(
            [
                "--data",
                str(tmp_path / "d"),
                "--out",
                str(tmp_path / "o"),
                "--work",
                str(work),
                "--features-params",
                json.dumps({"chunk_rows": -1}),
            ]
        )
    assert not work.exists()


# ------------------------------------------------------------------ one name: --feature-store
@pytest.mark.parametrize("command", ["crm", "llm", "evaluate"])
def test_feature_store_is_the_option_and_features_a_hidden_alias(command, tmp_path, monkeypatch, capsys):
    stage = {"crm": "crm_stage", "llm": "llm_stage", "evaluate": "evaluate_stage"}[command]
    seen = {}

    def record(*a, **k):
        seen["feature_store"] = k.get("feature_store")
        return {"models": {}, "gate": {"decision": {"reason": ""}}}

    monkeypatch.setattr(f"reclora.stages.{stage}", record)
    base = {
        "crm": ["--data", "d", "--retrieved", "r"],
        "llm": ["--data", "d", "--retrieved", "r"],
        "evaluate": ["--run", "crm=c"],
    }[command]
    out = ["--out", str(tmp_path / "o")]
    rc, cap = _cli(["train", command, "--help"], capsys)
    assert "--feature-store" in cap.out and "--features " not in cap.out.replace("--feature-store", "")
    for opt in ("--feature-store", "--features"):
        seen.clear()
        rc, cap = _cli(["train", command, *base, *out, opt, "FS"], capsys)
        assert rc == 0 and seen["feature_store"] == "FS", (opt, cap.err)
    rc, cap = _cli(["train", command, *base, *out, "--feature-store", "A", "--features", "B"], capsys)
    assert rc == 2 and "--features is the old name of --feature-store" in cap.err


def test_the_launch_parser_takes_feature_store_and_the_old_name():
    from reclora.launch import parser

    base = ["llm", "--kind", "lora", "--data", "d", "--retrieved", "r", "--out", "o"]
    assert parser().parse_args([*base, "--feature-store", "F"]).feature_store == "F"
    assert parser().parse_args([*base, "--features", "F"]).feature_store == "F"
    assert "--features" not in parser()._subparsers._group_actions[0].choices["llm"].format_help()
