"""Winograd F(4x4, 3x3) convolutions on the CPU (vidgen/nn/winograd.py): same function as the
direct convolution up to float32 rounding, gradients included; the fallbacks; the kernel cache."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from vidgen.nn import winograd as W

CL = torch.channels_last


def _need_library():
    if W.unavailable() is not None:
        pytest.skip(f"Winograd kernel unavailable here: {W.unavailable()}")


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.double() - ref).abs().max() / ref.pow(2).mean().sqrt()).item()


@pytest.mark.parametrize("n,c,o,h,w", [(8, 16, 32, 16, 16), (6, 48, 16, 18, 22), (2, 32, 64, 33, 31), (128, 16, 16, 4, 4)])
def test_matches_the_direct_convolution(n, c, o, h, w):
    _need_library()
    g = torch.Generator().manual_seed(n * 1000 + h)
    x = torch.randn(n, c, h, w, generator=g).contiguous(memory_format=CL)
    k = torch.randn(o, c, 3, 3, generator=g) / (9 * c) ** 0.5
    assert W.eligible(x, k)
    y = W.conv3x3(x, k)
    ref = F.conv2d(x.double(), k.double(), padding=1)
    assert y.shape == ref.shape and y.dtype == torch.float32
    assert y.is_contiguous(memory_format=CL)
    assert ref.std() > 0.5  # a varying output
    # direct float32 is ~1e-6 off; Winograd's constants cost about two decimal digits
    assert _rel(y, ref) < 3e-4
    assert _rel(F.conv2d(x, k, padding=1), ref) < 1e-5


def test_gradients_match_the_direct_convolution():
    _need_library()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 32, 24, 20, generator=g).contiguous(memory_format=CL)
    k = torch.randn(48, 32, 3, 3, generator=g) / 17
    r = torch.randn(8, 48, 24, 20, generator=g)
    # both the forward and the input gradient (the flipped, transposed kernel) take the path
    assert W.eligible(x, k) and W.eligible(r.contiguous(memory_format=CL), k.flip(2, 3).transpose(0, 1))
    grads = {}
    for name, conv, dt in (("wino", W.conv3x3, torch.float32),
                           ("ref", lambda a, b: F.conv2d(a, b, padding=1), torch.float64)):
        xa = x.detach().to(dt).requires_grad_(True)
        ka = k.detach().to(dt).requires_grad_(True)
        (conv(xa, ka) * r.to(dt)).sum().backward()
        grads[name] = (xa.grad, ka.grad)
    for got, ref in zip(grads["wino"], grads["ref"]):
        assert got.dtype == torch.float32 and ref.std() > 0.1
        assert _rel(got, ref) < 3e-4


@pytest.mark.parametrize("layout", [CL, torch.contiguous_format])
def test_kernel_gradient_by_the_transposed_transforms(layout):
    _need_library()
    g = torch.Generator().manual_seed(11)
    x = torch.randn(5, 32, 18, 22, generator=g).contiguous(memory_format=layout)  # partial tiles
    gy = torch.randn(5, 16, 18, 22, generator=g).contiguous(memory_format=layout)
    ref = torch.nn.grad.conv2d_weight(x.double(), (16, 32, 3, 3), gy.double(), padding=1)
    got = W.winograd_conv3x3_weight_grad(x, gy)
    assert got.shape == ref.shape and ref.std() > 1
    assert _rel(got, ref) < 3e-4


def test_bias_and_a_gradient_penalty_through_it():
    """R1-style: the gradient with respect to the input is differentiated again (create_graph)."""
    _need_library()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(8, 16, 20, 20, generator=g).contiguous(memory_format=CL)
    k1, k2 = torch.randn(32, 16, 3, 3, generator=g) / 12, torch.randn(16, 32, 3, 3, generator=g) / 17
    b1, b2 = torch.randn(32, generator=g), torch.randn(16, generator=g)
    r = torch.randn(8, 16, 20, 20, generator=g)
    assert W.eligible(x, k1) and W.eligible(x, k2.flip(2, 3).transpose(0, 1))
    out = {}
    for name, conv, dt in (("wino", W.conv3x3, torch.float32),
                           ("ref", lambda a, w, b: F.conv2d(a, w, b, padding=1), torch.float64)):
        xa = x.detach().to(dt).requires_grad_(True)
        params = [t.detach().to(dt).requires_grad_(True) for t in (k1, b1, k2, b2)]
        y = conv(F.leaky_relu(conv(xa, params[0], params[1]), 0.2).contiguous(memory_format=CL), params[2], params[3])
        (gx,) = torch.autograd.grad((y * r.to(dt)).sum(), xa, create_graph=True)
        gx.square().sum().backward()
        # (the penalty does not depend on the biases: leaky ReLU's slope is piecewise constant)
        out[name] = [y, gx, params[0].grad, params[2].grad]
    for got, ref in zip(out["wino"], out["ref"]):
        assert got.dtype == torch.float32 and ref.std() > 0.01
        assert _rel(got, ref) < 5e-4


@pytest.mark.parametrize("layout", [CL, torch.contiguous_format])
def test_modulated_form_in_either_layout(layout):
    """Per-sample input and output factors (a modulated, demodulated convolution) and the bias
    applied inside the transforms; the output keeps the input's layout."""
    _need_library()
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 32, 24, 28, generator=g).contiguous(memory_format=layout)
    k = torch.randn(48, 32, 3, 3, generator=g) / 17
    s_in, s_out, b = torch.rand(4, 32, generator=g) + 0.5, torch.rand(4, 48, generator=g) + 0.5, torch.randn(48, generator=g)
    assert W.eligible(x, k, any_layout=True) and W.eligible(x, k) == (layout == CL)
    y = W.winograd_conv3x3(x, k, b, s_in, s_out)
    ref = (F.conv2d(x.double() * s_in.double()[:, :, None, None], k.double(), padding=1)
           * s_out.double()[:, :, None, None] + b.double()[:, None, None])
    assert y.is_contiguous(memory_format=layout) and ref.std() > 0.5
    assert _rel(y, ref) < 3e-4


