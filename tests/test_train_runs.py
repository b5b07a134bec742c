"""Runs and checkpoints a user can get wrong: resuming with another architecture or learning
rate, two trainers of one run, a start stopped before its first checkpoint, edited sidecars,
diverged weights, a disk that fills up during training."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vidgen.cli import main
from vidgen.fileio import sha256_file
from vidgen.train import checkpoint as ckpt
from vidgen.train.log import TrainLogger
from vidgen.lockfile import lock_path
from vidgen.train.runplan import plan_run

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
SETS = ["engine.batch=4", "data.resolution=8", "model.channels=8", "model.z_dim=8", "data.num=16",
        "engine.workers=0", "engine.device=cpu", "engine.log_every=1", "engine.checkpoint_every=2", "engine.steps=2"]


def train(out: Path, capsys, *sets: str, resume: str | None = None) -> tuple[int, list[str]]:
    argv = ["train", "toygan", "--data", "synthetic", "--out", str(out)]
    argv += [a for s in [*SETS, *sets] for a in ("--set", s)]
    argv += ["--resume", resume] if resume else []
    code = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "step/s" not in line]
    return code, err


def one_error(code: int, err: list[str]) -> str:
    assert code == 2, err
    errors = [line for line in err if line.startswith("vidgen: error: ")]
    assert len(errors) == 1 and not any("Traceback" in line for line in err), err
    return errors[0]


def runs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir())


def snapshot(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def test_resume_refuses_changed_architecture_and_names_the_keys(tmp_path, capsys):
    assert train(tmp_path, capsys)[0] == 0
    (run,) = runs(tmp_path)
    before = snapshot(run)
    line = one_error(*train(tmp_path, capsys, "model.channels=16", "engine.steps=4", resume="auto"))
    assert "model.channels 8 -> 16" in line and "would not continue the same run" in line
    assert "G/" in line and "in the checkpoint" in line  # a tensor whose shape changed
    assert snapshot(run) == before  # nothing written, no lock left


def test_changed_learning_rate_on_resume_is_reported_and_used(tmp_path, capsys):
    assert train(tmp_path, capsys)[0] == 0
    code, err = train(tmp_path, capsys, "model.lr_g=1e-3", "engine.steps=4", resume="auto")  # 1e-3: a float
    assert code == 0, err
    assert any("learning rate changed on resume at step 2: model.lr_g 0.002 -> 0.001" in line for line in err), err
    (run,) = runs(tmp_path)
    ticks = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [t["step"] for t in ticks] == [1, 2, 3, 4]
    assert ticks[1]["lr"]["G"] == pytest.approx(0.002) and ticks[3]["lr"]["G"] == pytest.approx(0.001)
    # more steps alone is routine: resumed without a word about settings
    code, err = train(tmp_path, capsys, "model.lr_g=1e-3", "engine.steps=6", resume="auto")
    assert code == 0 and not any("changed on resume" in line for line in err), err


def test_a_run_being_trained_cannot_be_resumed_by_a_second_trainer(tmp_path, capsys):
    assert train(tmp_path, capsys)[0] == 0
    (run,) = runs(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from vidgen.lockfile import PathLock; "
         "lock = PathLock(sys.argv[1], 'vidgen train').acquire(); print('locked', flush=True); time.sleep(120)",
         str(run)],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(run)
        line = one_error(*train(tmp_path, capsys, "engine.steps=4", resume="auto"))
        assert f"another `vidgen train` (PID {holder.pid}) is writing it now" in line and str(lock_path(run)) in line
        assert snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: its lock file is stale and is taken over
    assert lock_path(run).read_text().split()[0] == str(holder.pid)
    code, err = train(tmp_path, capsys, "engine.steps=4", resume="auto")
    assert code == 0, err
    assert any(f"taking over a stale lock of PID {holder.pid} (no longer running)" in line for line in err), err
    assert not lock_path(run).exists() and ckpt.read_checkpoint(run).step == 4


def test_a_start_stopped_before_its_first_checkpoint_resumes_in_place(tmp_path, capsys):
    name = "toygan-synthetic-8x8-b4"
    plan = plan_run(tmp_path, name, None)  # what a killed first start leaves: a folder, no checkpoint
    plan.lock.release()
    (plan.run_dir / "stats.jsonl").write_text(json.dumps({"step": 1, "stale": True}) + "\n")
    code, err = train(tmp_path, capsys, resume="auto")
    assert code == 0 and any("has no checkpoint yet" in line for line in err), err
    code, err = train(tmp_path, capsys, "engine.steps=2", resume="auto")  # again: now from its checkpoint
    assert code == 0 and any(line.startswith("resumed from") for line in err), err
    assert [p.name for p in tmp_path.iterdir()] == [plan.run_dir.name]  # no other folder, no lock left
    ticks = [json.loads(line) for line in (plan.run_dir / "stats.jsonl").read_text().splitlines()]
    assert [t["step"] for t in ticks] == [1, 2] and not any(t.get("stale") for t in ticks)
    assert ckpt.read_checkpoint(plan.run_dir).step == 2
    assert train(tmp_path, capsys)[0] == 0  # without --resume: a new folder, as always
    assert len(list(tmp_path.iterdir())) == 2


def _edit_state(folder: Path, edit) -> None:
    """Change state.json and recompute its checksum, as a careful tamperer would."""
    state = json.loads((folder / "state.json").read_text())
    edit(state)
    state["checksum"] = ckpt._body_checksum(state)
    (folder / "state.json").write_text(json.dumps(state))


EDITS = {
    "no files": (lambda s: s.pop("files"), "'files'"),
    "step text": (lambda s: s.update(step="abc"), "'step' must be a non-negative integer, not 'abc'"),
    "negative step": (lambda s: s.update(step=-3), "'step'"),
    "bytes text": (lambda s: s["files"]["networks.safetensors"].update(bytes="x"), "files.networks.safetensors.bytes"),
    "short sha": (lambda s: s["files"]["train.safetensors"].update(sha256="00"), "files.train.safetensors.sha256"),
    "networks text": (lambda s: s.update(networks="G"), "'networks'"),
    "config list": (lambda s: s.update(config=[1]), "'config'"),
    "family number": (lambda s: s.update(family=3), "'family'"),
    "rng missing": (lambda s: s.pop("rng"), "has no 'rng'"),
    "sampler text": (lambda s: s["sampler"].update(consumed="many"), "sampler.consumed"),
    "rng short": (lambda s: s["rng"][0].update(numpy=[1]), "rng[0].numpy"),
    "optimizer groups": (lambda s: s["optimizers"]["G"]["param_groups"].append(s["optimizers"]["G"]["param_groups"][0]),
                         "cannot restore the optimizer state"),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_edited_sidecar_fields_are_one_line_errors(tmp_path, capsys, edit):
    assert train(tmp_path, capsys)[0] == 0
    (run,) = runs(tmp_path)
    folder = ckpt.list_checkpoints(run)[-1]
    change, expected = EDITS[edit]
    _edit_state(folder, change)
    line = one_error(*train(tmp_path, capsys, "engine.steps=4", resume=str(folder)))
    assert expected in line and str(folder) in line, line
    assert ckpt.list_checkpoints(run) == [folder] and not lock_path(run).exists()


def _poison(folder: Path) -> None:
    """NaN in one weight of G, with the file's checksum and size updated to match."""
    from safetensors.torch import load_file, save_file
    tensors = load_file(str(folder / "networks.safetensors"))
    key = next(k for k in tensors if k.startswith("G/") and tensors[k].is_floating_point())
    tensors[key].view(-1)[0] = float("nan")
    save_file(tensors, str(folder / "networks.safetensors"), metadata={"format": ckpt.FORMAT})
    f = folder / "networks.safetensors"
    _edit_state(folder, lambda s: s["files"][f.name].update(sha256=sha256_file(f), bytes=f.stat().st_size))


