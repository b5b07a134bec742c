"""StyleGAN3 networks (vidgen.sg3.networks, vidgen.nn.stylegan): paper sizes, truncation,
class conditioning, the user transform, minibatch std."""

import math

import pytest
import torch

from vidgen.errors import ConfigError
from vidgen.nn.stylegan import MinibatchStd, StyleMapping
from vidgen.sg3.networks import Generator, SG3ModelConfig, build_discriminator

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(resolution=16, z_dim=8, w_dim=8, channel_base=128, channel_max=8, num_layers=4, num_critical=1,
            margin=2, d_channel_base=64, d_channel_max=8, d_mapping_layers=2)


def count(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("arch,res,base,cmax,g_params,d_base,d_params", [
    ("T", 1024, 32768, 512, 22_313_167, 32768, 29_012_513),
    ("R", 1024, 65536, 1024, 15_093_151, 32768, 29_012_513),
    ("T", 256, 16384, 512, 23_320_443, 16384, 24_001_089),
    ("R", 256, 32768, 1024, 15_779_565, 16384, 24_001_089),
])
def test_paper_parameter_counts(arch, res, base, cmax, g_params, d_base, d_params):
    with torch.device("meta"):
        cfg = SG3ModelConfig(arch=arch, resolution=res, channel_base=base, channel_max=cmax, d_channel_base=d_base)
        G, D = Generator(cfg), build_discriminator(cfg)
    assert count(G) == g_params and count(D) == d_params
    assert len(G.synthesis.layers) == 15 and cfg.num_ws == 16
    assert [layer.conv_kernel for layer in G.synthesis.layers[:2]] == ([3, 3] if arch == "T" else [1, 1])


def tiny(arch="T", c_dim=0, seed=0):
    torch.manual_seed(seed)
    cfg = SG3ModelConfig(arch=arch, c_dim=c_dim, **TINY)
    G = Generator(cfg).eval()
    with torch.no_grad():
        G.mapping.w_avg.normal_()
    return G


@pytest.mark.parametrize("arch", ["T", "R"])
def test_generator_shapes_and_variation(arch):
    G = tiny(arch)
    z = torch.randn(3, 8)
    with torch.no_grad():
        img = G(z)
    assert img.shape == (3, 3, 16, 16)
    spread = (img - img.mean(0)).abs().amax(dim=(1, 2, 3))
    assert (spread > 1e-3 * img.abs().max()).all()  # the images differ with z


def test_truncation_pulls_every_w_towards_w_avg():
    G = tiny()
    z = torch.randn(4, 8)
    with torch.no_grad():
        w1 = G.mapping(z)
        w0 = G.mapping(z, psi=0.0)
        w7 = G.mapping(z, psi=0.7)
        wc = G.mapping(z, psi=0.0, cutoff=3)
    torch.testing.assert_close(w0, G.mapping.w_avg.expand_as(w0))
    torch.testing.assert_close(w7, G.mapping.w_avg + 0.7 * (w1 - G.mapping.w_avg))
    torch.testing.assert_close(wc[:, :3], w0[:, :3])
    torch.testing.assert_close(wc[:, 3:], w1[:, 3:])
    assert w1.shape == (4, G.cfg.num_ws, 8) and (w1[:, 0] - w1[:, -1]).abs().max() == 0  # one w for every layer


def test_w_avg_tracks_the_mean_only_when_asked():
    m = StyleMapping(8, 0, 8, 4, w_avg_beta=0.5)
    z = torch.randn(16, 8)
    with torch.no_grad():
        m(z)
        assert m.w_avg.abs().max() == 0
        w = m(z, update_emas=True)[:, 0]
    torch.testing.assert_close(m.w_avg, 0.5 * w.mean(0))


def test_class_label_changes_the_image_and_is_required():
    G = tiny(c_dim=3)
    z = torch.randn(1, 8).expand(3, 8)
    with torch.no_grad():
        img = G(z, G.labels(torch.tensor([0, 1, 2]), 3))
    assert (img[0] - img[1]).abs().max() > 1e-3 and (img[1] - img[2]).abs().max() > 1e-3
    with pytest.raises(AssertionError, match="class label"):
        G(z)


def test_discriminator_label_projection():
    torch.manual_seed(0)
    cfg = SG3ModelConfig(c_dim=3, **TINY)
    D = build_discriminator(cfg).eval()
    x = torch.randn(4, 3, 16, 16)
    c = torch.eye(3)[[0, 1, 2, 0]]
    with torch.no_grad():
        a = D(x, c)
        b = D(x, torch.eye(3)[[1, 2, 0, 1]])
    assert a.shape == (4, 1) and (a - b).abs().max() > 1e-4
    # logit = <out(features), mapping(c)> / sqrt(cmap_dim): linear in the out layer's weights.
    with torch.no_grad():
        D.out.weight.mul_(2)
        D.out.bias.mul_(2)
        torch.testing.assert_close(D(x, c), 2 * a)


def test_minibatch_std_groups_match_a_direct_computation():
    torch.manual_seed(0)
    x = torch.randn(8, 6, 3, 3, dtype=torch.float64)
    y = MinibatchStd(group_size=4, num_channels=2)(x)
    assert y.shape == (8, 8, 3, 3)
    for i in range(8):
        group = x[[j for j in range(8) if j % 2 == i % 2]]  # sample i is in group i mod (N / G)
        for f in range(2):
            part = group[:, 3 * f:3 * f + 3]
            std = (part.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
            torch.testing.assert_close(y[i, 6 + f], std.expand(3, 3))


def test_user_transform_translates_the_image():
    """A translation of the Fourier input by whole output pixels moves the image by as many
    pixels (exactly on the grid, away from the borders), and the transform argument equals
    setting the input's transform buffer."""
    G = tiny(seed=3)
    z = torch.randn(2, 8)
    m = torch.eye(3)
    m[0, 2] = -2 / 16  # inverse transform: content moves by +2 pixels along x
    with torch.no_grad():
        ws = G.mapping(z)
        a = G.synthesis(ws)
        b = G.synthesis(ws, transform=m)
        G.synthesis.input.transform.copy_(m)
        torch.testing.assert_close(G.synthesis(ws), b)
    inner = (b[..., 4:12, 6:12] - a[..., 4:12, 4:10]).abs().max() / a.abs().max()
    assert inner < 0.15, inner.item()
    assert (b - a).abs().max() / a.abs().max() > 0.2


def test_bad_configs_are_config_errors():
    with pytest.raises(ConfigError, match="model.resolution"):
        Generator(SG3ModelConfig(resolution=48))
    with pytest.raises(ConfigError, match="num_critical"):
        Generator(SG3ModelConfig(resolution=16, num_layers=2, num_critical=2))
    assert math.isclose(SG3ModelConfig().first_stopband, 2 ** 2.1)
