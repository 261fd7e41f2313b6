"""Few2Many training on a tiny Llama: sampling, encoding, determinism, resume after kill,
save/load, and RecLoRA actually using the CRM signal."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from reclora.errors import RecLoRAError
from reclora.few2many import (
    PromptSet,
    TrainConfig,
    build_adapter,
    encode,
    length_batches,
    load_adapter,
    predict_adapter,
    sample_few,
    train_adapter,
)
from reclora.llm import load_causal_lm

ADAPTER = {
    "rank": 4,
    "alpha": 8,
    "dropout": 0.0,
    "target_modules": ["q_proj", "v_proj"],
    "n_experts": 4,
    "signal_dim": 16,
    "gate_hidden": 16,
    "gate_dropout": 0.0,
}
PROMPT = "the user watched the lost river . will the user enjoy the target movie ? yes or no"


def _toy(n=48, seed=0):
    """Identical prompts; the label is carried only by the signal's cluster."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    centre = rng.normal(size=16).astype(np.float32)
    sig = (np.where(labels[:, None] == 1, 1.0, -1.0) * centre + 0.3 * rng.normal(size=(n, 16))).astype(np.float32)
    return [PROMPT] * n, labels, sig


def _fresh(kind, tiny_llama_dir, seed=0, **extra):
    torch.manual_seed(seed)
    base, tok = load_causal_lm(tiny_llama_dir)
    return build_adapter(kind, base, ADAPTER | extra), tok


def _weights(adapter):
    return {n: p.detach().clone() for n, p in adapter.named_trainable_parameters()}


def test_sample_few_is_seeded_uniform_and_sorted():
    a, b, c = sample_few(1000, 100, 1), sample_few(1000, 100, 1), sample_few(1000, 100, 2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(np.unique(a)) == 100 and np.all(np.diff(a) > 0)
    assert np.array_equal(sample_few(10, 0, 0), np.arange(10)) and np.array_equal(sample_few(10, 50, 0), np.arange(10))
    # uniform: over many seeds every row is picked about n/N of the time
    counts = np.bincount(np.concatenate([sample_few(50, 10, s) for s in range(2000)]), minlength=50)
    assert counts.min() > 300 and counts.max() < 500


def test_encode_left_pads_and_truncates_from_the_left(tiny_llama_dir):
    _, tok = load_causal_lm(tiny_llama_dir)
    enc = encode(tok, ["action", "the user likes comedy drama romance thriller"], max_length=64)
    assert enc["attention_mask"][0, 0] == 0 and enc["attention_mask"][0, -1] == 1  # left padding
    assert enc["input_ids"][0, -1] == enc["input_ids"][1, -1]  # both end with the answer slot
    long = " ".join(["comedy"] * 200) + " yes or no"
    short = encode(tok, [long], max_length=20)
    assert short["input_ids"].shape[1] == 20
    assert short["input_ids"][0, -1] == encode(tok, [long], 999)["input_ids"][0, -1]


def test_training_is_deterministic(tiny_llama_dir):
    prompts, labels, sig = _toy()
    cfg = TrainConfig(lr=5e-3, batch_size=8, epochs=1, precision="fp32", seed=3, checkpoint_every=0)
    runs = []
    for _ in range(2):
        m, tok = _fresh("reclora", tiny_llama_dir)
        train_adapter(m, tok, prompts, labels, sig, cfg, progress=False)
        runs.append(_weights(m))
    for n in runs[0]:
        assert torch.equal(runs[0][n], runs[1][n]), n


def _random_prompts(n, seed):
    """Prompts of random genre words, drawn independently of any label."""
    from helpers import TINY_WORDS

    genres = TINY_WORDS[TINY_WORDS.index("action") :]
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(genres, size=int(rng.integers(3, 9)))) + " ? yes or no" for _ in range(n)]


