"""Low-res generator and discriminator of the long-video GAN (docs/METHODS.md 1.2, 1.3)."""

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
    plan = G.plan(T)
    shapes = []
    hooks = [b.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape))) for b in G.temporal_blocks]
    for block in G.spatial_blocks:  # frame by frame: [B * T, C, H, W] -> record as [B, C, T, H, W]
        def frames(x, w, f=block.forward_frames):
            y = f(x, w)
            shapes.append((2, y.shape[1], y.shape[0] // 2) + tuple(y.shape[2:]))
            return y
        block.forward_frames = frames
    with torch.no_grad():
        video = G.render_seeds([0, 1], T)
    for h in hooks:
        h.remove()
    assert video.shape == (2, 3, T, 36, 64)
    sizes = [(3, 4), (5, 8), (5, 8), (9, 16), (9, 16), (9, 16), (18, 32), (18, 32), (36, 64), (36, 64)]
    lengths = [hi - lo for lo, hi in plan.block_in[1:]] + [T] * 5
    assert [s[2] for s in shapes] == lengths
    assert [s[3:] for s in shapes] == sizes
    assert plan.block_level == [5, 4, 3, 2, 1, 0]
    # each level has ceil(T / 2^k) + 2 * 8 samples (the reference's sizes); a render computes
    # at most those plus the two convolutions' margins
    for (lo, hi), k, n in zip(plan.block_in, plan.block_level, plan.lengths):
        assert n == -(-T // 2 ** k) + 16
        assert -2 <= lo and hi <= n + 2
    assert plan.level_len[0] == 32 * plan.lengths[0]


def test_streaming_equals_one_shot():
    torch.manual_seed(0)
    G = LowResGenerator(MICRO_G, 18, 32).eval()
    with torch.no_grad():
        whole = G.render_seeds([3], 100, -8, 108)  # the last level's margin: 8 frames each side
        parts = torch.cat([G.render_seeds([3], 100, a, min(a + 17, 108)) for a in range(-8, 108, 17)], dim=2)
        other = G.render_seeds([4], 100, 0, 10)
        longer = G.render_seeds([3], 101, 0, 100)
    assert (parts - whole).abs().max().item() <= 1e-5 * whole.abs().max().item()
    assert (other - whole[:, :, 8:18]).abs().max() > 0.1 * whole.abs().max()  # another seed, another video
    assert (longer - whole[:, :, 8:108]).abs().max() > 0.01 * whole.abs().max()  # the length shapes the video
    with pytest.raises(ValueError, match="defines frames -8 .. 107 only"):
        G.render_seeds([3], 100, -9, 10)


def test_generator_trains_with_fresh_noise():
    torch.manual_seed(0)
    G = LowResGenerator(MICRO_G, 18, 32)
    video = G(lambda a, b: torch.randn(2, 2, b - a), 20)
    video.square().mean().backward()
    assert video.shape == (2, 3, 20, 18, 32)
    assert all(p.grad is not None for p in G.parameters())
    assert G.temporal_blocks[0].mag0.magnitude.item() != 1.0  # magnitude EMA updated in training
    assert G.temporal_blocks[1].mag0.magnitude.item() != 1.0


@pytest.mark.parametrize("T", [16, 32, 128])
def test_discriminator_clip_lengths(T):
    D = LowResDiscriminator(MICRO_D, clip_len=T, max_edge=64)
    assert D(torch.randn(2, 3, T, 36, 64)).shape == (2, 1)
    assert D.res == 4 and D.steps == T // 8
    with pytest.raises(AssertionError):
        D(torch.randn(2, 3, T + 1, 36, 64))


def test_downsampling_conv_is_conv_then_lowpass():
    """The reference order (LVG code, Conv3dLayer): 'same' conv, then the [1, 3, 3, 1] / 8
    low-pass with zero padding 1 and decimation, then bias and leaky ReLU; edges included."""
    torch.manual_seed(0)
    c = Conv3d(4, 6, 5, 3, s_down=True, t_down=True, clamp=256.0)
    torch.nn.init.normal_(c.bias)
    x = torch.randn(1, 4, 16, 16, 16)
    ref = downsample_same(downsample2d(F.conv3d(x, c.weight * c.gain, padding=(2, 1, 1))), dim=2)
    y = c(x)
    ref = F.leaky_relu(ref + c.bias[:, None, None, None], 0.2) * 2 ** 0.5
    assert y.shape == ref.shape == (1, 6, 8, 8, 8)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)


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

    full = G(fixed, 24)
    kept = G(fixed, 24, offsets=[3, 8], length=16)
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


@pytest.mark.parametrize("kt,ks,t_down,s_down,frames", [
    (5, 3, True, True, False), (5, 3, False, True, False), (3, 3, True, False, False), (1, 1, True, True, False),
    (1, 1, False, True, False), (1, 3, False, True, True), (1, 1, False, True, True), (3, 3, False, False, False)])
def test_downsampling_conv_equals_reference_order(kt, ks, t_down, s_down, frames):
    """Values and gradients of every layer kind (3-D, frames, 1x1 skips) equal the textbook
    'same' conv -> zero-padded [1, 3, 3, 1] / 8 decimation -> bias -> leaky ReLU -> clamp,
    edges included (the reference implementation's order)."""
    torch.manual_seed(0)
    act = ks > 1
    c = Conv3d(6, 10, kt, ks, s_down=s_down, t_down=t_down, bias=act, act=act, clamp=256.0)
    if act:
        torch.nn.init.normal_(c.bias)
    shape = (3, 6, 12, 10) if frames else (2, 6, 8, 12, 10)
    x = torch.randn(*shape, requires_grad=True)
    w = c.weight * c.gain
    if frames:
        ref = F.conv2d(x, w[:, :, 0], padding=ks // 2)
        dims = (2, 3) if s_down else ()
    else:
        ref = F.conv3d(x, w, padding=(kt // 2, ks // 2, ks // 2))
        dims = ((2,) if t_down else ()) + ((3, 4) if s_down else ())
    for d in dims:
        ref = downsample_same(ref, dim=d)
    if act:
        ref = F.leaky_relu(ref + c.bias.view(-1, *[1] * (ref.ndim - 2)), 0.2) * 2 ** 0.5
    ref = ref.clamp(-256, 256)
    y = c(x)
    assert y.shape == ref.shape
    assert y.shape[-2:] == ((6, 5) if s_down else (12, 10))
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(y)
    gx, gw = torch.autograd.grad((y * g).sum(), (x, c.weight))
    rx, rw = torch.autograd.grad((ref * g).sum(), (x, c.weight))
    torch.testing.assert_close(gx, rx, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gw, rw, atol=1e-5, rtol=1e-5)


def _textbook_block(blk, x_ref, w, up_t: bool, crop: int, out_len: int):
    """The reference implementation's block (LVG code, Synthesis3dResBlock) in textbook form
    on a whole level: input x_ref [B, C, T, h, w] as the previous leaky ReLU (with its sqrt(2)
    gain) left it, zero padding in time, magnitude gains after the demodulation."""
    from vidgen.nn.filters import upfirdn1d, upfirdn2d
    from vidgen.nn.style import modulated_conv3d

    r = blk.kt // 2
    g0 = blk.mag0.magnitude.rsqrt()
    g1 = blk.mag1.magnitude.rsqrt()
    pad = (r, blk.ks // 2, blk.ks // 2)

    def act(t, b):
        return (F.leaky_relu(t + b[:, None, None, None], 0.2) * 2 ** 0.5).clamp(-256, 256)

    x = x_ref * g0
    h = act(modulated_conv3d(x, blk.weight0, blk.styles(w, blk.affine0), padding=pad), blk.bias0)
    main = modulated_conv3d(h * g1, blk.weight1, blk.styles(w, blk.affine1), padding=pad)
    y = (main + F.conv3d(x, blk.weight_skip) / x.shape[1] ** 0.5) * 0.5 ** 0.5
    if up_t:
        y = upfirdn1d(y, linear_filter(2), up=2, padding=(2, 1), dim=2, gain=2)
    y = y[:, :, crop:crop + out_len]
    if blk.s_up:
        B = y.shape[0]
        y = upfirdn2d(y.flatten(1, 2), linear_filter(2), up=2, padding=(2, 1), gain=2).unflatten(1, (-1, y.shape[2]))
        assert y.shape[0] == B
    H, W = blk.out_size
    top, left = (y.shape[3] - H) // 2, (y.shape[4] - W) // 2
    return act(y[:, :, :, top:top + H, left:left + W], blk.bias1)


@pytest.mark.parametrize("s_up", [False, True])
def test_spatial_block_and_to_rgb_equal_textbook_modulated_convs(s_up):
    """The frame path (styles folded with the magnitude gains, bias in the skip conv when no
    resampling, ToRGB as a per-frame matmul, leaky ReLUs without their sqrt(2) gain) against
    the textbook block; outputs are 1/sqrt(2) of the textbook's (the gain the next layer's
    input gain makes up)."""
    from vidgen.lvg.lowres import SynthesisBlock, ToRGB

    torch.manual_seed(0)
    size = (10, 16) if s_up else (5, 8)
    blk = SynthesisBlock(6, 5, 4, 1, 3, False, s_up, size, clamp=256.0, beta=0.9).eval()
    rgb = ToRGB(6, 4, clamp=256.0, beta=0.9).eval()
    for m, v in ((blk.mag0, 0.7), (blk.mag1, 1.3), (rgb.mag, 0.4)):
        m.magnitude.fill_(v)
    for b in (blk.bias0, blk.bias1, rgb.bias):
        torch.nn.init.normal_(b)
    x = torch.randn(3, 5, 5, 8).contiguous(memory_format=torch.channels_last)
    w = torch.randn(3, 6)
    y, out = blk.forward_frames(x, w), rgb(blk.forward_frames(x, w), w)
    x_ref = x.transpose(0, 1)[None] * 2 ** 0.5  # frames as a 3-frame clip [1, C, 3, h, w]
    ref = _textbook_block(blk, x_ref, w.t()[None], False, 0, 3)[0].transpose(0, 1)
    torch.testing.assert_close(y * 2 ** 0.5, ref, atol=1e-5, rtol=1e-5)
    s = rgb.affine(w) * rgb.mag.magnitude.rsqrt()
    ref_rgb = F.conv2d(ref * s[:, :, None, None], rgb.weight[:, :, 0] / 2) + rgb.bias[:, None, None]
    torch.testing.assert_close(out, ref_rgb, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("t_up,s_up", [(False, False), (True, True)])
def test_temporal_block_equals_textbook_block(t_up, s_up):
    """A spatio-temporal block over a whole level (zero padding in time at the level's ends,
    x2 upsampling, centre crop) against the textbook form, and the same samples computed in
    two windows."""
    from vidgen.lvg.lowres import SynthesisBlock

    torch.manual_seed(0)
    size = (10, 16) if s_up else (5, 8)
    blk = SynthesisBlock(6, 5, 4, 3, 3, t_up, s_up, size, clamp=256.0, beta=0.9).eval()
    blk.mag0.magnitude.fill_(3.0)
    blk.mag1.magnitude.fill_(0.25)
    for b in (blk.bias0, blk.bias1):
        torch.nn.init.normal_(b)
    L, r = 9, 1
    out_len = 2 * L - 4 if t_up else L - 2
    crop = (2 * L - out_len) // 2 if t_up else 1
    x, w = torch.randn(2, 5, L, 5, 8), torch.randn(2, 6, L)
    ref = _textbook_block(blk, x * 2 ** 0.5, w, t_up, crop, out_len)
    xp, wp = F.pad(x, (0, 0, 0, 0, 2 * r, 2 * r)), F.pad(w, (2 * r, 2 * r))  # zeros beyond the level
    y = blk(xp, wp, -2 * r, L, 0, out_len, crop)
    assert y.shape == ref.shape
    torch.testing.assert_close(y * 2 ** 0.5, ref, atol=1e-5, rtol=1e-5)
    # a window: output samples [3, 6) from the input samples they need, zeros beyond the level
    lo, hi = ((3 + crop - 1) // 2 - 2 * r, (6 + crop) // 2 + 1 + 2 * r) if t_up else (3 + crop - 2 * r, 6 + crop + 2 * r)
    part = blk(xp[:, :, lo + 2 * r:hi + 2 * r], wp[:, :, lo + 2 * r:hi + 2 * r], lo, L, 3, 6, crop)
    torch.testing.assert_close(part, y[:, :, 3:6], atol=1e-6, rtol=1e-6)
