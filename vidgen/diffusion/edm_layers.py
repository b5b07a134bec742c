"""Layers of EDM's DDPM++, NCSN++ and ADM networks (Karras et al. 2022, appendix F.2; the
architectures of Song et al. 2021 and Dhariwal & Nichol 2021).

Parameter and buffer names are those of the published checkpoints (``weight``, ``bias``,
``resample_filter``, ``freqs``, ``norm0``, ``conv0``, ``affine``, ...), so a converted state
dict loads with every key in place. Initialisation follows the same schemes: Xavier-uniform
for DDPM++/NCSN++, Kaiming-uniform scaled by sqrt(1/3) for ADM, and (near) zero for the last
layer of every residual branch.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vidgen.nn.attention import attention

InitMode = Literal["xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"]


def random_weight(shape: Sequence[int], mode: InitMode, fan_in: int, fan_out: int) -> torch.Tensor:
    """Random tensor of ``shape`` with the variance of the named scheme."""
    if mode == "xavier_uniform":
        return math.sqrt(6 / (fan_in + fan_out)) * (torch.rand(*shape) * 2 - 1)
    if mode == "xavier_normal":
        return math.sqrt(2 / (fan_in + fan_out)) * torch.randn(*shape)
    if mode == "kaiming_uniform":
        return math.sqrt(3 / fan_in) * (torch.rand(*shape) * 2 - 1)
    assert mode == "kaiming_normal", mode
    return math.sqrt(1 / fan_in) * torch.randn(*shape)


class Linear(nn.Module):
    """``x W^T + b`` with the weights cast to the input's dtype."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 init_mode: InitMode = "kaiming_normal", init_weight: float = 1.0, init_bias: float = 0.0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        fans = dict(mode=init_mode, fan_in=in_features, fan_out=out_features)
        self.weight = nn.Parameter(random_weight([out_features, in_features], **fans) * init_weight)
        self.bias = nn.Parameter(random_weight([out_features], **fans) * init_bias) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, in_features]
        x = x @ self.weight.to(x.dtype).t()
        return x + self.bias.to(x.dtype) if self.bias is not None else x


