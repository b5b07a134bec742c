import errno
import json
import pickle
import random
import threading

import numpy as np
import pytest
import safetensors.torch
import torch

from vidgen.fileio import sha256_file
from vidgen.train import checkpoint as ckpt
from vidgen.train.checkpoint import CheckpointError, read_checkpoint, resolve_checkpoint


def _write(run, step, value=1.0):
    nets = {"G/w": torch.full((4, 4), value), "G_ema/w": torch.full((4, 4), value / 2)}
    train = {"optim/G/0/exp_avg": torch.zeros(4, 4)}
    state = {"family": "toygan", "config": {"engine": {"steps": 10}}, "step": step, "nimg": 8 * step,
             "networks": ["G", "G_ema"]}
    return ckpt.write_checkpoint(ckpt.checkpoint_dir(run, step), nets, train, state)


def test_round_trip_and_reading_api(tmp_path):
    path = _write(tmp_path, 5, 3.0)
    c = read_checkpoint(tmp_path)
    assert c.path == path and c.family == "toygan" and c.step == 5 and c.nimg == 40
    assert c.config == {"engine": {"steps": 10}}
    assert torch.equal(c.network_state("G_ema")["w"], torch.full((4, 4), 1.5))
    assert resolve_checkpoint(path / "state.json") == path
    with pytest.raises(CheckpointError, match="no network 'D'"):
        c.network_state("D")
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [path.name]  # nothing left of the atomic write


