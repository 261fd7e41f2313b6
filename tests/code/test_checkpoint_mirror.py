"""The checkpoint mirror: every checkpoint saved under the mirrored root is copied to the object store
(complete copy first, then LATEST), and a new pod restores the latest complete one (fsspec memory://)."""

import json
import uuid

import fsspec
import torch

from reclora.few2many.checkpoint import LATEST, checkpoint_mirror, load_checkpoint, pull_checkpoints, save_checkpoint


def _model(seed: int):
    torch.manual_seed(seed)
    p = torch.nn.Parameter(torch.randn(3, 2))
    opt = torch.optim.AdamW([p], lr=0.1)
    return {"w": p}, opt


def _step(named, opt):
    opt.zero_grad()
    (named["w"] ** 2).sum().backward()
    opt.step()


def test_saves_go_to_the_bucket_and_a_new_pod_resumes_from_the_latest(tmp_path):
    uri = f"memory://ckpt-{uuid.uuid4().hex[:8]}/run/task"
    fs, root = fsspec.core.url_to_fs(uri)
    named, opt = _model(0)
    with checkpoint_mirror(tmp_path / "pod1", uri) as restored:
        assert restored == []
        for step in (1, 2, 3):
            _step(named, opt)
            save_checkpoint(tmp_path / "pod1", named, opt, {"step": step})
    latest = fs.cat_file(f"{root}/checkpoint/{LATEST}").decode()
    assert latest.startswith("step-000000003-")
    # older complete copies are removed once a newer one is named
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{root}/checkpoint", detail=False)) == sorted([LATEST, latest])

    # a killed upload of step 4: files there, LATEST not yet moved -> the restore ignores it
    fs.pipe(f"{root}/checkpoint/step-000000004-1/state.json", b'{"step": 4}')
    fresh, fresh_opt = _model(1)
    with checkpoint_mirror(tmp_path / "pod2", uri) as restored:
        assert restored == ["checkpoint"]
        state = load_checkpoint(tmp_path / "pod2", fresh, fresh_opt)
    assert state["step"] == 3
    torch.testing.assert_close(fresh["w"], named["w"], rtol=0, atol=0)
    for k in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(fresh_opt.state[fresh["w"]][k], opt.state[named["w"]][k], rtol=0, atol=0)
    # resumed training continues exactly like the original
    _step(named, opt)
    _step(fresh, fresh_opt)
    torch.testing.assert_close(fresh["w"], named["w"])


def test_a_local_checkpoint_wins_and_no_uri_is_a_plain_block(tmp_path):
    uri = f"memory://ckpt-{uuid.uuid4().hex[:8]}"
    named, opt = _model(0)
    with checkpoint_mirror(tmp_path / "a", uri):
        save_checkpoint(tmp_path / "a", named, opt, {"step": 7})
    # the same pod retried (local disk kept): nothing is downloaded over it
    assert pull_checkpoints(uri, tmp_path / "a") == []
    assert pull_checkpoints(f"memory://nothing-{uuid.uuid4().hex[:8]}", tmp_path / "b") == []
    with checkpoint_mirror(tmp_path / "c", None) as restored:
        save_checkpoint(tmp_path / "c", named, opt, {"step": 1})
    assert restored == [] and json.loads((tmp_path / "c" / "checkpoint" / "state.json").read_text())["step"] == 1
    # outside the block, saves are local only
    save_checkpoint(tmp_path / "a", named, opt, {"step": 8})
    fs, root = fsspec.core.url_to_fs(uri)
    assert fs.cat_file(f"{root}/checkpoint/{LATEST}").decode().startswith("step-000000007-")
