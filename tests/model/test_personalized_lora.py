"""Personalized LoRA (reclora.lora) on a tiny seeded Llama: maths, batching, training, persistence."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors import safe_open
from transformers import LlamaConfig, LlamaForCausalLM

from reclora.errors import ConfigError, RecLoRAError
from reclora.lora import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    PersonalizedLoRAConfig,
    PersonalizedLoRALinear,
    PersonalizedLoRAModel,
    mixing_entropy,
)

SIGNAL_DIM = 16
N_EXPERTS = 4
VOCAB = 128
RULES = ["parameter", "output"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread is as fast and far steadier on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg).eval()


def lora_config(**kw) -> PersonalizedLoRAConfig:
    base = dict(
        n_experts=N_EXPERTS, rank=4, alpha=8, dropout=0.0, gate_dropout=0.0, signal_dim=SIGNAL_DIM, gate_hidden=8
    )
    base.update(kw)
    return PersonalizedLoRAConfig(**base)


def wrap(seed: int = 0, nonzero_b: bool = True, **kw) -> PersonalizedLoRAModel:
    """A wrapped tiny Llama; with ``nonzero_b`` the banks get seeded non-zero B (as after training)."""
    pm = PersonalizedLoRAModel(tiny_llama(seed), lora_config(**kw)).eval()
    torch.manual_seed(seed + 100)
    if nonzero_b:
        with torch.no_grad():
            for _, layer in pm.lora_layers():
                layer.lora_B.normal_(0.0, 0.2)
                if layer.gate is not None and layer.gate.uses_hidden:  # spread the gate logits: clearly per-sample
                    layer.gate.fc2.weight.normal_(0.0, 1.0)
    return pm


def same_adapter(pm: PersonalizedLoRAModel, **kw) -> PersonalizedLoRAModel:
    """Another wrapper on an identical base with identical bank/gate values (e.g. other mixing rule)."""
    other = PersonalizedLoRAModel(tiny_llama(0), lora_config(**kw)).eval()
    other.load_adapter_state_dict(pm.adapter_state_dict())
    return other


def batch(b: int = 4, t: int = 12, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (b, t), generator=g)
    h = torch.randn(b, SIGNAL_DIM, generator=g) * 2
    return ids, torch.ones_like(ids), h


# (1) zero-B identity --------------------------------------------------------------------


@pytest.mark.parametrize("mixing", RULES)
def test_zero_b_is_exact_identity(mixing):
    base = tiny_llama(0)
    ids, mask, h = batch()
    with torch.no_grad():
        expected = base(input_ids=ids, attention_mask=mask).logits
        pm = PersonalizedLoRAModel(copy.deepcopy(base), lora_config(mixing=mixing)).eval()
        got = pm(ids, mask, signal=h).logits
    assert torch.equal(got, expected)


# (2) per-sample mixing in one batch == each sample alone ---------------------------------


@pytest.mark.parametrize("mixing", RULES)
def test_batched_mixing_equals_per_sample_loop(mixing):
    pm = wrap(mixing=mixing)
    ids, mask, h = batch(b=4)
    with torch.no_grad():
        batched = pm(ids, mask, signal=h).logits
        alone = torch.cat([pm(ids[i : i + 1], mask[i : i + 1], signal=h[i : i + 1]).logits for i in range(4)])
        base = pm.base_model  # the adapter matters: personalized logits differ from the plain model's
        with pm.disable_adapter():
            plain = base(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
    assert (batched - plain).abs().max() > 1e-3
    # and different users really get different updates
    w = pm.gate_weights(h)["model.layers.0.self_attn.q_proj"]
    assert (w[0] - w[1]).abs().max() > 1e-2


# (3) explicit formulas; the two rules agree on one-hot weights, differ otherwise ----------


def _layer_and_inputs(mixing):
    pm = wrap(mixing=mixing)
    layer = pm.base_model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, PersonalizedLoRALinear)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 5, layer.in_features, generator=g)
    h = torch.randn(3, SIGNAL_DIM, generator=g)
    return layer, x, h


def test_parameter_mixing_matches_explicit_formula():
    layer, x, h = _layer_and_inputs("parameter")
    with torch.no_grad():
        w = layer.mixing_weights(h)
        layer.set_signal(h)
        got = layer(x)
        layer.clear()
        expected = []
        for b in range(x.shape[0]):
            a_u = sum(w[b, k] * layer.lora_A[k] for k in range(N_EXPERTS))  # [r, in]
            b_u = sum(w[b, k] * layer.lora_B[k] for k in range(N_EXPERTS))  # [out, r]
            expected.append(layer.base_layer(x[b]) + layer.scaling * (x[b] @ a_u.T @ b_u.T))
    torch.testing.assert_close(got, torch.stack(expected), atol=1e-5, rtol=1e-5)
    assert layer.scaling == 8 / 4


def test_output_mixing_matches_explicit_formula():
    layer, x, h = _layer_and_inputs("output")
    with torch.no_grad():
        w = layer.mixing_weights(h)
        layer.set_signal(h)
        got = layer(x)
        layer.clear()
        expected = []
        for b in range(x.shape[0]):
            d = sum(w[b, k] * (x[b] @ layer.lora_A[k].T @ layer.lora_B[k].T) for k in range(N_EXPERTS))
            expected.append(layer.base_layer(x[b]) + layer.scaling * d)
    torch.testing.assert_close(got, torch.stack(expected), atol=1e-5, rtol=1e-5)


def test_rules_agree_on_one_hot_and_differ_in_general():
    p = wrap(mixing="parameter")
    o = same_adapter(p, mixing="output")
    ids, mask, h = batch(b=4)
    one_hot = torch.nn.functional.one_hot(torch.tensor([0, 3, 1, 2]), N_EXPERTS).float()
    with torch.no_grad():
        # forced one-hot weights (each sample its own expert)
        torch.testing.assert_close(
            p(ids, mask, signal=h, mixing_weights=one_hot).logits,
            o(ids, mask, signal=h, mixing_weights=one_hot).logits,
            atol=1e-5,
            rtol=1e-5,
        )
        # soft gate weights: the rules are different functions
        assert (p(ids, mask, signal=h).logits - o(ids, mask, signal=h).logits).abs().max() > 1e-3
        # a very low temperature makes the gate one-hot, and the rules agree again
        for m in (p, o):
            m.set_temperature(1e-4)
        assert all(w.max(-1).values.min() > 0.999 for w in p.gate_weights(h).values())
        torch.testing.assert_close(p(ids, mask, signal=h).logits, o(ids, mask, signal=h).logits, atol=1e-5, rtol=1e-5)


# (4) temperature and the uniform-gate ablation ------------------------------------------


def test_temperature_controls_sharpness():
    pm = wrap()
    _, _, h = batch(b=6)
    with torch.no_grad():
        pm.set_temperature(1e4)
        for w in pm.gate_weights(h).values():
            torch.testing.assert_close(w, torch.full_like(w, 1 / N_EXPERTS), atol=1e-3, rtol=0)
            assert torch.allclose(w.sum(-1), torch.ones(6))
        assert pm.gate_diagnostics(h)["entropy"] > 0.999
        pm.set_temperature(1e-3)
        for w in pm.gate_weights(h).values():
            assert w.max(-1).values.min() > 0.99
        assert pm.gate_diagnostics(h)["entropy"] < 0.05
    assert mixing_entropy(torch.eye(3)).max() == 0


def test_gate_inputs_score_and_hidden_plus_score():
    """score: w depends on the CRM logit z alone, linearly in the gate logits and not LayerNormed;
    hidden+score: [h, z], z read the same way beside the MLP on h."""
    sc = wrap(signal_dim=1, gate_input="score")
    z = torch.tensor([[-2.0], [0.0], [1.0], [2.0]])
    for _, layer in sc.lora_layers():
        g = layer.gate
        assert not hasattr(g, "fc1") and g.uses_score
        torch.testing.assert_close(g.logits(z), z * g.score_weight + g.score_bias)
        w = g(z)
        assert torch.allclose(w.sum(-1), torch.ones(4)) and not torch.allclose(w[0], w[3])
    ids, mask, _ = batch(b=4)
    with torch.no_grad():
        assert not torch.allclose(sc(ids, mask, signal=z).logits, sc(ids, mask, signal=2 * z).logits)  # scale matters

    hs = wrap(signal_dim=SIGNAL_DIM + 1, gate_input="hidden+score")
    _, _, h = batch(b=4)
    sig = torch.cat([h, z], dim=1)
    for _, layer in hs.lora_layers():
        g = layer.gate
        assert g.norm.normalized_shape == (SIGNAL_DIM,)
        mlp_only = g.fc2(g.act(g.fc1(g.norm(h))))
        torch.testing.assert_close(g.logits(sig), mlp_only + z * g.score_weight + g.score_bias)
        moved_z = torch.cat([h, z + 1.0], dim=1)
        moved_h = torch.cat([h.flip(0), z], dim=1)
        assert not torch.allclose(g(sig), g(moved_z)) and not torch.allclose(g(sig), g(moved_h))
    with pytest.raises(ConfigError, match="gate_input"):
        lora_config(gate_input="logit")
    with pytest.raises(ConfigError, match="1-wide"):
        lora_config(gate_input="score")  # signal_dim 16
    with pytest.raises(ConfigError, match="signal_dim"):
        lora_config(signal_dim=1, gate_input="hidden+score")


def test_uniform_gate_is_exactly_one_over_n_and_ignores_the_signal():
    pm = wrap(gate="uniform")
    assert not any(".gate." in n for n, _ in pm.named_trainable_parameters())
    ids, mask, h = batch(b=3)
    for w in pm.gate_weights(h).values():
        assert torch.equal(w, torch.full((3, N_EXPERTS), 1 / N_EXPERTS))
    with torch.no_grad():
        a = pm(ids, mask, signal=h).logits
        b = pm(ids, mask, signal=None).logits
        c = pm(ids, mask, signal=torch.randn_like(h)).logits
    assert torch.equal(a, b) and torch.equal(a, c)


# (5) what trains ------------------------------------------------------------------------


@pytest.mark.parametrize("mixing", RULES)
def test_only_banks_and_gates_train(mixing):
    pm = PersonalizedLoRAModel(tiny_llama(0), lora_config(mixing=mixing))
    names = {n for n, p in pm.named_parameters() if p.requires_grad}
    assert names and all(n.endswith((".lora_A", ".lora_B")) or ".gate." in n for n in names)
    assert len(pm.trainable_parameters()) == len(names)
    assert all(
        not p.requires_grad for n, p in pm.base_model.named_parameters() if "lora_" not in n and ".gate." not in n
    )

    base_before = {n: p.detach().clone() for n, p in pm.named_parameters() if not p.requires_grad}
    adapter_before = {n: p.detach().clone() for n, p in pm.named_trainable_parameters()}
    opt = torch.optim.AdamW(pm.trainable_parameters(), lr=1e-2, weight_decay=0.0)
    ids, mask, h = batch(b=4)
    pm.train()
    for _ in range(2):  # step 1 moves B off zero; from step 2 A and the gates get gradient too
        loss = pm(ids, mask, signal=h, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    for n, p in pm.named_parameters():
        if not p.requires_grad:
            assert p.grad is None and torch.equal(p, base_before[n]), n
    for n, p in pm.named_trainable_parameters():
        assert not torch.equal(p, adapter_before[n]), f"{n} did not train"


def test_signal_is_cleared_even_when_the_forward_raises():
    pm = wrap()
    ids, mask, h = batch(b=4)
    with pytest.raises(ValueError, match="rows"):
        pm(ids, mask, signal=h[:3])  # batch mismatch, raised inside the base model's forward
    assert all(layer.get_state() == (None, None) for _, layer in pm.lora_layers())
    with pytest.raises(ValueError, match="signal"):
        pm(ids, mask)  # gate='crm' needs the CRM signal
    with pytest.raises(ConfigError):
        PersonalizedLoRAModel(tiny_llama(0), lora_config(target_modules=["nope_proj"]))
    pm.base_model.gradient_checkpointing_enable()
    pm.train()
    with pytest.raises(RecLoRAError, match="checkpointing"):
        pm(ids, mask, signal=h)


# (6) persistence ------------------------------------------------------------------------


@pytest.mark.parametrize("mixing", RULES)
def test_save_load_round_trip(tmp_path, mixing):
    pm = wrap(mixing=mixing, temperature=0.7)
    ids, mask, h = batch()
    with torch.no_grad():
        before = pm(ids, mask, signal=h).logits
    pm.save(tmp_path / "adapter")
    files = sorted(p.name for p in (tmp_path / "adapter").iterdir())
    assert files == sorted([WEIGHTS_NAME, CONFIG_NAME])
    cfg = json.loads((tmp_path / "adapter" / CONFIG_NAME).read_text())
    assert cfg["mixing"] == mixing and cfg["temperature"] == 0.7 and cfg["adapter_type"] == "personalized_lora"
    with safe_open(str(tmp_path / "adapter" / WEIGHTS_NAME), framework="pt") as f:
        keys = set(f.keys())
    assert keys == {n for n, _ in pm.named_trainable_parameters()}

    loaded = PersonalizedLoRAModel.load(tiny_llama(0), tmp_path / "adapter").eval()
    assert loaded.lora_config == pm.lora_config
    with torch.no_grad():
        assert torch.equal(loaded(ids, mask, signal=h).logits, before)


def test_config_dict_round_trip_and_validation():
    cfg = PersonalizedLoRAConfig(n_experts=16, mixing="output", gate="uniform", target_modules=["q_proj"])
    assert PersonalizedLoRAConfig.from_dict(cfg.to_dict()) == cfg
    assert PersonalizedLoRAConfig.from_json(cfg.to_json()) == cfg
    assert PersonalizedLoRAConfig().to_dict()["target_modules"] == ["q_proj", "v_proj"]
    with pytest.raises(ConfigError, match="unknown keys"):
        PersonalizedLoRAConfig.from_dict({"n_expert": 4})
    for bad in ({"mixing": "weights"}, {"gate": "mlp"}, {"temperature": 0}, {"rank": 0}, {"dropout": 1.0}):
        with pytest.raises(ConfigError):
            PersonalizedLoRAConfig(**bad)


# (7) bf16 -------------------------------------------------------------------------------


@pytest.mark.parametrize("mixing", RULES)
def test_bf16_autocast_is_finite_and_close_to_fp32(mixing):
    pm = wrap(mixing=mixing)
    ids, mask, h = batch()
    with torch.no_grad():
        ref = pm(ids, mask, signal=h).logits
    pm.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pm(ids, mask, signal=h, labels=ids)
    out.loss.backward()
    got = out.logits.float()
    assert torch.isfinite(got).all()
    assert (got - ref).abs().max() < 0.05 * ref.abs().max() + 0.02
    for p in pm.trainable_parameters():
        assert p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
        assert torch.isfinite(p.grad).all()


def test_bf16_base_model_with_fp32_bank():
    base = tiny_llama(0).to(torch.bfloat16)
    pm = PersonalizedLoRAModel(base, lora_config()).eval()
    ids, mask, h = batch()
    logits = pm(ids, mask, signal=h).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
    assert all(p.dtype == torch.float32 for p in pm.trainable_parameters())
