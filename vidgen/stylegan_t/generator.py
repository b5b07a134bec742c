"""The StyleGAN-T generator (Sauer et al. 2023, "StyleGAN-T: Unlocking the Power of GANs for
Fast Large-Scale Text-to-Image Synthesis", section 3.1; docs/STYLEGAN_T.md).

- Mapping: ``x = MLP(normalize(z))`` (2 equalised layers, learning rate x0.01); the text
  embedding ``c`` (unit norm, from the frozen text encoder) is concatenated:
  ``w = [x, c]``, the same w for every layer. Truncation (the variation / text-alignment
  control) pulls only the z part towards its running mean: ``x = lerp(x_avg, x, psi)``.
- Synthesis: from 8x8 (StyleGAN3 Fourier features) to the output resolution; per
  resolution one x2 up-sampling modulated conv (not in the first block), then
  ``num_res_blocks`` pairs of (modulated conv, residual modulated conv). A residual conv
  group-normalises its input, and adds its output scaled by a layer scale (init 1e-5):
  ``(x + gamma * y) * sqrt(2)``. Styles are "split" (``s = a * b + c`` from one affine map of
  w, 3x wider), convs are demodulated, noise inputs as StyleGAN2. "skip" output: an RGB
  image per resolution, summed after x2 up-sampling ([1, 3, 3, 1] filter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidgen.errors import ConfigError
from vidgen.nn.alias_free import FourierFeatures
from vidgen.nn.filters import upfirdn2d
from vidgen.nn.stats import register_statistic
from vidgen.nn.style import FullyConnected, lrelu_gain, modulated_conv2d, normalize_2nd_moment
from vidgen.nn.text import TextEncoder

RESAMPLE = np.array([1.0, 3.0, 3.0, 1.0]) / 8.0  # [1, 3, 3, 1] low-pass of the x2 up-sampling


@dataclass
class GeneratorConfig:
    """The ``G`` section of a StyleGAN-T config (paper "lite": channel_base 32768,
    channel_max 512, num_res_blocks 2; "full": 65536, 2048, 3)."""

    z_dim: int = 64
    img_resolution: int = 64
    img_channels: int = 3
    channel_base: int = 32768
    channel_max: int = 512
    num_res_blocks: int = 2
    start_resolution: int = 8  # first block (StyleGAN-T: 2^3)
    architecture: Literal["skip", "orig"] = "skip"
    mapping_layers: int = 2
    mapping_lr: float = 0.01
    x_avg_beta: float = 0.995  # running mean of the mapped z (truncation centre)
    conv_clamp: float = 256.0  # 0: off
    layer_scale_init: float = 1e-5
    gn_groups: int = 32
    fourier_bandwidth: float = 2.0
    train_mode: Literal["all", "text_encoder"] = "all"  # what G's optimiser trains (paper: all, then the text encoder)

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    def resolutions(self) -> list[int]:
        r, s = self.img_resolution, self.start_resolution
        if r < s or r & (r - 1) or s & (s - 1):
            raise ConfigError(f"G.img_resolution ({r}) and G.start_resolution ({s}) must be powers of two, "
                              "the first at least the second")
        return [2 ** i for i in range(int(math.log2(s)), int(math.log2(r)) + 1)]


class StyleSplit(nn.Module):
    """Styles ``a * b + c`` from one affine map of w to 3 x ``channels`` (bias init 1)."""

    def __init__(self, w_dim: int, channels: int):
        super().__init__()
        self.proj = FullyConnected(w_dim, 3 * channels, bias_init=1.0)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        # w: [B, w_dim] -> [B, channels]
        a, b, c = self.proj(w).chunk(3, dim=1)
        return a * b + c


def modulated_up_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Demodulated 3x3 conv on the x2 up-sampled input (StyleGAN2 up-sampling conv).

    x: [B, I, H, W], weight: [O, I, 3, 3], styles: [B, I] -> [B, O, 2H, 2W]. Equal to zero
    insertion, the [1, 3, 3, 1] filter (gain 4) and a 'same' convolution with the weight, done
    as a stride-2 transposed convolution followed by the filter.
    """
    x = x * styles.to(x.dtype)[:, :, None, None]
    y = F.conv_transpose2d(x, weight.to(x.dtype).transpose(0, 1), stride=2)  # [B, O, 2H + 1, 2W + 1]
    y = upfirdn2d(y, RESAMPLE, padding=1, gain=2.0)
    d = (styles.square() @ weight.square().sum(dim=(2, 3)).t().to(styles.dtype) + eps).rsqrt()  # [B, O]
    return y * d.to(y.dtype)[:, :, None, None]


