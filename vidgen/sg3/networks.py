"""StyleGAN3 networks (Karras et al. 2021, "Alias-Free Generative Adversarial Networks").

Generator = :class:`StyleMapping` (z, class label -> 16 ws, truncation around w_avg) +
:class:`SynthesisNetwork`: Fourier-feature input (with the user transform) followed by
14 alias-free layers and ToRGB (docs/METHODS.md 8; vidgen.nn.alias_free). Config T uses 3x3
convolutions and separable Kaiser filters; config R uses 1x1 convolutions, radially
symmetric down filters and twice the channels (set in its presets).
Discriminator = the StyleGAN2 residual discriminator with minibatch std and projection
label conditioning, as StyleGAN3 trains with (vidgen.nn.stylegan).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from vidgen.errors import ConfigError
from vidgen.nn.alias_free import FourierFeatures, SynthesisLayer, layer_specs
from vidgen.nn.stylegan import ResidualDiscriminator, StyleMapping


@dataclass
class SG3ModelConfig:
    """The ``model`` section: generator sizes, then the discriminator's (``d_*``)."""

    arch: Literal["T", "R"] = "T"  # T: 3x3 convs; R: 1x1 convs and radial down filters
    resolution: int = 1024
    img_channels: int = 3
    c_dim: int = 0  # classes (one-hot labels); 0: unconditional
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 2
    channel_base: int = 32768  # config R presets double it (65536) and channel_max (1024)
    channel_max: int = 512
    num_layers: int = 14
    num_critical: int = 2
    first_cutoff: float = 2.0
    first_stopband: float = 2 ** 2.1
    last_stopband_rel: float = 2 ** 0.3
    margin: int = 10
    output_scale: float = 0.25
    conv_clamp: float | None = 256.0
    magnitude_ema_beta: float = 0.999  # presets: 0.5 ** (batch / 20000)
    w_avg_beta: float = 0.998
    d_channel_base: int = 32768
    d_channel_max: int = 512
    d_mbstd_group: int = 4
    d_mbstd_channels: int = 1
    d_mapping_layers: int = 8
    d_cmap_dim: int = 0  # label embedding of a conditional D; 0: the channels at 4x4
    d_conv_clamp: float | None = 256.0

    @property
    def conv_kernel(self) -> int:
        return 3 if self.arch == "T" else 1

    @property
    def radial_filters(self) -> bool:
        return self.arch == "R"

    @property
    def num_ws(self) -> int:
        return self.num_layers + 2  # the input, every layer and ToRGB

    def check(self) -> None:
        r = self.resolution
        if r < 8 or r & (r - 1):
            raise ConfigError(f"model.resolution must be a power of two >= 8; got {r}")
        if self.num_critical < 1 or self.num_layers <= self.num_critical:
            raise ConfigError(f"model.num_layers ({self.num_layers}) must exceed model.num_critical "
                              f"({self.num_critical}) >= 1")
        if self.c_dim < 0:
            raise ConfigError(f"model.c_dim must be >= 0; got {self.c_dim}")


class SynthesisNetwork(nn.Module):
    """ws: [B, num_ws, w_dim] -> images [B, C, res, res] (about [-1, 1])."""

    def __init__(self, cfg: SG3ModelConfig):
        super().__init__()
        r = cfg.resolution
        self.cfg = cfg
        self.specs = layer_specs(r, r, cfg.img_channels, cfg.channel_base, cfg.channel_max, cfg.num_layers,
                                 cfg.num_critical, cfg.first_cutoff, cfg.first_stopband, cfg.last_stopband_rel,
                                 cfg.margin, fourier_input=True)
        first = self.specs[0]
        self.input = FourierFeatures(cfg.w_dim, first.in_channels, first.in_size, first.in_rate, first.in_cutoff)
        self.layers = nn.ModuleList(
            SynthesisLayer(cfg.w_dim, s, conv_kernel=cfg.conv_kernel, conv_clamp=cfg.conv_clamp,
                           magnitude_ema_beta=cfg.magnitude_ema_beta, use_radial_filters=cfg.radial_filters)
            for s in self.specs)

    def forward(self, ws: torch.Tensor, transform: torch.Tensor | None = None, update_emas: bool = False) -> torch.Tensor:
        """``transform``: [3, 3] or [B, 3, 3] inverse image transform for this call (see
        FourierFeatures); None uses the ``input.transform`` buffer."""
        assert ws.shape[1:] == (self.cfg.num_ws, self.cfg.w_dim), ws.shape
        ws = ws.float().unbind(dim=1)
        x = self.input(ws[0], transform)
        for layer, w in zip(self.layers, ws[1:]):
            x = layer(x, w, update_emas=update_emas)
        return x * self.cfg.output_scale


class Generator(nn.Module):
    """z: [B, z_dim], c: [B, c_dim] -> images [B, C, res, res]."""

    def __init__(self, cfg: SG3ModelConfig):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        self.synthesis = SynthesisNetwork(cfg)
        self.mapping = StyleMapping(cfg.z_dim, cfg.c_dim, cfg.w_dim, cfg.num_ws, cfg.mapping_layers,
                                    w_avg_beta=cfg.w_avg_beta)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, psi: float = 1.0, cutoff: int | None = None,
                transform: torch.Tensor | None = None, update_emas: bool = False) -> torch.Tensor:
        ws = self.mapping(z, c, psi=psi, cutoff=cutoff, update_emas=update_emas)
        return self.synthesis(ws, transform=transform, update_emas=update_emas)

    def labels(self, classes: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """One-hot labels [n, c_dim] of ``classes`` (int tensor [n]); None when unconditional."""
        if self.cfg.c_dim == 0:
            return None
        assert classes is not None, "a conditional generator needs class indices"
        return torch.nn.functional.one_hot(classes.long(), self.cfg.c_dim).float().to(self.mapping.w_avg.device)


def build_discriminator(cfg: SG3ModelConfig) -> ResidualDiscriminator:
    return ResidualDiscriminator(cfg.resolution, cfg.img_channels, cfg.d_channel_base, cfg.d_channel_max,
                                 c_dim=cfg.c_dim, cmap_dim=cfg.d_cmap_dim or None, mbstd_group=cfg.d_mbstd_group, mbstd_channels=cfg.d_mbstd_channels,
                                 mapping_layers=cfg.d_mapping_layers, conv_clamp=cfg.d_conv_clamp)
