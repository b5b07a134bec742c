"""The latent space: EDM2's encoder semantics on a tiny diffusers AutoencoderKL built from a
config with seeded weights, VAE files found locally and pinned by SHA-256, and the round trip
prepare --latents -> train -> sample (decoded by the same VAE)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vidgen.cli import main
from vidgen.data.vae import (SD_VAE_RAW_MEAN, SD_VAE_RAW_STD, WEIGHTS_NAME, EncoderConfig, LatentCodec, load_vae,
                             resolve_vae, scale_bias)
from vidgen.errors import VidgenError
from vidgen.optional import available

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not available("diffusers"), reason="needs the latent extra (diffusers)")]


def make_vae(folder, seed=0):
    """A 3-level AutoencoderKL (x4 down-sampling, 4 latent channels) saved in diffusers' layout."""
    from vidgen.optional import require
    diffusers = require("diffusers", "latent")
    torch.manual_seed(seed)
    vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                                  up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16),
                                  layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=32)
    vae.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    return make_vae(tmp_path_factory.mktemp("vae") / "tiny-vae")


def test_scale_and_bias_follow_the_raw_and_final_statistics():
    cfg = EncoderConfig(kind="vae", raw_mean=(1.0, -2.0), raw_std=(4.0, 0.5), final_mean=0.0, final_std=0.5)
    scale, bias = scale_bias(cfg)
    assert np.allclose(scale, [0.125, 1.0]) and np.allclose(bias, [-0.125, 2.0])
    # latents with the assumed statistics come out with mean final_mean and std final_std
    raw = torch.cat([torch.randn(20000, 2, 1, 1) * torch.tensor([4.0, 0.5]).reshape(1, 2, 1, 1)
                     + torch.tensor([1.0, -2.0]).reshape(1, 2, 1, 1), torch.zeros(20000, 2, 1, 1)], dim=1)
    z = LatentCodec(cfg).encode_latents(raw)
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(2), atol=0.02)
    assert torch.allclose(z.std((0, 2, 3)), torch.full((2,), 0.5), atol=0.02)


def test_edm2_constants_give_the_published_scale_and_bias(shared_data):
    """The img512 files store scale/bias computed from EDM2's assumed raw statistics: the same
    float32 numbers come out of the formula."""
    from vidgen import safe_pickle
    enc = safe_pickle.load(shared_data / "reference" / "edm2" / "edm2-tiny-latent-cond.pkl")["encoder"].state
    scale, bias = scale_bias(EncoderConfig(kind="vae", raw_mean=SD_VAE_RAW_MEAN, raw_std=SD_VAE_RAW_STD))
    assert np.array_equal(scale, enc["scale"]) and np.array_equal(bias, enc["bias"])


def test_codec_decodes_what_it_encodes_through_the_vae(vae_dir):
    codec = LatentCodec(EncoderConfig(kind="vae", vae=str(vae_dir), raw_mean=(0.1,) * 4, raw_std=(2.0,) * 4), "cpu")
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    raw = codec.encode_pixels(images)
    assert raw.shape == (2, 8, 8, 8) and codec.factor() == 4
    mean, std = raw.chunk(2, dim=1)
    assert (std > 0).all()
    z = codec.encode_latents(torch.cat([mean, torch.zeros_like(std)], 1))  # the posterior mean, scaled
    with torch.no_grad():
        direct = codec.vae.decode(mean)["sample"].clamp(0, 1).mul(255).to(torch.uint8)
    assert torch.equal(codec.decode(z), direct)
    rgb = LatentCodec(EncoderConfig())
    x = rgb.encode(images)
    assert x.min() >= -1 and x.max() <= 1 and torch.equal(rgb.decode(x), images)


