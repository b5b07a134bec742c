"""Magnitude-preserving (MP) layers of EDM2 (docs/METHODS.md section 4).

Every layer keeps unit expected magnitude of its activations: weights are normalised per
output channel on use (and, in training mode, also *in place*: forced weight normalisation),
then scaled by ``1 / sqrt(fan_in)``; there are no biases. Additions and concatenations are
re-weighted so that unit-magnitude inputs give a unit-magnitude output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vidgen.nn import is_channels_last, winograd

SILU_GAIN = 0.596  # E[silu(x)^2]^(1/2) for x ~ N(0, 1)


def normalize(x: torch.Tensor, dim: int | tuple[int, ...] | None = None, eps: float = 1e-4) -> torch.Tensor:
    """Scale ``x`` to unit RMS over ``dim`` (all but the first by default): ``x / (eps + |x| / sqrt(n))``."""
    if dim is None:
        dim = tuple(range(1, x.ndim))
    return x / _norm_denominator(x, dim, eps).to(x.dtype)


def _norm_denominator(x: torch.Tensor, dim: int | tuple[int, ...], eps: float) -> torch.Tensor:
    """``eps + |x| / sqrt(n)`` over ``dim`` (kept), in float32: what :func:`normalize` divides by."""
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=torch.float32)
    return torch.add(eps, norm, alpha=math.sqrt(norm.numel() / x.numel()))


def pixel_norm(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Unit RMS across channels at every pixel (EDM2 start of encoder blocks, q/k/v)."""
    return normalize(x, dim=dim)


def mp_silu(x: torch.Tensor) -> torch.Tensor:
    """silu(x) / 0.596: unit magnitude for unit-magnitude input."""
    return F.silu(x) / SILU_GAIN


def mp_sum(a: torch.Tensor, b: torch.Tensor, t: float = 0.5) -> torch.Tensor:
    """lerp(a, b, t) / sqrt((1 - t)^2 + t^2): a weighted sum that preserves unit magnitude."""
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t ** 2)


def mp_cat(a: torch.Tensor, b: torch.Tensor, dim: int = 1, t: float = 0.5) -> torch.Tensor:
    """Concatenate with the parts weighted by their channel counts and the balance ``t``."""
    na, nb = a.shape[dim], b.shape[dim]
    c = math.sqrt((na + nb) / ((1 - t) ** 2 + t ** 2))
    # One concatenation, then one product with the per-channel weights (two passes, not three).
    scale = torch.cat([torch.full((na,), c * (1 - t) / math.sqrt(na), dtype=a.dtype, device=a.device),
                       torch.full((nb,), c * t / math.sqrt(nb), dtype=a.dtype, device=a.device)])
    out = torch.cat([a, b], dim=dim)
    return out * scale.view([-1] + [1] * (out.ndim - 1 - dim % out.ndim))


class MPFourier(nn.Module):
    """Fourier embedding of a scalar (noise level): ``sqrt(2) cos(2 pi (f x + phi))`` with fixed
    random frequencies and phases, so each feature has unit RMS."""

    def __init__(self, channels: int, bandwidth: float = 1.0):
        super().__init__()
        self.register_buffer("freqs", 2 * math.pi * torch.randn(channels) * bandwidth)
        self.register_buffer("phases", 2 * math.pi * torch.rand(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B] -> [B, channels]
        y = torch.outer(x.to(torch.float32), self.freqs.to(torch.float32)) + self.phases.to(torch.float32)
        return (y.cos() * math.sqrt(2)).to(x.dtype)


class MPConv(nn.Module):
    """Bias-free linear (``kernel=()``) or 2-D convolution with forced weight normalisation."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, ...] = ()):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, *kernel))
        self._normed = -1  # the weight's version counter after its last forced normalisation

    def forward(self, x: torch.Tensor, gain: float | torch.Tensor = 1.0) -> torch.Tensor:
        # x: [B, in_channels] (linear) or [B, in_channels, H, W] (any memory layout)
        w = self.weight.to(torch.float32)
        dims = tuple(range(1, w.ndim))
        # forced weight normalisation (EDM2 eq. 14), in place, once per change of the weight:
        # forward passes between two optimiser steps (accumulation rounds) see the same weights
        if self.training and not torch.is_inference_mode_enabled() and self.weight._version != self._normed:
            with torch.no_grad():
                if w is self.weight:
                    self.weight.div_(_norm_denominator(w, dims, 1e-4))
                else:
                    self.weight.copy_(normalize(w, dims))
                    w = self.weight.to(torch.float32)
            self._normed = self.weight._version
        # Normalised again on use, so gradients see the projection, and scaled for magnitude
        # preservation by gain / sqrt(fan_in): both folded into one factor per output channel.
        factor = (gain / math.sqrt(w[0].numel())) / _norm_denominator(w, dims, 1e-4)
        if (w.ndim == 4 and w.shape[-1] > 1 and is_channels_last(x) and not torch.is_grad_enabled()
                and not winograd.eligible(x, w)):
            # Written channels-last as it is computed: the convolution would copy it otherwise
            # (the Winograd path reads it contiguous).
            w = torch.mul(w, factor, out=torch.empty_like(w, memory_format=torch.channels_last))
        else:
            w = w * factor
        w = w.to(x.dtype)
        if w.ndim == 2:
            return x @ w.t()
        assert w.ndim == 4, "MPConv supports linear and 2-D kernels"
        if w.shape[-2:] == (1, 1) and is_channels_last(x):
            # A 1x1 convolution of channels-last activations is one matrix product over the
            # pixels ([B*H*W, in] @ [in, out]); the CPU's convolution takes a slow path for it.
            y = x.permute(0, 2, 3, 1) @ w.flatten(1).t()  # [B, H, W, out], contiguous
            return y.permute(0, 3, 1, 2)
        if w.shape[-2:] == (3, 3):
            return winograd.conv3x3(x, w)  # Winograd on the CPU where it pays (vidgen/nn/winograd.py)
        return F.conv2d(x, w, padding=w.shape[-1] // 2)


def resample(x: torch.Tensor, mode: str = "keep") -> torch.Tensor:
    """x2 box-filter down-sampling or nearest up-sampling with the [1, 1] filter of EDM2.

    x: [B, C, H, W]. Both keep unit magnitude for spatially smooth inputs."""
    if mode == "keep":
        return x
    if mode == "down":
        return F.avg_pool2d(x, 2)
    assert mode == "up", mode
    return F.interpolate(x, scale_factor=2, mode="nearest")
