"""The ``model`` config section of every architecture, and the EDM2 magnitude-preserving U-Net
(docs/METHODS.md section 4) with named presets.

Encoder: a 3x3 input conv (with an extra constant-1 channel), then per resolution a down-
sampling block and ``num_blocks`` blocks; decoder: two middle blocks, then per resolution an
up-sampling block and ``num_blocks + 1`` blocks taking the MP-concatenated skip. Every block:
(enc: pixel norm) -> mp_silu -> 3x3 conv -> scale by (1 + emb gain) -> mp_silu -> dropout ->
3x3 conv -> mp_sum(skip, t=0.3) -> [cosine self-attention] -> [cross-attention to tokens]
-> clip to +-256. The noise embedding is MP-Fourier(c_noise) -> linear, MP-summed with the
label embedding (t = 0.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vidgen.errors import ConfigError
from vidgen.nn import is_channels_last
from vidgen.nn.attention import attention
from vidgen.nn.mp import SILU_GAIN, MPConv, MPFourier, mp_cat, mp_silu, mp_sum, normalize, resample
from vidgen.nn.style import clamp_symmetric


Arch = Literal["edm2", "ddpmpp", "ncsnpp", "adm"]


@dataclass
class UNetConfig:
    """Shape of the network (the ``model`` section of a diffusion config). Fields left at None
    come from the preset, then from the defaults of ``arch`` (:data:`ARCH_DEFAULTS`)."""

    arch: Arch = "edm2"  # edm2: MP U-Net (this file); ddpmpp / ncsnpp: song_unet.py; adm: adm.py
    preset: str = ""  # "xs".."xxl" / "tiny": fills the fields below that are left at None
    img_resolution: int = 64
    img_channels: int = 4
    label_dim: int = 1000  # 0: unconditional
    model_channels: int | None = None
    channel_mult: tuple[int, ...] | None = None
    num_blocks: int | None = None
    attn_resolutions: tuple[int, ...] | None = None
    dropout: float | None = None
    channels_per_head: int = 64
    channel_mult_emb: int | None = None  # embedding width / model_channels (edm2 default: max(channel_mult))
    channel_mult_noise: int | None = None  # noise embedding width / model_channels (edm2: channel_mult[0])
    logvar_channels: int | None = None  # EDM2 uncertainty head (edm2: 128); 0: none
    # EDM's networks (DDPM++ / NCSN++ / ADM)
    augment_dim: int = 0  # augmentation-label input (9 in the published DDPM++ / NCSN++ models; never fed)
    embedding_type: Literal["positional", "fourier"] | None = None
    encoder_type: Literal["standard", "skip", "residual"] | None = None
    decoder_type: Literal["standard", "skip"] | None = None
    resample_filter: tuple[int, ...] | None = None
    # EDM2 only
    token_dim: int = 0  # > 0: cross-attention to [B, T, token_dim] token embeddings
    cross_attn_resolutions: tuple[int, ...] = (16, 8)
    res_balance: float = 0.3
    attn_balance: float = 0.3
    label_balance: float = 0.5
    concat_balance: float = 0.5
    clip_act: float = 256.0


# EDM2 ImageNet-512 latent presets (4 channels at 64x64, 1000 classes), and a CPU one.
PRESETS: dict[str, dict] = {
    "xs": dict(model_channels=128, dropout=0.0),
    "s": dict(model_channels=192, dropout=0.0),
    "m": dict(model_channels=256, dropout=0.1),
    "l": dict(model_channels=320, dropout=0.1),
    "xl": dict(model_channels=384, dropout=0.1),
    "xxl": dict(model_channels=448, dropout=0.1),
    "tiny": dict(model_channels=32, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(8,), dropout=0.0,
                 channels_per_head=32),
}
# Defaults of each architecture (EDM2 train_edm2.py; EDM train.py and its networks, appendix F.2).
_SONG = dict(model_channels=128, channel_mult=(2, 2, 2), channel_mult_emb=4, num_blocks=4, attn_resolutions=(16,),
             dropout=0.10, logvar_channels=0, encoder_type="standard", decoder_type="standard")
ARCH_DEFAULTS: dict[str, dict] = {
    "edm2": dict(channel_mult=(1, 2, 3, 4), num_blocks=3, attn_resolutions=(16, 8), dropout=0.0, logvar_channels=128),
    "ddpmpp": dict(_SONG, channel_mult_noise=1, embedding_type="positional", resample_filter=(1, 1)),
    "ncsnpp": dict(_SONG, channel_mult_noise=2, embedding_type="fourier", encoder_type="residual",
                   resample_filter=(1, 3, 3, 1)),
    "adm": dict(model_channels=192, channel_mult=(1, 2, 3, 4), channel_mult_emb=4, num_blocks=3,
                attn_resolutions=(32, 16, 8), dropout=0.10, logvar_channels=0),
}
_RESOLVED = ("model_channels", "channel_mult", "num_blocks", "attn_resolutions", "dropout", "channel_mult_emb",
             "channel_mult_noise", "logvar_channels", "embedding_type", "encoder_type", "decoder_type",
             "resample_filter")


def resolve(cfg: UNetConfig) -> UNetConfig:
    """Fill the fields left at None from the preset, then from the defaults of ``cfg.arch``."""
    if cfg.preset and cfg.preset.lower() not in PRESETS:
        raise ConfigError(f"model.preset: unknown preset {cfg.preset!r}; choose one of {', '.join(PRESETS)}")
    if cfg.arch not in ARCH_DEFAULTS:
        raise ConfigError(f"model.arch: unknown architecture {cfg.arch!r}; choose one of {', '.join(ARCH_DEFAULTS)}")
    preset = PRESETS.get(cfg.preset.lower(), {}) if cfg.preset else {}
    defaults = ARCH_DEFAULTS[cfg.arch]
    out = {}
    for key in _RESOLVED:
        val = getattr(cfg, key)
        out[key] = val if val is not None else preset.get(key, defaults.get(key))
    if out["model_channels"] is None:
        raise ConfigError("model.model_channels: set it, or choose model.preset (xs, s, m, l, xl, xxl, tiny)")
    if "channels_per_head" in preset and cfg.channels_per_head == 64:
        out["channels_per_head"] = preset["channels_per_head"]
    for key in ("channel_mult", "attn_resolutions", "resample_filter"):
        out[key] = tuple(out[key]) if out[key] is not None else None
    if cfg.arch != "edm2" and cfg.token_dim:
        raise ConfigError(f"model.token_dim: cross-attention exists only in the edm2 U-Net, not in {cfg.arch}")
    return replace(cfg, **out)


def _mp_add(x: torch.Tensor, conv: MPConv, y: torch.Tensor, t: float, gain: float = 1.0) -> torch.Tensor:
    """``mp_sum(x, conv(y, gain), t)`` with the branch's weight t / sqrt((1 - t)^2 + t^2) folded
    into the conv's weights: one pass over the activations for the sum."""
    s = math.sqrt((1 - t) ** 2 + t ** 2)
    return torch.add(conv(y, gain=gain * t / s), x, alpha=(1 - t) / s)