def test_reclora_learns_from_the_crm_signal_vanilla_lora_cannot(tiny_llama_dir):
    """The label lives only in the signal; the prompts vary but carry nothing about it. On held-out
    samples RecLoRA ranks well, vanilla LoRA (which sees only the prompts) ranks at chance."""
    _, labels, sig = _toy(160, seed=0)
    prompts = _random_prompts(160, seed=1)
    tr, te = slice(0, 96), slice(96, 160)
    cfg = TrainConfig(lr=1e-2, batch_size=16, epochs=12, precision="fp32", seed=0, checkpoint_every=0, warmup_ratio=0.0)
    aucs, spread = {}, {}
    for kind in ("lora", "reclora"):
        m, tok = _fresh(kind, tiny_llama_dir)
        s = sig if kind == "reclora" else None
        hist = train_adapter(m, tok, prompts[tr], labels[tr], None if s is None else s[tr], cfg, progress=False)
        assert np.mean(hist["loss"][-4:]) < np.mean(hist["loss"][:4])
        p = predict_adapter(m, tok, prompts[te], None if s is None else s[te], progress=False, precision="fp32")
        spread[kind] = float(np.ptp(p))
        aucs[kind] = roc_auc_score(labels[te], p)
    assert spread["lora"] > 1e-4, spread  # its predictions do vary with the prompt: a real ranking
    assert aucs["reclora"] > 0.9, aucs
    assert abs(aucs["lora"] - 0.5) < 0.2, aucs  # nothing in the text predicts the label


def test_the_model_overfits_a_small_sample(tiny_llama_dir):
    """Overfit check: 64 distinct prompts with arbitrary labels, many epochs, the training loss falls
    far below ln 2 (a text path that cannot fit its own training sample cannot learn anything)."""
    prompts = _random_prompts(64, seed=5)
    labels = np.random.default_rng(6).integers(0, 2, size=64)
    m, tok = _fresh("lora", tiny_llama_dir)
    cfg = TrainConfig(lr=2e-2, batch_size=16, epochs=60, precision="fp32", seed=0, checkpoint_every=0, warmup_ratio=0.0)
    hist = train_adapter(m, tok, prompts, labels, None, cfg, progress=False)
    assert np.mean(hist["loss"][-4:]) < 0.5 * np.log(2), hist["loss"][-4:]


@pytest.mark.parametrize("kind", ["lora", "reclora"])
def test_cached_frozen_layers_give_the_same_logits(kind, tiny_llama_dir):
    """adapter.layers: 1 adapts the top layer only; the cached lower states give the full forward's logits."""
    torch.manual_seed(0)
    base, tok = load_causal_lm(tiny_llama_dir)
    m = build_adapter(kind, base, ADAPTER | {"layers": 1})
    assert m.first_layer == 1
    assert all(".layers.1." in n for n, _ in m.named_trainable_parameters())
    with torch.no_grad():
        for _, p in m.named_trainable_parameters():  # non-zero B so the adapter changes the output
            p.add_(0.05 * torch.randn_like(p))
    prompts = _random_prompts(6, seed=2)
    sig = torch.randn(6, 16) if kind == "reclora" else None
    data = PromptSet(tok, prompts, 64, None if sig is None else sig.numpy())
    uncached = data.batch(np.arange(6), torch.device("cpu"))
    data.cache(m, batch_size=4, precision="fp32")
    cached = data.batch(np.arange(6), torch.device("cpu"))
    assert cached["input_ids"] is None and cached["lower"].shape[:2] == uncached["attention_mask"].shape
    with torch.no_grad():
        a = m.answer_logits(uncached["input_ids"], uncached["attention_mask"], sig, (4, 5))
        b = m.answer_logits(None, cached["attention_mask"], sig, (4, 5), lower=cached["lower"])
        alone = m.answer_logits(
            uncached["input_ids"][:1, -data.lengths[0] :],
            uncached["attention_mask"][:1, -data.lengths[0] :],
            None if sig is None else sig[:1],
            (4, 5),
        )
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a[:1], alone, rtol=1e-5, atol=1e-5)  # padding does not change a prompt's logits


def test_training_with_and_without_the_cache_is_the_same(tiny_llama_dir):
    prompts, labels = _random_prompts(32, seed=3), np.arange(32) % 2
    runs = []
    for cache in (False, True):
        torch.manual_seed(0)
        base, tok = load_causal_lm(tiny_llama_dir)
        m = build_adapter("lora", base, ADAPTER | {"layers": 1})
        cfg = TrainConfig(lr=1e-2, batch_size=8, epochs=2, precision="fp32", checkpoint_every=0, cache_lower=cache)
        hist = train_adapter(m, tok, prompts, labels, None, cfg, progress=False)
        runs.append((hist["loss"], _weights(m)))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-4, atol=1e-5)
    for n in runs[0][1]:
        torch.testing.assert_close(runs[0][1][n], runs[1][1][n], rtol=1e-4, atol=1e-5)


