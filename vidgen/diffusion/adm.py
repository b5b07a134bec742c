"""ADM, the class-conditional ImageNet U-Net of Dhariwal & Nichol 2021 ("Diffusion Models
Beat GANs on Image Synthesis"), as configured in EDM (Karras et al. 2022, appendix F.2).

Residual blocks with adaptive group-norm (scale and shift from the embedding), 64 channels
per attention head (narrower layers get no attention), box-filter resampling inside the
down / up blocks, a positional noise embedding, and the class embedding added after the
two mapping layers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vidgen.diffusion.edm_layers import Conv2d, GroupNorm, Linear, PositionalEmbedding, UNetBlock


class DhariwalUNet(nn.Module):
    """``F(x_in, c_noise, labels, augment_labels)``; x_in: [B, C, R, R] -> [B, out_channels, R, R]
    (``out_channels`` 2C for iDDPM's learned variances). ``cfg``: a resolved UNetConfig (arch adm)."""

    def __init__(self, cfg, out_channels: int | None = None):
        super().__init__()
        self.cfg = cfg
        out_channels = out_channels or cfg.img_channels
        emb_channels = cfg.model_channels * cfg.channel_mult_emb
        init = dict(init_mode="kaiming_uniform", init_weight=math.sqrt(1 / 3), init_bias=math.sqrt(1 / 3))
        init_zero = dict(init_mode="kaiming_uniform", init_weight=0, init_bias=0)
        block = dict(emb_channels=emb_channels, channels_per_head=cfg.channels_per_head, dropout=cfg.dropout,
                     init=init, init_zero=init_zero)

        self.map_noise = PositionalEmbedding(cfg.model_channels)
        self.map_augment = Linear(cfg.augment_dim, cfg.model_channels, bias=False, **init_zero) if cfg.augment_dim else None
        self.map_layer0 = Linear(cfg.model_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)
        self.map_label = Linear(cfg.label_dim, emb_channels, bias=False, init_mode="kaiming_normal",
                                init_weight=math.sqrt(cfg.label_dim)) if cfg.label_dim else None

        self.enc = nn.ModuleDict()
        cout = cfg.img_channels
        for level, mult in enumerate(cfg.channel_mult):
            res = cfg.img_resolution >> level
            if level == 0:
                cin, cout = cout, cfg.model_channels * mult
                self.enc[f"{res}x{res}_conv"] = Conv2d(cin, cout, 3, **init)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **block)
            for i in range(cfg.num_blocks):
                cin, cout = cout, cfg.model_channels * mult
                self.enc[f"{res}x{res}_block{i}"] = UNetBlock(cin, cout, attention=res in cfg.attn_resolutions, **block)
        skips = [b.out_channels for b in self.enc.values()]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            res = cfg.img_resolution >> level
            if level == len(cfg.channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **block)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **block)
            for i in range(cfg.num_blocks + 1):
                cin, cout = cout + skips.pop(), cfg.model_channels * mult
                self.dec[f"{res}x{res}_block{i}"] = UNetBlock(cin, cout, attention=res in cfg.attn_resolutions, **block)
        self.out_norm = GroupNorm(cout)
        self.out_conv = Conv2d(cout, out_channels, 3, **init_zero)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor | None = None,
                tokens: torch.Tensor | None = None, augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        # x: [B, C, R, R], c_noise: [B], labels: [B or 1, label_dim]
        emb = self.map_noise(c_noise)
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = self.map_layer1(F.silu(self.map_layer0(emb)))
        if self.map_label is not None:
            emb = emb + self.map_label(labels)
        emb = F.silu(emb)

        skips = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
            skips.append(x)
        for block in self.dec.values():
            if x.shape[1] != block.in_channels:
                x = torch.cat([x, skips.pop()], dim=1)
            x = block(x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))