def _heads_to_image(y: torch.Tensor, like: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Attention output [B, n, h*w, c] -> [B, n*c, h, w] in the memory layout of ``like``."""
    if is_channels_last(like):
        return rearrange(y, "b n (h w) c -> b h w (n c)", h=h, w=w).permute(0, 3, 1, 2)
    return rearrange(y, "b n (h w) c -> b (n c) h w", h=h, w=w)


class Block(nn.Module):
    """One EDM2 residual block (``flavor`` "enc" or "dec"), optionally resampling."""

    def __init__(self, cin: int, cout: int, cemb: int, cfg: UNetConfig, flavor: str = "enc",
                 resample_mode: str = "keep", attention: bool = False, cross: bool = False):
        super().__init__()
        self.flavor, self.resample_mode, self.cfg = flavor, resample_mode, cfg
        self.out_channels = cout
        self.num_heads = cout // cfg.channels_per_head if attention else 0
        self.emb_gain = nn.Parameter(torch.zeros([]))
        self.conv_res0 = MPConv(cout if flavor == "enc" else cin, cout, (3, 3))
        self.emb_linear = MPConv(cemb, cout)
        self.conv_res1 = MPConv(cout, cout, (3, 3))
        self.conv_skip = MPConv(cin, cout, (1, 1)) if cin != cout else None
        if self.num_heads:
            self.attn_qkv = MPConv(cout, cout * 3, (1, 1))
            self.attn_proj = MPConv(cout, cout, (1, 1))
        self.cross_heads = max(cout // cfg.channels_per_head, 1) if cross else 0
        if self.cross_heads:
            self.cross_q = MPConv(cout, cout, (1, 1))
            self.cross_kv = MPConv(cfg.token_dim, cout * 2)
            self.cross_proj = MPConv(cout, cout, (1, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor, tokens: torch.Tensor | None = None,
                paint=None, sigma: torch.Tensor | None = None) -> torch.Tensor:
        # x: [B, C, H, W], emb: [B, cemb]
        x = resample(x, self.resample_mode)
        if self.flavor == "enc":
            if self.conv_skip is not None:
                x = self.conv_skip(x)
            x = normalize(x, dim=1)  # pixel norm
        # mp_silu's 1 / 0.596 is folded into the weights of the conv that follows (linear), and
        # so is mp_sum's weight of the residual branch (see _mp_add): fewer passes over y.
        y = self.conv_res0(F.silu(x), gain=1 / SILU_GAIN)
        c = self.emb_linear(emb, gain=self.emb_gain) + 1
        y = F.silu(y * rearrange(c, "b c -> b c 1 1").to(y.dtype))
        if self.training and self.cfg.dropout:
            y = nn.functional.dropout(y, p=self.cfg.dropout)
        if self.flavor == "dec" and self.conv_skip is not None:
            x = self.conv_skip(x)
        x = _mp_add(x, self.conv_res1, y, self.cfg.res_balance, 1 / SILU_GAIN)
        if self.num_heads:
            h, w = x.shape[-2:]
            qkv = rearrange(self.attn_qkv(x), "b (n c three) h w -> three b n (h w) c", n=self.num_heads, three=3)
            q, k, v = normalize(qkv, dim=-1).unbind(0)  # cosine attention: pixel norm of q, k, v
            y = _heads_to_image(attention(q, k, v), x, h, w)
            x = _mp_add(x, self.attn_proj, y, self.cfg.attn_balance)
        if self.cross_heads and tokens is not None:
            x = mp_sum(x, self._cross(x, tokens, paint, sigma), t=self.cfg.attn_balance)
        if self.cfg.clip_act:
            x = clamp_symmetric(x, self.cfg.clip_act)
        return x

    def _cross(self, x, tokens, paint, sigma):
        # tokens: [B, T, token_dim]; paint: experts.PaintWithWords or None
        h, w = x.shape[-2:]
        q = normalize(rearrange(self.cross_q(x), "b (n c) h w -> b n (h w) c", n=self.cross_heads), dim=-1)
        kv = rearrange(self.cross_kv(tokens.to(x.dtype)), "b t (two n c) -> two b n t c", two=2, n=self.cross_heads)
        k, v = normalize(kv, dim=-1).unbind(0)
        bias = None
        if paint is not None:
            bias = paint.bias(q, k, sigma, (h, w))  # docs/METHODS.md 7, [B, n, HW, T]
        y = attention(q, k, v, bias=bias)
        return self.cross_proj(_heads_to_image(y, x, h, w))


class UNet(nn.Module):
    """``F(x_in, c_noise, labels, tokens)``; x_in: [B, img_channels, R, R] -> same shape."""

    # On the CPU the activations are kept channels-last inside the network: oneDNN's
    # convolutions run fastest on that layout. The output has the standard layout either way.
    channels_last: bool = True

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        cfg = resolve(cfg)
        self.cfg = cfg
        cblock = [cfg.model_channels * m for m in cfg.channel_mult]
        cnoise = cfg.model_channels * cfg.channel_mult_noise if cfg.channel_mult_noise else cblock[0]
        cemb = cfg.model_channels * cfg.channel_mult_emb if cfg.channel_mult_emb else max(cblock)
        cross = cfg.token_dim > 0
        self.out_gain = nn.Parameter(torch.zeros([]))
        self.emb_fourier = MPFourier(cnoise)
        self.emb_noise = MPConv(cnoise, cemb)
        self.emb_label = MPConv(cfg.label_dim, cemb) if cfg.label_dim else None
        self.enc = nn.ModuleDict()
        cout = cfg.img_channels + 1  # + the constant-1 channel
        for level, channels in enumerate(cblock):
            res = cfg.img_resolution >> level
            if level == 0:
                cin, cout = cout, channels
                self.enc[f"{res}x{res}_conv"] = MPConv(cin, cout, (3, 3))
            else:
                self.enc[f"{res}x{res}_down"] = Block(cout, cout, cemb, cfg, "enc", "down")
            for i in range(cfg.num_blocks):
                cin, cout = cout, channels
                self.enc[f"{res}x{res}_block{i}"] = Block(cin, cout, cemb, cfg, "enc", attention=res in cfg.attn_resolutions,
                                                          cross=cross and res in cfg.cross_attn_resolutions)
        skips = [getattr(b, "out_channels") for b in self.enc.values()]
        self.dec = nn.ModuleDict()
        for level, channels in reversed(list(enumerate(cblock))):
            res = cfg.img_resolution >> level
            if level == len(cblock) - 1:
                self.dec[f"{res}x{res}_in0"] = Block(cout, cout, cemb, cfg, "dec", attention=True, cross=cross)
                self.dec[f"{res}x{res}_in1"] = Block(cout, cout, cemb, cfg, "dec")
            else:
                self.dec[f"{res}x{res}_up"] = Block(cout, cout, cemb, cfg, "dec", "up")
            for i in range(cfg.num_blocks + 1):
                cin, cout = cout + skips.pop(), channels
                self.dec[f"{res}x{res}_block{i}"] = Block(cin, cout, cemb, cfg, "dec", attention=res in cfg.attn_resolutions,
                                                          cross=cross and res in cfg.cross_attn_resolutions)
        self.out_conv = MPConv(cout, cfg.img_channels, (3, 3))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor | None = None,
                tokens: torch.Tensor | None = None, paint=None) -> torch.Tensor:
        # x: [B, C, H, W], c_noise: [B], labels: [B, label_dim], tokens: [B, T, token_dim]
        emb = self.emb_noise(self.emb_fourier(c_noise))
        if self.emb_label is not None:
            labels = torch.zeros(x.shape[0], self.cfg.label_dim, device=x.device) if labels is None else labels
            emb = mp_sum(emb, self.emb_label(labels.to(emb.dtype) * math.sqrt(labels.shape[1])), t=self.cfg.label_balance)
        emb = mp_silu(emb)
        sigma = (c_noise * 4).exp()  # c_noise = ln(sigma) / 4 (EDM table 1)
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        if self.channels_last and x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        skips = []
        for name, block in self.enc.items():
            x = block(x) if name.endswith("_conv") else block(x, emb, tokens, paint, sigma)
            skips.append(x)
        for name, block in self.dec.items():
            if "_block" in name:
                x = mp_cat(x, skips.pop(), t=self.cfg.concat_balance)
            x = block(x, emb, tokens, paint, sigma)
        return self.out_conv(x, gain=self.out_gain).contiguous()


def build_network(cfg: UNetConfig, out_channels: int | None = None) -> nn.Module:
    """The raw network F of ``cfg.arch`` (``cfg`` resolved here)."""
    cfg = resolve(cfg)
    if cfg.arch == "edm2":
        return UNet(cfg)
    if cfg.arch == "adm":
        from vidgen.diffusion.adm import DhariwalUNet
        return DhariwalUNet(cfg, out_channels)
    from vidgen.diffusion.song_unet import SongUNet
    return SongUNet(cfg, out_channels)


def build_denoiser(cfg: UNetConfig, sigma_data: float = 0.5, device: str | torch.device | None = None,
                   precond=None):
    """The preconditioned network (``vidgen.diffusion.precond.Denoiser``, ``precond`` a
    PrecondConfig, default EDM's); device "meta" builds it without memory, for counting
    parameters of big presets."""
    from vidgen.diffusion.precond import Denoiser, PrecondConfig
    precond = precond or PrecondConfig()
    cfg = resolve(cfg)
    with torch.device(device) if device is not None else _nullctx():
        # iDDPM's networks also predict variances: 2C output channels (EDM appendix C.3.4).
        net = build_network(cfg, 2 * cfg.img_channels if precond.kind == "iddpm" else None)
        return Denoiser(net, label_dim=cfg.label_dim, sigma_data=sigma_data, logvar_channels=cfg.logvar_channels,
                        precond=precond)


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


