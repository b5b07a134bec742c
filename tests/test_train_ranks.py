"""Identical ranks for every family (docs/TRAINING.md "Multi-process training").

Two gloo ranks under torchrun, one accumulation round each, end with the weights, EMA copies
and running statistics (w_avg, magnitude EMAs, the path-length target, the spectral-norm
vectors) of one process that runs the same global batch in two accumulation rounds: the
global batch is cut into the same groups, each group draws its own seeded random numbers,
and the running statistics are averaged over the groups (vidgen/train/sync.py). A two-rank
run killed with SIGKILL and resumed ends bitwise equal to an uninterrupted one. A rank whose
weights drift is caught by the consistency check, which names the tensor.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import child_pids
from tiny_families import FAMILIES
import torch
from safetensors.torch import load_file

from vidgen.train import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[1]
STEPS = 5
COMMON = ["engine.workers=0", "engine.device=cpu", "engine.sample_every=0", f"engine.log_every={STEPS}"]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def _cmd(family: str, data: str, out: Path, nproc: int, extra: list[str]) -> list[str]:
    config, sets, _, _ = FAMILIES[family]
    args = ["-m", "vidgen", "train", family, "--data", data, "--out", str(out)]
    args += ["--config", config] if config else []
    args += [a for s in sets + COMMON + extra for a in ("--set", s)]
    if nproc > 1:
        args = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] + args
    return [sys.executable] + args


def _final(out: Path, steps: int) -> tuple[dict, ckpt.Checkpoint]:
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs  # only rank 0 creates the run folder
    c = ckpt.read_checkpoint(runs[0])
    assert c.step == steps
    return load_file(str(c.path / "networks.safetensors")), c


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    made = {}

    def get(family: str) -> str:
        maker = FAMILIES[family][2]
        if maker == "synthetic":
            return "synthetic"
        if family not in made:
            root = tmp_path_factory.mktemp(family) / "data"
            root.mkdir()
            maker(root)
            made[family] = str(root)
        return made[family]
    return get


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_two_ranks_equal_one_process_with_two_rounds(family, datasets, tmp_path):
    data = datasets(family)
    extra = [f"engine.steps={STEPS}", "engine.checkpoint_every=1", f"engine.keep_last={STEPS}"]
    runs = {}
    for name, nproc, accum in (("one", 1, 2), ("two", 2, 1)):
        done = subprocess.run(_cmd(family, data, tmp_path / name, nproc, extra + [f"engine.accum={accum}"]),
                              env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = _final(tmp_path / name, STEPS)
    (one, c1), (two, c2) = runs["one"], runs["two"]
    assert c1.state["world_size"] == 1 and c2.state["world_size"] == 2
    assert one.keys() == two.keys()
    # the recipe's state too: the path-length target, ADA's p and its sums
    t1, t2 = c1.train_tensors(), c2.train_tensors()
    recipe1 = {k: v for k, v in t1.items() if k.startswith("recipe")}
    assert recipe1.keys() == {k for k in t2 if k.startswith("recipe")}
    assert c1.state["recipe"] == c2.state["recipe"]
    one, two = {**one, **recipe1}, {**two, **{k: t2[k] for k in recipe1}}
    diffs = {k: (one[k].double() - two[k].double()).abs().max().item() for k in one if one[k].numel()}
    worst = max(diffs, key=diffs.get)
    print(f"{family}: max abs diff 1 process x 2 rounds vs 2 ranks after {STEPS} steps: {diffs[worst]:.3g} ({worst})")
    assert diffs[worst] <= 1e-6, (worst, diffs[worst])
    # the running statistics did move, so they are equal because both runs kept them alike
    leaf = {k: re.split(r"[./]", k)[-1] for k in one}
    stats = [k for k in one if leaf[k] in FAMILIES[family][3] and "_ema" not in k.split("/")[0]]
    assert len(stats) >= len(FAMILIES[family][3]), sorted(one)[:20]
    init = {"w_avg": 0.0, "x_avg": 0.0, "pl_mean": 0.0, "magnitude": 1.0, "magnitude_ema": 1.0}
    for k in stats:
        if leaf[k] in init:
            assert (one[k] - init[leaf[k]]).abs().max() > 1e-4, k
    # and the weights trained: they moved from the first checkpoint (step 1) to the last
    runs = [p for p in (tmp_path / "one").iterdir() if p.is_dir()]
    first = load_file(str(ckpt.checkpoint_dir(runs[0], 1) / "networks.safetensors"))
    for net in {k.split("/")[0] for k in first if "_ema" not in k.split("/")[0]}:
        moved = max((one[k] - first[k]).abs().max().item() for k in first if k.startswith(f"{net}/") and one[k].numel())
        assert moved > 1e-4, (net, moved)


def _newest_step(out: Path) -> int:
    steps = [c.name for r in out.glob("*") if r.is_dir() for c in ckpt.list_checkpoints(r)]
    return max((int(s.split("-")[-1]) for s in steps), default=0)


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the ranks through Linux /proc")
def test_two_ranks_killed_and_resumed_are_bitwise_exact(tmp_path):
    """sg3 (w_avg, magnitude EMAs, ADA) under two ranks: SIGKILL to both ranks after a
    checkpoint, `--resume auto`, and the end is bitwise the uninterrupted run's."""
    steps = 12
    extra = [f"engine.steps={steps}", "engine.checkpoint_every=2", "engine.keep_last=2", "engine.accum=1"]
    ref = subprocess.run(_cmd("sg3", "synthetic", tmp_path / "ref", 2, extra), env=_env(), cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd("sg3", "synthetic", out, 2, extra), env=_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 600
    while _newest_step(out) < 4 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    ranks = child_pids(proc.pid)  # torchrun starts its ranks in sessions of their own
    assert len(ranks) == 2, ranks
    for pid in ranks + [proc.pid]:  # both ranks, then torchrun: a machine that went down
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    for pid in ranks:
        while Path(f"/proc/{pid}").exists() and "zombie" not in _status(pid):
            time.sleep(0.01)
    killed_at = _newest_step(out)
    assert 4 <= killed_at < steps
    print(f"2 ranks killed after the checkpoint of step {killed_at} of {steps}")
    done = subprocess.run(_cmd("sg3", "synthetic", out, 2, extra) + ["--resume", "auto"], env=_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(rf"resumed from .* at step {killed_at}\b", done.stderr), done.stderr[-2000:]
    (n1, c1), (n2, c2) = _final(tmp_path / "ref", steps), _final(out, steps)
    assert n1.keys() == n2.keys()
    for k in n1:
        assert torch.equal(n1[k], n2[k]), k
    assert c1.state["recipe"] == c2.state["recipe"]  # ADA's p and its sums
