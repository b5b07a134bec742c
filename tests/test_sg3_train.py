"""The sg3 recipe through the engine: data (image folders with class labels, mirror,
synthetic blobs), the phases (labels reach G and D, the magnitude EMAs and w_avg follow the
fakes, style mixing, the blur fade of config R), a short run and its checkpoint."""

import numpy as np
import pytest
import torch
from PIL import Image

from vidgen.config import load_config
from vidgen.errors import ConfigError
from vidgen.sg3.recipe import SG3Config, SG3Recipe, blur_images

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = "configs/sg3/tiny.yaml"


def recipe(*overrides) -> SG3Recipe:
    torch.manual_seed(0)
    return SG3Recipe(load_config(SG3Config, TINY, list(overrides)), torch.device("cpu"))


def batch_of(ds, n=8):
    return torch.utils.data.default_collate([ds[i] for i in range(n)])


def write_classes(root, sizes=(20, 20)):
    rng = np.random.default_rng(0)
    for k, name in enumerate(("cats", "dogs", "owls")):
        (root / name).mkdir(parents=True)
        for i in range(3):
            img = np.zeros((*sizes, 3), np.uint8)
            img[..., k] = 200
            img[: 4 + i] = rng.integers(0, 255, (4 + i, sizes[1], 3))
            Image.fromarray(img).save(root / name / f"{i:03d}.png")


def test_image_folders_give_class_labels(tmp_path):
    write_classes(tmp_path / "data")
    r = recipe(f"data.path={tmp_path / 'data'}", "data.labels=folders", "model.c_dim=3", "data.mirror=true")
    ds = r.dataset()
    assert len(ds) == 2 * 9
    img, label = ds[4]
    assert img.shape == (3, 16, 16) and label == 1 and img[1].mean() > img[0].mean()  # a green "dogs" image
    flipped, label2 = ds[4 + 9]
    assert label2 == 1 and torch.equal(flipped, img.flip(-1))
    with pytest.raises(ConfigError, match="model.c_dim=3"):
        recipe(f"data.path={tmp_path / 'data'}", "data.labels=folders", "model.c_dim=4").dataset()


def test_phases_use_labels_and_update_the_generator_emas():
    r = recipe()
    ds = r.dataset()
    assert r.cfg.model.magnitude_ema_beta == pytest.approx(0.5 ** (16 / 20000))  # resolved from -1
    batch = batch_of(ds)
    layer = r.G.synthesis.layers[0]
    before, w_avg = layer.magnitude_ema.clone(), r.G.mapping.w_avg.clone()
    loss, stats = r.loss_g(batch, 0)
    loss.backward()
    assert torch.equal(layer.magnitude_ema, before)  # G's own phase tracks nothing
    assert r.G.synthesis.layers[3].weight.grad.abs().max() > 0
    loss, stats = r.loss_d(batch, 0)
    loss.backward()
    assert not torch.equal(layer.magnitude_ema, before) and not torch.equal(r.G.mapping.w_avg, w_avg)
    assert r.D.mapping.layers[0].weight.grad.abs().max() > 0  # the labels reach D's projection
    assert r.G.synthesis.layers[3].weight.grad.abs().max() > 0 and set(stats) >= {"loss/D", "logits/real"}
    loss, stats = r.loss_r1(batch, 0)
    assert loss.item() > 0 and {p.name for p in r.phases()} == {"G", "D", "Dreg"}


def test_style_mixing_crosses_two_latents():
    r = recipe("loss.style_mixing=1.0")
    c = r._c(4)
    with torch.no_grad():
        ws = r._ws(4, c, update_emas=False)
    differs = (ws[:, 1:] - ws[:, :-1]).abs().amax(dim=(0, 2)) > 0
    assert differs.sum() == 1  # one cut point, the same for the batch
    with torch.no_grad():
        plain = recipe()._ws(4, c, update_emas=False)
    assert (plain[:, 1:] - plain[:, :-1]).abs().max() == 0


def test_blur_fades_out_and_keeps_constants():
    r = recipe("loss.blur_sigma=10", "loss.blur_fade_kimg=0.32", "engine.batch=16")
    assert r.blur_sigma(0) == 10 and r.blur_sigma(10) == pytest.approx(5) and r.blur_sigma(20) == 0
    x = torch.full((2, 3, 16, 16), 0.5)
    y = blur_images(x, 2.0)
    assert y.shape == x.shape and torch.allclose(y[..., 6:10, 6:10], x[..., 6:10, 6:10])
    noise = torch.randn(1, 3, 16, 16)
    assert blur_images(noise, 2.0).std() < 0.5 * noise.std()
    assert torch.equal(blur_images(noise, 0.2), noise)  # under a third of a pixel: no taps


def test_short_run_writes_a_checkpoint_the_sampler_reads(tmp_path):
    from vidgen.sg3.family import open_sampler
    from vidgen.train.checkpoint import read_checkpoint
    from vidgen.train.engine import train

    cfg = load_config(SG3Config, TINY, [f"engine.out_dir={tmp_path}", "engine.steps=4", "engine.batch=4",
                                        "engine.checkpoint_every=4", "engine.log_every=2", "loss.r1_interval=2"])
    run = train(SG3Recipe, cfg)
    c = read_checkpoint(run)
    assert c.family == "sg3" and c.step == 4 and {"G", "D", "G_ema"} <= set(c.network_names)
    assert run.name.endswith("sg3-t-synthetic-16x16-b4")
    imgs = open_sampler(run).generate(0, 4)
    assert imgs.shape == (4, 16, 16, 3) and imgs.dtype == np.uint8 and imgs.std() > 0