def test_length_buckets_cover_every_sample_once_with_little_padding():
    lengths = np.random.default_rng(0).integers(20, 300, size=1000)
    b = length_batches(lengths, 8, seed=1, epoch=0)
    flat = np.concatenate(b)
    assert sorted(flat.tolist()) == list(range(1000))
    assert all(1 <= len(x) <= 8 for x in b)
    pad = sum(len(x) * lengths[x].max() - lengths[x].sum() for x in b) / lengths.sum()
    plain = length_batches(lengths, 8, seed=1, epoch=0, bucket=False)
    pad_plain = sum(len(x) * lengths[x].max() - lengths[x].sum() for x in plain) / lengths.sum()
    assert pad < 0.05 < pad_plain, (pad, pad_plain)
    again = length_batches(lengths, 8, seed=1, epoch=0)
    other = length_batches(lengths, 8, seed=1, epoch=1)
    assert all(np.array_equal(x, y) for x, y in zip(b, again))
    assert not all(np.array_equal(x, y) for x, y in zip(b, other))  # a new order every epoch


def test_early_stopping_keeps_the_best_epoch(tiny_llama_dir, tmp_path):
    """Validation AUC after every epoch; the weights at the end are those of the best epoch."""
    _, labels, sig = _toy(96, seed=2)
    prompts = _random_prompts(96, seed=4)
    val = {"prompts": prompts[64:], "labels": labels[64:], "signals": sig[64:]}
    m, tok = _fresh("reclora", tiny_llama_dir)
    cfg = TrainConfig(lr=3e-2, batch_size=16, epochs=6, patience=2, precision="fp32", seed=0, checkpoint_every=1)
    hist = train_adapter(m, tok, prompts[:64], labels[:64], sig[:64], cfg, tmp_path / "run", progress=False, valid=val)
    aucs = hist["valid_auc"]
    assert len(aucs) == hist["epochs_run"] >= 1
    best = int(np.argmax(aucs)) + 1
    assert hist["best_epoch"] == best
    if hist["stopped_early"]:
        assert len(aucs) - best == cfg.patience
    p = predict_adapter(m, tok, val["prompts"], val["signals"], progress=False, precision="fp32")
    assert roc_auc_score(val["labels"], p) == pytest.approx(max(aucs), abs=1e-6)  # the kept weights are the best
    assert (tmp_path / "run" / "checkpoint" / "best.safetensors").is_file()  # kept (and mirrored) with the checkpoint


def test_crm_residual_readout_is_the_crm_when_s_is_zero(tiny_llama_dir, tmp_path):
    """readout crm_residual: p = sigmoid(z + s (yes - no)), s starts at 0, so untrained it is the CRM exactly."""
    m, tok = _fresh("reclora", tiny_llama_dir)
    m2 = build_adapter("reclora", load_causal_lm(tiny_llama_dir)[0], ADAPTER | {"readout": "crm_residual"})
    assert m.readout_scale is None and m2.readout_scale is not None and float(m2.readout_scale) == 0.0
    prompts = _random_prompts(12, seed=7)
    sig = np.random.default_rng(0).normal(size=(12, 16)).astype(np.float32)
    z = np.linspace(-3, 3, 12).astype(np.float32)
    p = predict_adapter(m2, tok, prompts, sig, anchors=z, progress=False, precision="fp32")
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-z)), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="anchors"):
        predict_adapter(m2, tok, prompts, sig, progress=False)
    # trained, s moves away from 0, the text path contributes, and save/load keeps s
    labels = (z > 0).astype(int)
    train_adapter(
        m2,
        tok,
        prompts,
        labels,
        sig,
        TrainConfig(lr=5e-2, batch_size=4, epochs=3, precision="fp32", checkpoint_every=0),
        progress=False,
        anchors=z,
    )
    assert float(m2.readout_scale) != 0.0
    p1 = predict_adapter(m2, tok, prompts, sig, anchors=z, progress=False, precision="fp32")
    m2.save(tmp_path / "a")
    m3 = load_adapter(load_causal_lm(tiny_llama_dir)[0], tmp_path / "a")
    np.testing.assert_allclose(
        predict_adapter(m3, tok, prompts, sig, anchors=z, progress=False, precision="fp32"), p1, atol=1e-6
    )


