"""The engine on the tiny GAN, in-process: run folder, resume, accumulation, guards."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from vidgen.config import load_config
from vidgen.train import checkpoint as ckpt
from vidgen.train.engine import NonFiniteError, scheduled_lr, train
from vidgen.train.recipe import OptimizerSpec
from vidgen.train.toy import ToyGANConfig, ToyGANRecipe

TINY = ["engine.batch=4", "data.resolution=8", "model.channels=8", "model.z_dim=8", "data.num=32",
        "engine.workers=0", "engine.device=cpu", "engine.log_every=4", "model.r1_interval=3"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def cfg_for(tmp_path, *extra):
    return load_config(ToyGANConfig, None, [*TINY, f"engine.out_dir={tmp_path}", *extra])


def final_tensors(run_dir):
    c = ckpt.read_checkpoint(run_dir)
    return c, load_file(str(c.path / "networks.safetensors")), c.train_tensors()


def test_run_folder_checkpoints_stats_and_compensation(tmp_path):
    cfg = cfg_for(tmp_path, "engine.steps=12", "engine.checkpoint_every=3", "engine.keep_last=2",
                  "engine.milestone_every=6")
    run = train(ToyGANRecipe, cfg)
    assert run.name == "00000-toygan-synthetic-8x8-b4"
    assert load_config(ToyGANConfig, run / "config.yaml") == cfg
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step-000000006", "step-000000009", "step-000000012"]
    lines = [json.loads(s) for s in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [4, 8, 12] and lines[-1]["kimg"] == pytest.approx(0.048)
    assert set(lines[-1]["timing"]) == {"data", "fwd_bwd", "optimizer", "logging"}
    assert {"G/loss", "D/loss", "Dreg/r1"} <= set(lines[-1]["stats"])
    c = ckpt.read_checkpoint(run)
    assert c.step == 12 and c.nimg == 48 and set(c.network_names) == {"G", "D", "G_ema"}
    # lazy R1 every 3 steps: D's Adam gets lr * 3/4 and betas ** (3/4) (StyleGAN2)
    groups = c.state["optimizers"]["D"]["param_groups"][0]
    assert groups["lr"] == pytest.approx(0.002 * 0.75) and groups["betas"] == pytest.approx([0.0, 0.99 ** 0.75])
    assert c.state["optimizers"]["G"]["param_groups"][0]["lr"] == pytest.approx(0.002)
    # the EMA differs from G, and moves towards it
    assert not torch.equal(c.network_state("G_ema")["fc.weight"], c.network_state("G")["fc.weight"])


def test_resume_is_bitwise_exact(tmp_path):
    full = train(ToyGANRecipe, cfg_for(tmp_path / "a", "engine.steps=10", "engine.checkpoint_every=5"))
    part = train(ToyGANRecipe, cfg_for(tmp_path / "b", "engine.steps=7", "engine.checkpoint_every=5"))
    assert ckpt.read_checkpoint(part).step == 7
    resumed = train(ToyGANRecipe, cfg_for(tmp_path / "b", "engine.steps=10", "engine.checkpoint_every=5"),
                    resume="auto")
    assert resumed == part
    assert (part / "config-resume-000000007.yaml").is_file()  # the resumed run asked for more steps
    (_, n1, t1), (_, n2, t2) = final_tensors(full), final_tensors(resumed)
    assert n1.keys() == n2.keys() and t1.keys() == t2.keys()
    assert all(torch.equal(n1[k], n2[k]) for k in n1) and all(torch.equal(t1[k], t2[k]) for k in t1)
    steps = [json.loads(s)["step"] for s in (resumed / "stats.jsonl").read_text().splitlines()]
    assert steps == [4, 7, 8, 10]  # lines after the checkpoint of a killed run would be dropped


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    a = train(ToyGANRecipe, cfg_for(tmp_path / "a", "engine.steps=6", "model.latents=index"))
    b = train(ToyGANRecipe, cfg_for(tmp_path / "b", "engine.steps=6", "model.latents=index", "engine.accum=2"))
    (_, n1, _), (_, n2, _) = final_tensors(a), final_tensors(b)
    diff = max((n1[k] - n2[k]).abs().max().item() for k in n1)
    assert diff <= 1e-5


def test_learning_rate_schedules():
    spec = OptimizerSpec(("G",), 0.01, rampup_steps=10)
    assert scheduled_lr(spec, 0.01, 0) == pytest.approx(0.001) and scheduled_lr(spec, 0.01, 50) == 0.01
    assert scheduled_lr(spec, 0.01, 4) == pytest.approx(0.005) and scheduled_lr(spec, 0.01, 9) == 0.01
    inv = OptimizerSpec(("G",), 0.01, schedule="inv_sqrt", ref_steps=100)
    assert scheduled_lr(inv, 0.01, 0) == 0.01 and scheduled_lr(inv, 0.01, 100) == 0.01
    assert scheduled_lr(inv, 0.01, 50) == 0.01 and scheduled_lr(inv, 0.01, 400) == pytest.approx(0.005)
    assert scheduled_lr(inv, 0.01, 10_000) == pytest.approx(0.001)  # alpha_ref / sqrt(t / t_ref)
    both = OptimizerSpec(("G",), 0.01, schedule="inv_sqrt", ref_steps=4, rampup_steps=8)
    assert scheduled_lr(both, 0.01, 1) == pytest.approx(0.01 * 2 / 8)  # ramp-up, before t_ref
    assert scheduled_lr(both, 0.01, 16) == pytest.approx(0.01 / 2)  # ramp-up done, sqrt(16 / 4) = 2


class NaNLossRecipe(ToyGANRecipe):
    """G's loss is NaN in steps 2 and 3."""

    nan_steps = {2, 3}

    def loss_g(self, batch, step):
        loss, stats = super().loss_g(batch, step)
        return (loss * float("nan") if step in self.nan_steps else loss), stats


