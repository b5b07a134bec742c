"""Low-res generator and discriminator of the long-video GAN (METHODS.md 1.2, 1.3)."""

import pytest
import torch
import torch.nn.functional as F

from vidgen.config import load_config
from vidgen.lvg.latent import LatentConfig
from vidgen.lvg.lowres import LowResGConfig, LowResGenerator, spatial_sizes
from vidgen.lvg.lowres_d import Conv3d, LowResDConfig, LowResDiscriminator
from vidgen.lvg.recipe import LowResConfig, build_discriminator, build_generator
from vidgen.nn.filters import (downsample2d, downsample_same, linear_filter, temporal_downsample2_valid,
                               temporal_upsample2_valid, upfirdn1d)

MICRO_G = LowResGConfig(temporal_channels=(8,) * 7, spatial_channels=(8, 8, 8, 4, 4),
                        latent=LatentConfig(noise_channels=2, num_filters=4, min_rate=20.0, max_rate=60.0, w_dim=8))
MICRO_D = LowResDConfig(channels=(4, 8, 8, 8, 8), temporal_ksize=3, head_channels=8, head_convs=2)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread avoids paying thread hand-offs on every small op."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def count(m):
    return sum(p.numel() for p in m.parameters())


def test_paper_parameter_counts():
    cfg = load_config(LowResConfig, "configs/lvg/lowres-paper.yaml")
    torch.manual_seed(0)
    G, D = build_generator(cfg), build_discriminator(cfg)
    assert count(G) == pytest.approx(83.2e6, rel=0.01)
    assert count(G.latent.mapping) == pytest.approx(2.1e6, rel=0.01)
    assert count(D) == pytest.approx(46.4e6, rel=0.01)
    assert D.res == 4 and D.steps == 16  # features 512 x 16 x 4 x 4 at T = 128


def test_spatial_schedule():
    assert spatial_sizes(36, 64) == [(3, 4), (5, 8), (9, 16), (18, 32), (36, 64)]
    assert spatial_sizes(64, 64) == [(4, 4), (8, 8), (16, 16), (32, 32), (64, 64)]


