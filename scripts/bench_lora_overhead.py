#!/usr/bin/env python
"""Time one train step (forward + backward + AdamW) of peft LoRA vs RecLoRA's personalized LoRA.

Same random Llama (SmolLM2-135M shape with fewer layers), same rank, same target
modules (q_proj, v_proj), same batch. Steps of the two models are interleaved so
machine noise hits both alike; prints the per-step medians and their ratio.

    python scripts/bench_lora_overhead.py                # fp32 and bf16 autocast
    python scripts/bench_lora_overhead.py --mixing output --layers 2 --steps 3
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch


def build_base(args: argparse.Namespace):
    """A randomly initialised Llama of SmolLM2-135M's width with ``args.layers`` layers (seed 0)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=args.layers,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg)


def make_models(args: argparse.Namespace):
    """(peft LoRA model, RecLoRA personalized LoRA model) on copies of one base, same rank and target modules,
    their lora_B weights drawn non-zero as mid-training."""
    from peft import LoraConfig, get_peft_model

    from reclora.lora import PersonalizedLoRAConfig, PersonalizedLoRAModel

    base = build_base(args)
    peft_model = get_peft_model(
        copy.deepcopy(base),
        LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.05, target_modules=["q_proj", "v_proj"]),
    )
    rec = PersonalizedLoRAModel(
        copy.deepcopy(base),
        PersonalizedLoRAConfig(
            n_experts=args.experts, rank=args.rank, alpha=2 * args.rank, mixing=args.mixing, signal_dim=256
        ),
    )
    for m in (peft_model, rec):  # start from a trained-looking adapter (B != 0), as mid-training
        for n, p in m.named_parameters():
            if p.requires_grad and "lora_B" in n:
                torch.nn.init.normal_(p, std=0.01)
    return peft_model, rec


def step_fn(model, opt, inputs: dict, autocast: bool, logits_to_keep: int):
    """A function that runs one train step of ``model`` (forward, last-position cross-entropy, backward,
    ``opt`` step; bf16 autocast when ``autocast``) and returns its wall time in seconds."""

    def step() -> float:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(**inputs, logits_to_keep=logits_to_keep)
            logits = out.logits[:, -1, :].float()  # the answer-position readout
            loss = torch.nn.functional.cross_entropy(logits, inputs["input_ids"][:, 0])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    return step


def main() -> None:
    """Parse the arguments, build both models and print their per-step medians and ratio per precision."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--mixing", choices=["parameter", "output"], default="parameter")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument(
        "--full-logits",
        action="store_true",
        help="compute logits at every position (default: only the last, as the Yes/No readout does)",
    )
    ap.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    peft_model, rec = make_models(args)
    peft_model.train()
    rec.train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 49152, (args.batch, args.tokens), generator=g)
    mask = torch.ones_like(ids)
    h = torch.randn(args.batch, 256, generator=g)
    keep = 0 if args.full_logits else 1
    n_peft = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    n_rec = sum(p.numel() for p in rec.trainable_parameters())
    print(
        f"llama hidden=576 layers={args.layers} heads=9/3 | batch {args.batch}x{args.tokens} | "
        f"rank {args.rank} | N={args.experts} mixing={args.mixing} | threads={torch.get_num_threads()} | "
        f"logits={'all positions' if args.full_logits else 'last position'}"
    )
    print(f"trainable params: peft LoRA {n_peft:,}  personalized LoRA {n_rec:,}")

    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    for prec in precisions:
        autocast = prec == "bf16"
        opt_p = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-4)
        opt_r = torch.optim.AdamW(rec.trainable_parameters(), lr=1e-4)
        sp = step_fn(peft_model, opt_p, {"input_ids": ids, "attention_mask": mask}, autocast, keep)
        sr = step_fn(rec, opt_r, {"input_ids": ids, "attention_mask": mask, "signal": h}, autocast, keep)
        for _ in range(args.warmup):
            sp()
            sr()
        tp, tr = [], []
        for _ in range(args.steps):  # interleaved
            tp.append(sp())
            tr.append(sr())
        mp, mr = statistics.median(tp), statistics.median(tr)
        print(
            f"[{prec}] peft LoRA {mp * 1000:8.1f} ms/step  personalized LoRA {mr * 1000:8.1f} ms/step  "
            f"ratio {mr / mp:.3f}  (best {min(tp) * 1000:.1f} / {min(tr) * 1000:.1f} ms, "
            f"ratio of best {min(tr) / min(tp):.3f})"
        )


if __name__ == "__main__":
    main()
