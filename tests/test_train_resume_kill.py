"""A run killed with SIGKILL at three random moments and resumed with `--resume auto` ends
bitwise equal to an uninterrupted run (CPU, subprocesses through the real CLI)."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vidgen.train import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[1]
STEPS = 300


def _cmd(out: Path) -> list[str]:
    sets = ["engine.batch=4", "data.resolution=8", "model.channels=8", "model.z_dim=8", "data.num=32",
            "engine.workers=0", "engine.device=cpu", "engine.log_every=10", "engine.checkpoint_every=5",
            "engine.keep_last=2", f"engine.steps={STEPS}", "model.r1_interval=3"]
    return [sys.executable, "-m", "vidgen", "train", "toygan", "--data", "synthetic", "--out", str(out),
            "--resume", "auto"] + [a for s in sets for a in ("--set", s)]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def _newest_step(out: Path) -> int:
    runs = list(out.glob("0*-toygan-*"))
    steps = [int(p.name[5:]) for r in runs for p in ckpt.list_checkpoints(r)]
    return max(steps, default=0)


def _final(out: Path) -> tuple[dict, dict]:
    c = ckpt.read_checkpoint(next(out.glob("0*-toygan-*")))
    assert c.step == STEPS
    return load_file(str(c.path / "networks.safetensors")), c.train_tensors()


@pytest.mark.slow
def test_sigkill_three_times_then_resume_auto_is_bitwise_exact(tmp_path):
    seed = int(time.time())
    rng = random.Random(seed)
    subprocess.run(_cmd(tmp_path / "ref"), env=_env(), cwd=ROOT, check=True, capture_output=True)

    out = tmp_path / "killed"
    kills = []
    for lo, hi in ((10, 60), (100, 160), (200, 260)):  # each kill after a random checkpoint, random delay
        # A fast machine may run past a range before the kill lands: each run must still write a
        # checkpoint of its own after the step it resumed from, so that it demonstrably resumed.
        target = max(rng.randrange(lo, hi, 5), kills[-1] + 5 if kills else 0)
        proc = subprocess.Popen(_cmd(out), env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 300
        while _newest_step(out) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.05))
        assert proc.poll() is None, f"run ended before the kill (seed {seed}): {proc.stderr.read()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        err = proc.stderr.read().decode(errors="replace")
        if kills:  # every run after the first continued from where the previous one was killed
            assert re.search(rf"resumed from .* at step {kills[-1]}\b", err), f"seed {seed}: {err[-2000:]}"
        kills.append(_newest_step(out))
    assert kills == sorted(set(kills)) and kills[-1] < STEPS, f"kills at {kills} (seed {seed})"
    done = subprocess.run(_cmd(out), env=_env(), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(rf"resumed from .* at step {kills[-1]}\b", done.stderr), done.stderr[-2000:]
    assert len(list(out.iterdir())) == 1, list(out.iterdir())  # one run folder: every restart resumed it

    (n1, t1), (n2, t2) = _final(tmp_path / "ref"), _final(out)
    assert n1.keys() == n2.keys() and t1.keys() == t2.keys()
    for k in n1:
        assert torch.equal(n1[k], n2[k]), f"{k} differs after kills at {kills} (seed {seed})"
    for k in t1:
        assert torch.equal(t1[k], t2[k]), f"{k} differs after kills at {kills} (seed {seed})"
    run = next(out.glob("0*-toygan-*"))
    steps = [json.loads(s)["step"] for s in (run / "stats.jsonl").read_text().splitlines()]
    assert steps == list(range(10, STEPS + 1, 10))  # no duplicated ticks from the killed runs