def test_vae_files_are_local_and_pinned(vae_dir, tmp_path, monkeypatch):
    digest = load_vae(str(vae_dir))[1]
    config, weights = resolve_vae(str(vae_dir), digest)
    assert weights.name == WEIGHTS_NAME and config.name == "config.json"
    with pytest.raises(VidgenError, match="SHA-256"):
        resolve_vae(str(vae_dir), "0" * 64)
    with pytest.raises(VidgenError, match="safetensors only"):
        resolve_vae(str(tmp_path / "diffusion_pytorch_model.bin"))
    # A name is looked up in $VIDGEN_CACHE/vae/; a missing one says where to put which files.
    monkeypatch.setenv("VIDGEN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(VidgenError) as err:
        resolve_vae("stabilityai/sd-vae-ft-mse")
    msg = str(err.value)
    assert str(tmp_path / "cache" / "vae" / "stabilityai--sd-vae-ft-mse") in msg and WEIGHTS_NAME in msg
    assert "never downloads" in msg
    make_vae(tmp_path / "cache" / "vae" / "stabilityai--sd-vae-ft-mse")
    assert resolve_vae("stabilityai/sd-vae-ft-mse")[1].is_file()


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for c, colour in enumerate(([220, 60, 40], [40, 80, 220])):
        (root / f"class{c}").mkdir()
        for i in range(3):
            img = np.clip(np.array(colour) + rng.normal(0, 25, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / f"class{c}" / f"{i}.png")
    return root


def test_latent_round_trip_prepare_train_sample(vae_dir, image_folder, tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["data", "prepare", str(image_folder), "--out", str(data), "--resolution", "32x32", "--quality", "100",
                 "--latents", str(vae_dir)]) == 0
    info = json.loads((data / "latents-32x32" / "latents.json").read_text())
    assert info["latent_shape"] == [4, 8, 8] and len(info["clips"]) == 2
    assert info["vae_sha256"] == load_vae(str(vae_dir))[1]
    assert all(s > 0 for s in info["raw_std"])
    runs = tmp_path / "runs"
    assert main(["diffusion", "train", "--data", str(data), "--config", "configs/diffusion/tiny.yaml", "--out", str(runs),
                 "--set", "data.latents=true", "--set", "data.xflip=false", "--set", "model.img_channels=4",
                 "--set", "model.img_resolution=8", "--set", "data.class_from_folder=true", "--set", "model.label_dim=2",
                 "--set", "engine.steps=2", "--set", "engine.batch=2", "--set", "engine.workers=0",
                 "--set", "engine.checkpoint_every=2", "--set", "engine.sample_every=0"]) == 0
    run = next(runs.iterdir())
    from vidgen.diffusion.load import load_denoiser
    _, cfg = load_denoiser(run)
    assert cfg.encoder.kind == "vae" and cfg.encoder.vae_sha256 == info["vae_sha256"]
    assert cfg.encoder.raw_mean == pytest.approx(tuple(info["raw_mean"]))
    capsys.readouterr()
    out = tmp_path / "samples"
    assert main(["diffusion", "sample", "--net", str(run), "--seeds", "0-1", "--steps", "3", "--out", str(out)]) == 0
    imgs = [np.asarray(Image.open(out / f"seed{s:06d}.png")) for s in (0, 1)]
    assert imgs[0].shape == (32, 32, 3) and not np.array_equal(imgs[0], imgs[1])
    # The VAE is part of the run: a different one is refused, a missing one is named.
    other = make_vae(tmp_path / "other-vae", seed=1)
    assert main(["diffusion", "sample", "--net", str(run), "--seeds", "0", "--steps", "2", "--vae", str(other),
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "SHA-256" in capsys.readouterr().err
    assert main(["diffusion", "sample", "--net", str(run), "--seeds", "0", "--steps", "2", "--vae",
                 str(tmp_path / "gone"), "--out", str(tmp_path / "x.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_latent_training_checks_the_model_against_the_latents(vae_dir, image_folder, tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["data", "prepare", str(image_folder), "--out", str(data), "--resolution", "32x32",
                 "--latents", str(vae_dir)]) == 0
    base = ["diffusion", "train", "--data", str(data), "--config", "configs/diffusion/tiny.yaml", "--out",
            str(tmp_path / "r"), "--set", "data.latents=true", "--set", "data.xflip=false", "--set", "engine.steps=1",
            "--set", "engine.workers=0"]
    assert main(base + ["--set", "model.img_resolution=8"]) == 2  # 3 channels
    assert "model.img_channels" in capsys.readouterr().err
    assert main(base + ["--set", "data.resolution=16"]) == 2  # not encoded at 16x16
    assert "latents" in capsys.readouterr().err
    assert main(["data", "prepare", str(image_folder), "--out", str(tmp_path / "d2"), "--resolution", "32x32",
                 "--latents", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err and not (tmp_path / "d2").exists()  # fails before any work
