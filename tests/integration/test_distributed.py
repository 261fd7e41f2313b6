"""Data-parallel Few2Many: 2 gloo ranks on loopback train the tiny Llama RecLoRA exactly like one process.

The ranks are started by ``launch.launch(local=True)`` (rendezvous store bound to 127.0.0.1,
gloo on ``lo``), initialise themselves from torchrun's environment variables, are stopped after
2 steps and started again, resuming from the checkpoint rank 0 wrote.

The comparison is exact by construction, on any CPU: each rank runs its half of every global batch
of 4 (2 samples), and the one-process reference runs the same global batches as two micro-batches of
those same 2 samples (``batch_size`` 2, ``grad_accum`` 2). Both then evaluate the same kernels on the
same shapes and threads, and sum the same two fp32 gradients (a + b, commutative in IEEE arithmetic:
gloo's all-reduce of 2 ranks and autograd's accumulation give the same bits), so the weights must be
bit-identical. A reference with micro-batches of 4 would sum in another order, and AdamW's
normalised steps amplify that reassociation (differences of 2e-6 to 5e-6 after 6 steps were measured,
depending on the CPU's kernels), which no tolerance fixed on one CPU bounds.
"""

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from reclora import launch
from reclora.few2many import TrainConfig, distributed, train_adapter

TESTS_MODEL = str(Path(__file__).resolve().parents[1] / "model")
sys.path.insert(0, TESTS_MODEL)
from test_few2many import _fresh, _toy  # noqa: E402

N = 17  # epochs of 4 full global batches of 4 and one of 1 sample: rank 1 then gets nothing
CFG = dict(
    lr=5e-3,
    batch_size=4,
    grad_accum=1,
    epochs=2,
    precision="fp32",
    seed=2,
    checkpoint_every=1,
    warmup_ratio=0.2,
    bucket=False,
)  # unbucketed: the batches are the epoch's permutation cut in order, the 1-sample one last
ONE = CFG | {"batch_size": 2, "grad_accum": 2}  # one process: each global batch as the ranks' two halves
# the loss history is rounded to 5 decimals, and the ranks sum their halves' losses in fp32 (one process in
# float64): the two sums differ by at most 2^-24 of the loss, so the rounded values by at most one step
LOSS_ATOL = 1e-5 + 2.0**-24 * 2

WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    from safetensors.torch import save_file
    sys.path.insert(0, {tests!r})
    from test_few2many import _fresh, _toy
    from reclora.few2many import TrainConfig, distributed, train_adapter

    torch.set_num_threads(1)
    out, stop = sys.argv[1], int(sys.argv[2])
    assert distributed.init_from_env() and distributed.world() == 2
    r = distributed.rank()
    m, tok = _fresh("reclora", {model!r}, seed=123 * r)  # rank 1 starts elsewhere: rank 0's weights are broadcast
    prompts, labels, sig = _toy({n})
    hist = train_adapter(m, tok, prompts, labels, sig, TrainConfig(**{cfg!r}), out + "/run", progress=False,
                         stop_after=stop or None)
    w = {{n: p.detach().contiguous() for n, p in m.named_trainable_parameters()}}
    save_file(w, f"{{out}}/rank{{r}}-{{stop}}.safetensors")
    with open(f"{{out}}/rank{{r}}-{{stop}}.json", "w") as f:
        json.dump(hist, f)
    distributed.shutdown()
    """
)


def test_command_is_torchrun_standalone():
    cmd = launch.command(4, ["llm", "--kind", "reclora"])
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert cmd[3:] == [
        "--standalone",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "4",
        "-m",
        launch.WORKER_MODULE,
        "llm",
        "--kind",
        "reclora",
    ]
    assert launch.command(2, ["w.py", "x"], module=None)[-2:] == ["w.py", "x"]
    assert not distributed.active() and distributed.world() == 1 and distributed.is_main()
    assert distributed.init_from_env() is False  # no torchrun environment: single process


def test_two_gloo_ranks_match_one_process_and_resume(tiny_llama_dir, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=TESTS_MODEL, model=str(tiny_llama_dir), n=N, cfg=CFG))
    # 2 steps, then killed off; started again it resumes from rank 0's checkpoint
    for stop in (2, 0):
        launch.launch(
            2,
            [str(script), str(tmp_path), str(stop)],
            module=None,
            local=True,
            timeout=240,
            log_dir=tmp_path / f"logs-{stop}",
        )
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state["world_size"] == 2 and state["step"] == 10

    # the reference: one process, the same global batches, as the ranks' halves (see the module docstring)
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref, tok = _fresh("reclora", tiny_llama_dir)
        prompts, labels, sig = _toy(N)
        want_hist = train_adapter(ref, tok, prompts, labels, sig, TrainConfig(**ONE), progress=False)
    finally:
        torch.set_num_threads(n_threads)
    want = {n: p.detach() for n, p in ref.named_trainable_parameters()}
    assert want_hist["steps"] == 10

    for stop, steps in ((2, 2), (0, 10)):
        w0, w1 = (load_file(str(tmp_path / f"rank{r}-{stop}.safetensors")) for r in (0, 1))
        h0, h1 = (json.loads((tmp_path / f"rank{r}-{stop}.json").read_text()) for r in (0, 1))
        assert h0["steps"] == h1["steps"] == steps and h0["world_size"] == 2
        assert h0["loss"] == h1["loss"]
        for n in w0:  # the ranks stay bit-identical
            assert torch.equal(w0[n], w1[n]), n
        # global per-step loss = the single-process loss
        np.testing.assert_allclose(h0["loss"], want_hist["loss"][:steps], rtol=0, atol=LOSS_ATOL)
    assert h0["resumed_from"] == 2 and h0["samples_seen"] == want_hist["samples_seen"] - 2 * 4
    assert set(w0) == set(want)
    # the first step's loss is the mean log-loss of the first global batch under the initial weights, scored
    # on its own (not through either training loop): the loss is scaled by the global batch, not a rank's half
    # (p from other batch shapes differs from the trained forward's by fp32 reassociation, ~1e-7 of it)
    from reclora.few2many import length_batches, predict_adapter

    fresh, _ = _fresh("reclora", tiny_llama_dir)
    p = predict_adapter(fresh, tok, prompts, sig, precision="fp32", progress=False, distributed=False)
    first = length_batches([0] * N, CFG["batch_size"], CFG["seed"], 0, bucket=False)[0]
    y = labels[first]
    ce = float(-np.log(np.where(y == 1, p[first], 1 - p[first])).mean())
    assert abs(want_hist["loss"][0] - ce) <= LOSS_ATOL + 1e-6 and abs(h0["loss"][0] - ce) <= LOSS_ATOL + 1e-6
    init = dict(_fresh("reclora", tiny_llama_dir)[0].named_trainable_parameters())
    moved = max((want[n] - init[n]).abs().max() for n in want)
    assert moved > 1e-3  # the training did something the comparison can see
    for n in want:  # bit-identical: the same arithmetic in the same order
        assert torch.equal(w0[n], want[n]), (n, float((w0[n] - want[n]).abs().max()))


def test_train_llm_component_launches_two_gloo_ranks(tiny_llama_dir, tmp_path, monkeypatch):
    """pipeline.gpu.accelerator_limit N > 1: the training step runs N ranks in its pod (here 2 gloo ranks
    on loopback) and its adapter matches one process training the same global batches, bit for bit: as in
    the test above, the one process runs each global batch of 4 as the ranks' two halves (batch_size 2,
    grad_accum 2), unbucketed, without the frozen-layer cache (whose batches of 2 x batch_size would pad
    differently), with one thread per process."""
    from helpers import FakeArtifact, llm_stage_inputs

    from components.train_llm.component import train_llm as component
    from reclora.config import deep_merge

    data, ret, params = llm_stage_inputs(tmp_path / "inputs")
    exact = {"bucket": False, "cache_lower": False, "valid_samples": 0}
    outs = {}
    n_threads = torch.get_num_threads()
    monkeypatch.setenv("RECLORA_THREADS", "1")  # each rank, and the component's own process
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # the component sets them: restored after
        monkeypatch.delenv(k, raising=False)
    try:
        for n in (2, 1):
            adapter, stats = FakeArtifact(tmp_path / f"n{n}" / "adapter"), FakeArtifact(tmp_path / f"n{n}" / "stats")
            train = exact | ({"batch_size": 4, "grad_accum": 1} if n == 2 else {"batch_size": 2, "grad_accum": 2})
            component(
                kind="lora",
                data=FakeArtifact(data),
                retrieved=FakeArtifact(ret),
                crm=FakeArtifact(tmp_path / "x"),
                model_path=str(tiny_llama_dir),
                gate="crm",
                profile="",
                overrides=deep_merge(params, {"train": train}),
                adapter=adapter,
                stats=stats,
                nproc_per_node=n,
            )
            outs[n] = (Path(adapter.path), stats.metadata)
    finally:
        torch.set_num_threads(n_threads)
    two = json.loads((outs[2][0] / "metrics.json").read_text())
    one = json.loads((outs[1][0] / "metrics.json").read_text())
    assert two["train"]["world_size"] == 2 and "world_size" not in one["train"]
    assert two["train"]["steps"] == one["train"]["steps"] == 6 and outs[2][1]["train_samples"] == 24
    w2 = load_file(str(next((outs[2][0] / "adapter").rglob("*.safetensors"))))
    w1 = load_file(str(next((outs[1][0] / "adapter").rglob("*.safetensors"))))
    assert set(w2) == set(w1) and w1
    for k in w1:
        assert torch.equal(w2[k], w1[k]), k
    np.testing.assert_allclose(
        json.loads((outs[2][0] / "train_loss.json").read_text())["loss"],
        json.loads((outs[1][0] / "train_loss.json").read_text())["loss"],
        rtol=0,
        atol=LOSS_ATOL,
    )
    assert two["eval"] == one["eval"]  # the ranks score their share of the same predict batches: the same p
