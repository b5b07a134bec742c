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

from vidgen.nn.filters import binomial4_sum
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


class Conv3d(nn.Module):
    """Equalised conv3d ('same' zero padding), optional [1, 3, 3, 1] / 8 low-pass decimation by
    2 in space and/or time, bias, leaky ReLU (gain sqrt(2)) and clamp, in the reference
    implementation's order (LVG code, ``Conv3dLayer``): conv, then the low-pass with zero
    padding 1 on each decimated axis and decimation, then bias, activation and clamp. The
    low-pass sees zeros beyond the conv's output, so the edges differ from StyleGAN2's
    blur-then-strided-conv. A 1x1x1 conv (the skip) commutes with the low-pass: it takes the
    low-passed input at the decimated positions only.
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
        # x: [B, C, T, H, W] or frames [N, C, H, W] (spatial-only layers, the same as conv2d)
        # -> [B, O, T', H', W']. The sqrt(2) gain of the leaky ReLU is folded into the weight
        # and bias (lrelu(g z) = g lrelu(z) for g > 0), the low-pass's 1/8 per axis into the weight.
        frames = x.ndim == 4
        assert not (frames and (self.t_down or self.weight.shape[2] != 1)), "frames take spatial-only layers"
        ksize = self.weight.shape[3:] if frames else self.weight.shape[2:]
        axes = (2, 3) if frames else (2, 3, 4)
        down = [self.s_down] * 2 if frames else [self.t_down, self.s_down, self.s_down]
        dims = tuple(d for d, dn in zip(axes, down) if dn)
        g = self.gain * (LRELU_GAIN if self.act else 1.0) / 8 ** len(dims)  # 1/8: the low-pass's sum
        w = (self.weight * g).to(x.dtype)
        w = w[:, :, 0] if frames else w
        b = None if self.bias is None else (self.bias * (LRELU_GAIN if self.act else 1.0)).to(x.dtype)
        conv = F.conv2d if frames else F.conv3d
        if not dims:
            y = conv(x, w, b, padding=tuple(k // 2 for k in ksize))
        elif self.pointwise:  # low-pass at the kept positions only, then the 1x1 conv
            y = conv(binomial4_sum(x, dims, (1,) * len(dims), down=2), w, b)
        else:
            y = binomial4_sum(conv(x, w, padding=tuple(k // 2 for k in ksize)), dims, (1,) * len(dims), down=2)
            if b is not None:
                y = y + b.view(-1, *([1] * (y.ndim - 2)))
        if self.act:
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
        self.skip = Conv3d(cin, cout, 1, 1, s_down, t_down, bias=False, act=False, clamp=clamp)  # clamped too

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
