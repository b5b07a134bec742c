"""What a demanding user hits around the engine: --resume auto on a fresh folder, a failed
checkpoint write, learning-rate values through the loop, lazy-regularisation settings that do
not match the phases, and a bad --data."""

import json
import math

import pytest
import torch

from vidgen.errors import ConfigError, DataError
from vidgen.train import checkpoint as ckpt
from vidgen.train.engine import build_optimizer, train
from vidgen.train.recipe import OptimizerSpec, Phase
from vidgen.train.toy import ToyGANRecipe

from test_train_engine import cfg_for, final_tensors

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_resume_auto_without_a_checkpoint_starts_fresh(tmp_path):
    out = tmp_path / "runs"  # does not exist yet
    first = train(ToyGANRecipe, cfg_for(out, "engine.steps=2"), resume="auto")
    assert first.name == "00000-toygan-synthetic-8x8-b4" and ckpt.read_checkpoint(first).step == 2
    # a run killed before its first checkpoint is not resumed: a new run starts beside it
    ckpt.new_run_dir(out, "toygan-synthetic-8x16-b4")
    lonely = ckpt.new_run_dir(out, "toygan-synthetic-8x8-b4")
    other = train(ToyGANRecipe, cfg_for(out, "engine.steps=2", "engine.batch=8"), resume="auto")
    assert other.name == "00003-toygan-synthetic-8x8-b8" and not ckpt.list_checkpoints(lonely)
    # the same recipe again resumes its newest run with a checkpoint
    again = train(ToyGANRecipe, cfg_for(out, "engine.steps=3"), resume="auto")
    assert again == first and ckpt.read_checkpoint(first).step == 3


