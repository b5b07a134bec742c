"""Super-res training phase of the long-video GAN (docs/METHODS.md 1.5) through the shared engine."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vidgen.config import load_config
from vidgen.errors import ConfigError
from vidgen.lvg.recipe_superres import SuperResConfig, SuperResRecipe, ada_augment, lowres_input_augment
from vidgen.train import checkpoint as ckpt
from vidgen.train.engine import train

TINY = ["model.lowres=[12,16]", "model.highres=[24,32]", "model.z_dim=8", "model.w_dim=8", "model.channel_base=256",
        "model.channel_max=8", "model.num_layers=4", "model.margin=3", "model.d_channel_base=64",
        "model.d_channel_max=16", "engine.batch=2", "engine.workers=0", "engine.device=cpu", "engine.log_every=2",
        "loss.r1_interval=2", "ema.warmup_steps=2"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two frame folders of 14 frames (a drifting gradient), enough for 12-frame clips."""
    root = tmp_path_factory.mktemp("clips")
    yy, xx = np.mgrid[0:48, 0:64]
    for c in range(2):
        folder = root / f"clip{c}"
        folder.mkdir()
        for t in range(14):
            img = np.stack([(xx * 4 + t * 3 + c * 40) % 256, (yy * 5) % 256, (xx + yy + t * 7) % 256], -1)
            Image.fromarray(img.astype(np.uint8)).save(folder / f"{t:06d}.png")
    return root


def cfg_for(tmp_path, data, *extra):
    return load_config(SuperResConfig, None, [*TINY, f"engine.out_dir={tmp_path}", f"data.path={data}", *extra])