def test_crm_residual_text_loss_gives_the_text_path_a_gradient_at_s_zero(tiny_llama_dir):
    """At s = 0 the anchored loss alone leaves the adapter without gradient (a dead start: the first
    step changes only s); train.text_loss_weight adds the text path's own loss, which trains it."""
    prompts = _random_prompts(16, seed=3)
    sig = np.random.default_rng(1).normal(size=(16, 16)).astype(np.float32)
    z = np.linspace(-2, 2, 16).astype(np.float32)
    labels = (np.arange(16) % 2).astype(int)
    moved = {}
    for w in (0.0, 1.0):
        torch.manual_seed(0)
        base, tok = load_causal_lm(tiny_llama_dir)
        m = build_adapter("reclora", base, ADAPTER | {"readout": "crm_residual"})
        before = {n: p.detach().clone() for n, p in m.named_trainable_parameters()}
        cfg = TrainConfig(lr=1e-2, batch_size=16, epochs=1, precision="fp32", checkpoint_every=0, text_loss_weight=w)
        train_adapter(m, tok, prompts, labels, sig, cfg, progress=False, anchors=z, stop_after=1)
        after = dict(m.named_trainable_parameters())
        moved[w] = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert moved[0.0] == {"readout.scale"}
    assert "readout.scale" in moved[1.0] and any("lora_B" in n for n in moved[1.0])  # B starts at 0: it moves first
    for bad in (-1, float("nan"), float("inf")):  # never a silent no-op
        with pytest.raises(ValueError, match="text_loss_weight"):
            TrainConfig(text_loss_weight=bad)
    with pytest.raises(ValueError, match=r"train\.lr must be a finite number > 0, got nan"):
        TrainConfig(lr=float("nan"))
    m = build_adapter("lora", load_causal_lm(tiny_llama_dir)[0], ADAPTER)
    with pytest.raises(RecLoRAError, match="readout"):
        m.anchored(torch.zeros(2, 2), torch.zeros(2))


def test_lora_plus_and_gate_learning_rates_form_their_own_groups(tiny_llama_dir):
    from reclora.few2many.trainer import _param_groups

    m, _ = _fresh("reclora", tiny_llama_dir)
    named = dict(m.named_trainable_parameters())
    groups = _param_groups(named, TrainConfig(lr=1e-3, lr_ratio_b=16, gate_lr_mult=4))
    by = {g["lr_mult"]: {id(p) for p in g["params"]} for g in groups}
    assert {id(p) for n, p in named.items() if "lora_B" in n} == by[16.0]
    assert {id(p) for n, p in named.items() if ".gate." in n} == by[4.0]
    assert {id(p) for n, p in named.items() if "lora_A" in n} == by[1.0]


@pytest.mark.parametrize("kind", ["lora", "reclora"])
def test_answer_logits_are_the_models_logits_in_fp32(kind, tiny_llama_dir):
    m, tok = _fresh(kind, tiny_llama_dir)
    enc = encode(tok, [PROMPT, "will the user enjoy it ? yes or no"], 64)
    sig = torch.randn(2, 16) if kind == "reclora" else None
    kw = {"signal": sig} if kind == "reclora" else {}
    with torch.no_grad():
        full = m.module(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kw).logits[:, -1, :]
        every = m.answer_logits(enc["input_ids"], enc["attention_mask"], sig)
        pair = m.answer_logits(enc["input_ids"], enc["attention_mask"], sig, (7, 3))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf = m.answer_logits(enc["input_ids"], enc["attention_mask"], sig, (7, 3))
            bf_head = m.module(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kw).logits[:, -1]
    assert every.dtype == pair.dtype == bf.dtype == torch.float32
    torch.testing.assert_close(every, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pair, full[:, [7, 3]], rtol=1e-5, atol=1e-5)
    # under autocast the body is bf16 but the readout is not: no bf16 rounding of the logits themselves
    assert bf_head.dtype == torch.bfloat16
    torch.testing.assert_close(bf, full[:, [7, 3]], rtol=0.05, atol=0.05)
    assert not torch.equal(bf, bf.to(torch.bfloat16).float())  # finer than bf16's grid


def test_both_losses_train_and_an_unknown_loss_is_refused(tiny_llama_dir):
    prompts, labels, sig = _toy(32)
    for loss in ("yes_no", "full_vocab"):
        m, tok = _fresh("reclora", tiny_llama_dir)
        cfg = TrainConfig(lr=1e-2, batch_size=8, epochs=4, precision="fp32", checkpoint_every=0, loss=loss)
        hist = train_adapter(m, tok, prompts, labels, sig, cfg, progress=False)
        assert np.mean(hist["loss"][-2:]) < np.mean(hist["loss"][:2]), loss
    with pytest.raises(ValueError, match="train.loss"):
        TrainConfig(loss="hinge")


