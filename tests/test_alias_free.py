import math

import pytest
import torch
import torch.nn.functional as F

from vidgen.nn import alias_free
from vidgen.nn.alias_free import (FourierFeatures, SynthesisLayer, design_lowpass, eq_t_psnr, filtered_lrelu,
                                  layer_specs, modulated_conv2d_shared, upfirdn2d)


def _upfirdn2d_naive(x, f, up, down, padding, gain):
    """Textbook upfirdn: zero insertion, pad, full 2-D convolution, decimation."""
    N, C, H, W = x.shape
    z = torch.zeros(N, C, H * up, W * up, dtype=x.dtype)
    z[:, :, ::up, ::up] = x
    z = F.pad(z, padding)
    f2 = torch.outer(f, f) * gain
    y = F.conv2d(z.reshape(N * C, 1, *z.shape[2:]), f2.flip(0, 1)[None, None])
    return y.reshape(N, C, *y.shape[2:])[:, :, ::down, ::down]


@pytest.mark.parametrize("up,down,padding", [(2, 1, (5, 6, 4, 7)), (1, 2, (3, 3, 1, 2)), (4, 2, (-2, 9, 3, 0)),
                                             (1, 1, (2, 2, 2, 2))])
def test_upfirdn2d_matches_naive(up, down, padding):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    f = torch.randn(7, dtype=torch.float64)  # asymmetric, to check the convolution direction
    ours = upfirdn2d(x, f, up=up, down=down, padding=padding, gain=up ** 2)
    ref = _upfirdn2d_naive(x, f, up, down, padding, up ** 2)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref)


