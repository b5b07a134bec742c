"""Variance ratios and equal-time FID of the time-lapse generator."""

import math

import pytest
import torch

from timelapse.metrics import fid, variance_ratios
from timelapse.model import Generator, ModelConfig, TimeStyle
from timelapse.time import TimeAxis

CFG = ModelConfig(resolution=8, channel_base=128, channel_max=16, z_dim=8, w_dim=8, cond_mlp_layers=1)
AXIS = TimeAxis(start=1609459200.0, num_days=800)


def make_G(time_scale: float) -> Generator:
    torch.manual_seed(0)
    G = Generator(CFG, AXIS).eval().requires_grad_(False)
    with torch.no_grad():
        for m in G.modules():
            if isinstance(m, TimeStyle):
                m.time.weight.add_(torch.randn_like(m.time.weight) * time_scale)
        for layer in G.convs:
            layer.noise_strength.fill_(0.3)
    return G


def test_variance_ratios_follow_the_inputs():
    still = variance_ratios(make_G(0.0), n=32, batch=32)
    assert set(still) == {"z", "noise", "t", "trend", "year", "day"}
    assert still["t"] < 1e-4 and still["z"] > 0.5  # identity time modulation: t explains nothing
    assert still["z"] + still["noise"] + still["t"] == pytest.approx(1.0, abs=0.05)
    moving = variance_ratios(make_G(3.0), n=32, batch=32)
    assert moving["t"] > 0.05 and moving["day"] > 0 and moving["year"] > 0
    # repeatable for a seed
    assert variance_ratios(make_G(3.0), n=32, batch=32) == moving


def test_fid_hook_with_dataset_times():
    from vidgen.metrics.detectors import RandomDetector

    G = make_G(1.0)
    frames = [(torch.rand(3, 8, 8) * 2 - 1, torch.tensor(0.1 * i), torch.tensor(0.01)) for i in range(10)]
    out = fid(G, frames, detector=RandomDetector(16), num_fake=40, batch=16, progress=False)
    assert math.isfinite(out["fid"]) and out["fid"] > 0
    assert out["num_fake"] == 40 and out["t_from"] == "dataset capture times" and len(out["detector_sha256"]) == 64
