import math

import pytest
import torch

from vidgen.diffusion.edm import LossConfig, edm_loss, loss_weight, precond_coeffs, sample_sigma
from vidgen.diffusion.unet import UNet, UNetConfig, build_denoiser
from vidgen.nn import count_parameters
from vidgen.errors import ConfigError
from vidgen.nn.mp import MPConv, mp_cat, mp_silu, mp_sum


pytestmark = pytest.mark.usefixtures("one_thread")

# EDM2 table: ImageNet-512 latent (4 channels at 64x64, 1000 classes), millions of parameters.
PAPER_COUNTS = {"xs": 124.7, "s": 280.2, "m": 497.8, "l": 777.5, "xl": 1119.0, "xxl": 1523.0}


@pytest.mark.parametrize("preset", list(PAPER_COUNTS))
def test_preset_parameter_counts_match_paper(preset):
    net = build_denoiser(UNetConfig(preset=preset, img_resolution=64, img_channels=4, label_dim=1000), device="meta")
    millions = count_parameters(net) / 1e6
    assert abs(millions - PAPER_COUNTS[preset]) / PAPER_COUNTS[preset] < 0.01, millions


def test_unknown_preset_names_key():
    with pytest.raises(ConfigError, match="model.preset"):
        UNet(UNetConfig(preset="huge"))


def tiny(**kw):
    torch.manual_seed(0)
    cfg = dict(preset="tiny", img_resolution=8, img_channels=3, label_dim=5)
    cfg.update(kw)
    return build_denoiser(UNetConfig(**cfg))


def test_mp_primitives_preserve_magnitude():
    torch.manual_seed(0)
    a, b = torch.randn(4096, 64), torch.randn(4096, 32)
    assert mp_silu(torch.randn(200000)).square().mean().sqrt().item() == pytest.approx(1.0, abs=0.02)
    assert mp_sum(a, torch.randn(4096, 64), 0.3).square().mean().sqrt().item() == pytest.approx(1.0, abs=0.02)
    assert mp_cat(a, b, t=0.5).square().mean().sqrt().item() == pytest.approx(1.0, abs=0.02)
    conv = MPConv(64, 48)
    assert conv(a).square().mean().sqrt().item() == pytest.approx(1.0, abs=0.05)


def test_forced_weight_normalisation_only_in_training():
    conv = MPConv(8, 4, (3, 3))
    with torch.no_grad():
        conv.weight.mul_(7.0)
    before = conv.weight.clone()
    conv.eval()(torch.randn(1, 8, 5, 5))
    assert torch.equal(conv.weight, before)  # EMA copies in eval mode keep their weights
    conv.train()(torch.randn(1, 8, 5, 5))
    norms = conv.weight.flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, math.sqrt(8 * 9)), rtol=1e-3)


def test_denoiser_shapes_and_precond_identities():
    den = tiny().eval()
    x = torch.randn(2, 3, 8, 8)
    d = den(x, torch.tensor([0.5, 3.0]), torch.tensor([1, 4]))
    assert d.shape == x.shape
    # The output gain starts at 0, so at init D = c_skip x exactly.
    c_skip = 0.25 / (torch.tensor([0.5, 3.0]) ** 2 + 0.25)
    assert torch.allclose(d, c_skip.reshape(2, 1, 1, 1) * x, atol=1e-6)
    s = torch.tensor([0.1, 1.0, 10.0])
    c_skip, c_out, c_in, _ = precond_coeffs(s, 0.5)
    assert torch.allclose(c_skip + c_out ** 2 / 0.25, torch.ones(3))  # EDM table 1: unit-variance target
    assert torch.allclose(loss_weight(s, 0.5), 1 / c_out ** 2)
    assert torch.allclose(c_in ** 2 * (s ** 2 + 0.25), torch.ones(3))


