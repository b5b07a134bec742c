"""Time-lapse GAN training recipe (docs/METHODS.md 2): data, phases, timestamp noise, engine run."""

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from vidgen.config import load_config
from vidgen.data.synthetic import make_timelapse
from vidgen.errors import ConfigError
from timelapse.frames import TimelapseFrames, letterbox_rect
from timelapse.recipe import TimelapseConfig, TimelapseRecipe

TINY = ["model.resolution=16", "model.channel_base=256", "model.channel_max=32", "model.z_dim=16",
        "model.w_dim=16", "model.cond_mlp_layers=2", "engine.batch=4", "engine.workers=0", "engine.device=cpu"]


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tl_frames")
    make_timelapse(d, seed=0, size=(16, 16), days=40)
    return d


def recipe(frames_dir, *extra):
    cfg = load_config(TimelapseConfig, "configs/timelapse/tiny.yaml", TINY + [f"data.path={frames_dir}", *extra])
    return TimelapseRecipe(cfg, torch.device("cpu"))


def test_phases_intervals_and_reg_settings(frames_dir):
    ref = TimelapseConfig().loss  # docs/METHODS.md 2: G reg every 4, D reg every 16, pl weight 2, mixing 0.9
    assert (ref.pl_interval, ref.r1_interval, ref.pl_weight, ref.style_mixing, ref.lr) == (4, 16, 2.0, 0.9, 0.002)
    r = recipe(frames_dir, "loss.r1_gamma=-1", "loss.pl_interval=4")
    phases = {p.name: p for p in r.phases()}
    assert list(phases) == ["G", "Greg", "D", "Dreg"]
    assert (phases["Greg"].interval, phases["Dreg"].interval) == (4, 16)
    assert r.r1_gamma == pytest.approx((16 / 256) ** 2)
    opts = r.optimizers()
    assert opts["G"].reg_interval == 4 and opts["D"].reg_interval == 16 and opts["G"].betas == (0.0, 0.99)
    batch = next(iter(torch.utils.data.DataLoader(r.dataset(), batch_size=4)))
    torch.manual_seed(0)
    for p in phases.values():
        loss, stats = p.loss(batch, 0)
        assert loss.ndim == 0 and torch.isfinite(loss), p.name
        loss.backward()
    assert r.pl.pl_mean > 0  # the path-length target moved


def test_zero_weight_regulariser_has_no_phase_and_no_compensation(frames_dir):
    """StyleGAN2/3: lr and betas are compensated (c = k / (k + 1)) only for an optimiser that
    really runs a lazy regulariser every k steps; a weight of 0 means no phase and c = 1."""
    from vidgen.train.optim import build_optimizer, check_lazy_regularisation

    for extra, regs, want in [(("loss.pl_weight=0",), ["G", "D", "Dreg"], {"G": 1, "D": 16}),
                              (("loss.r1_gamma=0",), ["G", "Greg", "D"], {"G": 8, "D": 1}),
                              (("loss.pl_weight=0", "loss.r1_gamma=0"), ["G", "D"], {"G": 1, "D": 1})]:
        r = recipe(frames_dir, "loss.r1_interval=16", *extra)
        phases, opts = r.phases(), r.optimizers()
        assert [p.name for p in phases] == regs, extra
        assert {k: o.reg_interval for k, o in opts.items()} == want, extra
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the engine's lazy-regularisation check stays quiet
            check_lazy_regularisation(opts, phases)
        nets = r.networks()
        for name, k in want.items():
            g = build_optimizer(opts[name], nets, name).param_groups[0]
            c = k / (k + 1) if k > 1 else 1.0
            assert g["lr"] == pytest.approx(0.0025 * c) and g["betas"] == pytest.approx((0.0, 0.99 ** c))
    with pytest.raises(ConfigError, match=r"loss.pl_interval must be >= 1 \(got 0\); set loss.pl_weight=0"):
        recipe(frames_dir, "loss.pl_interval=0")
    with pytest.raises(ConfigError, match="loss.r1_interval must be >= 1"):
        recipe(frames_dir, "loss.r1_interval=0")
    assert [p.name for p in recipe(frames_dir, "loss.r1_gamma=0", "loss.r1_interval=0").phases()] == ["G", "Greg", "D"]


def test_discriminator_sees_per_factor_noise(frames_dir, monkeypatch):
    r = recipe(frames_dir, "time.dequantize=false")
    assert r.data.axis.factors == ("trend", "day")
    seen = []
    forward = r.D.forward
    monkeypatch.setattr(r.D, "forward", lambda img, t: seen.append(t.detach().clone()) or forward(img, t))
    n = 256
    img = torch.zeros(n, 3, 16, 16)
    t = torch.full((n,), 0.5)
    torch.manual_seed(0)
    r.run_d(img, t)
    (got,) = seen
    assert got.shape == (n, 2)
    assert float((got[:, 0] - 0.5).std()) == pytest.approx(0.2, rel=0.15)  # trend: 20% of the sequence
    assert torch.equal(got[:, 1], t)  # day: no noise


