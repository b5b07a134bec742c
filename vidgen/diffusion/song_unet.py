"""DDPM++ and NCSN++ (Song et al. 2021, "Score-Based Generative Modeling through Stochastic
Differential Equations"), as configured in EDM (Karras et al. 2022, appendix F.2).

One network with two flavours chosen by ``model.arch``:

| | DDPM++ (``ddpmpp``) | NCSN++ (``ncsnpp``) |
|---|---|---|
| noise embedding | positional, ``model_channels`` wide | random Fourier, 2x wide |
| encoder | standard | residual: an extra 3x3 path from the input image, averaged in per level |
| resampling filter | [1, 1] (box) | [1, 3, 3, 1] |

The first conv outputs ``model_channels`` whatever ``channel_mult[0]`` is; decoder blocks
take the concatenated skip; self-attention (one head) sits in the last decoder block of an
attention resolution and in every encoder block there; the output is the sum of the "aux"
heads (a norm + 3x3 conv at the top level, and at every level with the ``skip`` decoder).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vidgen.diffusion.edm_layers import (Conv2d, FourierEmbedding, GroupNorm, Linear, PositionalEmbedding,
                                         UNetBlock)


class SongUNet(nn.Module):
    """``F(x_in, c_noise, labels, augment_labels)``; x_in: [B, C, R, R] -> [B, C, R, R].
    ``cfg`` is a resolved :class:`vidgen.diffusion.unet.UNetConfig` (arch ddpmpp / ncsnpp)."""

    def __init__(self, cfg, out_channels: int | None = None):
        super().__init__()
        self.cfg = cfg
        in_channels = cfg.img_channels
        out_channels = out_channels or cfg.img_channels
        emb_channels = cfg.model_channels * cfg.channel_mult_emb
        noise_channels = cfg.model_channels * cfg.channel_mult_noise
        init = dict(init_mode="xavier_uniform")
        init_zero = dict(init_mode="xavier_uniform", init_weight=1e-5)
        init_attn = dict(init_mode="xavier_uniform", init_weight=math.sqrt(0.2))
        block = dict(emb_channels=emb_channels, num_heads=1, dropout=cfg.dropout, skip_scale=math.sqrt(0.5), eps=1e-6,
                     resample_filter=cfg.resample_filter, resample_proj=True, adaptive_scale=False,
                     init=init, init_zero=init_zero, init_attn=init_attn)

        # Mapping: noise embedding (+ label, + augmentation labels) -> two linear layers.
        if cfg.embedding_type == "positional":
            self.map_noise = PositionalEmbedding(noise_channels, endpoint=True)
        else:
            self.map_noise = FourierEmbedding(noise_channels)
        self.map_label = Linear(cfg.label_dim, noise_channels, **init) if cfg.label_dim else None
        self.map_augment = Linear(cfg.augment_dim, noise_channels, bias=False, **init) if cfg.augment_dim else None
        self.map_layer0 = Linear(noise_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)

        # Encoder; "aux" entries are the input-image paths of the skip / residual encoders.
        self.enc = nn.ModuleDict()
        cout = caux = in_channels
        f = cfg.resample_filter
        for level, mult in enumerate(cfg.channel_mult):
            res = cfg.img_resolution >> level
            if level == 0:
                cin, cout = cout, cfg.model_channels
                self.enc[f"{res}x{res}_conv"] = Conv2d(cin, cout, 3, **init)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **block)
                if cfg.encoder_type == "skip":
                    self.enc[f"{res}x{res}_aux_down"] = Conv2d(caux, caux, 0, down=True, resample_filter=f)
                    self.enc[f"{res}x{res}_aux_skip"] = Conv2d(caux, cout, 1, **init)
                if cfg.encoder_type == "residual":
                    self.enc[f"{res}x{res}_aux_residual"] = Conv2d(caux, cout, 3, down=True, resample_filter=f,
                                                                   fused_resample=True, **init)
                    caux = cout
            for i in range(cfg.num_blocks):
                cin, cout = cout, cfg.model_channels * mult
                self.enc[f"{res}x{res}_block{i}"] = UNetBlock(cin, cout, attention=res in cfg.attn_resolutions, **block)
        skips = [b.out_channels for name, b in self.enc.items() if "aux" not in name]

        # Decoder.
        self.dec = nn.ModuleDict()
        last = len(cfg.channel_mult) - 1
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            res = cfg.img_resolution >> level
            if level == last:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **block)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **block)
            for i in range(cfg.num_blocks + 1):
                cin, cout = cout + skips.pop(), cfg.model_channels * mult
                attn = i == cfg.num_blocks and res in cfg.attn_resolutions
                self.dec[f"{res}x{res}_block{i}"] = UNetBlock(cin, cout, attention=attn, **block)
            if cfg.decoder_type == "skip" or level == 0:
                if cfg.decoder_type == "skip" and level < last:
                    self.dec[f"{res}x{res}_aux_up"] = Conv2d(out_channels, out_channels, 0, up=True, resample_filter=f)
                self.dec[f"{res}x{res}_aux_norm"] = GroupNorm(cout, eps=1e-6)
                self.dec[f"{res}x{res}_aux_conv"] = Conv2d(cout, out_channels, 3, **init_zero)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor | None = None,
                tokens: torch.Tensor | None = None, augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        # x: [B, C, R, R], c_noise: [B], labels: [B or 1, label_dim], augment_labels: [B, augment_dim]
        emb = self.map_noise(c_noise)
        emb = rearrange(emb, "b (two c) -> b two c", two=2).flip(1).flatten(1)  # [sin, cos]
        if self.map_label is not None:
            emb = emb + self.map_label(labels * math.sqrt(self.map_label.in_features))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))

        skips, aux = [], x
        for name, block in self.enc.items():
            if "aux_down" in name:
                aux = block(aux)
            elif "aux_skip" in name:
                x = skips[-1] = x + block(aux)
            elif "aux_residual" in name:
                x = skips[-1] = aux = (x + block(aux)) / math.sqrt(2)
            else:
                x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
                skips.append(x)

        aux, tmp = None, None
        for name, block in self.dec.items():
            if "aux_up" in name:
                aux = block(aux)
            elif "aux_norm" in name:
                tmp = block(x)
            elif "aux_conv" in name:
                tmp = block(F.silu(tmp))
                aux = tmp if aux is None else tmp + aux
            else:
                if x.shape[1] != block.in_channels:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = block(x, emb)
        return aux