def test_only_where_it_pays_else_the_direct_convolution(monkeypatch):
    _need_library()
    x = torch.randn(8, 16, 16, 16).contiguous(memory_format=CL)
    k = torch.randn(16, 16, 3, 3)
    assert W.eligible(x, k)
    assert not W.eligible(x.contiguous(), k)  # NCHW layout
    assert not W.eligible(x.double(), k.double())  # float64
    assert not W.eligible(x[:, :8].contiguous(memory_format=CL), k[:, :8])  # channels not a multiple of 16
    assert not W.eligible(x[:4, :, :15, :15].contiguous(memory_format=CL), k)  # 64 tiles < 128
    assert not W.eligible(x, k[:, :, :1, :1])  # not 3x3
    for bad in (x.contiguous(), x[:4, :, :15, :15].contiguous(memory_format=CL)):
        assert torch.equal(W.conv3x3(bad, k), F.conv2d(bad, k, padding=1))
    monkeypatch.setenv("VIDGEN_WINOGRAD", "0")
    assert W.unavailable() == "VIDGEN_WINOGRAD=0" and not W.eligible(x, k)
    assert torch.equal(W.conv3x3(x, k), F.conv2d(x, k, padding=1))


def test_kernel_is_built_once_into_the_cache_and_a_missing_compiler_falls_back(tmp_path, monkeypatch):
    if os.system("cc --version > /dev/null 2>&1") != 0:
        pytest.skip("no C compiler (cc) on this machine")
    monkeypatch.setenv("VIDGEN_KERNEL_CACHE", str(tmp_path / "kernels"))
    monkeypatch.setattr(W, "_lib", None)
    monkeypatch.setattr(W, "_lib_error", None)
    assert W.library() is not None and W.unavailable() is None
    built = list((tmp_path / "kernels").iterdir())
    assert len(built) == 1 and built[0].name.startswith("winograd-") and built[0].suffix == ".so"  # no temporaries left
    stamp = built[0].stat().st_mtime_ns
    monkeypatch.setattr(W, "_lib", None)
    W.library()  # a new process: loads the cached file, compiles nothing
    assert list((tmp_path / "kernels").iterdir()) == built and built[0].stat().st_mtime_ns == stamp

    monkeypatch.setenv("VIDGEN_KERNEL_CACHE", str(tmp_path / "other"))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(W, "_lib", None)
    monkeypatch.setattr(W, "_lib_error", None)
    assert W.library() is None and "no-such-compiler" in W.unavailable()
    x = torch.randn(8, 16, 16, 16).contiguous(memory_format=CL)
    k = torch.randn(16, 16, 3, 3)
    assert not W.eligible(x, k) and torch.equal(W.conv3x3(x, k), F.conv2d(x, k, padding=1))


def test_unet_takes_the_path_and_computes_the_same_function(monkeypatch):
    _need_library()
    from vidgen.diffusion.unet import UNet, UNetConfig

    torch.manual_seed(0)
    net = UNet(UNetConfig(model_channels=32, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[],
                          img_resolution=32, img_channels=4, label_dim=0)).eval()
    with torch.no_grad():
        net.out_gain.fill_(1.0)  # zero at initialisation: the output would be constant
    calls = []
    real = W.winograd_conv3x3
    monkeypatch.setattr(W, "winograd_conv3x3", lambda x, w, b=None: calls.append(tuple(x.shape)) or real(x, w, b))
    x, sigma = torch.randn(8, 4, 32, 32), torch.rand(8) * 0.5
    with torch.no_grad():
        y = net(x, sigma, None)
        assert calls, "no 3x3 convolution of the U-Net took the Winograd path"
        monkeypatch.setenv("VIDGEN_WINOGRAD", "0")
        ref = net(x, sigma, None)
    assert ref.std() > 0.1
    assert _rel(y, ref.double()) < 1e-4
