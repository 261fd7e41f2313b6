"""Data-parallel Few2Many: 2 gloo ranks on loopback train the tiny Llama RecLoRA exactly like one process.

The ranks are started by ``launch.launch(local=True)`` (rendezvous store bound to 127.0.0.1,
gloo on ``lo``), initialise themselves from torchrun's environment variables, are stopped after
2 steps and started again, resuming from the checkpoint rank 0 wrote.
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

N = 17  # epochs of 4 full micro-batches of 4 and one of 1 sample: rank 1 then gets nothing
CFG = dict(lr=5e-3, batch_size=4, grad_accum=2, epochs=2, bf16=False, seed=2, checkpoint_every=1, warmup_ratio=0.2,
           bucket=False)  # unbucketed: the 1-sample micro-batch stays last in each epoch

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
    assert cmd[3:] == ["--standalone", "--nnodes", "1", "--nproc_per_node", "4", "-m", launch.WORKER_MODULE,
                       "llm", "--kind", "reclora"]  # fmt: skip
    assert launch.command(2, ["w.py", "x"], module=None)[-2:] == ["w.py", "x"]
    assert not distributed.active() and distributed.world() == 1 and distributed.is_main()
    assert distributed.init_from_env() is False  # no torchrun environment: single process


def test_two_gloo_ranks_match_one_process_and_resume(tiny_llama_dir, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=TESTS_MODEL, model=str(tiny_llama_dir), n=N, cfg=CFG))
    # 2 steps, then killed off; started again it resumes from rank 0's checkpoint
    for stop in (2, 0):
        launch.launch(2, [str(script), str(tmp_path), str(stop)], module=None, local=True,
                           timeout=240, log_dir=tmp_path / f"logs-{stop}")  # fmt: skip
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state["world_size"] == 2 and state["step"] == 6

    # the reference: one process, the same global batches
    torch.set_num_threads(1)
    try:
        ref, tok = _fresh("reclora", tiny_llama_dir)
        prompts, labels, sig = _toy(N)
        want_hist = train_adapter(ref, tok, prompts, labels, sig, TrainConfig(**CFG), progress=False)
    finally:
        torch.set_num_threads(2)
    want = {n: p.detach() for n, p in ref.named_trainable_parameters()}
    assert want_hist["steps"] == 6

    for stop, steps in ((2, 2), (0, 6)):
        w0, w1 = (load_file(str(tmp_path / f"rank{r}-{stop}.safetensors")) for r in (0, 1))
        h0, h1 = (json.loads((tmp_path / f"rank{r}-{stop}.json").read_text()) for r in (0, 1))
        assert h0["steps"] == h1["steps"] == steps and h0["world_size"] == 2
        assert h0["loss"] == h1["loss"]
        for n in w0:  # the ranks stay bit-identical
            assert torch.equal(w0[n], w1[n]), n
        # global per-step loss = the single-process loss (the history is rounded to 1e-5)
        np.testing.assert_allclose(h0["loss"], want_hist["loss"][:steps], rtol=1e-5, atol=1.1e-5)
    assert h0["resumed_from"] == 2 and h0["samples_seen"] == want_hist["samples_seen"] - 2 * 2 * 4
    assert set(w0) == set(want)
    init = dict(_fresh("reclora", tiny_llama_dir)[0].named_trainable_parameters())
    moved = max((want[n] - init[n]).abs().max() for n in want)
    assert moved > 1e-3  # the training did something the comparison can see
    for n in want:
        torch.testing.assert_close(w0[n], want[n], rtol=1e-5, atol=1e-6)


def test_train_llm_component_launches_two_gloo_ranks(tiny_llama_dir, tmp_path):
    """pipeline.gpu.accelerator_limit N > 1: the training step runs N ranks in its pod (here 2 gloo ranks
    on loopback) and its adapter matches one process training the same global batches."""
    from components.train_llm.component import train_llm as component
    from helpers import FakeArtifact, llm_stage_inputs

    data, ret, params = llm_stage_inputs(tmp_path / "inputs")
    outs = {}
    for n in (2, 1):
        adapter, stats = FakeArtifact(tmp_path / f"n{n}" / "adapter"), FakeArtifact(tmp_path / f"n{n}" / "stats")
        component(kind="lora", data=FakeArtifact(data), retrieved=FakeArtifact(ret), crm=FakeArtifact(tmp_path / "x"),
                  model_path=str(tiny_llama_dir), gate="crm", profile="", overrides=params, adapter=adapter,
                  stats=stats, nproc_per_node=n)  # fmt: skip
        outs[n] = (Path(adapter.path), stats.metadata)
    two = json.loads((outs[2][0] / "metrics.json").read_text())
    one = json.loads((outs[1][0] / "metrics.json").read_text())
    assert two["train"]["world_size"] == 2 and "world_size" not in one["train"]
    assert two["train"]["steps"] == one["train"]["steps"] == 6 and outs[2][1]["train_samples"] == 24
    w2 = load_file(str(next((outs[2][0] / "adapter").rglob("*.safetensors"))))
    w1 = load_file(str(next((outs[1][0] / "adapter").rglob("*.safetensors"))))
    assert set(w2) == set(w1) and w1
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(json.loads((outs[2][0] / "train_loss.json").read_text())["loss"],
                               json.loads((outs[1][0] / "train_loss.json").read_text())["loss"], rtol=1e-4, atol=2e-5)
