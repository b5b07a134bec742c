"""Low-res discriminator of the long-video GAN (METHODS.md 1.3, 46.4M parameters).

Input zero-padded to 64x64; block 0: fromRGB 1x1 (3 -> 32) and 3x3 spatial convs, run frame
by frame; blocks 1-3: residual conv3d with 5x3x3 kernels, 64 -> 128 -> 256 -> 512, each halving
space and time (512 x 16 x 4 x 4 at T = 128); head: space flattened, 1-D convs over time
(8192 -> 1024 kernel 1, then 1024 kernel 3), FC 16384 -> 1024 -> 1. No minibatch stddev.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vidgen.nn.filters import downsample2d, downsample_same, linear_filter, upfirdn1d
from vidgen.nn.style import LRELU_GAIN, LRELU_SLOPE, FullyConnected, clamp_symmetric, lrelu_gain


@dataclass
class LowResDConfig:
    """Discriminator settings; clip length and input size come from the data."""

    channels: tuple[int, ...] = (32, 64, 128, 256, 512)  # fromRGB, then each block's output
    temporal_ksize: int = 5
    spatial_ksize: int = 3
    head_channels: int = 1024
    head_convs: int = 4  # 1-D convs over time: kernel 1, then kernel 3
    conv_clamp: float = 256.0


_LOWPASS = linear_filter(2)  # [1, 3, 3, 1] / 8


def _blur_kernel(weight: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Convolve a conv kernel [O, I, kt, kh, kw] with the [1, 3, 3, 1] / 8 low-pass along
    ``dims`` (full convolution: each listed axis grows by 3), as one small matmul per axis."""
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=weight.dtype, device=weight.device) / 8
    for d in dims:
        k = weight.shape[d]
        band = torch.zeros(k, k + 3, dtype=weight.dtype, device=weight.device)  # band[i, i:i+4] = f
        for i in range(k):
            band[i, i:i + 4] = f
        moved = weight.movedim(d, -1)  # [..., k]: one 2-D matmul (a batched one of tiny
        # [k, k + 3] products is several times slower, forward and backward)
        weight = (moved.reshape(-1, k) @ band).reshape(*moved.shape[:-1], k + 3).movedim(-1, d)
    return weight


def _blurred_numel(weight: torch.Tensor, t_down: bool, s_down: bool) -> int:
    """Elements of the kernel :func:`_blur_kernel` makes (each decimated axis grows by 3)."""
    kt, kh, kw = weight.shape[2:]
    return weight.shape[0] * weight.shape[1] * (kt + 3 * t_down) * (kh + 3 * s_down) * (kw + 3 * s_down)


