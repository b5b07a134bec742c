"""Time-lapse GAN networks (docs/METHODS.md 2): sizes, identity-at-init time modulation, masking,
StyleGAN2 resampling."""

import math

import pytest
import torch
import torch.nn.functional as F

from vidgen.nn.filters import upfirdn2d
from timelapse.model import (Conv, Discriminator, Generator, ModelConfig, TimeStyle, fir_upconv, minibatch_std,
                             modulated_upconv2d, per_sample_modconv, summary, upsample2x)
from timelapse.time import TimeAxis

AXIS = TimeAxis(start=1.6e9 - (1.6e9 % 86400), num_days=1096)  # three years: trend, year, day
TINY = ModelConfig(resolution=16, channel_base=256, channel_max=32, z_dim=16, w_dim=16, cond_mlp_layers=2)


@pytest.mark.parametrize("res, g, d, num_ws", [(256, 28_510_626, 31_231_104, 14), (1024, 28_848_652, 31_379_488, 18)])
def test_reference_sizes(res, g, d, num_ws):
    # the reference release's counts at its default settings (channel base 32768, max 512)
    with torch.device("meta"):
        G, D = Generator(ModelConfig(resolution=res), AXIS), Discriminator(ModelConfig(resolution=res), AXIS)
    s = summary(G, D)
    assert (s["G"], s["D"], s["num_ws"]) == (g, d, num_ws)
    assert s["G.mapping"] == 525_312 and s["D.cond_mlp"] == 2_104_832


FIR = [1 / 8, 3 / 8, 3 / 8, 1 / 8]