def upsample_image(img: torch.Tensor) -> torch.Tensor:
    """x2 up-sampling of the skip image: zero insertion and the [1, 3, 3, 1] filter, gain 4."""
    return upfirdn2d(img, RESAMPLE, up=2, padding=(2, 1), gain=2.0)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv + noise + bias + leaky ReLU; x2 up-sampling, or residual."""

    def __init__(self, cin: int, cout: int, w_dim: int, res: int, cfg: GeneratorConfig, up: bool = False,
                 residual: bool = False):
        super().__init__()
        assert not (up and residual) and (not residual or cin == cout)
        self.up, self.residual, self.res = up, residual, res
        self.clamp = cfg.conv_clamp or None
        self.affine = StyleSplit(w_dim, cin)
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(res, res))
        if residual:
            self.norm = nn.GroupNorm(cfg.gn_groups, cout)
            self.gamma = nn.Parameter(torch.full((1, cout, 1, 1), cfg.layer_scale_init))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise, gain: float = 1.0) -> torch.Tensor:
        # x: [B, cin, r, r] (r = res / 2 when up), w: [B, w_dim] -> [B, cout, res, res]
        styles = self.affine(w)
        if self.residual:  # group norm in float32, then the input of the residual sum is the normalised x
            x = self.norm(x.float()).to(x.dtype)
        y = modulated_up_conv2d(x, self.weight, styles) if self.up else \
            modulated_conv2d(x, self.weight, styles, padding=1)
        n = self._noise(noise, y)
        if n is not None:
            y = y + n * self.noise_strength.to(y.dtype)
        clamp = self.clamp * gain if self.clamp else None
        y = lrelu_gain(y + self.bias.to(y.dtype)[:, None, None], gain=math.sqrt(2.0) * gain, clamp=clamp)
        if self.residual:
            y = (self.gamma.to(y.dtype) * y + x) * math.sqrt(2.0)
        return y

    def _noise(self, noise, y: torch.Tensor) -> torch.Tensor | None:
        if noise == "const":
            return self.noise_const.to(y.dtype)
        if noise == "random":
            return torch.randn(y.shape[0], 1, self.res, self.res, device=y.device, dtype=y.dtype)
        if noise == "none":
            return None
        n = next(noise)  # replay: one [B, 1, res, res] draw per layer, in layer order
        assert n.shape[-2:] == (self.res, self.res), (tuple(n.shape), self.res)
        return n.to(y.dtype)


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation, styles scaled by 1/sqrt(cin), clamped."""

    def __init__(self, cin: int, cout: int, w_dim: int, cfg: GeneratorConfig):
        super().__init__()
        self.affine = StyleSplit(w_dim, cin)
        self.weight = nn.Parameter(0.1 * torch.randn(cout, cin, 1, 1))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.gain = 1.0 / math.sqrt(cin)
        self.clamp = cfg.conv_clamp or None

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        y = modulated_conv2d(x, self.weight, self.affine(w) * self.gain, demodulate=False)
        y = y + self.bias.to(y.dtype)[:, None, None]
        return y.clamp(-self.clamp, self.clamp) if self.clamp else y


class SynthesisBlock(nn.Module):
    """One resolution: input (Fourier features, first block) or x2 up-sampling conv, then
    ``num_res_blocks`` (conv, residual conv) pairs, then ToRGB (skip architecture / last)."""

    def __init__(self, cin: int, cout: int, w_dim: int, res: int, is_last: bool, cfg: GeneratorConfig):
        super().__init__()
        self.res = res
        if cin == 0:
            self.input = FourierFeatures(w_dim, cout, (res, res), sampling_rate=res, bandwidth=cfg.fourier_bandwidth)
        else:
            self.conv0 = SynthesisLayer(cin, cout, w_dim, res, cfg, up=True)
        layers = []
        for _ in range(cfg.num_res_blocks):
            layers += [SynthesisLayer(cout, cout, w_dim, res, cfg),
                       SynthesisLayer(cout, cout, w_dim, res, cfg, residual=True)]
        self.convs = nn.ModuleList(layers)
        self.torgb = ToRGB(cout, cfg.img_channels, w_dim, cfg) if is_last or cfg.architecture == "skip" else None
        self.num_conv = 1 + len(layers)  # the input / up-sampling conv consumes a w too
        self.num_torgb = int(self.torgb is not None)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, noise):
        # ws: [B, num_conv + num_torgb, w_dim]
        w = iter(ws.unbind(dim=1))
        x = self.input(next(w)) if x is None else self.conv0(x, next(w), noise)
        for layer in self.convs:
            x = layer(x, next(w), noise, gain=math.sqrt(0.5))
        if img is not None:
            img = upsample_image(img)
        if self.torgb is not None:
            y = self.torgb(x, next(w)).float()
            img = y if img is None else img + y
        return x, img