class Conv3d(nn.Module):
    """Equalised conv3d ('same' padding), optional [1, 3, 3, 1] low-pass decimation by 2 in
    space and/or time, bias and leaky ReLU.

    Conv followed by low-pass decimation is one strided conv whose kernel is the conv kernel
    blurred by the low-pass (5x3x3 -> 8x6x6, stride 2): 20% fewer multiply-adds than the conv
    at full resolution and no separate filtering pass (METHODS.md 1.3 "halving space and time").
    A 1x1x1 conv (the skip) commutes with the low-pass, so its input is decimated first.
    """

    def __init__(self, cin: int, cout: int, kt: int, ks: int, s_down: bool = False, t_down: bool = False,
                 bias: bool = True, act: bool = True, clamp: float | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kt, ks, ks))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.gain = 1 / math.sqrt(cin * kt * ks * ks)
        self.s_down, self.t_down, self.act, self.clamp = s_down, t_down, act, clamp
        self.pointwise = kt == 1 and ks == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C, T, H, W] -> [B, O, T', H', W']. The sqrt(2) gain of the leaky ReLU is folded
        # into the weight and bias (lrelu(g z) = g lrelu(z) for g > 0) and the bias into the conv.
        g = self.gain * (LRELU_GAIN if self.act else 1.0)
        w = (self.weight * g).to(x.dtype)
        b = None if self.bias is None else (self.bias * (LRELU_GAIN if self.act else 1.0)).to(x.dtype)
        if x.ndim == 4:  # frames [N, C, H, W] (spatial-only layers): the same as conv2d
            assert w.shape[2] == 1 and not self.t_down
            w = _blur_kernel(w, (3, 4)) if self.s_down else w  # the 1x1 skip too: 4x4, stride 2
            st = 2 if self.s_down else 1
            y = F.conv2d(x, w[:, :, 0], b, stride=st, padding=(w.shape[-1] - st) // 2)
        elif self.pointwise:
            if self.s_down:
                x = downsample2d(x)
            if self.t_down:
                x = downsample_same(x, dim=2)
            y = F.conv3d(x, w, b)
        elif (self.t_down or self.s_down) and _blurred_numel(w, self.t_down, self.s_down) > 16 * x.numel():
            # Small-resolution layers (block 3 at batch 1: 0.5M inputs, a 38M blurred kernel):
            # blurring the kernel costs more memory traffic than the multiply-adds it saves,
            # so run the same sums regrouped: conv with the fused conv's padding, then the
            # [1, 3, 3, 1] / 8 low-pass along each decimated axis, valid, stride 2.
            dims = ((2,) if self.t_down else ()) + ((3, 4) if self.s_down else ())
            pad = tuple((k + 3 - 2) // 2 if d in dims else k // 2 for d, k in zip((2, 3, 4), w.shape[2:]))
            y = F.conv3d(x, w, padding=pad)
            for d in dims:
                y = upfirdn1d(y, _LOWPASS, down=2, dim=d)
            if b is not None:
                y = y + b[:, None, None, None]
        else:
            dims = ((2,) if self.t_down else ()) + ((3, 4) if self.s_down else ())
            w = _blur_kernel(w, dims) if dims else w
            stride = (2 if self.t_down else 1, 2 if self.s_down else 1, 2 if self.s_down else 1)
            y = F.conv3d(x, w, b, stride=stride, padding=tuple((k - st) // 2 for k, st in zip(w.shape[2:], stride)))
        if not self.act:
            return y
        y = F.leaky_relu(y, LRELU_SLOPE, inplace=True)
        return y if self.clamp is None else clamp_symmetric(y, self.clamp)


class DBlock(nn.Module):
    """Residual block: conv (in -> in), conv (in -> out) + skip 1x1x1, both downsampling."""

    def __init__(self, cin: int, cout: int, kt: int, ks: int, s_down: bool, t_down: bool, clamp: float,
                 rgb: bool = False):
        super().__init__()
        self.from_rgb = Conv3d(3, cin, 1, 1, clamp=clamp) if rgb else None
        self.conv0 = Conv3d(cin, cin, kt, ks, clamp=clamp)
        self.conv1 = Conv3d(cin, cout, kt, ks, s_down, t_down, clamp=clamp)
        self.skip = Conv3d(cin, cout, 1, 1, s_down, t_down, bias=False, act=False, clamp=clamp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.from_rgb is not None:
            x = self.from_rgb(x)
        return (self.conv1(self.conv0(x)) + self.skip(x)) * math.sqrt(0.5)


class Conv1d(nn.Module):
    def __init__(self, cin: int, cout: int, k: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.gain = 1 / math.sqrt(cin * k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C, T]
        w = (self.weight * self.gain).to(x.dtype)
        return lrelu_gain(F.conv1d(x, w, self.bias.to(x.dtype), padding=w.shape[2] // 2))


class LowResDiscriminator(nn.Module):
    """Video [B, 3, T, H, W] (T = clip_len) -> logits [B, 1]. Unconditional, no minibatch stddev."""

    def __init__(self, cfg: LowResDConfig, clip_len: int = 128, max_edge: int = 64):
        super().__init__()
        self.cfg, self.clip_len, self.max_edge = cfg, clip_len, max_edge  # input padded to max_edge^2
        c, kt, ks, cl = cfg.channels, cfg.temporal_ksize, cfg.spatial_ksize, cfg.conv_clamp
        blocks = [DBlock(c[0], c[1], 1, ks, max_edge > 32, False, cl, rgb=True)]
        for i in range(1, len(c) - 1):  # halve time while at least 2 ** (i + 1) steps remain
            blocks.append(DBlock(c[i], c[i + 1], kt, ks, True, clip_len >= 2 ** (i + 1), cl))
        self.blocks = nn.ModuleList(blocks)
        s_scale = 2 ** sum(b.conv1.s_down for b in blocks)
        t_scale = 2 ** sum(b.conv1.t_down for b in blocks)
        self.res, self.steps = max_edge // s_scale, clip_len // t_scale
        hc = cfg.head_channels
        self.head_convs = nn.ModuleList(
            Conv1d(c[-1] * self.res ** 2 if i == 0 else hc, hc, 1 if i == 0 else 3) for i in range(cfg.head_convs))
        self.fc = FullyConnected(self.steps * hc, hc, activation="lrelu")
        self.out = FullyConnected(hc, 1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = video.shape
        E = self.max_edge
        assert T == self.clip_len and max(H, W) <= E, f"expected [B, 3, {self.clip_len}, <={E}, <={E}], got {video.shape}"
        py, px = (E - H) // 2, (E - W) // 2
        x = F.pad(video, (px, E - W - px, py, E - H - py))  # zero-pad to E x E
        # Block 0 is spatial only: run it frame by frame (channels-last), then the 3-D blocks.
        x = rearrange(x, "b c t h w -> (b t) c h w").contiguous(memory_format=torch.channels_last)
        x = rearrange(self.blocks[0](x), "(b t) c h w -> b c t h w", b=B).contiguous()
        for block in self.blocks[1:]:
            x = block(x)
        x = rearrange(x, "b c t h w -> b (c h w) t")  # flatten space: [B, 512 * 4 * 4, 16]
        for conv in self.head_convs:
            x = conv(x)
        return self.out(self.fc(rearrange(x, "b c t -> b (c t)")))