def test_upsampling_is_zero_padded_fir():
    # x2 by zero insertion and the [1, 3, 3, 1] filter, zeros beyond the borders (StyleGAN2)
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    y = upsample2x(x)
    assert torch.allclose(y, upfirdn2d(x, FIR, up=2, padding=(2, 1), gain=2.0), atol=1e-12)
    # not bilinear with replicated edges: the border rows lose the zero-padded quarter
    assert not torch.allclose(y, F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


def test_upconv_is_conv_of_zero_inserted_input_then_filter():
    torch.manual_seed(0)
    x, w = torch.randn(2, 4, 5, 6, dtype=torch.float64), torch.randn(3, 4, 3, 3, dtype=torch.float64)
    u = torch.zeros(2, 4, 9, 11, dtype=torch.float64)
    u[..., ::2, ::2] = x  # zero insertion
    full = F.conv2d(F.pad(u, (2, 2, 2, 2)), w.flip(2, 3))  # w as a convolution kernel: [2H + 1, 2W + 1]
    expect = upfirdn2d(full, FIR, padding=1, gain=2.0)
    y = fir_upconv(x, w)
    assert y.shape == (2, 3, 10, 12) and torch.allclose(y, expect, atol=1e-10)
    # modulated and demodulated: per-sample input scales, unit-norm per output channel
    s = torch.rand(2, 4, dtype=torch.float64) + 0.5
    got = modulated_upconv2d(x, w, s)
    for b in range(2):
        wb = w * s[b][None, :, None, None]
        wb = wb / wb.square().sum(dim=(1, 2, 3), keepdim=True).add(1e-8).sqrt()
        assert torch.allclose(got[b:b + 1], fir_upconv(x[b:b + 1], wb), atol=1e-10)


def test_downsampling_convs_filter_then_stride():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    conv = Conv(4, 5, 3, act=False, down=True).double()
    expect = F.conv2d(upfirdn2d(x, FIR, padding=2), conv.weight * conv.gain, conv.bias, stride=2)
    assert torch.allclose(conv(x), expect, atol=1e-10)
    skip = Conv(4, 5, 1, act=False, down=True, bias=False).double()
    expect = F.conv2d(upfirdn2d(x, FIR, down=2, padding=1), skip.weight * skip.gain)
    assert torch.allclose(skip(x), expect, atol=1e-10)


def test_minibatch_std_groups_interleave_like_stylegan2():
    # sample i belongs to group i % (B / G); group size <= 0 takes the whole minibatch
    x = torch.randn(8, 3, 2, 2)
    y = minibatch_std(x, 4)[:, -1, 0, 0]
    for i in range(8):
        members = x[i % 2::2]
        assert y[i] == pytest.approx(float(members.var(0, unbiased=False).add(1e-8).sqrt().mean()), rel=1e-5)
    whole = minibatch_std(x, 0)[:, -1, 0, 0]
    assert torch.allclose(whole, whole[0].expand(8)) and whole[0] == pytest.approx(
        float(x.var(0, unbiased=False).add(1e-8).sqrt().mean()), rel=1e-5)


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


def _perturbed(net, seed=1):
    # Away from initialisation (zero biases and noise strengths, identity time modulation)
    # every term of the layers' arithmetic shows in the output.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    return net


def test_inference_path_computes_the_training_path():
    # Without gradients the generator runs every modulated conv as one convolution per sample
    # with its modulated weights; with them, as a shared conv between scalings. One function.
    G = _perturbed(Generator(TINY, AXIS))
    z, t = torch.randn(3, 16), torch.rand(3)
    noise = G.make_noise(3, torch.Generator().manual_seed(2))
    with torch.no_grad():
        fast = G(z, t, noise=noise)
    slow = G(z, t, noise=noise)
    assert slow.requires_grad and not fast.requires_grad
    assert fast.std(dim=0).mean() > 0.05  # the samples differ: the comparison is not degenerate
    assert (fast - slow.detach()).abs().max() <= 1e-5 * slow.abs().max()
    with torch.no_grad():
        G.requires_grad_(False)
        assert torch.equal(G(z, t, noise=noise), fast)  # frozen weights with grad mode on: the same path


def test_channels_last_training_layout_gives_the_same_gradients():
    # On the CPU the training path keeps G's activations channels-last; the output and every
    # parameter gradient equal those of the contiguous layout up to float32 rounding.
    G = _perturbed(Generator(TINY, AXIS))
    z, t = torch.randn(3, 16), torch.rand(3)
    noise = G.make_noise(3, torch.Generator().manual_seed(2))
    layouts = []
    hook = G.convs[-1].register_forward_pre_hook(
        lambda mod, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    runs = {}
    for cl in (True, False):
        G.channels_last_train = cl
        G.zero_grad(set_to_none=True)
        out = G(z, t, noise=noise)
        out.square().mean().backward()
        runs[cl] = (out.detach(), {n: p.grad.clone() for n, p in G.named_parameters() if p.grad is not None})
    hook.remove()
    assert layouts == [True, False]
    assert runs[True][0].std(dim=0).mean() > 0.05
    torch.testing.assert_close(runs[True][0], runs[False][0], rtol=1e-5, atol=1e-5)
    assert runs[True][1].keys() == runs[False][1].keys() and len(runs[True][1]) > 10
    for name, g in runs[False][1].items():
        assert g.abs().max() > 0, name
        torch.testing.assert_close(runs[True][1][name], g, rtol=1e-4, atol=1e-5 * g.abs().max().item(), msg=name)


@pytest.mark.parametrize("cin,up", [(8, False), (8, True), (264, False), (264, True)])
def test_fused_modconv_both_forms_match_the_shared_form(cin, up):
    # per_sample_modconv runs a grouped convolution for few channels and one convolution per
    # sample for many; both equal the shared-weight form, and no sample depends on its batch.
    g = torch.Generator().manual_seed(0)
    x, weight = torch.randn(3, cin, 5, 5, generator=g), torch.randn(6, cin, 3, 3, generator=g)
    styles, out_scale = torch.rand(3, cin, generator=g) + 0.5, torch.rand(3, 6, generator=g) + 0.5
    bias = None if up else torch.randn(6, generator=g)
    fused = per_sample_modconv(x, weight, styles, out_scale, bias, up=up)
    xs = x * styles[:, :, None, None]
    shared = fir_upconv(xs, weight) * 16 if up else F.conv2d(xs, weight, padding=1)
    shared = shared * out_scale[:, :, None, None] + (0 if bias is None else bias[:, None, None])
    assert fused.shape == shared.shape == (3, 6, 10 if up else 5, 10 if up else 5)
    assert fused.std(dim=0).mean() > 0.1  # samples differ
    torch.testing.assert_close(fused, shared, rtol=1e-5, atol=1e-5 * shared.abs().max().item())
    alone = per_sample_modconv(x[1:2], weight, styles[1:2], out_scale[1:2], bias, up=up)
    torch.testing.assert_close(alone, fused[1:2], rtol=1e-6, atol=1e-6 * fused.abs().max().item())


def test_winograd_convolutions_compute_the_same_networks(monkeypatch):
    # With 128 or more output tiles per call the stride-1 3x3 convs run as Winograd's F(4x4, 3x3)
    # (vidgen/nn/winograd.py): G's inference form with the styles inside the transforms, G's
    # and D's training convs with a differentiable backward (R1). Same function as the direct
    # convolutions up to float32 rounding, gradients of an R1 penalty included.
    from vidgen.nn import winograd

    if winograd.unavailable() is not None:
        pytest.skip(f"Winograd kernel unavailable here: {winograd.unavailable()}")
    cfg = ModelConfig(resolution=32, channel_base=512, channel_max=32, z_dim=16, w_dim=16, cond_mlp_layers=2)
    G, D = _perturbed(Generator(cfg, AXIS)), _perturbed(Discriminator(cfg, AXIS), seed=3)
    z, t = torch.randn(8, 16), torch.rand(8)
    noise = G.make_noise(8, torch.Generator().manual_seed(2))
    real = torch.randn(8, 3, 32, 32)
    calls = []
    real_fn = winograd.winograd_conv3x3
    monkeypatch.setattr(winograd, "winograd_conv3x3", lambda *a, **k: calls.append(a[0].shape) or real_fn(*a, **k))

    def run():
        with torch.no_grad():
            fast = G(z, t, noise=noise)
        img = real.clone().requires_grad_(True)
        (g_img,) = torch.autograd.grad(D(img, t).sum(), img, create_graph=True)
        loss = g_img.square().sum() + D(G(z, t, noise=noise), t).mean()
        G.zero_grad(set_to_none=True), D.zero_grad(set_to_none=True)
        loss.backward()
        grads = {n: p.grad.clone() for net in (G, D) for n, p in net.named_parameters() if p.grad is not None}
        return fast, grads

    fast, grads = run()
    assert len(calls) >= 6  # G without and with gradients, D forward and its input gradients
    monkeypatch.setenv("VIDGEN_WINOGRAD", "0")
    calls.clear()
    ref_fast, ref_grads = run()
    assert not calls
    assert ref_fast.std(dim=0).mean() > 0.05
    torch.testing.assert_close(fast, ref_fast, rtol=1e-4, atol=1e-4 * ref_fast.abs().max().item())
    assert grads.keys() == ref_grads.keys() and len(grads) > 20
    for name, g in ref_grads.items():
        assert g.abs().max() > 0, name
        torch.testing.assert_close(grads[name], g, rtol=1e-3, atol=1e-3 * g.abs().max().item(), msg=name)