class Synthesis(nn.Module):
    """ws [B, num_ws, w_dim] -> image [B, img_channels, R, R] (about [-1, 1])."""

    def __init__(self, w_dim: int, cfg: GeneratorConfig):
        super().__init__()
        res_list = cfg.resolutions()
        self.blocks = nn.ModuleDict()
        self.num_ws = 0
        for res in res_list:
            cin = cfg.channels(res // 2) if res > res_list[0] else 0
            block = SynthesisBlock(cin, cfg.channels(res), w_dim, res, res == res_list[-1], cfg)
            self.blocks[f"b{res}"] = block
            self.num_ws += block.num_conv + (block.num_torgb if res == res_list[-1] else 0)

    def noise_shapes(self) -> list[int]:
        """Resolution of each noise input, in the order the layers draw them."""
        return [layer.res for b in self.blocks.values() for layer in
                ([b.conv0] if hasattr(b, "conv0") else []) + list(b.convs)]

    def forward(self, ws: torch.Tensor, noise: str | list[torch.Tensor] = "random") -> torch.Tensor:
        """noise: "const" (the stored maps), "random", "none", or a list of [B, 1, r, r] draws
        (one per noise input, in :meth:`noise_shapes` order)."""
        if not isinstance(noise, str):
            noise = iter(noise)
        elif noise not in ("const", "random", "none"):
            raise ConfigError(f"noise mode {noise!r}: use const, random or none")
        x = img = None
        i = 0
        for block in self.blocks.values():
            # a block's ToRGB shares the w of the next block's first layer (StyleGAN2 indexing)
            x, img = block(x, img, ws[:, i:i + block.num_conv + block.num_torgb], noise)
            i += block.num_conv
        return img


class Mapping(nn.Module):
    """(z, c) -> ws [B, num_ws, z_dim + c_dim]: ``[lerp(x_avg, MLP(normalize(z)), psi), c]``."""

    def __init__(self, z_dim: int, c_dim: int, num_ws: int, cfg: GeneratorConfig):
        super().__init__()
        self.z_dim, self.c_dim, self.num_ws = z_dim, c_dim, num_ws
        self.x_avg_beta = cfg.x_avg_beta
        n = cfg.mapping_layers
        self.mlp = nn.ModuleList(FullyConnected(z_dim, z_dim, activation="linear" if i == n - 1 else "lrelu",
                                                lr_multiplier=cfg.mapping_lr) for i in range(n))
        register_statistic(self, "x_avg", torch.zeros(z_dim))

    def forward(self, z: torch.Tensor, c: torch.Tensor, psi: float = 1.0) -> torch.Tensor:
        # z: [B, z_dim], c: [B, c_dim] (unit norm) -> [B, num_ws, z_dim + c_dim]
        x = normalize_2nd_moment(z)
        for fc in self.mlp:
            x = fc(x)
        if self.training and self.x_avg_beta is not None:
            with torch.no_grad():
                self.x_avg.copy_(x.detach().mean(0).lerp(self.x_avg, self.x_avg_beta))
        if psi != 1:
            x = self.x_avg.to(x.dtype).lerp(x, psi)
        w = torch.cat([x, c.to(x.dtype)], dim=1)
        return w[:, None].expand(-1, self.num_ws, -1)


class Generator(nn.Module):
    """G(z, prompts or embeddings, psi) -> images [B, C, R, R]; ``text`` is the frozen encoder."""

    def __init__(self, cfg: GeneratorConfig, text: TextEncoder):
        super().__init__()
        self.cfg = cfg
        self.text = text
        self.c_dim, self.z_dim = text.dim, cfg.z_dim
        self.w_dim = cfg.z_dim + text.dim
        self.synthesis = Synthesis(self.w_dim, cfg)
        self.num_ws = self.synthesis.num_ws
        self.mapping = Mapping(cfg.z_dim, text.dim, self.num_ws, cfg)
        self.text.requires_grad_(cfg.train_mode == "text_encoder")
        self.mapping.requires_grad_(cfg.train_mode == "all")
        self.synthesis.requires_grad_(cfg.train_mode == "all")

    @property
    def img_resolution(self) -> int:
        return self.cfg.img_resolution

    def embed(self, c: torch.Tensor | list[str]) -> torch.Tensor:
        """Prompts -> unit-norm embeddings [B, c_dim]; tensors pass through."""
        return c if isinstance(c, torch.Tensor) else self.text(list(c))

    def forward(self, z: torch.Tensor, c: torch.Tensor | list[str], psi: float = 1.0,
                noise: str | list[torch.Tensor] = "random") -> torch.Tensor:
        return self.synthesis(self.mapping(z, self.embed(c), psi), noise)


