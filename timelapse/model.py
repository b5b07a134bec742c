"""Time-conditioned StyleGAN2 generator and projection discriminator (docs/METHODS.md section 2).

Generator: z -> mapping (t does not enter) -> w; every modulated conv and ToRGB uses
``style = A(w) * (L c)``, with ``L`` a bias-free linear map from the time features c that
starts as the identity (column of the constant 1, the rest about 1e-6), so at
initialisation the generator ignores t. Skip architecture, noise inputs, output masked to
the valid rectangle of padded (non-square) frames.

Discriminator: StyleGAN2 residual D; projection conditioning
``logit = <features, cmap> / sqrt(cmap_dim)`` with ``cmap`` from an embedding of c followed by
an 8-layer MLP.

Resampling is StyleGAN2's (Karras et al. 2020, appendix B): the separable [1, 3, 3, 1] filter
with zero padding at the borders. An upsampling conv is a stride-2 transposed conv followed by
the filter (x2 gain per axis); a downsampling conv filters first and then convolves with
stride 2; the image skip path is upsampled by zero insertion and the same filter. These are
the reference's functions, so published weights give the reference's images
(docs/TIMELAPSE.md, "Parity with the reference").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from vidgen.nn import count_parameters, winograd
from vidgen.nn.filters import binomial4_sum
from vidgen.nn.stats import register_statistic
from vidgen.nn.style import (LRELU_GAIN, LRELU_SLOPE, FullyConnected, MappingNetwork, clamp_symmetric,
                             modulated_conv2d)
from timelapse.time import TimeAxis, TimeFeatures


@dataclass
class ModelConfig:
    resolution: int = 256
    channel_base: int = 32768
    channel_max: int = 512
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 2
    cond_mlp_layers: int = 8  # D's conditioning MLP
    cmap_dim: int = 0  # 0: channels at 4x4
    time_lr: float = 1.0  # learning-rate multiplier of L
    cond_lr: float = 0.01  # learning-rate multiplier of D's conditioning MLP (StyleGAN2-ADA mapping)
    mbstd_group: int = 4  # <= 0: the whole minibatch
    conv_clamp: float = 256.0  # 0: off
    img_channels: int = 3
    # float64: the Fourier phase 2 pi f t in double precision; float32: in single precision,
    # rounded as the reference release computes it (set for imported networks)
    time_phase: Literal["float64", "float32"] = "float64"


def channels(cfg: ModelConfig, res: int) -> int:
    return min(cfg.channel_base // res, cfg.channel_max)


W_AVG_BETA = 0.998  # decay of the tracked average w (StyleGAN2)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """x2 upsampling by zero insertion and the [1, 3, 3, 1] filter (gain 2 per axis), zero
    padded: y[2m] = x[m-1]/4 + 3x[m]/4, y[2m+1] = 3x[m]/4 + x[m+1]/4 with x[-1] = x[H] = 0.
    x: [B, C, H, W] -> [B, C, 2H, 2W]."""
    for d in (2, 3):
        xp = F.pad(x, (1, 1) if d == 3 else (0, 0, 1, 1))
        n = x.shape[d]
        prev, mid, nxt = xp.narrow(d, 0, n), xp.narrow(d, 1, n), xp.narrow(d, 2, n)
        even, odd = torch.lerp(mid, prev, 0.25), torch.lerp(mid, nxt, 0.25)
        x = torch.stack([even, odd], dim=d + 1).flatten(d, d + 1)
    return x


def fir_upconv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """3x3 conv of the x2-upsampled x: a stride-2 transposed conv with ``weight`` (used as a
    convolution kernel, as the reference does), then the [1, 3, 3, 1] filter with gain 4.
    x: [B, I, H, W]; weight: [O, I, k, k] -> [B, O, 2H, 2W]."""
    k = weight.shape[-1]
    y = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)  # [B, O, 2H + k - 2, ...]
    p = 1 - (k - 3) // 2  # filter padding that leaves 2H samples: 1 for k = 3
    return binomial4_sum(y, (2, 3), (p, p)) * (1 / 16)


def fir_downsample(x: torch.Tensor, pad: int, down: int = 1) -> torch.Tensor:
    """[1, 3, 3, 1] / 8 per axis with ``pad`` zeros on each side, every ``down``-th output.
    x: [B, C, H, W]."""
    return binomial4_sum(x, (2, 3), (pad, pad), down) * (1 / 64)


def modulated_upconv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Modulated, demodulated 3x3 conv with x2 upsampling (StyleGAN2 eq. 1-3 with the
    resampling above). x: [B, I, H, W]; weight: [O, I, 3, 3]; styles: [B, I] -> [B, O, 2H, 2W]."""
    y = fir_upconv(x * styles.to(x.dtype)[:, :, None, None], weight.to(x.dtype))
    return y * demodulation(weight, styles, eps).to(y.dtype)[:, :, None, None]


