"""Time-lapse GAN networks (METHODS.md 2): sizes, identity-at-init time modulation, masking."""

import math

import pytest
import torch

from timelapse.model import Discriminator, Generator, ModelConfig, TimeStyle, summary
from timelapse.time import TimeAxis

AXIS = TimeAxis(start=1.6e9 - (1.6e9 % 86400), num_days=1096)  # three years: trend, year, day
TINY = ModelConfig(resolution=16, channel_base=256, channel_max=32, z_dim=16, w_dim=16, cond_mlp_layers=2)


def test_reference_sizes_at_256():
    G, D = Generator(ModelConfig(), AXIS), Discriminator(ModelConfig(), AXIS)
    s = summary(G, D)
    assert s["num_ws"] == 14
    assert s["G"] == pytest.approx(28.51e6, rel=0.01)
    assert s["G.mapping"] == pytest.approx(0.53e6, rel=0.01)
    assert s["D"] == pytest.approx(31.23e6, rel=0.01)
    assert s["D.cond_mlp"] == pytest.approx(2.10e6, rel=0.01)


def test_time_modulation_is_identity_at_init():
    torch.manual_seed(0)
    style = TimeStyle(w_dim=16, c_dim=6, channels=8)
    w, c = torch.randn(4, 16), torch.randn(4, 6)
    c[:, 0] = 1  # the constant entry
    assert torch.allclose(style(w, c), style.affine(w), rtol=1e-5, atol=1e-6)
    # and the whole generator ignores t at initialisation
    G = Generator(TINY, AXIS).eval()
    z = torch.randn(3, 16)
    a = G(z, torch.tensor([0.1, 0.5, 0.9]), noise="const")
    b = G(z, torch.tensor([0.7, 0.2, 0.3]), noise="const")
    assert torch.allclose(a, b, atol=1e-4)
    # once L moves, t matters
    with torch.no_grad():
        for m in G.modules():
            if isinstance(m, TimeStyle):
                m.time.weight.add_(torch.randn_like(m.time.weight))
    b = G(z, torch.tensor([0.7, 0.2, 0.3]), noise="const")
    assert (a - b).abs().max() > 1e-2


def test_generator_shapes_layers_and_noise():
    G = Generator(TINY, AXIS)
    assert G.num_ws == 6 and len(G.convs) == 5 and len(G.torgbs) == 3
    z = torch.randn(2, 16)
    ws = G.map(z)
    assert ws.shape == (2, 6, 16)
    for t in (torch.rand(2), torch.rand(2, 3), torch.rand(2, 6, 3)):  # global, per factor, per layer
        assert G.synthesis(ws, t, "const").shape == (2, 3, 16, 16)
    gen = torch.Generator().manual_seed(3)
    noise = G.make_noise(2, gen)
    assert [tuple(n.shape) for n in noise] == [(2, 1, 4, 4), (2, 1, 8, 8), (2, 1, 8, 8), (2, 1, 16, 16), (2, 1, 16, 16)]
    x1, x2 = G.synthesis(ws, torch.rand(2), noise), G.synthesis(ws, torch.rand(2), noise)
    assert torch.allclose(x1, x2, atol=1e-4)  # fixed noise + identity time -> same image


def test_output_masked_outside_valid_rect():
    G = Generator(TINY, AXIS, out_rect=(0, 4, 16, 12))
    x = G(torch.randn(2, 16), torch.rand(2))
    assert (x[..., :4, :] == -1).all() and (x[..., 12:, :] == -1).all()
    assert (x[..., 4:12, :] != -1).any()


def test_discriminator_projection_uses_time():
    torch.manual_seed(0)
    D = Discriminator(TINY, AXIS)
    img = torch.randn(4, 3, 16, 16)
    out = D(img, torch.rand(4))
    assert out.shape == (4,)
    # logit = <features, cmap(t)> / sqrt(cmap_dim): a different t gives a different logit
    assert not torch.allclose(out, D(img, torch.rand(4)))
    assert D.cmap_dim == 32 and math.isfinite(float(out.detach().sum()))
    # gradient reaches the image (needed by R1)
    x = img.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(D(x, torch.rand(4)).sum(), x)
    assert g.abs().sum() > 0