@pytest.mark.parametrize("T", [1, 16, 37, 128])
def test_generator_shapes_at_every_level(T):
    torch.manual_seed(0)
    G = LowResGenerator(MICRO_G, 36, 64).eval()
    plan = G.plan(0, T)
    shapes = []
    hooks = [b.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape))) for b in G.temporal_blocks]
    for block in G.spatial_blocks:  # frame by frame: [B * T, C, H, W] -> record as [B, C, T, H, W]
        def frames(x, w, f=block.forward_frames):
            y = f(x, w)
            shapes.append((2, y.shape[1], y.shape[0] // 2) + tuple(y.shape[2:]))
            return y
        block.forward_frames = frames
    with torch.no_grad():
        video = G.render_seeds([0, 1], 0, T)
    for h in hooks:
        h.remove()
    assert video.shape == (2, 3, T, 36, 64)
    sizes = [(3, 4), (5, 8), (5, 8), (9, 16), (9, 16), (9, 16), (18, 32), (18, 32), (36, 64), (36, 64)]
    lengths = [hi - lo for lo, hi in plan.block_in[1:]] + [T] * 5
    assert [s[2] for s in shapes] == lengths
    assert [s[3:] for s in shapes] == sizes
    assert plan.block_level == [5, 4, 3, 2, 1, 0]
    # each level computes about ceil(T / 2^k) steps plus a small fixed margin
    for (lo, hi), k in zip(plan.block_in, plan.block_level):
        assert -(-T // 2 ** k) <= hi - lo <= -(-T // 2 ** k) + 16


def test_streaming_equals_one_shot():
    torch.manual_seed(0)
    G = LowResGenerator(MICRO_G, 18, 32).eval()
    with torch.no_grad():
        whole = G.render_seeds([3], -20, 100)
        parts = torch.cat([G.render_seeds([3], a, min(a + 17, 100)) for a in range(-20, 100, 17)], dim=2)
        other = G.render_seeds([4], 0, 10)
    assert (parts - whole).abs().max().item() <= 1e-5
    assert (other - whole[:, :, 20:30]).abs().max() > 0.1 * whole.abs().max()  # another seed, another video


def test_generator_trains_with_fresh_noise():
    torch.manual_seed(0)
    G = LowResGenerator(MICRO_G, 18, 32)
    video = G(lambda a, b: torch.randn(2, 2, b - a), 0, 20)
    video.square().mean().backward()
    assert video.shape == (2, 3, 20, 18, 32)
    assert all(p.grad is not None for p in G.parameters())
    assert G.temporal_blocks[0].mag0.magnitude.item() != 1.0  # magnitude EMA updated in training
    assert G.temporal_blocks[1].mag0.magnitude.item() != 0.5


@pytest.mark.parametrize("T", [16, 32, 128])
def test_discriminator_clip_lengths(T):
    D = LowResDiscriminator(MICRO_D, clip_len=T, max_edge=64)
    assert D(torch.randn(2, 3, T, 36, 64)).shape == (2, 1)
    assert D.res == 4 and D.steps == T // 8
    with pytest.raises(AssertionError):
        D(torch.randn(2, 3, T + 1, 36, 64))


def test_fused_downsampling_conv_equals_conv_then_lowpass():
    torch.manual_seed(0)
    c = Conv3d(4, 6, 5, 3, s_down=True, t_down=True, clamp=256.0)
    torch.nn.init.normal_(c.bias)
    x = torch.randn(1, 4, 16, 16, 16)
    ref = downsample_same(downsample2d(F.conv3d(x, c.weight * c.gain, padding=(2, 1, 1))), dim=2)
    y = c(x)
    ref = F.leaky_relu(ref + c.bias[:, None, None, None], 0.2) * 2 ** 0.5
    assert y.shape == ref.shape == (1, 6, 8, 8, 8)
    torch.testing.assert_close(y[:, :, 2:-2, 2:-2, 2:-2], ref[:, :, 2:-2, 2:-2, 2:-2], atol=1e-5, rtol=1e-5)


def test_valid_temporal_resampling_keeps_absolute_indices():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 20)
    y, lo = temporal_upsample2_valid(x, 5, dim=2)
    assert lo == 11 and y.shape[2] == 38
    ref = upfirdn1d(x, linear_filter(2), up=2, padding=(2, 1), gain=2)  # 'same' x2, y[2j] at index 2j
    torch.testing.assert_close(y, ref[:, :, 1:-1])
    f = torch.tensor(linear_filter(2) * 0 + 0.25)
    d, first = temporal_downsample2_valid(x, 5, f)  # box of 4: output j averages inputs 2j-1 .. 2j+2
    j = first + 1
    torch.testing.assert_close(d[:, :, 1], x[:, :, 2 * j - 1 - 5:2 * j + 3 - 5].mean(-1))


def test_training_window_crop_equals_cropping_the_video():
    torch.manual_seed(0)
    G = LowResGenerator(MICRO_G, 18, 32).eval()
    noise = {}

    def fixed(a, b):  # the same noise for both calls
        return noise.setdefault((a, b), torch.randn(2, 2, b - a))

    full = G(fixed, 0, 24)
    kept = G(fixed, 0, 24, offsets=[3, 8], length=16)
    torch.testing.assert_close(kept, torch.stack([full[0, :, 3:19], full[1, :, 8:24]]), atol=1e-6, rtol=0)


def test_spatial_only_layers_on_frames_equal_3d():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, 16, 16)
    frames = x.transpose(1, 2).reshape(6, 4, 16, 16)
    for layer in (Conv3d(4, 6, 1, 3, s_down=True, clamp=256.0), Conv3d(4, 6, 1, 1, True, bias=False, act=False)):
        y = layer(x).transpose(1, 2).reshape(6, 6, 8, 8)
        torch.testing.assert_close(layer(frames), y, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scale", [1.0, 100.0])  # clamp inactive / active
def test_clamp_symmetric_matches_clamp_values_and_gradients(scale):
    from vidgen.nn.style import clamp_symmetric

    torch.manual_seed(0)
    x = (torch.randn(4, 5, 6) * scale).requires_grad_()
    g = torch.randn(4, 5, 6)
    (clamp_symmetric(x, 8.0) * g).sum().backward()
    grad, x.grad = x.grad, None
    y_ref = x.clamp(-8.0, 8.0)
    (y_ref * g).sum().backward()
    torch.testing.assert_close(clamp_symmetric(x.detach(), 8.0), y_ref.detach(), rtol=0, atol=0)
    torch.testing.assert_close(grad, x.grad, rtol=0, atol=0)
    assert torch.isnan(clamp_symmetric(torch.tensor([1.0, float("nan")]), 8.0)).any()


def _blurred_kernel(weight: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Reference: the conv kernel fully convolved with [1, 3, 3, 1] / 8 along ``dims``."""
    f = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
    for d in dims:
        moved = weight.movedim(d, -1)
        k = moved.shape[-1]
        out = torch.zeros(*moved.shape[:-1], k + 3)
        for i in range(k):
            out[..., i:i + 4] += moved[..., i:i + 1] * f
        weight = out.movedim(-1, d)
    return weight


@pytest.mark.parametrize("kt,ks,t_down,s_down,frames", [
    (5, 3, True, True, False), (5, 3, False, True, False), (3, 3, True, False, False), (1, 1, True, True, False),
    (1, 1, False, True, False), (1, 3, False, True, True), (1, 1, False, True, True), (3, 3, False, False, False)])
def test_downsampling_conv_equals_strided_conv_with_blurred_kernel(kt, ks, t_down, s_down, frames):
    """The low-pass-first route gives the blurred-kernel strided conv's values and gradients
    everywhere, edges included, for 3-D layers, frame layers and 1x1 skips."""
    torch.manual_seed(0)
    act = ks > 1
    c = Conv3d(6, 10, kt, ks, s_down=s_down, t_down=t_down, bias=act, act=act, clamp=256.0)
    if act:
        torch.nn.init.normal_(c.bias)
    shape = (3, 6, 12, 10) if frames else (2, 6, 8, 12, 10)
    x = torch.randn(*shape, requires_grad=True)
    dims = ((2,) if t_down else ()) + ((3, 4) if s_down else ())
    w = _blurred_kernel(c.weight * c.gain * (2 ** 0.5 if act else 1.0), dims)
    st = (2 if t_down else 1, 2 if s_down else 1, 2 if s_down else 1)
    pad = tuple((k - s) // 2 for k, s in zip(w.shape[2:], st))
    b = c.bias * 2 ** 0.5 if act else None
    ref = F.conv2d(x, w[:, :, 0], b, stride=st[1:], padding=pad[1:]) if frames else \
        F.conv3d(x, w, b, stride=st, padding=pad)
    ref = F.leaky_relu(ref, 0.2) if act else ref
    y = c(x)
    assert y.shape == ref.shape
    assert y.shape[-2:] == ((6, 5) if s_down else (12, 10))
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(y)
    gx, gw = torch.autograd.grad((y * g).sum(), (x, c.weight))
    rx, rw = torch.autograd.grad((ref * g).sum(), (x, c.weight))
    torch.testing.assert_close(gx, rx, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gw, rw, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("s_up", [False, True])
def test_spatial_block_and_to_rgb_equal_textbook_modulated_convs(s_up):
    """The frame path (styles folded with the magnitude gains, bias in the skip conv when no
    resampling, ToRGB as a per-frame matmul) against plain modulated_conv2d formulas."""
    from vidgen.lvg.lowres import LRELU_GAIN, SynthesisBlock, ToRGB
    from vidgen.nn.style import modulated_conv2d

    torch.manual_seed(0)
    size = (10, 16) if s_up else (5, 8)
    blk = SynthesisBlock(6, 5, 4, 1, 3, False, s_up, size, clamp=256.0, beta=0.9).eval()
    rgb = ToRGB(6, 4, clamp=256.0, beta=0.9).eval()
    for m in (blk.mag0, blk.mag1, rgb.mag):
        m.magnitude.fill_(0.7)
    for b in (blk.bias0, blk.bias1, rgb.bias):
        torch.nn.init.normal_(b)
    x = torch.randn(3, 5, 5, 8).contiguous(memory_format=torch.channels_last)
    w = torch.randn(3, 6)
    y, out = blk.forward_frames(x, w), rgb(blk.forward_frames(x, w), w)

    def lrelu(t):  # the un-gained leaky ReLU of the block (its consumers normalise magnitudes)
        return F.leaky_relu(t, 0.2).clamp(-256 / LRELU_GAIN, 256 / LRELU_GAIN)

    g = 0.7 ** -0.5
    h = lrelu(modulated_conv2d(x * g, blk.weight0[:, :, 0], blk.affine0(w), padding=1) + blk.bias0[:, None, None])
    skip = F.conv2d(x * g, blk.weight_skip[:, :, 0]) / 5 ** 0.5
    ref = (modulated_conv2d(h * g, blk.weight1[:, :, 0], blk.affine1(w), padding=1) + skip) * 0.5 ** 0.5
    if s_up:
        ref = F.interpolate(ref, scale_factor=2, mode="bilinear", align_corners=False)
    ref = lrelu(ref + blk.bias1[:, None, None])
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    ref_rgb = F.conv2d(y * g * rgb.affine(w)[:, :, None, None], rgb.weight[:, :, 0] / 2) + rgb.bias[:, None, None]
    torch.testing.assert_close(out, ref_rgb, atol=1e-5, rtol=1e-5)


def test_temporal_block_equals_textbook_modulated_conv3d():
    """A spatio-temporal block (valid in time) against modulated_conv3d with the magnitude
    normalisation applied to its input, as StyleGAN3's input gain: after the demodulation."""
    from vidgen.lvg.lowres import LRELU_GAIN, SynthesisBlock
    from vidgen.nn.style import modulated_conv3d

    torch.manual_seed(0)
    blk = SynthesisBlock(6, 5, 4, 3, 3, False, False, (5, 8), clamp=256.0, beta=0.9).eval()
    blk.mag0.magnitude.fill_(3.0)
    blk.mag1.magnitude.fill_(0.25)
    for b in (blk.bias0, blk.bias1):
        torch.nn.init.normal_(b)
    x, w = torch.randn(2, 5, 9, 5, 8), torch.randn(2, 6, 9)
    y = blk(x, w, 10, 12, 17)  # input steps [10, 19) -> output steps [12, 17)

    def lrelu(t):
        return F.leaky_relu(t, 0.2).clamp(-256 / LRELU_GAIN, 256 / LRELU_GAIN)

    h = lrelu(modulated_conv3d(x / 3 ** 0.5, blk.weight0, blk.styles(w, blk.affine0), padding=(0, 1, 1))
              + blk.bias0[:, None, None, None])
    main = modulated_conv3d(h / 0.5, blk.weight1, blk.styles(w[:, :, 1:-1], blk.affine1), padding=(0, 1, 1))
    skip = F.conv3d(x[:, :, 2:-2] / 3 ** 0.5, blk.weight_skip) / 5 ** 0.5
    ref = lrelu((main + skip) * 0.5 ** 0.5 + blk.bias1[:, None, None, None])
    assert y.shape == ref.shape == (2, 4, 5, 5, 8)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