def demodulation(weight: torch.Tensor, styles: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """StyleGAN2 eq. 3: d[b, o] = 1 / sqrt(sum_i ||W[o, i]||^2 s[b, i]^2 + eps).
    weight: [O, I, k, k]; styles: [B, I] -> [B, O]."""
    w2 = weight.square().sum(dim=(2, 3))  # [O, I]
    return (styles.square() @ w2.t().to(styles.dtype) + eps).rsqrt()


def per_sample_modconv(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, out_scale: torch.Tensor | None,
                    bias: torch.Tensor | None = None, up: bool = False) -> torch.Tensor:
    """The modulated conv with a weight per sample (StyleGAN2's "fused" form):
    W[o, i] s[b, i] out_scale[b, o], so neither the input nor the output is scaled in a pass
    of its own. The inference path (no gradients): equal to the shared-weight
    form up to float32 rounding, and faster on the CPU.

    x: [B, I, H, W]; weight: [O, I, k, k]; styles: [B, I]; out_scale: [B, O] or None; bias: [O].
    ``up``: the x2 upsampling conv of :func:`fir_upconv` (transposed conv, then the filter;
    ``bias`` is then left to the caller). Returns [B, O, H', W']."""
    B, I, H, W = x.shape
    O, k = weight.shape[0], weight.shape[-1]
    scale = styles.to(x.dtype)[:, None, :]  # [B, 1, I]
    if out_scale is not None:
        scale = scale * out_scale.to(x.dtype)[:, :, None]  # [B, O, I]: one pass over the weights below
    w = weight.to(x.dtype)[None] * scale[..., None, None]  # [B, O, I, k, k]
    # One grouped convolution (a group per sample) where the channels are few and the images
    # large; else one convolution per sample, concatenated: on the CPU the grouped kernel is
    # slower with many channels, the concatenation costs a pass over large outputs. The two
    # give the same bits, and a sample's output never depends on the rest of its batch.
    grouped = I <= 256
    if up:
        if grouped:
            y = F.conv_transpose2d(x.reshape(1, B * I, H, W), w.transpose(1, 2).reshape(B * I, O, k, k), stride=2,
                                   groups=B)
            y = y.view(B, O, *y.shape[-2:])
        else:
            y = torch.cat([F.conv_transpose2d(x[i:i + 1], w[i].transpose(0, 1), stride=2) for i in range(B)])
        p = 1 - (k - 3) // 2
        return binomial4_sum(y, (2, 3), (p, p))
    b = None if bias is None else bias.to(x.dtype)
    if grouped:
        y = F.conv2d(x.reshape(1, B * I, H, W), w.view(B * O, I, k, k), None if b is None else b.repeat(B),
                     padding=k // 2, groups=B)
        return y.view(B, O, *y.shape[-2:])
    return torch.cat([F.conv2d(x[i:i + 1], w[i], b, padding=k // 2) for i in range(B)])


class TimeStyle(nn.Module):
    """style = A(w) * (L c). w: [B, w_dim], c: [B, c_dim] -> [B, channels]."""

    def __init__(self, w_dim: int, c_dim: int, channels: int, time_lr: float = 1.0):
        super().__init__()
        self.affine = FullyConnected(w_dim, channels, bias_init=1.0)
        self.time = FullyConnected(c_dim, channels, bias=False, lr_multiplier=time_lr)
        with torch.no_grad():  # effective weight: column 0 (the constant) = 1, the rest ~1e-6
            self.time.weight.mul_(1e-6 / self.time.weight_gain)
            self.time.weight[:, 0] = 1.0 / self.time.weight_gain

    def forward(self, w: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.affine(w) * self.time(c)


class SynthesisLayer(nn.Module):
    def __init__(self, cin: int, cout: int, res: int, w_dim: int, c_dim: int, up: bool, cfg: ModelConfig):
        super().__init__()
        self.up, self.res = up, res
        self.style = TimeStyle(w_dim, c_dim, cin, cfg.time_lr)
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(res, res))
        self.clamp = cfg.conv_clamp or None

    def forward(self, x: torch.Tensor, w: torch.Tensor, c: torch.Tensor, noise: torch.Tensor | str) -> torch.Tensor:
        # x: [B, cin, r, r] (r = res / 2 when up) -> [B, cout, res, res]
        # lrelu(z) * g = lrelu(g z) for g > 0: the gain sqrt(2) is folded into the demodulation,
        # the noise strength and the bias, and the upsampling filter's 1/16 into the
        # demodulation, so each is one factor per channel instead of a pass over the output.
        styles = self.style(w, c)
        g = LRELU_GAIN
        d = demodulation(self.weight, styles) * (g / 16 if self.up else g)  # [B, cout]
        bias = self.bias * g
        noise = self.noise_input(x, noise)
        noise = None if noise is None else noise * (self.noise_strength * g).to(x.dtype)
        if not (torch.is_grad_enabled() and (x.requires_grad or styles.requires_grad or self.weight.requires_grad)):
            if not self.up and winograd.eligible(x, self.weight, any_layout=True):
                # Winograd with the styles and the demodulation applied inside its transforms
                # (vidgen/nn/winograd.py), in x's layout
                x = winograd.winograd_conv3x3(x, self.weight, bias, styles, d)
            else:
                x = per_sample_modconv(x, self.weight, styles, d, None if self.up else bias, self.up)
            if self.up:
                x.add_(bias.to(x.dtype)[:, None, None])
            if noise is not None:
                x.add_(noise)
            x = F.leaky_relu_(x, LRELU_SLOPE)
        else:
            if self.up:
                y = binomial4_sum(F.conv_transpose2d(x * styles.to(x.dtype)[:, :, None, None],
                                                     self.weight.to(x.dtype).transpose(0, 1), stride=2), (2, 3), (1, 1))
            else:
                y = winograd.conv3x3(x * styles.to(x.dtype)[:, :, None, None], self.weight.to(x.dtype))
            x = torch.addcmul(bias.to(y.dtype)[:, None, None], y, d.to(y.dtype)[:, :, None, None])
            x = F.leaky_relu(x if noise is None else x + noise, LRELU_SLOPE)
        return x if self.clamp is None else clamp_symmetric(x, self.clamp)

    def noise_input(self, x: torch.Tensor, noise: torch.Tensor | str) -> torch.Tensor | None:
        """The unit-variance noise image [B, 1, res, res] (or [res, res]) for ``noise``, or None."""
        if isinstance(noise, torch.Tensor):  # [B, 1, res, res], already unit variance
            return noise.to(x.dtype)
        if noise == "random":
            return torch.randn(x.shape[0], 1, self.res, self.res, device=x.device, dtype=x.dtype)
        if noise == "const":
            return self.noise_const.to(x.dtype)
        return None


class ToRGB(nn.Module):
    def __init__(self, cin: int, w_dim: int, c_dim: int, cfg: ModelConfig):
        super().__init__()
        self.style = TimeStyle(w_dim, c_dim, cin, cfg.time_lr)
        self.weight = nn.Parameter(torch.randn(cfg.img_channels, cin, 1, 1))
        self.bias = nn.Parameter(torch.zeros(cfg.img_channels))
        self.gain = 1.0 / math.sqrt(cin)
        self.clamp = cfg.conv_clamp or None

    def forward(self, x: torch.Tensor, w: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        styles = self.style(w, c) * self.gain
        if not (torch.is_grad_enabled() and (x.requires_grad or styles.requires_grad or self.weight.requires_grad)):
            y = per_sample_modconv(x, self.weight, styles, None, self.bias)
        else:
            y = modulated_conv2d(x, self.weight, styles, demodulate=False)
            y = y + self.bias.to(y.dtype)[:, None, None]
        return y.clamp(-self.clamp, self.clamp) if self.clamp else y


class Generator(nn.Module):
    """G(z, t) -> image [B, C, R, R] in about [-1, 1]; t in normalised units, shape [B], [B, F]
    (one t per factor) or [B, num_ws, F] (per layer)."""

    # With gradients on the CPU (training, inversion) the activations are kept channels-last:
    # oneDNN's transposed and plain convolutions, their backward and the depthwise resampling
    # filter are faster on that layout (about 10% for the G phase of a step at 256). Without
    # gradients the grouped modulated convolution wants the contiguous layout and keeps it.
    channels_last_train: bool = True

    def __init__(self, cfg: ModelConfig, axis: TimeAxis, out_rect: tuple[int, int, int, int] | None = None):
        super().__init__()
        R = cfg.resolution
        assert R >= 4 and R & (R - 1) == 0, "resolution must be a power of two"
        self.cfg = cfg
        self.time = TimeFeatures(axis, cfg.time_phase)
        c_dim = self.time.c_dim
        self.res_list = [2 ** i for i in range(2, int(math.log2(R)) + 1)]
        self.num_ws = 2 * len(self.res_list)  # 1 conv at 4x4, 2 per higher block, plus the last ToRGB
        self.mapping = MappingNetwork(cfg.z_dim, cfg.w_dim, cfg.mapping_layers)
        register_statistic(self, "w_avg", torch.zeros(cfg.w_dim))
        self.const = nn.Parameter(torch.randn(channels(cfg, 4), 4, 4))
        self.convs, self.torgbs = nn.ModuleList(), nn.ModuleList()
        for res in self.res_list:
            cout = channels(cfg, res)
            if res > 4:
                self.convs.append(SynthesisLayer(channels(cfg, res // 2), cout, res, cfg.w_dim, c_dim, True, cfg))
            self.convs.append(SynthesisLayer(cout, cout, res, cfg.w_dim, c_dim, False, cfg))
            self.torgbs.append(ToRGB(cout, cfg.w_dim, c_dim, cfg))
        rect = out_rect or (0, 0, R, R)
        self.register_buffer("out_rect", torch.tensor(rect, dtype=torch.int64))

    @property
    def axis(self) -> TimeAxis:
        return self.time.axis

    @property
    def noise_shapes(self) -> list[tuple[int, int]]:
        return [(layer.res, layer.res) for layer in self.convs]

    def map(self, z: torch.Tensor, psi: float = 1.0, update_w_avg: bool = False) -> torch.Tensor:
        """z: [B, z_dim] -> ws: [B, num_ws, w_dim] (truncated towards w_avg when psi < 1)."""
        w = self.mapping(z)
        if update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(w.detach().float().mean(0).lerp(self.w_avg, W_AVG_BETA))
        if psi != 1.0:
            w = self.w_avg.to(w.dtype).lerp(w, psi)
        return repeat(w, "b d -> b l d", l=self.num_ws)

    def make_noise(self, batch: int, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """Fixed noise inputs (one [B, 1, r, r] per conv) from a seeded generator."""
        return [torch.randn(batch, 1, h, w, generator=generator).to(device) for h, w in self.noise_shapes]

    def synthesis(self, ws: torch.Tensor, t: torch.Tensor, noise: str | list[torch.Tensor] = "random") -> torch.Tensor:
        """ws: [B, num_ws, w_dim]; t: [B], [B, F] or [B, num_ws, F] -> img [B, C, R, R]."""
        B = ws.shape[0]
        c = self.time(t).to(ws.dtype)
        cs = c if c.ndim == 3 else repeat(c, "b d -> b l d", l=self.num_ws)  # [B, L, c_dim]
        noises = noise if isinstance(noise, (list, tuple)) else [noise] * len(self.convs)
        x = repeat(self.const, "c h w -> b c h w", b=B).to(ws.dtype)
        if self.channels_last_train and x.device.type == "cpu" and torch.is_grad_enabled():
            x = x.contiguous(memory_format=torch.channels_last)
        img, li = None, 0
        for bi, res in enumerate(self.res_list):
            for _ in range(1 if res == 4 else 2):
                x = self.convs[li](x, ws[:, li], cs[:, li], noises[li])
                li += 1
            # The ToRGB of this block shares the w of the next conv (StyleGAN2 skip architecture).
            y = self.torgbs[bi](x, ws[:, li], cs[:, li])
            img = y if img is None else upsample2x(img) + y
        return self.mask(img)

    def mask(self, img: torch.Tensor) -> torch.Tensor:
        """Outside the valid rectangle of padded frames the output is -1 (black), like the data."""
        x0, y0, x1, y1 = (int(v) for v in self.out_rect)
        R = img.shape[-1]
        if (x0, y0, x1, y1) == (0, 0, R, R):
            return img
        m = torch.zeros(1, 1, R, R, device=img.device, dtype=img.dtype)
        m[..., y0:y1, x0:x1] = 1
        return img * m - (1 - m)

    def forward(self, z: torch.Tensor, t: torch.Tensor, psi: float = 1.0,
                noise: str | list[torch.Tensor] = "random") -> torch.Tensor:
        return self.synthesis(self.map(z, psi), t, noise)


class Conv(nn.Module):
    """Equalised conv with optional 2x downsampling and leaky ReLU. Downsampling filters first
    (zero padding) and then convolves with stride 2; a 1x1 conv is applied after decimating."""

    def __init__(self, cin: int, cout: int, k: int, act: bool = True, down: bool = False, bias: bool = True,
                 clamp: float | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.gain = 1.0 / math.sqrt(cin * k * k)
        self.act, self.down, self.pad, self.clamp = act, down, k // 2, clamp

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        # x: [B, cin, H, W] -> [B, cout, H', W'] (H' = H / 2 when down)
        # The output gain (times sqrt(2) before the leaky ReLU, which commutes with positive
        # factors) and the downsampling filter's 1/64 are folded into the weights and bias.
        a = gain * (LRELU_GAIN if self.act else 1.0)
        b = None if self.bias is None else (self.bias * a).to(x.dtype)
        w = (self.weight * (self.gain * a / (64 if self.down else 1))).to(x.dtype)
        if not self.down:
            x = winograd.conv3x3(x, w, b) if self.pad == 1 else F.conv2d(x, w, b, padding=self.pad)
        elif self.pad == 0:  # 1x1: decimate, then convolve
            x = F.conv2d(binomial4_sum(x, (2, 3), (1, 1), 2), w, b)
        else:  # k x k: filter with k - 1 zeros a side, then a strided conv (H + 1 -> H / 2 for k = 3)
            x = F.conv2d(binomial4_sum(x, (2, 3), (self.pad + 1,) * 2), w, b, stride=2)
        if self.act:
            x = F.leaky_relu(x, LRELU_SLOPE)
            return x if self.clamp is None else clamp_symmetric(x, self.clamp * gain)
        return x


class DBlock(nn.Module):
    def __init__(self, cin: int, tmp: int, cout: int, img_channels: int, clamp: float | None):
        super().__init__()
        self.fromrgb = Conv(img_channels, tmp, 1, clamp=clamp) if cin == 0 else None
        self.conv0 = Conv(tmp, tmp, 3, clamp=clamp)
        self.conv1 = Conv(tmp, cout, 3, down=True, clamp=clamp)
        self.skip = Conv(tmp, cout, 1, act=False, down=True, bias=False)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        if self.fromrgb is not None:
            x = self.fromrgb(img)
        y = self.skip(x, gain=math.sqrt(0.5))
        return y + self.conv1(self.conv0(x), gain=math.sqrt(0.5))


def minibatch_std(x: torch.Tensor, group: int) -> torch.Tensor:
    """Append the std over groups of samples as one extra channel. x: [B, C, H, W]."""
    B, C, H, W = x.shape
    G = B if group <= 0 else min(group, B)  # group <= 0: the whole minibatch
    while B % G:
        G -= 1
    y = rearrange(x, "(g n) c h w -> g n c h w", g=G).float()
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # [n]
    y = repeat(y, "n -> (g n) 1 h w", g=G, h=H, w=W).to(x.dtype)
    return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """D(img, t) -> logit [B]. t: normalised times, [B] or [B, F]."""

    # On the CPU the activations are kept channels-last: oneDNN's convolutions and their
    # backward run faster on that layout (about 4% for D at 256, forward and backward).
    channels_last: bool = True

    def __init__(self, cfg: ModelConfig, axis: TimeAxis):
        super().__init__()
        R = cfg.resolution
        clamp = cfg.conv_clamp or None
        self.cfg = cfg
        self.time = TimeFeatures(axis, cfg.time_phase)
        res_list = [2 ** i for i in range(int(math.log2(R)), 2, -1)]
        self.blocks = nn.ModuleList(
            DBlock(0 if res == R else channels(cfg, res), channels(cfg, res), channels(cfg, res // 2),
                   cfg.img_channels, clamp) for res in res_list)
        c4 = channels(cfg, 4)
        self.cmap_dim = cfg.cmap_dim or c4
        # Conditioning MLP: embed c, normalise, 8 equalised layers (lr multiplier 0.01).
        self.embed = FullyConnected(self.time.c_dim, self.cmap_dim)
        self.cond_mlp = MappingNetwork(self.cmap_dim, self.cmap_dim, cfg.cond_mlp_layers, lr_multiplier=cfg.cond_lr,
                                       normalize_input=True)
        self.mbstd_group = cfg.mbstd_group
        self.conv = Conv(c4 + 1, c4, 3, clamp=clamp)
        self.fc = FullyConnected(c4 * 16, c4, activation="lrelu")
        self.out = FullyConnected(c4, self.cmap_dim)

    def cmap(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.cond_mlp(self.embed(self.time(t).to(dtype)))

    def forward(self, img: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # img: [B, C, R, R]; t: [B] or [B, F]
        if self.channels_last and img.device.type == "cpu":
            img = img.contiguous(memory_format=torch.channels_last)
        x = None
        for block in self.blocks:
            x = block(x, img)
        x = minibatch_std(x, self.mbstd_group)
        x = self.fc(rearrange(self.conv(x), "b c h w -> b (c h w)"))
        x = self.out(x)
        # Projection conditioning: <features, cmap> / sqrt(cmap_dim).
        return (x * self.cmap(t, x.dtype)).sum(dim=1) / math.sqrt(self.cmap_dim)


def summary(G: Generator, D: Discriminator) -> dict[str, float]:
    return {"G": count_parameters(G), "G.mapping": count_parameters(G.mapping), "num_ws": G.num_ws, "D": count_parameters(D),
            "D.cond_mlp": count_parameters(D.embed) + count_parameters(D.cond_mlp)}