def test_lowres_input_augment_keeps_shapes_and_is_identity_at_p0():
    torch.manual_seed(0)
    x = torch.rand(3, 3, 12, 36, 64) * 2 - 1
    assert torch.equal(lowres_input_augment(x, p=0.0), x)
    y = lowres_input_augment(x, p=1.0, generator=torch.Generator().manual_seed(1))
    assert y.shape == x.shape and not torch.allclose(y, x)
    y2 = lowres_input_augment(x, p=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(y, y2)  # a generator makes it reproducible
    # one draw per clip: a still clip stays still (same warp for every frame), up to its noise
    still = x[:, :, :1].expand(-1, -1, 12, -1, -1).contiguous()
    s = lowres_input_augment(still, p=1.0, strength=8.0)
    spread = (s - s.mean(dim=2, keepdim=True)).std().item()
    assert spread < 0.2  # frame-to-frame differences are noise only (std <= 0.08 * |N(0, 1)|)
    assert 0.0 < (s - still).abs().mean().item()
    # p = 0.5: some clips untouched, some changed (per-clip draws)
    torch.manual_seed(3)
    many = torch.rand(32, 3, 2, 12, 16) * 2 - 1
    changed = (lowres_input_augment(many, p=0.5) != many).flatten(1).any(1)
    assert 0 < int(changed.sum()) < 32


def test_ada_is_identity_at_p0_and_clip_consistent():
    x = torch.rand(2, 3, 8, 24, 32) * 2 - 1
    assert torch.equal(ada_augment(x, 0.0), x)
    torch.manual_seed(0)
    both = x[:, :, :1].expand(-1, -1, 8, -1, -1).contiguous()  # a still clip
    y = ada_augment(both, 0.5)
    assert y.shape == both.shape
    assert torch.allclose(y, y[:, :, :1].expand_as(y))  # the same parameters for every frame


def test_paper_and_tiny_presets_load():
    paper = load_config(SuperResConfig, "configs/lvg/superres-paper.yaml")
    assert paper.engine.batch == 32 and paper.engine.steps == 275_000
    assert paper.loss.lr_d * 16 / 17 == pytest.approx(0.003 * 16 / 17) and paper.loss.r1_interval == 16
    assert paper.ema.beta == 0.99985 and paper.ema.warmup_steps == 25_000
    assert paper.augment.target == 0.6 and paper.augment.p_max == 0.5 and paper.loss.input_p == 0.5
    tiny = load_config(SuperResConfig, "configs/lvg/superres-tiny.yaml")
    assert tiny.model.highres == (72, 128) and tiny.model.lowres == (36, 64)


def test_training_steps_through_the_engine(tmp_path, clips):
    cfg = cfg_for(tmp_path, clips, "engine.steps=2", "engine.checkpoint_every=2")
    run = train(SuperResRecipe, cfg)
    assert run.name == "00000-lvg-superres-clips0-12x16to24x32-b2"
    stats = [json.loads(s) for s in (run / "stats.jsonl").read_text().splitlines()][-1]["stats"]
    assert {"G/loss", "D/loss", "Dreg/r1", "D/real_sign"} <= set(stats)
    assert all(np.isfinite(v) for v in stats.values() if isinstance(v, float))
    c = ckpt.read_checkpoint(run)
    assert c.step == 2 and set(c.network_names) == {"G", "D", "G_ema"}
    # lazy R1 every 2 steps: D's lr carries the engine's 2/3 factor; G's does not
    assert c.state["optimizers"]["D"]["param_groups"][0]["lr"] == pytest.approx(0.003 * 2 / 3)
    assert c.state["optimizers"]["G"]["param_groups"][0]["lr"] == pytest.approx(0.003)
    G = c.network_state("G")
    assert any(k.endswith("magnitude_ema") and float(v) != 1.0 for k, v in G.items())  # updated in the D phase


def test_sample_and_run_name(tmp_path, clips):
    recipe = SuperResRecipe(cfg_for(tmp_path, clips), torch.device("cpu"))
    media = recipe.sample({"G": recipe.G.eval()}, num=2, seed=0)
    assert media.shape == (2, 3, 4, 24, 32) and media.abs().max() <= 1
    batch = next(iter(torch.utils.data.DataLoader(recipe.dataset(), batch_size=2)))
    assert batch["lowres"].shape == (2, 3, 12, 12, 16) and batch["highres"].shape == (2, 3, 4, 24, 32)


def test_bad_settings_are_config_errors(tmp_path, clips):
    with pytest.raises(ConfigError, match="data.path"):
        SuperResRecipe(cfg_for(tmp_path, ""), torch.device("cpu")).dataset()
    with pytest.raises(ConfigError, match="input_p"):
        SuperResRecipe(cfg_for(tmp_path, clips, "loss.input_p=1.5"), torch.device("cpu"))
    with pytest.raises(ConfigError, match="'augment.pipeline': 'gc' is not one of 'b', 'bg', 'bgc'"):
        SuperResRecipe(cfg_for(tmp_path, clips, "augment.pipeline=gc"), torch.device("cpu"))


def test_resume_through_the_engine_is_exact(tmp_path, clips):
    """2 steps in one go == 1 step, stop, resume for 1 (networks, EMA, optimisers, ADA state)."""
    extra = ["engine.checkpoint_every=1", "augment.interval=1", "augment.speed_kimg=0.01"]
    full = train(SuperResRecipe, cfg_for(tmp_path / "a", clips, "engine.steps=2", *extra))
    part = train(SuperResRecipe, cfg_for(tmp_path / "b", clips, "engine.steps=1", *extra))
    resumed = train(SuperResRecipe, cfg_for(tmp_path / "b", clips, "engine.steps=2", *extra), resume="auto")
    assert resumed == part
    a, b = ckpt.read_checkpoint(full), ckpt.read_checkpoint(resumed)
    assert a.step == b.step == 2
    for name in ("G", "D", "G_ema"):
        na, nb = a.network_state(name), b.network_state(name)
        assert na.keys() == nb.keys() and all(torch.equal(na[k], nb[k]) for k in na), name
    assert json.dumps(a.state.get("recipe"), sort_keys=True) == json.dumps(b.state.get("recipe"), sort_keys=True)
