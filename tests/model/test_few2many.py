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

from reclora.few2many import TrainConfig, build_adapter, encode, load_adapter, predict_adapter, sample_few, train_adapter
from reclora.llm import load_causal_lm

ADAPTER = {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "n_experts": 4,
           "signal_dim": 16, "gate_hidden": 16, "gate_dropout": 0.0}  # fmt: skip
PROMPT = "the user watched the lost river . will the user enjoy the target movie ? yes or no"


def _toy(n=48, seed=0):
    """Identical prompts; the label is carried only by the signal's cluster."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    centre = rng.normal(size=16).astype(np.float32)
    sig = (np.where(labels[:, None] == 1, 1.0, -1.0) * centre + 0.3 * rng.normal(size=(n, 16))).astype(np.float32)
    return [PROMPT] * n, labels, sig


def _fresh(kind, tiny_llama_dir, seed=0):
    torch.manual_seed(seed)
    base, tok = load_causal_lm(tiny_llama_dir)
    return build_adapter(kind, base, ADAPTER), tok


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
    cfg = TrainConfig(lr=5e-3, batch_size=8, epochs=1, bf16=False, seed=3, checkpoint_every=0)
    runs = []
    for _ in range(2):
        m, tok = _fresh("reclora", tiny_llama_dir)
        train_adapter(m, tok, prompts, labels, sig, cfg, progress=False)
        runs.append(_weights(m))
    for n in runs[0]:
        assert torch.equal(runs[0][n], runs[1][n]), n


def test_reclora_learns_from_the_crm_signal_vanilla_lora_cannot(tiny_llama_dir):
    prompts, labels, sig = _toy(64)
    cfg = TrainConfig(lr=1e-2, batch_size=16, epochs=12, bf16=False, seed=0, checkpoint_every=0, warmup_ratio=0.0)
    aucs = {}
    for kind in ("lora", "reclora"):
        m, tok = _fresh(kind, tiny_llama_dir)
        s = sig if kind == "reclora" else None
        hist = train_adapter(m, tok, prompts, labels, s, cfg, progress=False)
        assert np.mean(hist["loss"][-4:]) < np.mean(hist["loss"][:4])
        p = predict_adapter(m, tok, prompts, s, progress=False, bf16=False)
        aucs[kind] = roc_auc_score(labels, p) if len(set(np.round(p, 9))) > 1 else 0.5
    assert aucs["reclora"] > 0.95, aucs
    assert aucs["lora"] == pytest.approx(0.5, abs=0.05), aucs  # same prompt for everyone: nothing to learn


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
        cfg = TrainConfig(lr=1e-2, batch_size=8, epochs=4, bf16=False, checkpoint_every=0, loss=loss)
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
    cfg = TrainConfig(lr=1e-2, batch_size=16, epochs=12, bf16=False, seed=0, checkpoint_every=0, warmup_ratio=0.0)
    train_adapter(m, tok, prompts, labels, z, cfg, progress=False)
    p = predict_adapter(m, tok, prompts, z, progress=False, bf16=False)
    assert roc_auc_score(labels, p) > 0.95


def test_only_the_adapter_trains(tiny_llama_dir):
    m, tok = _fresh("reclora", tiny_llama_dir)
    base_before = {n: p.detach().clone() for n, p in m.module.named_parameters() if not p.requires_grad}
    prompts, labels, sig = _toy(16)
    train_adapter(m, tok, prompts, labels, sig, TrainConfig(lr=1e-2, batch_size=8, bf16=False), progress=False)
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
    train_adapter(m, tok, prompts, labels, s, TrainConfig(lr=1e-2, batch_size=8, bf16=False), progress=False)
    p1 = predict_adapter(m, tok, prompts, s, progress=False, bf16=False)
    m.save(tmp_path / "a")
    files = sorted(f.name for f in (tmp_path / "a").iterdir())
    assert all(f.endswith((".safetensors", ".json", ".md")) for f in files), files
    base, _ = load_causal_lm(tiny_llama_dir)
    m2 = load_adapter(base, tmp_path / "a")
    p2 = predict_adapter(m2, tok, prompts, s, progress=False, bf16=False)
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
    m, tok = _fresh("reclora", {model!r})
    prompts, labels, sig = _toy(64)
    cfg = TrainConfig(lr=5e-3, batch_size=4, epochs=1, bf16=False, seed=1, checkpoint_every=1)
    train_adapter(m, tok, prompts, labels, sig, cfg, {out!r}, progress=False)
    """
)


def test_a_killed_run_resumes_to_the_same_weights(tiny_llama_dir, tmp_path):
    tests_dir = os.path.dirname(__file__)
    cfg = TrainConfig(lr=5e-3, batch_size=4, epochs=1, bf16=False, seed=1, checkpoint_every=1)
    prompts, labels, sig = _toy(64)
    torch.set_num_threads(1)
    try:
        # the reference: one uninterrupted run
        ref, tok = _fresh("reclora", tiny_llama_dir)
        train_adapter(ref, tok, prompts, labels, sig, cfg, tmp_path / "ref", progress=False)
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
        assert 3 <= killed_at < 16
        # started again, it resumes from the checkpoint and ends where the reference ended
        m, tok = _fresh("reclora", tiny_llama_dir, seed=123)  # different init: everything must come from the checkpoint
        hist = train_adapter(m, tok, prompts, labels, sig, cfg, tmp_path / "run", progress=False)
        assert hist["resumed_from"] == killed_at and hist["steps"] == 16
    finally:
        torch.set_num_threads(2)
    want, got = _weights(ref), _weights(m)
    for n in want:
        torch.testing.assert_close(got[n], want[n], atol=1e-6, rtol=1e-5)


def test_reclora_without_signal_is_an_error(tiny_llama_dir):
    m, tok = _fresh("reclora", tiny_llama_dir)
    with pytest.raises(ValueError, match="needs the CRM signals"):
        train_adapter(m, tok, [PROMPT], np.array([1]), None, TrainConfig(), progress=False)