class Conv2d(nn.Module):
    """Square convolution (``kernel`` 0: none, only resampling) with optional x2 up- or
    down-sampling by the separable FIR ``resample_filter`` (normalised to unit DC gain).

    Unfused, the image is resampled first and convolved after. Fused (NCSN++'s residual
    encoder path), a down-sampling layer convolves first and filters-and-decimates after,
    and an up-sampling one does the reverse; the padding is split so that the output grid is
    the same either way."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, bias: bool = True,
                 up: bool = False, down: bool = False, resample_filter: Sequence[int] = (1, 1),
                 fused_resample: bool = False, init_mode: InitMode = "kaiming_normal",
                 init_weight: float = 1.0, init_bias: float = 0.0):
        assert not (up and down)
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.up, self.down, self.fused_resample = up, down, fused_resample
        fans = dict(mode=init_mode, fan_in=in_channels * kernel * kernel, fan_out=out_channels * kernel * kernel)
        self.weight = nn.Parameter(random_weight([out_channels, in_channels, kernel, kernel], **fans) * init_weight) if kernel else None
        self.bias = nn.Parameter(random_weight([out_channels], **fans) * init_bias) if kernel and bias else None
        f = torch.as_tensor(resample_filter, dtype=torch.float32)
        f = torch.outer(f, f)[None, None] / f.sum().square()  # [1, 1, k, k], unit DC gain
        self.register_buffer("resample_filter", f if up or down else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, in_channels, H, W] -> [B, out_channels, H', W']
        w = self.weight.to(x.dtype) if self.weight is not None else None
        f = self.resample_filter.to(x.dtype) if self.resample_filter is not None else None
        w_pad = w.shape[-1] // 2 if w is not None else 0
        f_pad = (f.shape[-1] - 1) // 2 if f is not None else 0
        if self.fused_resample and self.up and w is not None:
            x = F.conv_transpose2d(x, (f * 4).tile(self.in_channels, 1, 1, 1), groups=self.in_channels, stride=2,
                                   padding=max(f_pad - w_pad, 0))
            x = F.conv2d(x, w, padding=max(w_pad - f_pad, 0))
        elif self.fused_resample and self.down and w is not None:
            x = F.conv2d(x, w, padding=w_pad + f_pad)
            x = F.conv2d(x, f.tile(self.out_channels, 1, 1, 1), groups=self.out_channels, stride=2)
        else:
            if self.up:  # zero-insertion, then the filter scaled by 4 (the four phases)
                x = F.conv_transpose2d(x, (f * 4).tile(self.in_channels, 1, 1, 1), groups=self.in_channels,
                                       stride=2, padding=f_pad)
            if self.down:
                x = F.conv2d(x, f.tile(self.in_channels, 1, 1, 1), groups=self.in_channels, stride=2, padding=f_pad)
            if w is not None:
                x = F.conv2d(x, w, padding=w_pad)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        return x


class GroupNorm(nn.Module):
    """Group normalisation with min(num_groups, channels / 4) groups."""

    def __init__(self, num_channels: int, num_groups: int = 32, min_channels_per_group: int = 4, eps: float = 1e-5):
        super().__init__()
        self.num_groups = min(num_groups, num_channels // min_channels_per_group)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


class PositionalEmbedding(nn.Module):
    """Transformer sinusoids of a scalar: [cos(x f_i), sin(x f_i)], f_i = (1/max_positions)^(i/n)
    with n = channels/2 (or channels/2 - 1 with ``endpoint``, DDPM++)."""

    def __init__(self, num_channels: int, max_positions: int = 10000, endpoint: bool = False):
        super().__init__()
        self.num_channels, self.max_positions, self.endpoint = num_channels, max_positions, endpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B] -> [B, num_channels]
        half = self.num_channels // 2
        freqs = torch.arange(half, dtype=torch.float32, device=x.device) / (half - (1 if self.endpoint else 0))
        freqs = (1 / self.max_positions) ** freqs
        x = torch.outer(x, freqs.to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features of a scalar (NCSN++): [cos(2 pi f x), sin(2 pi f x)], f ~ N(0, scale^2)."""

    def __init__(self, num_channels: int, scale: float = 16):
        super().__init__()
        self.register_buffer("freqs", torch.randn(num_channels // 2) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B] -> [B, num_channels]
        x = torch.outer(x, (2 * math.pi * self.freqs).to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


class UNetBlock(nn.Module):
    """The residual block of DDPM++, NCSN++ and ADM, optionally resampling, with optional
    self-attention after it.

    norm -> silu -> conv (resampling) -> embedding (a shift, or with ``adaptive_scale`` a
    scale and shift around the second norm) -> silu -> dropout -> conv, plus the skip path
    (resampled, projected when the width changes or ``resample_proj``), times ``skip_scale``.
    Attention: q, k, v from a 1x1 conv with channels laid out [heads, channels_per_head, 3];
    softmax(q^T k / sqrt(channels_per_head)) in float32."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, up: bool = False, down: bool = False,
                 attention: bool = False, num_heads: int | None = None, channels_per_head: int = 64,
                 dropout: float = 0.0, skip_scale: float = 1.0, eps: float = 1e-5,
                 resample_filter: Sequence[int] = (1, 1), resample_proj: bool = False, adaptive_scale: bool = True,
                 init: dict | None = None, init_zero: dict | None = None, init_attn: dict | None = None):
        super().__init__()
        init = init or {}
        init_zero = init_zero if init_zero is not None else dict(init_weight=0)
        self.in_channels, self.out_channels, self.emb_channels = in_channels, out_channels, emb_channels
        self.num_heads = 0 if not attention else num_heads if num_heads is not None else out_channels // channels_per_head
        self.dropout, self.skip_scale, self.adaptive_scale = dropout, skip_scale, adaptive_scale

        self.norm0 = GroupNorm(in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels, out_channels, 3, up=up, down=down, resample_filter=resample_filter, **init)
        self.affine = Linear(emb_channels, out_channels * (2 if adaptive_scale else 1), **init)
        self.norm1 = GroupNorm(out_channels, eps=eps)
        self.conv1 = Conv2d(out_channels, out_channels, 3, **init_zero)
        self.skip = None
        if out_channels != in_channels or up or down:
            kernel = 1 if resample_proj or out_channels != in_channels else 0
            self.skip = Conv2d(in_channels, out_channels, kernel, up=up, down=down, resample_filter=resample_filter,
                               **init)
        if self.num_heads:
            self.norm2 = GroupNorm(out_channels, eps=eps)
            self.qkv = Conv2d(out_channels, out_channels * 3, 1, **(init_attn if init_attn is not None else init))
            self.proj = Conv2d(out_channels, out_channels, 1, **init_zero)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # x: [B, in_channels, H, W], emb: [B, emb_channels]
        orig = x
        x = self.conv0(F.silu(self.norm0(x)))
        params = rearrange(self.affine(emb), "b c -> b c 1 1").to(x.dtype)
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            x = F.silu(torch.addcmul(shift, self.norm1(x), scale + 1))
        else:
            x = F.silu(self.norm1(x + params))
        x = self.conv1(F.dropout(x, p=self.dropout, training=self.training))
        x = (x + (self.skip(orig) if self.skip is not None else orig)) * self.skip_scale
        if self.num_heads:
            h, w = x.shape[-2:]
            qkv = rearrange(self.qkv(self.norm2(x)), "b (n c three) h w -> three b n (h w) c", n=self.num_heads, three=3)
            q, k, v = (t.to(torch.float32) for t in qkv.unbind(0))
            a = rearrange(attention(q, k, v).to(x.dtype), "b n (h w) c -> b (n c) h w", h=h, w=w)
            x = (self.proj(a) + x) * self.skip_scale
        return x