def test_reclora_learns_from_the_crm_score_alone(tiny_llama_dir):
    """gate_input=score: the gates read the CRM logit only (a 1-wide signal)."""
    prompts, labels, _ = _toy(64)
    z = (np.where(labels == 1, 1.5, -1.5) + 0.5 * np.random.default_rng(1).normal(size=64)).astype(np.float32)[:, None]
    torch.manual_seed(0)
    base, tok = load_causal_lm(tiny_llama_dir)
    m = build_adapter("reclora", base, ADAPTER | {"signal_dim": 1, "gate_input": "score"})
    cfg = TrainConfig(lr=1e-2, batch_size=16, epochs=12, precision="fp32", seed=0, checkpoint_every=0, warmup_ratio=0.0)
    train_adapter(m, tok, prompts, labels, z, cfg, progress=False)
    p = predict_adapter(m, tok, prompts, z, progress=False, precision="fp32")
    assert roc_auc_score(labels, p) > 0.95


def test_only_the_adapter_trains(tiny_llama_dir):
    m, tok = _fresh("reclora", tiny_llama_dir)
    base_before = {n: p.detach().clone() for n, p in m.module.named_parameters() if not p.requires_grad}
    prompts, labels, sig = _toy(16)
    train_adapter(m, tok, prompts, labels, sig, TrainConfig(lr=1e-2, batch_size=8, precision="fp32"), progress=False)
    for n, p in m.module.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, base_before[n]), n
    names = [n for n, _ in m.named_trainable_parameters()]
    assert names and all("lora_" in n or "gate" in n for n in names)


@pytest.mark.parametrize("kind", ["lora", "reclora"])
def test_save_load_round_trip(kind, tiny_llama_dir, tmp_path):
    m, tok = _fresh(kind, tiny_llama_dir)
    prompts, labels, sig = _toy(16)
    s = sig if kind == "reclora" else None
    train_adapter(m, tok, prompts, labels, s, TrainConfig(lr=1e-2, batch_size=8, precision="fp32"), progress=False)
    p1 = predict_adapter(m, tok, prompts, s, progress=False, precision="fp32")
    m.save(tmp_path / "a")
    files = sorted(f.name for f in (tmp_path / "a").iterdir())
    assert all(f.endswith((".safetensors", ".json", ".md")) for f in files), files
    base, _ = load_causal_lm(tiny_llama_dir)
    m2 = load_adapter(base, tmp_path / "a")
    p2 = predict_adapter(m2, tok, prompts, s, progress=False, precision="fp32")
    np.testing.assert_allclose(p1, p2, atol=1e-6)
    assert not np.allclose(p1, p1[0]) or kind == "lora"


RESUME_SCRIPT = textwrap.dedent(
    """
    import sys, json, numpy as np, torch
    sys.path.insert(0, {tests!r})
    from test_few2many import _fresh, _toy
    import time
    import reclora.few2many.trainer as T
    from reclora.few2many import TrainConfig, train_adapter
    _save = T.save_checkpoint
    def slow_save(*a, **k):  # slow the run down so the test can kill it between checkpoints
        r = _save(*a, **k)
        time.sleep({slow})
        return r
    T.save_checkpoint = slow_save
    torch.set_num_threads(1)
    m, tok = _fresh("reclora", {model!r}, layers=1)
    prompts, labels, sig = _toy(64)
    vp, vl, vs = _toy(16, seed=9)
    cfg = TrainConfig(lr=5e-3, batch_size=4, epochs=2, precision="fp32", seed=1, checkpoint_every=1)
    valid = dict(prompts=vp, labels=vl, signals=vs)
    train_adapter(m, tok, prompts, labels, sig, cfg, {out!r}, progress=False, valid=valid)
    """
)


