"""Super-res networks of the long-video GAN (docs/METHODS.md 1.4): sizes, shapes, windows."""

import pytest
import torch

from vidgen.config import load_config
from vidgen.errors import ConfigError
from vidgen.lvg.recipe_superres import SuperResConfig
from vidgen.lvg.superres import (SuperResDiscriminator, SuperResGenerator, SuperResModelConfig,
                                 bench_fwd_bwd_peak_memory, resample_frames)
from vidgen.nn import count_parameters

TINY = SuperResModelConfig(lowres=(12, 16), highres=(24, 32), z_dim=8, w_dim=8, channel_base=256, channel_max=8,
                           num_layers=4, num_critical=2, margin=3, d_channel_base=64, d_channel_max=16)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_g(seed=0):
    torch.manual_seed(seed)
    return SuperResGenerator(TINY).eval()


def test_paper_config_parameter_counts():
    cfg = load_config(SuperResConfig, "configs/lvg/superres-paper.yaml").model
    G, D = SuperResGenerator(cfg), SuperResDiscriminator(cfg)
    assert count_parameters(G) == 27_169_940 and count_parameters(D) == 23_997_825  # the reference's counts
    rates = [layer.spec.out_rate for layer in G.layers]
    assert rates[0] == 16 and rates[-1] == 256 and len(G.layers) == 15
    assert [layer.spec.in_channels for layer in G.layers][:2] == [27, 512 + 27]  # 9 frames x RGB concatenated
    assert D.in_channels == 24 and D.res == 256


@pytest.mark.parametrize("T", [1, 4, 6])
def test_generator_and_discriminator_shapes(T):
    G, D = tiny_g(), SuperResDiscriminator(TINY)
    lowres = torch.rand(2, 3, T + 8, 12, 16) * 2 - 1
    out = G(lowres, torch.randn(2, 8))
    assert out.shape == (2, 3, T, 24, 32)
    conds = G.layer_conditions(lowres)
    for cond, layer in zip(conds, G.layers):
        assert cond.shape == (2 * T, 27, layer.spec.in_size[1], layer.spec.in_size[0])
    if T == 4:
        hr = torch.randn(2, 3, 4, 24, 32)
        assert D(D.upsample_lowres(lowres[:, :, 4:8]), hr).shape == (2, 1)


def test_output_frame_sees_only_its_nine_lowres_frames_and_one_z():
    G = tiny_g()
    lowres = torch.rand(1, 3, 6 + 8, 12, 16) * 2 - 1
    z = torch.randn(1, 8)
    out = G(lowres, z)
    changed = lowres.clone()
    changed[:, :, 13] = -changed[:, :, 13]  # the last low-res frame: only output frame 5 sees it (5 + 4 + 4 = 13)
    out2 = G(changed, z)
    assert torch.equal(out[:, :, :5], out2[:, :, :5]) and not torch.allclose(out[:, :, 5], out2[:, :, 5])
    # A still low-res video gives the same high-res frame everywhere: z is shared by all frames.
    still = lowres[:, :, :1].expand(-1, -1, 10, -1, -1)
    frames = G(still, z)
    assert (frames - frames[:, :, :1]).abs().max() < 1e-6


def test_windows_equal_one_call_over_the_whole_range():
    G = tiny_g(1)
    T = 37
    lowres = torch.rand(3, T + 8, 12, 16) * 2 - 1
    whole = G.upsample_window(lowres, seed=5)
    assert whole.shape == (3, T, 24, 32)
    pieces = [G.upsample_window(lowres[:, t0:min(t0 + 16, T) + 8], seed=5) for t0 in range(0, T, 16)]
    assert (torch.cat(pieces, dim=1) - whole).abs().max() <= 1e-5
    assert (G.upsample_window(lowres, seed=5, segment=5) - whole).abs().max() <= 1e-5
    assert not torch.allclose(G.upsample_window(lowres[:, :12], seed=6), whole[:, :4])  # the seed picks z
    with pytest.raises(ValueError, match="lowres must be"):
        G.upsample_window(lowres[:, :8], seed=5)


def test_resample_frames_keeps_sample_centres_aligned():
    w = 64
    ramp = ((torch.arange(w) + 0.5) / w).expand(1, 1, 16, w).contiguous()
    for up, down in [(2, 1), (4, 1), (1, 2), (1, 4)]:
        y = resample_frames(ramp, up, down)
        n = w * up // down
        assert y.shape == (1, 1, 16 * up // down, n)
        expected = (torch.arange(n) + 0.5) / n
        err = (y[0, 0, y.shape[2] // 2] - expected)[n // 8:-n // 8].abs().max().item()
        assert err < 0.1 / w  # within a tenth of a low-res sample in the interior


def test_bad_resolutions_are_config_errors():
    with pytest.raises(ConfigError, match="model.highres"):
        SuperResGenerator(SuperResModelConfig(lowres=(36, 64), highres=(144, 250)))
    with pytest.raises(ConfigError, match="power of two"):
        SuperResGenerator(SuperResModelConfig(lowres=(36, 64), highres=(108, 192)))
    with pytest.raises(ConfigError, match="long side"):
        SuperResDiscriminator(SuperResModelConfig(lowres=(30, 40), highres=(60, 80)))


@pytest.mark.slow
def test_paper_config_fwd_bwd_peak_memory_under_8gb():
    result = bench_fwd_bwd_peak_memory()
    assert result["peak_rss_gb"] <= 8.0, result
