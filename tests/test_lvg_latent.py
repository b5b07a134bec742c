"""Temporal latent of the long-video GAN (docs/METHODS.md 1.1)."""

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from vidgen.lvg.latent import LatentConfig, TemporalLatent, design_filter_bank, fft_filter_valid, frame_noise

SMALL = LatentConfig(noise_channels=2, num_filters=6, min_rate=20.0, max_rate=100.0, w_dim=16)  # 10 .. 50 taps


pytestmark = pytest.mark.usefixtures("one_thread")


def test_paper_filter_bank():
    cfg = LatentConfig()
    bank = design_filter_bank(cfg)
    assert bank.shape == (128, 5000)
    taps = (bank != 0).sum(1)
    assert taps[0] == 125 and taps[-1] == 5000 and np.all(np.diff(taps) >= 0)
    np.testing.assert_allclose((bank ** 2).sum(1), 1.0, rtol=1e-12)  # unit L2 norm
    ref = scipy.signal.firwin(125, 2.0, width=12.0, fs=250.0).astype(np.float32)  # float32 taps, as the reference
    np.testing.assert_allclose(bank[0, :125][::-1], ref / np.linalg.norm(ref), rtol=1e-6)
    # The reference correlates with each filter at the *end* of the 5000-tap window; the bank
    # holds them reversed at the start (fft_filter_valid convolves), i.e. the same sums.
    assert all(np.all(row[n:] == 0) and row[n - 1] != 0 for row, n in zip(bank, taps))


def test_frame_noise_is_a_function_of_seed_and_frame():
    whole = frame_noise(3, -1500, 2500, 4)  # crosses several 1024-frame blocks and frame 0
    assert whole.shape == (4, 4000)
    for a, b in [(-1500, -1400), (-10, 10), (1020, 1030), (2000, 2500)]:
        torch.testing.assert_close(frame_noise(3, a, b, 4), whole[:, a + 1500:b + 1500], rtol=0, atol=0)
    assert not torch.allclose(frame_noise(4, 0, 100, 4), whole[:, 1500:1600])
    assert abs(whole.std().item() - 1.0) < 0.05


def test_fft_filter_matches_direct_convolution():
    torch.manual_seed(0)
    bank = torch.from_numpy(design_filter_bank(SMALL))
    noise = torch.randn(3, 2, 120, dtype=torch.float64)
    y = fft_filter_valid(noise, bank)
    K = bank.shape[1]
    ref = F.conv1d(noise.reshape(6, 1, -1), bank.flip(1)[:, None])  # [6, F, L]
    assert y.shape == (3, 12, 120 - K + 1)
    torch.testing.assert_close(y, ref.reshape(3, 12, -1), atol=1e-10, rtol=0)


def test_features_have_unit_variance():
    lat = TemporalLatent(SMALL)
    feats = lat.features(lat.seeded_noise([0, 1], 0, 4000))
    assert abs(feats.std().item() - 1.0) < 0.05


def test_receptive_field_of_the_latent():
    """w(t) depends on exactly the noise of frames t - pad_before .. t + pad_after: frames
    farther apart than the longest filter share no noise (independent); nearer ones do and
    are strongly correlated."""
    torch.manual_seed(0)
    lat = TemporalLatent(SMALL)
    K = lat.kernel_size
    assert K == 50 and lat.pad_before + lat.pad_after + 1 == K
    T = 3 * K
    noise = torch.randn(1, 2, T + K - 1, requires_grad=True)
    w = lat(noise)  # [1, 16, T]

    def support(t):
        (g,) = torch.autograd.grad(w[0, :, t].square().sum(), noise, retain_graph=True)
        g = g[0].abs().sum(0)
        return set(torch.nonzero(g > 1e-9 * g.max()).flatten().tolist())  # FFT round-off aside

    t0 = K
    s0 = support(t0)
    assert s0 == set(range(t0, t0 + K))  # noise index t + j <-> frame t - pad_before + j
    assert not s0 & support(t0 + K)  # K frames apart: disjoint noise -> independent
    assert len(s0 & support(t0 + K - 1)) == 1  # one frame nearer: they share noise
    # Nearby frames are strongly correlated through the long filters (empirically, many seeds).
    feats = lat.features(lat.seeded_noise(list(range(64)), 0, 2 * K))  # [64, 12, 2K]
    longest = feats[:, 5::6]  # the 50-tap filter of each noise channel
    a, b, c = longest[..., 10].flatten(), longest[..., 12].flatten(), longest[..., 10 + K].flatten()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.8
    assert abs(torch.corrcoef(torch.stack([a, c]))[0, 1]) < 0.3


def test_windowed_latent_equals_whole():
    lat = TemporalLatent(SMALL)
    whole = lat(lat.seeded_noise([5], -30, 200))
    part = lat(lat.seeded_noise([5], 60, 90))
    torch.testing.assert_close(part, whole[:, :, 90:120], atol=1e-6, rtol=0)
    with pytest.raises(AssertionError):
        lat(torch.randn(1, 2, 10))  # fewer noise frames than the filter