class _NaNGrad(torch.autograd.Function):
    """Adds 0 to the loss; its backward puts NaN into the gradient of ``x``."""

    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape
        return x.new_zeros(())

    @staticmethod
    def backward(ctx, grad):
        return torch.full(ctx.shape, float("nan"))


class NaNGradRecipe(ToyGANRecipe):
    """D's loss is finite but its head's gradient is NaN in step 4."""

    def loss_d(self, batch, step):
        loss, stats = super().loss_d(batch, step)
        if step == 4:
            loss = loss + _NaNGrad.apply(self.D.head.weight)
        return loss, stats


def test_nonfinite_losses_skip_the_step_and_are_counted(tmp_path):
    run = train(NaNLossRecipe, cfg_for(tmp_path, "engine.steps=8", "engine.max_nonfinite=3"))
    c, nets, train_t = final_tensors(run)
    assert c.state["counters"]["nonfinite_losses"] == 2
    assert all(torch.isfinite(v).all() for v in nets.values()) and all(torch.isfinite(v).all() for v in train_t.values())
    # G's optimiser skipped exactly the two NaN steps; D's (8 D steps + lazy R1 at 0, 3, 6) none
    assert train_t["optim/G/state/0/step"].item() == 6 and train_t["optim/D/state/0/step"].item() == 11


def test_nonfinite_gradients_are_zeroed_and_counted(tmp_path):
    run = train(NaNGradRecipe, cfg_for(tmp_path, "engine.steps=6"))
    c, nets, train_t = final_tensors(run)
    assert c.state["counters"]["nonfinite_grads"] == 1 and c.state["counters"]["nonfinite_losses"] == 0
    assert all(torch.isfinite(v).all() for v in nets.values()) and all(torch.isfinite(v).all() for v in train_t.values())
    # the step was taken with the NaN entries zeroed, not skipped (6 D steps + lazy R1 at 0, 3)
    assert train_t["optim/D/state/0/step"].item() == 8


def test_a_run_of_nonfinite_losses_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    class Diverging(ToyGANRecipe):
        def loss_g(self, batch, step):
            loss, stats = super().loss_g(batch, step)
            return (loss * math.inf if step >= 5 else loss), stats

    cfg = cfg_for(tmp_path, "engine.steps=20", "engine.checkpoint_every=2", "engine.max_nonfinite=4")
    with pytest.raises(NonFiniteError) as exc:
        train(Diverging, cfg)
    run = next(tmp_path.glob("00000-*"))
    good = ckpt.list_checkpoints(run)[-1]
    assert good.name == "step-000000004"  # steps 5.. diverged: no checkpoint written after
    assert "4 non-finite losses in a row" in str(exc.value) and str(good) in str(exc.value)
    assert ckpt.read_checkpoint(run).step == 4