def test_unet_trains_and_labels_matter():
    den = tiny()
    with torch.no_grad():
        den.net.out_gain.fill_(1.0)
    opt = torch.optim.Adam(den.parameters(), lr=1e-3)
    x = torch.randn(4, 3, 8, 8) * 0.5
    loss = edm_loss(den, x, torch.tensor([0, 1, 2, 3]), LossConfig()).mean()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert den.net.enc["8x8_conv"].weight.grad is not None
    den.eval()
    a = den(x, 1.0, torch.tensor([0, 0, 0, 0]))
    b = den(x, 1.0, torch.tensor([1, 1, 1, 1]))
    assert (a - b).abs().max() > 1e-4


def test_cross_attention_on_tokens_changes_output():
    den = tiny(token_dim=12, cross_attn_resolutions=(4,)).eval()
    with torch.no_grad():
        den.net.out_gain.fill_(1.0)
    x = torch.randn(2, 3, 8, 8)
    t1, t2 = torch.randn(2, 5, 12), torch.randn(2, 5, 12)
    assert not torch.allclose(den(x, 1.0, None, t1), den(x, 1.0, None, t2))
    assert den(x, 1.0, None, t1).shape == x.shape


def test_truncated_noise_stays_in_range():
    s = sample_sigma(10000, -0.4, 1.0, sigma_range=(0.5, 2.0))
    assert s.min() >= 0.5 - 1e-4 and s.max() <= 2.0 + 1e-4
    s = sample_sigma(100000, -1.2, 1.2)
    assert s.log().mean().item() == pytest.approx(-1.2, abs=0.02)
    assert s.log().std().item() == pytest.approx(1.2, abs=0.02)


def test_attention_kernel_matches_softmax_with_bias():
    from vidgen.nn.attention import attention
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    bias = torch.randn(2, 1, 5, 7)
    ref = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8) + bias, dim=-1) @ v
    assert torch.allclose(attention(q, k, v, bias=bias), ref, atol=1e-5)
    assert torch.allclose(attention(q, k, v), torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), -1) @ v, atol=1e-5)
    with pytest.raises(RuntimeError, match="xformers"):
        attention(q, k, v, backend="xformers")  # CPU tensors



def test_channels_last_activations_keep_the_function_and_the_output_layout():
    # On the CPU the U-Net runs channels-last inside; callers see a standard tensor, and the
    # function is the one computed with standard layout throughout (float32 rounding apart).
    net = tiny(token_dim=6, cross_attn_resolutions=(4,)).eval().net
    with torch.no_grad():
        net.out_gain.fill_(1.0)  # 0 at initialisation: the output would be all zeros
        for blk in list(net.enc.values()) + list(net.dec.values()):
            if hasattr(blk, "emb_gain"):
                blk.emb_gain.fill_(0.5)
    x, c_noise = torch.randn(3, 3, 8, 8), torch.randn(3)
    labels, tokens = torch.eye(5)[:3], torch.randn(3, 2, 6)
    layouts = []
    for name in ("8x8_block0", "4x4_block0"):  # self-attention; self- and cross-attention
        net.enc[name].register_forward_hook(
            lambda m, i, o: layouts.append(o.is_contiguous(memory_format=torch.channels_last) and not o.is_contiguous()))
    with torch.no_grad():
        y = net(x, c_noise, labels, tokens)
        net.channels_last = False
        ref = net(x, c_noise, labels, tokens)
    assert layouts[:2] == [True, True]  # channels-last inside
    assert y.is_contiguous() and y.shape == x.shape
    assert y.std(dim=0).mean() > 0.05  # the samples differ: the comparison is not degenerate
    assert (y - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_mpconv_1x1_on_channels_last_is_the_convolution():
    # 1x1 MPConvs of channels-last activations run as one matrix product over the pixels.
    torch.manual_seed(0)
    conv = MPConv(24, 40, (1, 1))
    x = torch.randn(3, 24, 5, 7)
    y_cl = conv(x.contiguous(memory_format=torch.channels_last))
    y = conv(x)
    assert y_cl.is_contiguous(memory_format=torch.channels_last) and y.std() > 0.5
    torch.testing.assert_close(y_cl, y, rtol=1e-5, atol=1e-5)
    y_cl.square().sum().backward()  # and it trains
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
