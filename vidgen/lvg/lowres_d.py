"""Low-res discriminator of the long-video GAN (docs/METHODS.md 1.3, 46.4M parameters).

Input zero-padded to 64x64; block 0: fromRGB 1x1 (3 -> 32) and 3x3 spatial convs, run frame
by frame; blocks 1-3: residual conv3d with 5x3x3 kernels, 64 -> 128 -> 256 -> 512, each halving
space and time (512 x 16 x 4 x 4 at T = 128); head: space flattened, 1-D convs over time
(8192 -> 1024 kernel 1, then 1024 kernel 3), FC 16384 -> 1024 -> 1. No minibatch stddev.
"""

from __future__ import annotations

import itertools
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
    padding 1 on each decimated axis and decimation, then bias, activation and clamp.

    Computed with the same sums in fewer multiply-adds (:func:`_conv_lowpass_down`): the
    zero-padded input is low-passed and convolved with the original kernel at stride 2 (the
    strided conv of the blurred kernel, 6.4x fewer multiply-adds for 5x3x3 than the conv at
    full resolution), which differs from the reference only by the conv's values just beyond
    the edges that the low-pass would see as zeros; those are subtracted again (thin slabs,
    edges and corners). A 1x1x1 conv (the skip) commutes with the low-pass: it takes the
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
            y = _conv_lowpass_down(x, w, conv, axes, ksize, dims)
            if b is not None:
                y = y + b.view(-1, *([1] * (y.ndim - 2)))
        if self.act:
            y = F.leaky_relu(y, LRELU_SLOPE, inplace=True)
        return y if self.clamp is None else clamp_symmetric(y, self.clamp)


def _conv_lowpass_down(x: torch.Tensor, w: torch.Tensor, conv, axes: tuple[int, ...], ksize, dims: tuple[int, ...]):
    """``lowpass_decimate(conv_same(x, w))`` (zero padding 1, [1, 3, 3, 1] taps, the 1/8s
    already in ``w``) along ``dims``, for odd kernel sizes ``ksize`` over ``axes``.

    Along a decimated axis of length L, output j sums the conv at 2j - 1 .. 2j + 2, and the
    reference's low-pass sees zeros at -1 and L. The strided conv of the low-passed input
    (``E``) sums the conv extended to those positions instead. With P_d the conv's values at
    the two positions beyond axis d (taken with weight 1 into output 0 and output J - 1),
    the reference is E - sum_d P_d + sum_{d<e} P_d P_e - P_t P_h P_w (inclusion-exclusion over
    the axes); each term is the same strided conv on a slab of k samples of x (r real ones
    and r + 1 zeros), and the terms are summed into one thin face per axis and side before
    they are subtracted.
    """
    k_of = dict(zip(axes, ksize))

    def strided(inp: torch.Tensor, lowpassed: tuple[int, ...]) -> torch.Tensor:
        if lowpassed:
            inp = binomial4_sum(inp, lowpassed, tuple((k_of[d] + 1) // 2 for d in lowpassed))
        stride = tuple(2 if d in lowpassed else 1 for d in axes)
        padding = tuple(0 if d in dims else k_of[d] // 2 for d in axes)
        return conv(inp, w, stride=stride, padding=padding)

    def ends(inp: torch.Tensor, d: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first and last r samples along d (one split: its backward is one concatenation)."""
        r, L = k_of[d] // 2, inp.shape[d]
        first, _, last = inp.split([r, L - 2 * r, r], dim=d)
        return first, last

    def slab(part: torch.Tensor, d: int, side: int) -> torch.Tensor:
        """The k inputs of the conv at position -1 (side 0) or L (side 1) along d: the r real
        samples ``part`` and r + 1 zeros beyond the edge."""
        r = k_of[d] // 2
        return F.pad(part, [0, 0] * (part.ndim - 1 - d) + ([0, r + 1] if side else [r + 1, 0]))

    y = strided(x, dims)
    x_ends = {d: ends(x, d) for d in dims}
    faces: dict[tuple[int, int], torch.Tensor] = {}  # (axis, side) -> correction, length 1 along axis
    for d in dims:  # faces: both sides of an axis in one conv (stacked along the batch)
        if x.shape[d] % 2:
            faces[(d, 0)] = -strided(slab(x_ends[d][0], d, 0), tuple(e for e in dims if e != d))
            continue
        both = torch.cat([slab(x_ends[d][0], d, 0), slab(x_ends[d][1], d, 1)])
        lo, hi = (-strided(both, tuple(e for e in dims if e != d))).chunk(2)
        faces[(d, 0)], faces[(d, 1)] = lo, hi
    for n in range(2, len(dims) + 1):
        for S in itertools.combinations(dims, n):
            rest = tuple(d for d in dims if d not in S)
            for sides in itertools.product((0, 1), repeat=n):
                if any(side and x.shape[d] % 2 for d, side in zip(S, sides)):
                    continue  # odd length: the last output does not reach position L
                inp = slab(x_ends[S[0]][sides[0]], S[0], sides[0])
                for d, side in zip(S[1:], sides[1:]):
                    inp = slab(ends(inp, d)[side], d, side)
                t = strided(inp, rest)  # length 1 along the axes of S
                key = (S[0], sides[0])  # an edge or corner goes into the face of its first axis,
                idx = [slice(None)] * y.ndim  # at the first / last output of its other axes
                for d, side in zip(S[1:], sides[1:]):
                    idx[d] = slice(y.shape[d] - 1, y.shape[d]) if side else slice(0, 1)
                face = faces[key].clone()
                face[tuple(idx)] += t if n % 2 == 0 else -t
                faces[key] = face
    for d in dims:  # y + faces: one concatenation per axis
        lo, hi = faces.get((d, 0)), faces.get((d, 1))
        J = y.shape[d]
        if J == 1:
            y = y + sum(f for f in (lo, hi) if f is not None)
            continue
        first, mid, last = y.split([1, J - 2, 1], dim=d)
        y = torch.cat([first + lo, mid, last + hi if hi is not None else last], dim=d)
    return y


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