def test_a_killed_run_resumes_to_the_same_weights(tiny_llama_dir, tmp_path):
    """Two epochs with validation and cached frozen layers, killed mid-run, resumed: same weights."""
    tests_dir = os.path.dirname(__file__)
    cfg = TrainConfig(lr=5e-3, batch_size=4, epochs=2, precision="fp32", seed=1, checkpoint_every=1)
    prompts, labels, sig = _toy(64)
    vp, vl, vs = _toy(16, seed=9)
    valid = dict(prompts=vp, labels=vl, signals=vs)
    torch.set_num_threads(1)
    try:
        # the reference: one uninterrupted run
        ref, tok = _fresh("reclora", tiny_llama_dir, layers=1)
        ref_hist = train_adapter(ref, tok, prompts, labels, sig, cfg, tmp_path / "ref", progress=False, valid=valid)
        # a run in another process, killed with SIGKILL after a few checkpoints
        script = RESUME_SCRIPT.format(tests=tests_dir, model=str(tiny_llama_dir), out=str(tmp_path / "run"), slow=0.3)
        proc = subprocess.Popen([sys.executable, "-c", script])
        state = tmp_path / "run" / "checkpoint" / "state.json"
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if state.is_file() and json.loads(state.read_text())["step"] >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the training process ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = json.loads(state.read_text())["step"]
        assert 3 <= killed_at < 32
        # started again, it resumes from the checkpoint and ends where the reference ended
        m, tok = _fresh("reclora", tiny_llama_dir, seed=123, layers=1)  # different init: all from the checkpoint
        hist = train_adapter(m, tok, prompts, labels, sig, cfg, tmp_path / "run", progress=False, valid=valid)
        assert hist["resumed_from"] == killed_at and hist["steps"] == 32
        assert hist["valid_auc"] == ref_hist["valid_auc"] and hist["best_epoch"] == ref_hist["best_epoch"]
    finally:
        torch.set_num_threads(2)
    want, got = _weights(ref), _weights(m)
    for n in want:
        torch.testing.assert_close(got[n], want[n], atol=1e-6, rtol=1e-5)


def test_reclora_without_signal_is_an_error(tiny_llama_dir):
    m, tok = _fresh("reclora", tiny_llama_dir)
    with pytest.raises(ValueError, match="needs the CRM signals"):
        train_adapter(m, tok, [PROMPT], np.array([1]), None, TrainConfig(), progress=False)