@pytest.mark.parametrize("damage", ["flip", "truncate", "state", "missing"])
def test_damaged_newest_checkpoint_falls_back_with_a_warning(tmp_path, damage):
    _write(tmp_path, 1, 1.0)
    newest = _write(tmp_path, 2, 2.0)
    if damage == "flip":
        data = bytearray((newest / "networks.safetensors").read_bytes())
        data[-3] ^= 0xFF
        (newest / "networks.safetensors").write_bytes(bytes(data))
    elif damage == "truncate":
        data = (newest / "train.safetensors").read_bytes()
        (newest / "train.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "state":
        text = (newest / "state.json").read_text().replace('"step": 2', '"step": 3')
        (newest / "state.json").write_text(text)
    else:
        (newest / "networks.safetensors").unlink()
    with pytest.warns(UserWarning, match="skipping bad checkpoint"):
        c = read_checkpoint(tmp_path)
    assert c.step == 1
    with pytest.raises(CheckpointError):
        read_checkpoint(newest)


class _Payload:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_payload_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    blob = pickle.dumps(_Payload(marker))
    # 1) given directly as a checkpoint
    (tmp_path / "model.pkl").write_bytes(blob)
    with pytest.raises(CheckpointError, match="never unpickles"):
        read_checkpoint(tmp_path / "model.pkl")
    # 2) a torch.save archive renamed as a checkpoint file
    torch.save({"x": _Payload(marker)}, tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="pickle"):
        read_checkpoint(tmp_path / "weights.pt")
    # 3) planted inside a checkpoint folder whose state.json vouches for it
    run = tmp_path / "run"
    good = _write(run, 4)
    (good / "networks.safetensors").write_bytes(blob)
    state = json.loads((good / "state.json").read_text())
    state["files"]["networks.safetensors"] = {"sha256": sha256_file(good / "networks.safetensors"),
                                              "bytes": len(blob)}
    state["checksum"] = ckpt._body_checksum(state)
    (good / "state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="never unpickles"):
        read_checkpoint(good)
    assert not marker.exists()


def test_keep_last_and_milestones(tmp_path):
    for step in range(1, 9):
        _write(tmp_path, step)
    (tmp_path / "checkpoints" / ".tmp-step-000000009-123").mkdir()  # left by killed writers
    (tmp_path / "checkpoints" / ".step-000000009.tmp-0123abcd").mkdir()
    ckpt.prune_checkpoints(tmp_path, keep_last=2, milestone_every=3)
    steps = [int(p.name[5:]) for p in ckpt.list_checkpoints(tmp_path)]
    assert steps == [3, 6, 7, 8]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [f"step-{s:09d}" for s in steps]


def test_rng_and_optimizer_state_round_trip():
    dev = torch.device("cpu")
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    saved = json.loads(json.dumps(ckpt.rng_state(dev)))
    a = (torch.rand(3), np.random.rand(3), random.random())
    ckpt.set_rng_state(saved, dev)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1, betas=(0.0, 0.99))
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors = {}
    saved = json.loads(json.dumps(ckpt.optimizer_state(opt, "optim/G", tensors)))
    opt2 = torch.optim.Adam(net.parameters(), lr=0.1, betas=(0.0, 0.99))
    ckpt.load_optimizer_state(opt2, saved, tensors)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s2["param_groups"][0]["betas"] == (0.0, 0.99)
    for k in s1["state"]:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(s1["state"][k][name], s2["state"][k][name])


def test_missing_path_and_empty_run(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="holds no checkpoints"):
        resolve_checkpoint(tmp_path)


def _failing_save(fail_on: str):
    """A safetensors writer that writes half of ``fail_on`` and then fails as a full disk does."""
    real = safetensors.torch.save_file

    def save(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        if filename.endswith(fail_on):
            data = open(filename, "rb").read()
            open(filename, "wb").write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
    return save


@pytest.mark.parametrize("fail_on", ["networks.safetensors", "train.safetensors"])
def test_a_failed_write_never_replaces_a_good_checkpoint(tmp_path, monkeypatch, fail_on):
    good = _write(tmp_path, 3, 3.0)
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    monkeypatch.setattr(safetensors.torch, "save_file", _failing_save(fail_on))
    with pytest.raises(CheckpointError, match="could not write checkpoint .*No space left.* unchanged"):
        _write(tmp_path, 6, 6.0)  # a new step
    with pytest.raises(CheckpointError, match="could not write checkpoint"):
        _write(tmp_path, 3, 9.0)  # the same step written again (after a resume)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [good.name]  # no temporary folders
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    c = read_checkpoint(tmp_path)
    assert c.step == 3 and torch.equal(c.network_state("G")["w"], torch.full((4, 4), 3.0))


def test_rewriting_a_step_replaces_it_whole(tmp_path):
    _write(tmp_path, 3, 3.0)
    _write(tmp_path, 3, 5.0)
    c = read_checkpoint(tmp_path)
    assert torch.equal(c.network_state("G")["w"], torch.full((4, 4), 5.0))
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-000000003"]


def test_run_numbers_are_unique_when_runs_start_at_once(tmp_path):
    (tmp_path / "00007-old-run").mkdir()
    (tmp_path / "notes-00099").mkdir()  # not a run folder
    names = [f"toygan-{i}-8x8-b4" for i in range(8)]
    barrier, made = threading.Barrier(len(names)), []
    real_runs = ckpt._runs

    def slow_scan(out_dir):  # widen the window between choosing a number and creating the folder
        found = real_runs(out_dir)
        threading.Event().wait(0.02)
        return found

    def start(name):
        barrier.wait()
        made.append(ckpt.new_run_dir(tmp_path, name))

    ckpt._runs = slow_scan
    try:
        threads = [threading.Thread(target=start, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        ckpt._runs = real_runs
    numbers = sorted(int(p.name[:5]) for p in made)
    assert numbers == list(range(8, 16)), [p.name for p in made]


def test_latest_run_matches_the_name_exactly(tmp_path):
    name = "toygan-clips[2]-8x8-b4"  # glob metacharacters in a data folder name
    for folder, step in (("00000-" + name, 2), ("00001-" + name, 5), ("00002-" + name + "-x", 9),
                         ("00003-other", 9)):
        _write(tmp_path / folder, step)
    (tmp_path / ("00004-" + name)).mkdir()  # started, killed before its first checkpoint
    assert ckpt.latest_run(tmp_path, name) == tmp_path / ("00001-" + name)
    assert ckpt.latest_run(tmp_path / "absent", name) is None
    assert ckpt.new_run_dir(tmp_path, name).name == "00005-" + name