def test_nonfinite_weights_are_refused_unless_allowed(tmp_path, capsys):
    assert train(tmp_path, capsys)[0] == 0
    (run,) = runs(tmp_path)
    _poison(ckpt.list_checkpoints(run)[-1])
    c = ckpt.read_checkpoint(run)  # the file is whole: reading it is fine, using its weights is not
    with pytest.raises(ckpt.CheckpointError, match="non-finite weights .*--allow-nonfinite"):
        c.network_state("G")
    with ckpt.allow_nonfinite():
        assert torch.isnan(next(iter(c.network_state("G").values()))).any()
    line = one_error(*train(tmp_path, capsys, "engine.steps=4", resume="auto"))
    assert "non-finite weights" in line and "network 'G'" in line
    code, err = train(tmp_path, capsys, "engine.steps=3", "engine.max_nonfinite=100", resume="auto")
    assert code == 2  # the flag is needed: without it nothing changed
    argv = ["train", "toygan", "--data", "synthetic", "--out", str(tmp_path), "--resume", "auto",
            "--allow-nonfinite"] + [a for s in [*SETS, "engine.steps=3"] for a in ("--set", s)]
    assert main(argv) == 0  # allowed: it trains (and NaN losses are skipped by the guards)


def test_a_full_disk_during_training_is_one_line_naming_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    real_tick = TrainLogger.tick

    def tick(self, record):
        if record["step"] == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.run_dir / "stats.jsonl"))
        real_tick(self, record)

    monkeypatch.setattr(TrainLogger, "tick", tick)
    line = one_error(*train(tmp_path, capsys, "engine.steps=4"))
    (run,) = runs(tmp_path)
    assert "training stopped at step 3" in line and "No space left on device" in line
    assert str(run / "stats.jsonl") in line and f"the last good checkpoint is {run}/checkpoints/step-000000002" in line
    assert not lock_path(run).exists()
    monkeypatch.setattr(TrainLogger, "tick", real_tick)
    assert train(tmp_path, capsys, "engine.steps=4", resume="auto")[0] == 0


def test_safetensors_files_are_readable_like_the_json_beside_them(tmp_path, capsys):
    assert train(tmp_path, capsys, "ema.kind=power", "ema.snapshot_every=1")[0] == 0
    (run,) = runs(tmp_path)
    umask = os.umask(0)
    os.umask(umask)
    folder = ckpt.list_checkpoints(run)[-1]
    files = [folder / "networks.safetensors", folder / "train.safetensors", *sorted((run / "phema").iterdir())]
    modes = {p.name: p.stat().st_mode & 0o777 for p in files + [folder / "state.json"]}
    assert len(files) > 2 and set(modes.values()) == {0o644 & ~umask}, modes


def test_lock_is_released_on_success_and_on_error(tmp_path, capsys):
    assert train(tmp_path, capsys)[0] == 0
    (run,) = runs(tmp_path)
    assert not lock_path(run).exists()
    one_error(*train(tmp_path, capsys, "model.channels=16", resume="auto"))
    assert not lock_path(run).exists()
    started = time.monotonic()
    assert train(tmp_path, capsys, "engine.steps=3", resume="auto")[0] == 0  # not blocked by anything left over
    assert time.monotonic() - started < 60