def test_generated_times_follow_dataset_with_dequantisation(frames_dir):
    for dequantize_day in (True, False):
        r = recipe(frames_dir, f"time.dequantize_day={str(dequantize_day).lower()}")
        torch.manual_seed(0)
        t = r.gen_times(4000)
        trend = t if t.ndim == 1 else t[:, 0]
        # every generated t lies near some capture time, within a few dequantisation sigmas
        dist = (trend[:, None] - r.t_all[None]).abs().min(1).values
        assert float(dist.max()) < 4 * float(r.sigma_all.max()) and float(dist.mean()) > 0
        assert float(trend.std()) > 0.2  # spread over the sequence, not a few templates
        if dequantize_day:
            assert t.ndim == 1
        else:  # the time of day is a capture time's own; only trend (and year) moved
            assert t.shape == (4000, 2)
            assert float((t[:, 1:2] - r.t_all[None]).abs().min(1).values.max()) == 0.0
            assert float((t[:, 0] - t[:, 1]).abs().mean()) > 0
        img, t_real = r.real(next(iter(torch.utils.data.DataLoader(r.dataset(), batch_size=4))))
        assert t_real.shape == ((4,) if dequantize_day else (4, 2))


def test_letterbox_padding_and_skip(tmp_path):
    for k, name in enumerate(["20210101_120000", "20210102_120000", "20210103_120000", "20210104_120000"]):
        Image.fromarray(np.full((10, 40, 3), 50 * k + 20, np.uint8)).save(tmp_path / f"{name}.png")
    d = TimelapseFrames(tmp_path, 16)
    assert d.rect == letterbox_rect(10, 40, 16) == (0, 6, 16, 10)
    frame, t, sigma = d[0]
    assert frame.shape == (3, 16, 16)
    assert (frame[:, :6] == -1).all() and (frame[:, 10:] == -1).all() and (frame[:, 6:10] > -1).all()
    assert float(t) == 12 / 24 / d.axis.num_days and float(sigma) == pytest.approx(0.5 / d.axis.num_days)
    s = TimelapseFrames(tmp_path, 16, skip=["1:3"])
    assert len(s) == 2 and np.allclose(np.diff(s.seconds), 3 * 86400)
    with pytest.raises(ConfigError, match="--skip"):
        TimelapseFrames(tmp_path, 16, skip=["3-4"])


def test_cli_train_writes_checkpoint_with_recipe_state(frames_dir, tmp_path):
    from timelapse.cli import main
    from vidgen.train.checkpoint import read_checkpoint

    code = main(["train", "--data", str(frames_dir), "--config", "configs/timelapse/tiny.yaml", "--out",
                 str(tmp_path), "--skip", "0:3", *sum((["--set", s] for s in TINY + ["engine.steps=2"]), [])])
    assert code == 0
    (run,) = tmp_path.iterdir()
    c = read_checkpoint(run)
    assert c.step == 2 and c.config["data"]["skip"] == ["0:3"]
    assert {"G", "D", "G_ema"} <= set(c.network_names)
    assert "ada" in json.dumps(c.state["recipe"]) and "time.axis_days" in c.network_state("G_ema")


def test_trend_harmonics_train_save_and_render_from_the_checkpoint(frames_dir, tmp_path):
    from timelapse.cli import main
    from timelapse.rerender import load_generator

    sets = TINY + ["engine.steps=2", "time.lin_scale=1", "time.trend_harmonics=2"]
    assert main(["train", "--data", str(frames_dir), "--config", "configs/timelapse/tiny.yaml", "--out",
                 str(tmp_path), *sum((["--set", s] for s in sets), [])]) == 0
    (run,) = tmp_path.iterdir()
    G, info = load_generator(run)  # strict: a c of the wrong width would not load
    assert info["step"] == 2 and G.axis.trend_harmonics == 2
    assert G.time.c_dim == G.axis.c_dim == 8  # 1, t, the daily pair, two harmonic pairs
    assert G.convs[0].style.time.weight.shape[1] == 8
    z = torch.randn(1, G.cfg.z_dim, generator=torch.Generator().manual_seed(0)).expand(3, -1)
    img = G(z, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64), noise="const")
    assert float((img[0] - img[2]).abs().max()) > 0  # one weather: only the time moves the frame
    with pytest.raises(ConfigError, match="trend_harmonics"):
        load_config(TimelapseConfig, "configs/timelapse/tiny.yaml", ["time.trend_harmonics=-1"])


def test_cli_train_bad_input_message(tmp_path, capsys):
    from timelapse.cli import main

    assert main(["train", "--data", str(tmp_path), "--config", "configs/timelapse/tiny.yaml"]) == 2
    assert "timelapse: error:" in capsys.readouterr().err
