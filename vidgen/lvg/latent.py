"""Temporal latent of the long-video GAN (docs/METHODS.md 1.1).

Per frame: ``noise_channels`` (8) i.i.d. Gaussian series, each filtered along time by
``num_filters`` (128) Kaiser low-pass filters whose sampling rates are log-spaced from
``min_rate`` (250) to ``max_rate`` (10000), i.e. 125 .. 5000 taps, each scaled to unit L2 norm
so filtered white noise keeps unit variance. The 8 x 128 = 1024 values of a frame are
normalised and mapped by a 2-layer MLP (lr multiplier 0.01) to w(t) at the full frame rate.

Alignment (the reference implementation's, LVG code ``BlurredNoise``): every filter is
stored at the *end* of a ``kernel_size``-tap window and applied as a correlation, so the
feature of latent sample t uses the noise of samples t .. t + kernel_size - 1, and a filter of
n taps the last n of them.

Frame addressing: the noise of frame t (any integer, also negative) is a pure function of
(seed, t): it is drawn block by block from generators seeded with (seed, block index), so any
frame range is computed without rendering from frame 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange
from torch import nn

from vidgen.nn.filters import kaiser_lowpass
from vidgen.nn.style import MappingNetwork

NOISE_BLOCK = 1024  # frames per counter-based noise block


@dataclass
class LatentConfig:
    noise_channels: int = 8
    num_filters: int = 128
    min_rate: float = 250.0  # sampling rate of the shortest filter (taps = rate / 2)
    max_rate: float = 10000.0
    cutoff: float = 2.0
    width: float = 12.0  # transition width
    w_dim: int = 1024
    mapping_layers: int = 2
    lr_multiplier: float = 0.01

    @property
    def features(self) -> int:
        return self.noise_channels * self.num_filters


def design_filter_bank(cfg: LatentConfig) -> np.ndarray:
    """The filters as a [num_filters, kernel_size] float64 array, ready for :func:`fft_filter_valid`.

    Rates as the reference designs them (log-spaced in base 2, clipped to [min, max]); each
    filter is ``firwin(ceil(rate / 2), cutoff, width, fs=rate)`` rounded to float32 (the
    reference keeps float32 filters) and divided by its L2 norm. Row i holds the filter
    reversed and at the start, which makes the convolution of fft_filter_valid the
    reference's correlation with the filter at the end of the window.
    """
    lo, hi = math.log(cfg.min_rate, 2.0), math.log(cfg.max_rate, 2.0)
    rates = np.clip(2.0 ** np.linspace(lo, hi, cfg.num_filters), cfg.min_rate, cfg.max_rate)
    K = int(np.ceil(cfg.max_rate / 2))
    bank = np.zeros((cfg.num_filters, K))
    for i, r in enumerate(rates):
        n = int(np.ceil(r / 2))
        h = kaiser_lowpass(n, cfg.cutoff, cfg.width, r).astype(np.float32).astype(np.float64)
        bank[i, :n] = h[::-1] / np.sqrt((h ** 2).sum())  # unit L2 norm: unit output variance
    return bank


def frame_noise(seed: int, start: int, stop: int, channels: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Counter-based Gaussian noise of frames [start, stop): [channels, stop - start].

    Block b (frames b*1024 .. b*1024 + 1023) comes from a CPU generator seeded with
    (seed, b), so the values do not depend on the requested range or on the device.
    """
    out = []
    for b in range(start // NOISE_BLOCK, -(-stop // NOISE_BLOCK)):
        state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, (int(seed) >> 32) & 0xFFFFFFFF,
                                        b & 0xFFFFFFFF, (b >> 32) & 0xFFFFFFFF, 0x4C5647]).generate_state(2, np.uint64)
        gen = torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))
        block = torch.randn(channels, NOISE_BLOCK, generator=gen)
        lo, hi = max(start - b * NOISE_BLOCK, 0), min(stop - b * NOISE_BLOCK, NOISE_BLOCK)
        out.append(block[:, lo:hi])
    return torch.cat(out, dim=1).to(device=device, dtype=dtype)


def fft_filter_valid(noise: torch.Tensor, bank: torch.Tensor, chunk_bytes: int = 1 << 28) -> torch.Tensor:
    """Valid linear convolution of every noise channel with every filter, by FFT.

    noise: [B, C, N]; bank: [F, K] -> [B, C * F, N - K + 1] (channel c*F + f), in noise's dtype.
    The FFT runs in float64 so that a window of a long sequence matches the whole sequence to
    ~1e-12 whatever the FFT length (the features are small next to the networks).
    """
    B, C, N = noise.shape
    Fn, K = bank.shape
    L = N - K + 1
    assert L > 0, f"need at least {K} noise samples, got {N}"
    n_fft = 1 << (N - 1).bit_length()
    Hf = torch.fft.rfft(bank.to(torch.float64), n=n_fft)  # [F, n_fft/2+1]
    per_item = C * Fn * (n_fft // 2 + 1) * 16 * 2
    step = max(1, chunk_bytes // per_item)
    outs = []
    for i in range(0, B, step):
        Xf = torch.fft.rfft(noise[i:i + step].to(torch.float64), n=n_fft)  # [b, C, n/2+1]
        y = torch.fft.irfft(Xf[:, :, None, :] * Hf[None, None], n=n_fft)[..., K - 1:N]  # [b, C, F, L]
        outs.append(rearrange(y, "b c f t -> b (c f) t").to(noise.dtype))
    return torch.cat(outs)


class TemporalLatent(nn.Module):
    """Noise -> filtered features [B, 1024, T] -> w(t) [B, w_dim, T] (docs/METHODS.md 1.1)."""

    def __init__(self, cfg: LatentConfig):
        super().__init__()
        self.cfg = cfg
        bank = torch.from_numpy(design_filter_bank(cfg))  # float64: see fft_filter_valid
        self.register_buffer("bank", bank, persistent=False)  # rebuilt from the config, not stored
        self.kernel_size = bank.shape[1]
        self.pad_before, self.pad_after = 0, self.kernel_size - 1  # feature t <- noise t .. t + K - 1
        self.mapping = MappingNetwork(cfg.features, cfg.w_dim, num_layers=cfg.mapping_layers,
                                      lr_multiplier=cfg.lr_multiplier)

    def noise_range(self, start: int, stop: int) -> tuple[int, int]:
        """Noise frames needed for the features of frames [start, stop)."""
        return start - self.pad_before, stop + self.pad_after

    def seeded_noise(self, seeds: list[int], start: int, stop: int) -> torch.Tensor:
        """Noise for frames [start, stop) of each seed's video: [B, C, T + kernel_size - 1]."""
        lo, hi = self.noise_range(start, stop)
        dev = self.bank.device
        return torch.stack([frame_noise(s, lo, hi, self.cfg.noise_channels, device=dev) for s in seeds])

    def features(self, noise: torch.Tensor) -> torch.Tensor:
        """noise: [B, C, T + kernel_size - 1] -> filtered features [B, C * F, T]."""
        return fft_filter_valid(noise, self.bank)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        """noise: [B, C, T + kernel_size - 1] -> w: [B, w_dim, T] (normalised, then the MLP)."""
        feats = rearrange(self.features(noise), "b c t -> b t c")
        return rearrange(self.mapping(feats), "b t c -> b c t")
