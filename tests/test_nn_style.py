import math

import pytest
import torch

from vidgen.nn.style import (FullyConnected, MagnitudeEMA, MappingNetwork, modulated_conv2d, modulated_conv3d,
                             normalize_2nd_moment)


def test_fully_connected_equalised_scale():
    torch.manual_seed(0)
    fc = FullyConnected(512, 256, lr_multiplier=0.01)
    x = torch.randn(4096, 512)
    y = fc(x)
    # Equalised learning rate: unit-variance input and N(0,1)/lr_mul weights give unit-variance output.
    assert y.std().item() == pytest.approx(1.0, rel=0.05)
    assert fc.weight.std().item() == pytest.approx(100.0, rel=0.05)


def test_mapping_network_broadcasts_ws():
    m = MappingNetwork(8, 16, num_layers=3, num_ws=5)
    w = m(torch.randn(2, 8))
    assert w.shape == (2, 5, 16)
    assert torch.equal(w[:, 0], w[:, 4])


def test_modulated_conv3d_matches_conv2d_per_frame():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 5, 7)
    w = torch.randn(3, 4, 1, 3, 3)
    s = torch.randn(2, 4, 6)  # a different style at every time step
    y3 = modulated_conv3d(x, w, s, padding=(0, 1, 1))
    y2 = torch.stack([modulated_conv2d(x[:, :, t], w[:, :, 0], s[:, :, t], padding=1) for t in range(6)], dim=2)
    assert y3.shape == (2, 3, 6, 5, 7)
    torch.testing.assert_close(y3, y2, atol=1e-5, rtol=1e-5)


def test_modulated_conv3d_demodulation_keeps_unit_scale():
    torch.manual_seed(0)
    x = torch.randn(4, 64, 8, 8, 8)
    w = torch.randn(64, 64, 3, 3, 3)
    s = torch.randn(4, 64, 1).expand(4, 64, 8) * 3 + 1  # constant in time: demodulation is exact
    y = modulated_conv3d(x, w, s, padding=(1, 1, 1))
    inner = y[:, :, 1:-1, 1:-1, 1:-1]
    assert inner.std().item() == pytest.approx(1.0, rel=0.1)


def test_normalize_2nd_moment():
    x = torch.randn(3, 10) * 7
    assert torch.allclose(normalize_2nd_moment(x).square().mean(dim=1), torch.ones(3), atol=1e-5)


def test_magnitude_ema_tracks_in_train_and_freezes_in_eval():
    m = MagnitudeEMA(beta=0.0)
    x = torch.full((10,), 3.0)
    y = m(x)
    assert m.magnitude.item() == pytest.approx(9.0)
    assert torch.allclose(y, torch.ones(10))
    m.eval()
    m(torch.full((10,), 100.0))
    assert m.magnitude.item() == pytest.approx(9.0)
    assert math.isclose(m(torch.tensor([6.0])).item(), 2.0, rel_tol=1e-6)


def test_modulated_conv2d_equals_per_sample_modulated_weights():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 6, 5)
    w = torch.randn(7, 4, 3, 3)
    s = torch.randn(3, 4)
    y = modulated_conv2d(x, w, s, padding=1)
    for b in range(3):  # textbook StyleGAN2: modulate the weights, demodulate them, convolve
        wb = w * s[b][None, :, None, None]
        wb = wb / wb.square().sum(dim=(1, 2, 3), keepdim=True).add(1e-8).sqrt()
        ref = torch.nn.functional.conv2d(x[b:b + 1], wb, padding=1)
        torch.testing.assert_close(y[b:b + 1], ref, atol=1e-5, rtol=1e-5)
    undemod = modulated_conv2d(x, w, s, demodulate=False, padding=1)
    torch.testing.assert_close(undemod, torch.nn.functional.conv2d(x * s[:, :, None, None], w, padding=1))


def test_clamp_symmetric_channels_last_bounds_checked_without_copy():
    from vidgen.nn.style import _dense_view, clamp_symmetric

    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 6).contiguous(memory_format=torch.channels_last) * 10
    v = _dense_view(x)
    assert v.is_contiguous() and v.data_ptr() == x.data_ptr()  # a view, no copy
    torch.testing.assert_close(clamp_symmetric(x, 8.0), x.clamp(-8.0, 8.0), rtol=0, atol=0)
    assert clamp_symmetric(x, 100.0) is x  # nothing outside the bounds: returned as it is
    odd = torch.randn(4, 6)[:, ::2]  # neither layout: checked as it is
    assert _dense_view(odd) is odd
