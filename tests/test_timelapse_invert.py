"""Inversion of real frames given their capture time (`timelapse invert`)."""

import numpy as np
import pytest
import torch

from vidgen.errors import VidgenError
from timelapse.frames import TimelapseFrames
from timelapse.invert import InvertConfig, invert_frame, invert_sequence, read_latents
from timelapse.model import Generator, ModelConfig

CFG = ModelConfig(resolution=16, channel_base=256, channel_max=32, z_dim=16, w_dim=16, cond_mlp_layers=2)


@pytest.fixture(scope="module")
def chamonix(shared_data):
    return TimelapseFrames(shared_data / "timelapse" / "chamonix", 16)


@pytest.fixture(scope="module")
def G(chamonix):
    torch.manual_seed(0)
    g = Generator(CFG, chamonix.axis, chamonix.rect).eval().requires_grad_(False)
    with torch.no_grad():  # a w_avg as training would leave it
        g.w_avg.copy_(g.mapping(torch.randn(512, 16)).mean(0))
    return g


def test_inversion_lowers_error_on_a_real_frame(G, chamonix):
    frame, t, _ = chamonix[7]  # a real webcam frame, letterboxed (704x547 -> 16x12 inside 16x16)
    cfg = InvertConfig(steps=20, lr=0.1)
    ws, noises, hist = invert_frame(G, frame[None], t.reshape(1), cfg, torch.Generator().manual_seed(0))
    assert ws.shape == (1, G.num_ws, 16) and len(noises) == len(G.convs)
    assert hist[-1] < 0.6 * hist[0], (hist[0], hist[-1])
    for n in noises:  # noise maps stay unit Gaussian
        assert float(n.mean()) == pytest.approx(0, abs=1e-4) and float(n.std(unbiased=False)) == pytest.approx(1, rel=1e-3)


class Interrupting(torch.utils.data.Dataset):
    """The first `n` frames of a dataset; reading frame `stop_at` raises (a killed run)."""

    def __init__(self, base, n, stop_at=None):
        self.base, self.n, self.stop_at = base, n, stop_at

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.stop_at:
            raise KeyboardInterrupt
        return self.base[i]


def test_inversion_resumes_where_it_stopped(G, chamonix, tmp_path):
    cfg = InvertConfig(steps=4)
    whole = invert_sequence(G, Interrupting(chamonix, 3), tmp_path / "whole.safetensors", cfg, progress=False)
    out = tmp_path / "resumed.safetensors"
    with pytest.raises(KeyboardInterrupt):
        invert_sequence(G, Interrupting(chamonix, 3, stop_at=2), out, cfg, save_every=1, progress=False)
    partial, meta = read_latents(out)
    assert partial["done"].tolist() == [True, True, False] and meta["frames"] == 3
    resumed = invert_sequence(G, Interrupting(chamonix, 3), out, cfg, progress=False)
    assert resumed["done"].all()
    for key in ("w", "t", "mse", "noise0"):
        assert torch.equal(resumed[key], whole[key]), key
    assert np.allclose(resumed["t"].numpy(), chamonix.t[:3])
    with pytest.raises(VidgenError, match="another run"):
        invert_sequence(G, Interrupting(chamonix, 5), out, cfg, progress=False)