def test_filtered_lrelu_backward_matches_autograd(monkeypatch):
    monkeypatch.setattr(alias_free, "CHUNK_ELEMENTS", 500)  # force several channel chunks
    torch.manual_seed(0)
    fu = design_lowpass(12, 4.0, 4.0, 32)
    fd = design_lowpass(12, 4.0, 4.0, 32)
    x = torch.randn(2, 5, 10, 12, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    pad = (5, 5, 5, 5)
    y = filtered_lrelu(x, fu.double(), fd.double(), b, up=2, down=2, padding=pad, clamp=0.8)
    gy = torch.randn_like(y)
    gx, gb = torch.autograd.grad(y, (x, b), gy)
    x2, b2 = x.detach().requires_grad_(True), b.detach().requires_grad_(True)
    y2 = alias_free._filtered_lrelu_dense(x2 + b2[None, :, None, None], fu.double(), fd.double(), 2, 2, pad,
                                          math.sqrt(2), 0.2, 0.8)
    torch.testing.assert_close(y, y2)
    gx2, gb2 = torch.autograd.grad(y2, (x2, b2), gy)
    torch.testing.assert_close(gx, gx2)
    torch.testing.assert_close(gb, gb2)
    assert y.abs().max() <= 0.8 * 1.5  # clamped before the low-pass (overshoot only from the FIR)


def test_layer_specs_stylegan3_schedule():
    specs = layer_specs(256, 256, channel_base=32768, margin=10, fourier_input=True)
    assert len(specs) == 15 and specs[-1].is_torgb and specs[-1].out_channels == 3
    cut = [s.out_cutoff for s in specs]
    assert cut[0] == pytest.approx(2.0) and cut[12] == pytest.approx(128.0) and cut[13] == pytest.approx(128.0)
    ratios = [cut[i + 1] / cut[i] for i in range(11)]
    assert max(ratios) == pytest.approx(min(ratios))  # geometric progression
    assert [s.out_rate for s in specs][:1] + [s.out_rate for s in specs][-1:] == [16, 256]
    assert specs[0].out_size == (36, 36) and specs[12].out_size == (276, 276) and specs[13].out_size == (256, 256)
    assert [s.critically_sampled for s in specs].count(True) == 3  # the last 2 layers + ToRGB
    assert specs[12].out_rate == 2 * specs[12].out_cutoff  # critically sampled: s = 2 f_c
    wide = layer_specs(256, 144, extra_in_channels=27, fourier_input=False)
    assert wide[0].in_channels == 27 and wide[1].in_channels == 512 + 27
    assert wide[0].out_size == (36, 29) and wide[-1].out_size == (256, 144)


def test_synthesis_layer_shapes_and_magnitude_ema():
    torch.manual_seed(0)
    specs = layer_specs(32, 32, channel_base=256, channel_max=16, num_layers=4, margin=4)
    x = torch.randn(6, specs[1].in_channels, specs[1].in_size[1], specs[1].in_size[0])
    layer = SynthesisLayer(8, specs[1])
    w = torch.randn(2, 8)  # 2 styles, each shared by 3 samples
    y = layer(x, w, update_emas=True)
    assert y.shape == (6, specs[1].out_channels, specs[1].out_size[1], specs[1].out_size[0])
    assert layer.magnitude_ema.item() != 1.0
    m = layer.magnitude_ema.clone()
    layer(x, w)
    assert torch.equal(layer.magnitude_ema, m)


def test_modulated_conv_shared_styles_equals_per_sample():
    torch.manual_seed(0)
    x = torch.randn(6, 4, 7, 7, dtype=torch.float64)
    wt = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    s = torch.randn(2, 4, dtype=torch.float64)
    y = modulated_conv2d_shared(x, wt, s, padding=1)
    for i in range(6):
        yi = modulated_conv2d_shared(x[i:i + 1], wt, s[i // 3:i // 3 + 1], padding=1)
        torch.testing.assert_close(y[i:i + 1], yi)
    # Demodulation makes the output independent of the style's scale.
    torch.testing.assert_close(modulated_conv2d_shared(x, wt, 7 * s, padding=1), y)


def test_filtered_lrelu_is_more_translation_equivariant_than_plain_lrelu():
    torch.manual_seed(0)
    rate, cutoff = 32, 6.0
    # A band-limited periodic input: random Fourier coefficients below the cutoff.
    spec = torch.zeros(2, 3, rate, rate, dtype=torch.complex128)
    k = int(cutoff)
    spec[..., :k, :k] = torch.randn(2, 3, k, k, dtype=torch.complex128)
    spec[..., -k + 1:, :k] = torch.randn(2, 3, k - 1, k, dtype=torch.complex128)
    x = torch.fft.ifft2(spec).real.float()
    x = x / x.std()
    f = design_lowpass(12, cutoff, (rate / 2 - cutoff) * 2, rate * 2)
    # Same size out as in (StyleGAN3 padding rule): total = 2 * 12 - 3, lo = (total + up) // 2.
    pad = (11, 10, 11, 10)

    def alias_free_op(v):
        return filtered_lrelu(F.pad(v, (8, 8, 8, 8), mode="circular"), f, f, up=2, down=2, padding=pad)[..., 8:-8, 8:-8]

    def plain(v):
        return F.leaky_relu(v, 0.2) * math.sqrt(2)

    good = eq_t_psnr(alias_free_op, x, 0.37, -0.61)
    bad = eq_t_psnr(plain, x, 0.37, -0.61)
    assert good > 50 and good > bad + 20, (good, bad)


def test_fourier_features_translate_by_transform():
    torch.manual_seed(0)
    ff = FourierFeatures(8, channels=6, size=(20, 12), sampling_rate=16, bandwidth=2)
    w = torch.randn(3, 8)
    y = ff(w)
    assert y.shape == (3, 6, 12, 20)
    # Translating by one sample (1/16 of a unit) along x moves the content one sample left.
    ff.transform[0, 2] = 1 / 16
    y2 = ff(w)
    torch.testing.assert_close(y2[..., :-1], y[..., 1:], atol=1e-4, rtol=0)


def test_radial_filter_is_a_rotation_symmetric_unit_gain_lowpass():
    f = design_lowpass(24, cutoff=5.0, width=6.0, fs=32, radial=True)
    assert f.shape == (24, 24)
    torch.testing.assert_close(f.sum(), torch.tensor(1.0))
    torch.testing.assert_close(f, f.t())  # x <-> y
    torch.testing.assert_close(f, f.flip(0))  # centred
    # Frequency response: about 1 inside the cutoff, small beyond cutoff + transition, and the
    # same along an axis and along a diagonal at the same radius (radial, unlike a separable one).
    n = 256
    spec = torch.fft.fft2(F.pad(f.double(), (0, n - 24, 0, n - 24))).abs()
    def at(fx, fy):  # cycles per unit at fs = 32
        return spec[round(fy / 32 * n) % n, round(fx / 32 * n) % n].item()
    assert abs(at(2, 0) - 1) < 0.05 and abs(at(1.5, 1.5) - 1) < 0.05
    assert at(11, 0) < 0.02 and at(8, 8) < 0.02
    r = 5.0 / math.sqrt(2)
    assert abs(at(5, 0) - at(r, r)) < 0.06
    sep = design_lowpass(24, cutoff=5.0, width=6.0, fs=32)
    sep_spec = torch.fft.fft2(F.pad(torch.outer(sep, sep).double(), (0, n - 24, 0, n - 24))).abs()
    corner = sep_spec[round(4.5 / 32 * n), round(4.5 / 32 * n)].item()  # the square pass band's corner
    assert corner > 0.4 and at(4.5, 4.5) < 0.15  # |f| = 6.4: the radial filter damps it more


@pytest.mark.parametrize("up,down,padding", [(2, 1, (5, 6, 4, 7)), (1, 2, (3, 3, 1, 2)), (1, 1, (-2, 3, 0, 1))])
def test_upfirdn2d_2d_filter_matches_naive(up, down, padding):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    f = torch.randn(5, 6, dtype=torch.float64)  # asymmetric and non-separable
    ours = upfirdn2d(x, f, up=up, down=down, padding=padding, gain=up ** 2)
    N, C, H, W = x.shape
    z = torch.zeros(N, C, H * up, W * up, dtype=x.dtype)
    z[:, :, ::up, ::up] = x
    z = F.pad(z, padding)
    ref = F.conv2d(z.reshape(N * C, 1, *z.shape[2:]), (f * up ** 2).flip(0, 1)[None, None])
    ref = ref.reshape(N, C, *ref.shape[2:])[:, :, ::down, ::down]
    torch.testing.assert_close(ours, ref)
    # A separable filter given in 2-D gives the separable path's result.
    g = torch.randn(6, dtype=torch.float64)
    torch.testing.assert_close(upfirdn2d(x, torch.outer(g, g), up, down, padding, up ** 2),
                               upfirdn2d(x, g, up, down, padding, up ** 2))


def test_radial_layers_use_2d_down_filters_except_critically_sampled():
    specs = layer_specs(32, 32, channel_base=256, channel_max=16, num_layers=4, num_critical=1, margin=4)
    layers = [SynthesisLayer(8, s, conv_kernel=1, use_radial_filters=True) for s in specs]
    kinds = [(l.down_filter.ndim if l.has_fd else 0) for l in layers]
    assert kinds[0] == 2 and all(k in (0, 1) for k, l in zip(kinds, layers) if l.spec.critically_sampled)
    x = torch.randn(2, specs[0].in_channels, specs[0].in_size[1], specs[0].in_size[0])
    assert layers[0](x, torch.randn(2, 8)).shape[2:] == (specs[0].out_size[1], specs[0].out_size[0])


def test_fourier_features_transform_argument_equals_the_buffer():
    torch.manual_seed(0)
    ff = FourierFeatures(8, channels=6, size=(20, 20), sampling_rate=16, bandwidth=2)
    w = torch.randn(3, 8)
    m = torch.tensor([[0.96, -0.28, 0.1], [0.28, 0.96, -0.2], [0.0, 0.0, 1.0]])
    by_arg = ff(w, transform=m)
    ff.transform.copy_(m)
    torch.testing.assert_close(ff(w), by_arg)
    assert (by_arg - FourierFeatures.forward(ff, w, transform=torch.eye(3))).abs().max() > 0.1