def test_cli_resume_auto_in_an_empty_folder(tmp_path, capsys):
    from vidgen.cli import main
    code = main(["train", "toygan", "--data", "synthetic", "--out", str(tmp_path / "runs"), "--resume", "auto",
                 "--set", "engine.steps=1", "--set", "engine.batch=2", "--set", "data.resolution=8",
                 "--set", "model.channels=4", "--set", "model.z_dim=4", "--set", "engine.device=cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "resumed from" not in captured.err and "00000-toygan-synthetic-8x8-b2" in captured.out


def test_a_failed_checkpoint_write_stops_the_run_and_keeps_the_last_good_one(tmp_path, monkeypatch):
    real_save = ckpt._save_tensors
    calls = {"n": 0}

    def disk_fills_up(path, tensors):
        calls["n"] += 1
        if calls["n"] == 3:  # the second checkpoint's first file
            raise OSError(28, "No space left on device")
        real_save(path, tensors)

    cfg = cfg_for(tmp_path / "b", "engine.steps=9", "engine.checkpoint_every=3")
    monkeypatch.setattr(ckpt, "_save_tensors", disk_fills_up)
    with pytest.raises(ckpt.CheckpointError, match="No space left on device.*--resume auto"):
        train(ToyGANRecipe, cfg)
    monkeypatch.setattr(ckpt, "_save_tensors", real_save)
    run = next((tmp_path / "b").glob("00000-*"))
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-000000003"]
    # resuming from it ends exactly where an uninterrupted run ends
    resumed = train(ToyGANRecipe, cfg, resume="auto")
    full = train(ToyGANRecipe, cfg_for(tmp_path / "a", "engine.steps=9", "engine.checkpoint_every=3"))
    (_, n1, t1), (_, n2, t2) = final_tensors(full), final_tensors(resumed)
    assert all(torch.equal(n1[k], n2[k]) for k in n1) and all(torch.equal(t1[k], t2[k]) for k in t1)


class ScheduledRecipe(ToyGANRecipe):
    """G: ramp-up over 4 steps then EDM2's inverse square root from step 2; D: lazy R1 every 3
    steps with a ramp-up over 8 steps."""

    def optimizers(self):
        m = self.cfg.model
        return {"G": OptimizerSpec(("G",), m.lr_g, schedule="inv_sqrt", ref_steps=2, rampup_steps=4),
                "D": OptimizerSpec(("D",), m.lr_d, reg_interval=3, rampup_steps=8)}


def test_learning_rates_through_the_loop(tmp_path):
    run = train(ScheduledRecipe, cfg_for(tmp_path, "engine.steps=8", "engine.log_every=1"))
    lines = [json.loads(s) for s in (run / "stats.jsonl").read_text().splitlines()]
    c = 3 / 4  # lazy-regularisation compensation of D (StyleGAN2)
    for line in lines:
        s = line["step"] - 1  # the 0-based step whose update used this rate
        g = 0.002 * min((s + 1) / 4, 1) / math.sqrt(max(s / 2, 1))
        d = 0.002 * c * min((s + 1) / 8, 1)
        assert line["lr"]["G"] == pytest.approx(g, rel=1e-12) and line["lr"]["D"] == pytest.approx(d, rel=1e-12)
    groups = final_tensors(run)[0].state["optimizers"]["D"]["param_groups"][0]
    assert groups["lr"] == pytest.approx(0.002 * c) and groups["betas"] == pytest.approx([0.0, 0.99 ** c])
    assert lines[0]["lr"]["G"] == pytest.approx(0.0005)  # step 0 takes a quarter step, never zero


def test_bad_optimizer_settings_fail_before_training():
    nets = {"G": torch.nn.Linear(2, 2)}
    with pytest.raises(ConfigError, match="'G'.*schedule 'cosine'"):
        build_optimizer(OptimizerSpec(("G",), 0.1, schedule="cosine"), nets, "G")
    with pytest.raises(ConfigError, match="inv_sqrt schedule needs ref_steps >= 1"):
        build_optimizer(OptimizerSpec(("G",), 0.1, schedule="inv_sqrt"), nets, "G")
    with pytest.raises(ConfigError, match="reg_interval must be >= 1"):
        build_optimizer(OptimizerSpec(("G",), 0.1, reg_interval=0), nets, "G")
    opt = build_optimizer(OptimizerSpec(("G",), 0.1, betas=(0.5, 0.99), reg_interval=4), nets, "G")
    assert opt.param_groups[0]["lr"] == pytest.approx(0.08)
    assert opt.param_groups[0]["betas"] == pytest.approx((0.5 ** 0.8, 0.99 ** 0.8))


class UncompensatedRecipe(ToyGANRecipe):
    def optimizers(self):
        return {**super().optimizers(), "D": OptimizerSpec(("D",), self.cfg.model.lr_d)}


class NoRegulariserRecipe(ToyGANRecipe):
    def phases(self):
        return [ph for ph in super().phases() if ph.name != "Dreg"]


def test_lazy_regularisation_settings_that_do_not_match_the_phases_warn(tmp_path, recwarn):
    with pytest.warns(UserWarning, match="'D' serves a phase every 3 steps .* set reg_interval=3"):
        train(UncompensatedRecipe, cfg_for(tmp_path / "a", "engine.steps=1"))
    with pytest.warns(UserWarning, match="'D' is compensated for a regulariser every 3 steps, but its phases run every \\[1\\]"):
        train(NoRegulariserRecipe, cfg_for(tmp_path / "b", "engine.steps=1"))
    recwarn.clear()
    train(ToyGANRecipe, cfg_for(tmp_path / "c", "engine.steps=1"))
    assert not [w for w in recwarn if "compensat" in str(w.message) or "reg_interval" in str(w.message)]


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "no such file"),
    (lambda p: p / "empty", "no readable clip"),
    (lambda p: p / "notes.txt", "not a readable video"),
])
def test_bad_data_gives_a_clear_message_and_leaves_no_run_folder(tmp_path, capsys, make, message):
    from vidgen.cli import main
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not a video\n")
    data = make(tmp_path)
    code = main(["train", "toygan", "--data", str(data), "--out", str(tmp_path / "runs"),
                 "--set", "engine.steps=1", "--set", "engine.device=cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"cannot read the training data '{data}' (data.path, set by --data)" in err and message in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


class EmptyRecipe(ToyGANRecipe):
    def dataset(self):
        return torch.utils.data.TensorDataset(torch.zeros(0, 3, 8, 8))


def test_an_empty_dataset_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="holds no samples"):
        train(EmptyRecipe, cfg_for(tmp_path, "engine.steps=1"))
    assert not any(tmp_path.iterdir())


def test_phase_with_an_unknown_optimizer_is_a_config_error(tmp_path):
    class Broken(ToyGANRecipe):
        def phases(self):
            return [Phase("G", "Gopt", self.loss_g, ("G",))]

    with pytest.raises(ConfigError, match="phase 'G' uses optimizer 'Gopt'"):
        train(Broken, cfg_for(tmp_path, "engine.steps=1"))
