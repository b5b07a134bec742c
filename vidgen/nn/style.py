"""Style-based layers shared by the GAN families: equalised fully-connected layers, the
mapping MLP, modulated convolutions (2-D, and 3-D with a style per time step) and the
running magnitude normalisation of StyleGAN3.

Equalised learning rate (StyleGAN): weights are stored as N(0, 1) / lr_multiplier and
scaled by ``lr_multiplier / sqrt(fan_in)`` on use, so Adam sees every layer at the same scale.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vidgen.nn.stats import register_statistic

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def _dense_view(x: torch.Tensor) -> torch.Tensor:
    """x viewed with its dimensions in memory order (a channels-last tensor becomes contiguous):
    the same elements, so a full reduction over it needs no copy."""
    if x.is_contiguous():
        return x
    order = sorted(range(x.ndim), key=lambda d: (-x.stride(d), -x.shape[d]))
    y = x.permute(order)
    return y if y.is_contiguous() else x


def clamp_symmetric(x: torch.Tensor, clamp: float) -> torch.Tensor:
    """``x.clamp(-clamp, clamp)``. On the CPU the clamp is skipped when no element lies outside
    the bounds: the values and gradients are then the same (the clamp's gradient is 1 on
    [-clamp, clamp], bounds included), without its pass over x and the four of its backward.
    Elsewhere a host sync would cost more than the clamp, so it is always applied."""
    if x.device.type == "cpu" and x.numel():
        lo, hi = torch.aminmax(_dense_view(x.detach()))
        if -clamp <= lo.item() and hi.item() <= clamp:  # False for NaN: clamp propagates it
            return x
    return x.clamp(-clamp, clamp)


def lrelu_gain(x: torch.Tensor, gain: float = LRELU_GAIN, clamp: float | None = None) -> torch.Tensor:
    """Leaky ReLU (slope 0.2) scaled by sqrt(2) to keep unit variance, optionally clamped."""
    x = F.leaky_relu(x, LRELU_SLOPE) * gain
    if clamp is not None:
        x = clamp_symmetric(x, clamp)
    return x


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """x / sqrt(mean(x^2)) along `dim` (StyleGAN pixel norm of latents)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnected(nn.Module):
    """Equalised linear layer ``y = act(x W^T * g + b * lr_mul)``, g = lr_mul / sqrt(fan_in)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        assert activation in ("linear", "lrelu")
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., in_features]
        w = self.weight.to(x.dtype) * self.weight_gain
        b = None if self.bias is None else self.bias.to(x.dtype) * self.bias_gain
        x = F.linear(x, w, b)
        return lrelu_gain(x) if self.activation == "lrelu" else x

    def extra_repr(self) -> str:
        return f"in={self.weight.shape[1]}, out={self.weight.shape[0]}, act={self.activation}"


class MappingNetwork(nn.Module):
    """z -> w: pixel-normalised input, ``num_layers`` equalised FC layers with leaky ReLU and a
    learning-rate multiplier of 0.01 (StyleGAN2/3); optionally broadcast to ``num_ws`` copies."""

    def __init__(self, z_dim: int, w_dim: int, num_layers: int = 2, hidden: int | None = None,
                 lr_multiplier: float = 0.01, num_ws: int | None = None, normalize_input: bool = True):
        super().__init__()
        hidden = hidden or w_dim
        dims = [z_dim] + [hidden] * (num_layers - 1) + [w_dim]
        self.layers = nn.ModuleList(
            FullyConnected(dims[i], dims[i + 1], activation="lrelu", lr_multiplier=lr_multiplier)
            for i in range(num_layers))
        self.num_ws = num_ws
        self.normalize_input = normalize_input
        self.w_dim = w_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # z: [..., z_dim] -> w: [..., w_dim] (or [..., num_ws, w_dim])
        x = normalize_2nd_moment(z, dim=-1) if self.normalize_input else z
        for layer in self.layers:
            x = layer(x)
        if self.num_ws is not None:
            x = x.unsqueeze(-2).expand(*x.shape[:-1], self.num_ws, x.shape[-1])
        return x


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     padding: int = 0, eps: float = 1e-8) -> torch.Tensor:
    """StyleGAN2 modulated convolution.

    x: [B, I, H, W]; weight: [O, I, kh, kw]; styles: [B, I]. Returns [B, O, H', W'].
    Computed as scale -> one shared conv -> demodulate (the "non-fused" form, equal to one
    grouped convolution per sample up to rounding, and much faster on CPU): demodulation
    divides output channel o of sample b by d[b, o] = sqrt(sum_i ||W[o, i]||^2 s[b, i]^2).
    """
    x = x * styles.to(x.dtype)[:, :, None, None]
    y = F.conv2d(x, weight.to(x.dtype), padding=padding)
    if demodulate:
        w2 = weight.square().sum(dim=(2, 3))  # [O, I]
        d = (styles.square() @ w2.t().to(styles.dtype) + eps).rsqrt()  # [B, O]
        y = y * d.to(y.dtype)[:, :, None, None]
    return y


def modulated_conv3d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     padding: tuple[int, int, int] = (0, 0, 0), eps: float = 1e-8) -> torch.Tensor:
    """Modulated 3-D convolution with a style per time step (docs/METHODS.md 1.2).

    x: [B, I, T, H, W]; weight: [O, I, kt, kh, kw]; styles: [B, I, T] (one style per input
    time step). The input is multiplied by style[t] before a plain conv3d (so the weight is
    shared by the batch and no grouped convolution is needed), and the demodulation
    coefficient of output step t is computed from the styles at the input step it is centred
    on: d[b, o, t] = 1 / sqrt(sum_i ||W[o, i]||^2 s[b, i, t]^2).
    Returns [B, O, T', H', W'].
    """
    x = x * styles[:, :, :, None, None].to(x.dtype)
    y = F.conv3d(x, weight.to(x.dtype), padding=padding)
    if demodulate:
        T_in, T_out = styles.shape[2] + 2 * padding[0], y.shape[2]
        s = F.pad(styles, (padding[0], padding[0]), mode="replicate") if padding[0] else styles
        crop = (T_in - T_out) // 2
        s = s[:, :, crop:crop + T_out]  # style at the centre of each output step's window
        w2 = weight.square().sum(dim=(2, 3, 4))  # [O, I]
        d = (torch.einsum("oi,bit->bot", w2.to(s.dtype), s.square()) + eps).rsqrt()
        y = y * d[:, :, :, None, None].to(y.dtype)
    return y


def mean_square(x: torch.Tensor) -> torch.Tensor:
    """mean(x^2) in float32 as a squared norm: one read of x, no squared copy."""
    return torch.linalg.vector_norm(x.detach(), dtype=torch.float32).square() / max(x.numel(), 1)


class MagnitudeEMA(nn.Module):
    """Normalise activations by a running average of their mean square (StyleGAN3 'magnitude
    EMA'): updated in training, frozen in eval so inference is deterministic."""

    def __init__(self, beta: float = 0.999):
        super().__init__()
        self.beta = beta
        register_statistic(self, "magnitude", torch.ones([]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                m = mean_square(x)
                self.magnitude.copy_(m.lerp(self.magnitude, self.beta))
        return x * self.magnitude.rsqrt().to(x.dtype)