def test_cached_frozen_layers_are_exact_for_per_layer_attention_kinds(tiny_llama_dir, tmp_path):
    """Gemma 3 (like Qwen 3 and others) picks each layer's mask and rotary embedding by loop index from
    config.layer_types: the cache path slices that list with the layers, so a full-attention top layer
    keeps its own kind (a tiny Gemma 3 with a 3-token sliding window would differ otherwise)."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=3,
        max_position_embeddings=256,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    Gemma3ForCausalLM(cfg).save_pretrained(tmp_path / "g", safe_serialization=True)
    tok.save_pretrained(tmp_path / "g")
    base, tok = load_causal_lm(tmp_path / "g")
    m = build_adapter("lora", base, ADAPTER | {"layers": 1})
    assert m.first_layer == 2
    with torch.no_grad():
        for _, p in m.named_trainable_parameters():
            p.add_(0.05 * torch.randn_like(p))
    data = PromptSet(tok, _random_prompts(4, seed=5), 64)
    full = data.batch(np.arange(4), torch.device("cpu"))
    data.cache(m, batch_size=4, precision="fp32")
    cached = data.batch(np.arange(4), torch.device("cpu"))
    with torch.no_grad():
        a = m.answer_logits(full["input_ids"], full["attention_mask"], None, (4, 5))
        b = m.answer_logits(None, cached["attention_mask"], None, (4, 5), lower=cached["lower"])
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert base.config.layer_types == ["sliding_attention", "sliding_attention", "full_attention"]  # restored


def test_two_stage_reclora_starts_as_the_shared_lora(tiny_llama_dir, tmp_path):
    """init_from_shared_lora copies the trained vanilla LoRA into every meta-LoRA: whatever the gates
    say, the RecLoRA predicts what the LoRA does; training then lets the experts part."""
    from reclora.few2many import init_from_shared_lora

    prompts, labels, sig = _toy(16)
    torch.manual_seed(0)
    base, tok = load_causal_lm(tiny_llama_dir)
    lora = build_adapter("lora", base, ADAPTER | {"alpha": 4})  # scaling 1 here, 2 in the RecLoRA: B is rescaled
    with torch.no_grad():
        for _, p in lora.named_trainable_parameters():
            p.add_(0.1 * torch.randn_like(p))
    lora.save(tmp_path / "lora")
    p_lora = predict_adapter(lora, tok, prompts, None, progress=False, precision="fp32")
    rec = build_adapter("reclora", load_causal_lm(tiny_llama_dir)[0], ADAPTER)
    assert init_from_shared_lora(rec, tmp_path / "lora") == 4  # q and v in 2 layers
    p_rec = predict_adapter(rec, tok, prompts, sig, progress=False, precision="fp32")
    np.testing.assert_allclose(p_rec, p_lora, atol=1e-5)
    assert not np.allclose(
        p_lora,
        predict_adapter(
            build_adapter("reclora", load_causal_lm(tiny_llama_dir)[0], ADAPTER),
            tok,
            prompts,
            sig,
            progress=False,
            precision="fp32",
        ),
        atol=1e-3,
    )
    cfg = TrainConfig(lr=1e-2, batch_size=8, epochs=1, precision="fp32", checkpoint_every=0)
    train_adapter(rec, tok, prompts, labels, sig, cfg, progress=False)
    a = dict(rec.named_trainable_parameters())
    bank = next(n for n in a if n.endswith("lora_A"))
    assert not torch.equal(a[bank][0], a[bank][1])  # the experts parted
    with pytest.raises(RecLoRAError, match="not a RecLoRA"):
        init_from_shared_lora(lora, tmp_path / "lora")
    (tmp_path / "run").mkdir()
    lora.save(tmp_path / "run" / "adapter")
    rec.save(tmp_path / "rec")
    for where, says in (
        (tmp_path / "run", "pass its adapter directory"),
        (tmp_path / "nowhere", "does not exist"),
        (tmp_path / "rec", "'reclora' adapter"),
        (tmp_path, "not a saved adapter"),
        ("", "empty"),
    ):
        with pytest.raises(RecLoRAError, match=says):
            init_from_shared_lora(rec, where)
    other = build_adapter("reclora", load_causal_lm(tiny_llama_dir)[0], ADAPTER | {"rank": 2})
    with pytest.raises(RecLoRAError, match="same rank"):
        init_from_shared_lora(other, tmp_path / "lora")


@pytest.mark.parametrize("kind", ["reclora", "lora"])
def test_resume_with_dropout_equals_an_uninterrupted_run(kind, tiny_llama_dir, tmp_path):
    """Dropout > 0 (issue 24): the dropout masks after a resume are those of the uninterrupted run, so the
    random generators (CPU, and CUDA where training runs on a GPU) must be saved and restored. Between
    the stop and the resume the global generators are moved on, as a new process would have them."""
    drop = {"dropout": 0.2, "gate_dropout": 0.2} if kind == "reclora" else {"dropout": 0.2}
    cfg = TrainConfig(lr=5e-3, batch_size=4, epochs=2, precision="fp32", seed=1, checkpoint_every=1)
    prompts, labels, sig = _toy(32)
    sig = sig if kind == "reclora" else None
    ref, tok = _fresh(kind, tiny_llama_dir, **drop)
    train_adapter(ref, tok, prompts, labels, sig, cfg, tmp_path / "ref", progress=False)
    run, tok = _fresh(kind, tiny_llama_dir, **drop)
    first = train_adapter(run, tok, prompts, labels, sig, cfg, tmp_path / "run", progress=False, stop_after=5)
    assert first["steps"] == 5
    resumed, tok = _fresh(
        kind, tiny_llama_dir, seed=77, **drop
    )  # other weights and generator states: all from the checkpoint
    torch.rand(1000)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(77)
    hist = train_adapter(resumed, tok, prompts, labels, sig, cfg, tmp_path / "run", progress=False)
    assert hist["resumed_from"] == 5 and hist["steps"] == 16
    want, got = _weights(ref), _weights(resumed)
    for n in want:
        torch.testing.assert_close(got[n], want[n], atol=1e-6, rtol=1e-5)
    # the masks matter: without restoring the generators the resumed run ends elsewhere
    from reclora.few2many import checkpoint as ckpt

    other, tok = _fresh(kind, tiny_llama_dir, **drop)
    train_adapter(other, tok, prompts, labels, sig, cfg, tmp_path / "other", progress=False, stop_after=5)
    moved, tok = _fresh(kind, tiny_llama_dir, seed=77, **drop)
    saved = ckpt.set_rng_states
    try:
        ckpt.set_rng_states = lambda states: None  # the mutant: no restore
        train_adapter(moved, tok, prompts, labels, sig, cfg, tmp_path / "other", progress=False)
    finally:
        ckpt.set_rng_states = saved
    assert any(not torch.allclose(_weights(moved)[n], want[n], atol=1e-5) for n in want)


def test_the_checkpoint_keeps_every_generator(tmp_path):
    from reclora.few2many.checkpoint import rng_states, set_rng_states

    torch.manual_seed(5)
    if torch.cuda.is_available():
        torch.zeros(1, device="cuda")  # CUDA in use, as in training on a GPU
    states = rng_states()
    want_cpu = torch.rand(4)
    want_cuda = torch.rand(4, device="cuda").cpu() if torch.cuda.is_available() else None
    assert ("cuda:0" in states) == torch.cuda.is_available()
    torch.manual_seed(6)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(6)
    set_rng_states(states)
    assert torch.equal(torch.rand(4), want_cpu)
    if want_cuda is not None:
        assert torch.equal(torch.rand(4, device="cuda").cpu(), want_cuda)


def test_fp16_with_a_gradient_scaler_trains_on_the_cpu_and_resumes(tiny_llama_dir, tmp_path):
    """precision fp16 (what auto picks on a GPU without bf16): fp16 autocast, the loss scaled by a GradScaler
    whose state is checkpointed and restored; torch has fp16 autocast on the CPU, so it runs here."""
    prompts, labels, sig = _toy(32)
    cfg = TrainConfig(lr=5e-3, batch_size=8, epochs=2, precision="fp16", seed=0, checkpoint_every=1)
    m, tok = _fresh("reclora", tiny_llama_dir)
    before = _weights(m)
    dtypes = set()
    lin = next(
        mod for n, mod in m.module.named_modules() if isinstance(mod, torch.nn.Linear) and n.endswith("mlp.up_proj")
    )
    lin.register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype))
    first = train_adapter(m, tok, prompts, labels, sig, cfg, tmp_path / "run", progress=False, stop_after=3)
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert dtypes == {torch.float16} and first["precision"]["chosen"] == "fp16" and state["precision"] == "fp16"
    assert state["grad_scaler"]["scale"] == 2.0**16  # the initial scale: no fp16 gradient overflowed
    # resumed in a new model, the scaler state comes back with the weights and the optimizer
    m2, _ = _fresh("reclora", tiny_llama_dir, seed=5)
    rest = train_adapter(m2, tok, prompts, labels, sig, cfg, tmp_path / "run", progress=False)
    assert rest["resumed_from"] == 3 and rest["steps"] == 8 and all(np.isfinite(rest["loss"]))
    moved = max(float((p - before[n]).abs().max()) for n, p in _weights(m2).items())
    assert moved > 1e-3
    # the first step's loss (weights still equal) against fp32: fp16 rounds each matmul input of the 2-layer
    # body to 11 bits (unit roundoff u = 2^-11); a few such roundings in sequence move the loss by a few u
    ref, _ = _fresh("reclora", tiny_llama_dir)
    ref_hist = train_adapter(
        ref,
        tok,
        prompts,
        labels,
        sig,
        TrainConfig(**{**cfg.__dict__, "precision": "fp32"}),
        progress=False,
        stop_after=1,
    )
    assert abs(first["loss"][0] - ref_hist["loss"][0]) <= 8 * 2.0**-11 * ref_hist["loss"][0]


def test_frozen_states_are_shared_between_lora_and_reclora_and_keyed_by_precision(tiny_llama_dir, tmp_path):
    """Both LLM steps of a run (train.share_frozen_cache) compute the same frozen lower layers: the second
    loads the first's file. States computed in another precision are another file, never mixed up."""
    prompts = _random_prompts(6, seed=4)
    lora, tok = _fresh("lora", tiny_llama_dir, layers=1)
    rec, _ = _fresh("reclora", tiny_llama_dir, layers=1)
    a = PromptSet(tok, prompts, 64)
    a.cache(lora, batch_size=4, precision="fp32", store=tmp_path)
    files = sorted(tmp_path.glob("lower-*.safetensors"))
    assert len(files) == 1 and not list(tmp_path.glob(".*"))  # written atomically, no temp file left
    b = PromptSet(tok, prompts, 64)
    b.cache(rec, batch_size=2, precision="fp32", store=tmp_path)  # another adapter, another batch size: same key
    assert sorted(tmp_path.glob("lower-*.safetensors")) == files
    assert all(torch.equal(x, y) for x, y in zip(a.lower, b.lower))
    c = PromptSet(tok, prompts, 64)
    c.cache(rec, batch_size=4, precision="bf16", store=tmp_path)
    assert len(list(tmp_path.glob("lower-*.safetensors"))) == 2
    assert not all(torch.equal(x, y) for x, y in zip(a.lower, c.lower))  # bf16 rounding: not the fp32 states