def test_sample_media_are_written(tmp_path):
    run = train(ToyGANRecipe, cfg_for(tmp_path, "engine.steps=4", "engine.sample_every=2"))
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["samples-000000002.png", "samples-000000004.png"]
    clip = train(ToyGANRecipe, cfg_for(tmp_path, "engine.steps=2", "engine.sample_every=2", "data.frames=4"))
    assert (clip / "samples" / "samples-000000002.mp4").is_file()


def test_bad_engine_settings_are_config_errors(tmp_path):
    from vidgen.errors import ConfigError
    with pytest.raises(ConfigError, match="divisible"):
        train(ToyGANRecipe, cfg_for(tmp_path, "engine.steps=2", "engine.accum=3"))
    with pytest.raises(ConfigError, match="precision"):
        cfg_for(tmp_path, "engine.steps=2", "engine.precision=fp8")
    cfg = cfg_for(tmp_path, "engine.steps=2")
    object.__setattr__(cfg.engine, "precision", "fp8")  # past the config's own check
    with pytest.raises(ConfigError, match="engine.precision must be"):
        train(ToyGANRecipe, cfg)


def test_trains_on_real_footage_through_the_data_pipeline(tmp_path, shared_data):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("realshort.mp4", "carphone_pristine.mp4"):  # small real clips, linked not copied
        (videos / name).symlink_to(shared_data / "videos" / name)
    cfg = cfg_for(tmp_path / "runs", "engine.steps=2", "data.frames=4", f"data.path={videos}")
    run = train(ToyGANRecipe, cfg)
    assert run.name == "00000-toygan-videos-8x8-t4-b4"
    c = ckpt.read_checkpoint(run)
    assert c.step == 2 and c.state["sampler"]["dataset_len"] == 2
    assert c.network_state("G")["out.weight"].shape[0] == 3 * 4  # RGB x 4 frames


def test_power_ema_copies_and_snapshots_through_the_engine(tmp_path):
    from vidgen.train.ema import list_snapshots
    run = train(ToyGANRecipe, cfg_for(tmp_path, "engine.steps=4", "ema.kind=power",
                                      "ema.sigma_rels=[0.05,0.1]", "ema.snapshot_every=2"))
    c = ckpt.read_checkpoint(run)
    assert set(c.network_names) == {"G", "D", "G_ema", "G_ema_s0.1"}
    snaps = list_snapshots(run / "phema", "G")
    assert [(i["sigma_rel"], i["step"], i["nimg"]) for _, i in snaps] == [(0.05, 2, 8), (0.05, 4, 16),
                                                                          (0.1, 2, 8), (0.1, 4, 16)]
    from safetensors.torch import load_file as lf
    assert torch.equal(lf(str(snaps[-1][0]))["fc.weight"], c.network_state("G_ema_s0.1")["fc.weight"])


def test_cli_refuses_a_pickle_given_to_resume(tmp_path, capsys):
    import pickle

    from vidgen.cli import main

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    (tmp_path / "model.pt").write_bytes(pickle.dumps(Payload()))
    code = main(["train", "toygan", "--data", "synthetic", "--out", str(tmp_path / "runs"),
                 "--set", "engine.steps=1", "--resume", str(tmp_path / "model.pt")])
    assert code == 2 and "never unpickles" in capsys.readouterr().err
    assert not (tmp_path / "pwned").exists()


class _NoisyItems(torch.utils.data.Dataset):
    """Items with random content drawn inside __getitem__ (like a random clip window)."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return self.base[i] + 0.1 * torch.rand(self.base[i].shape)


class NoisyDataRecipe(ToyGANRecipe):
    def dataset(self):
        return _NoisyItems(super().dataset())


def test_random_items_resume_exactly_with_any_number_of_workers(tmp_path):
    full = train(NoisyDataRecipe, cfg_for(tmp_path / "a", "engine.steps=6", "engine.workers=0"))
    part = train(NoisyDataRecipe, cfg_for(tmp_path / "b", "engine.steps=3", "engine.workers=2"))
    resumed = train(NoisyDataRecipe, cfg_for(tmp_path / "b", "engine.steps=6", "engine.workers=1"), resume=str(part))
    (_, n1, t1), (_, n2, t2) = final_tensors(full), final_tensors(resumed)
    assert all(torch.equal(n1[k], n2[k]) for k in n1) and all(torch.equal(t1[k], t2[k]) for k in t1)
