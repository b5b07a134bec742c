"""Text-conditioned EDM2 (`vidgen diffusion train` on captions) and paint-with-words from the
command line (`vidgen diffusion sample --prompt ... --region IMAGE=PHRASE`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vidgen.cli import main
from vidgen.data.synthetic import make_shapes
from vidgen.diffusion.text import load_region, paint_with_words, parse_region
from vidgen.errors import ConfigError, VidgenError
from vidgen.nn.text import TextEncoderConfig, build_text_encoder
from vidgen.render.writer import read_png_settings

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = ["--config", "configs/diffusion/tiny-text.yaml", "--set", "data.resolution=16", "--set",
         "model.img_resolution=16", "--set", "engine.batch=4", "--set", "engine.steps=2", "--set",
         "engine.checkpoint_every=2", "--set", "engine.log_every=1", "--set", "text.dim=16", "--set",
         "model.token_dim=16"]


def test_region_masks_on_the_phrase_tokens(tmp_path):
    enc = build_text_encoder(TextEncoderConfig(kind="words", dim=8))
    right = torch.zeros(6, 6)
    right[:, 3:] = 1
    left = 1 - right
    prompt = "a red circle and a blue square on a green background"
    pww = paint_with_words(enc, prompt, [(right, "red circle"), (left, "Blue square")], weight=2.0)
    assert pww.weight == 2.0 and pww.masks.shape == (1, 32, 6, 6)
    painted = {t for t in range(32) if pww.masks[0, t].any()}
    assert painted == {1, 2, 5, 6}  # a(0) red(1) circle(2) and(3) a(4) blue(5) square(6)
    assert torch.equal(pww.masks[0, 1], right) and torch.equal(pww.masks[0, 6], left)
    with pytest.raises(ConfigError, match="not a part of the prompt"):
        paint_with_words(enc, prompt, [(right, "green circle")])
    with pytest.raises(VidgenError, match="share one size"):
        paint_with_words(enc, prompt, [(right, "red circle"), (torch.zeros(4, 4), "blue square")])
    img = np.zeros((10, 20, 3), np.uint8)
    img[:, 10:] = 255
    Image.fromarray(img).save(tmp_path / "r.png")
    path, phrase = parse_region(f"{tmp_path / 'r.png'}=red circle")
    m = load_region(path)
    assert phrase == "red circle" and m.shape == (10, 20) and m[:, 10:].min() > 0.99 and m[:, :10].max() < 0.01
    with pytest.raises(VidgenError, match="IMAGE=PHRASE"):
        parse_region("masks.png")


def test_paint_biases_the_cross_attention_strongest_at_high_noise():
    """A text-conditioned U-Net: the prompt changes the denoiser; the painted regions change it
    too, more at high noise than at low (W = w' log(1 + sigma) max(QK^T) A), and not at all
    with w' = 0."""
    from vidgen.diffusion.unet import UNetConfig, build_denoiser

    torch.manual_seed(0)
    den = build_denoiser(UNetConfig(preset="tiny", img_resolution=16, img_channels=3, label_dim=0, token_dim=8)).eval()
    with torch.no_grad():
        den.net.out_gain.fill_(1.0)  # trained nets have a non-zero output gain (initialised at 0)
        for name, p in den.net.named_parameters():
            if name.endswith("emb_gain"):
                p.fill_(0.5)
    enc = build_text_encoder(TextEncoderConfig(kind="words", dim=8))
    prompt = "a red circle and a blue square"
    tokens = enc.encode([prompt] * 2).tokens
    right = torch.zeros(16, 16)
    right[:, 8:] = 1
    paint = paint_with_words(enc, prompt, [(right, "red circle"), (1 - right, "blue square")], weight=1.0)
    x = torch.randn(2, 3, 16, 16)

    def change(sigma: float, p) -> float:
        with torch.no_grad():
            a = den(x * sigma, sigma, None, tokens)
            b = den(x * sigma, sigma, None, tokens, paint=p)
        return float((a - b).abs().mean() / a.abs().mean())

    other = enc.encode(["a green triangle on a yellow background"] * 2).tokens
    with torch.no_grad():
        assert (den(x, 1.0, None, tokens) - den(x, 1.0, None, other)).abs().mean() > 1e-3
    high, low = change(20.0, paint), change(0.01, paint)
    assert high > 1e-3 and high > 10 * low
    paint.weight = 0.0
    assert change(20.0, paint) == 0.0


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("textdiff")
    make_shapes(root / "shapes", seed=0, size=16, count=16, objects=(1, 2))
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        assert main(["diffusion", "train", *SMALL, "--data", str(root / "shapes"), "--out", str(root / "runs")]) == 0
    finally:
        os.chdir(cwd)
    return next((root / "runs").iterdir())


def test_train_on_captions_and_sample_with_regions(text_run, tmp_path, capsys):
    stats = [json.loads(line) for line in (text_run / "stats.jsonl").read_text().splitlines() if line.startswith("{")]
    assert np.isfinite(stats[-1]["stats"]["denoise/loss"])
    right = np.zeros((16, 16), np.uint8)
    right[:, 8:] = 255
    Image.fromarray(right).save(tmp_path / "right.png")
    Image.fromarray(255 - right).save(tmp_path / "left.png")
    prompt = "a red circle and a blue square on a green background"
    base = ["diffusion", "sample", "--net", str(text_run), "--prompt", prompt, "--seeds", "0-1", "--steps", "4"]
    assert main([*base, "--out", str(tmp_path / "plain.png")]) == 0
    assert main([*base, "--region", f"{tmp_path / 'right.png'}=red circle", "--region",
                 f"{tmp_path / 'left.png'}=blue square", "--pww-weight", "3", "--out", str(tmp_path / "pww.png")]) == 0
    plain = np.asarray(Image.open(tmp_path / "plain.png"))
    assert plain.shape == np.asarray(Image.open(tmp_path / "pww.png")).shape == (16, 2 * 16 + 2, 3)
    settings = read_png_settings(tmp_path / "pww.png")
    assert settings["prompt"] == prompt and len(settings["regions"]) == 2 and settings["pww_weight"] == 3
    capsys.readouterr()
    assert main(["diffusion", "sample", "--net", str(text_run), "--seeds", "0", "--out", str(tmp_path / "x.png")]) == 2
    assert "give --prompt" in capsys.readouterr().err
    assert main([*base, "--region", f"{tmp_path / 'right.png'}=purple star", "--out", str(tmp_path / "x.png")]) == 2


def test_eval_sampler_uses_the_run_captions(text_run):
    from vidgen.diffusion.generate import DiffusionSampler

    sampler = DiffusionSampler(text_run)
    assert sampler.prompts and all("background" in p for p in sampler.prompts)
    sampler.scfg.steps = 2
    frames = sampler.generate(3, 2)
    assert frames.shape == (2, 16, 16, 3) and frames.dtype == np.uint8
    assert np.array_equal(sampler.generate(4, 1)[0], frames[1])
