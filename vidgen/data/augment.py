"""Clip-consistent, differentiable augmentation (docs/METHODS.md 1.3, DiffAugment + time stretch).

Every random parameter is drawn once per clip and shared by all its frames, so the
discriminator sees the same colour shift / translation / cutout / flip throughout a clip,
while different clips get different ones. Works on video ``[B, C, T, H, W]`` and image
``[B, C, H, W]`` batches in [-1, 1]; every op is differentiable w.r.t. the input (it is applied
to generated clips inside the GAN loss). Randomness comes from ``generator`` (any device)
or the global torch RNG.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange


@dataclass
class AugmentConfig:
    xflip: float = 0.5          # probability of a horizontal flip per clip
    color: bool = True          # brightness, saturation, contrast (DiffAugment ranges)
    translation: float = 0.125  # max shift as a fraction of the size (0: off)
    cutout: float = 0.5         # cutout square side as a fraction of the size (0: off)
    time_stretch: float = 1.0   # stretch factor 2^U(-a, a) (0: off; video only)
    p: float = 1.0              # probability that each op is applied to a clip


def _rand(shape, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else x.device
    return torch.rand(shape, generator=generator, device=device).to(device=x.device, dtype=x.dtype)


def _apply_p(new: torch.Tensor, old: torch.Tensor, p: float, generator) -> torch.Tensor:
    if p >= 1.0:
        return new
    keep = _rand((old.shape[0],) + (1,) * (old.ndim - 1), old, generator) < p
    return torch.where(keep, new, old)


def xflip(x: torch.Tensor, p: float = 0.5, generator=None) -> torch.Tensor:
    """x: [B, C, T, H, W]; mirror whole clips left-right with probability p."""
    flip = _rand((x.shape[0], 1, 1, 1, 1), x, generator) < p
    return torch.where(flip, x.flip(-1), x)


def color(x: torch.Tensor, generator=None) -> torch.Tensor:
    """x: [B, C, T, H, W]; DiffAugment brightness +U(-0.5, 0.5), saturation x U(0, 2),
    contrast x U(0.5, 1.5) around the clip mean (one affine map per clip)."""
    shape = (x.shape[0], 1, 1, 1, 1)
    x = x + (_rand(shape, x, generator) - 0.5)
    gray = x.mean(dim=1, keepdim=True)
    x = (x - gray) * (_rand(shape, x, generator) * 2.0) + gray
    mean = x.mean(dim=(1, 2, 3, 4), keepdim=True)
    return (x - mean) * (_rand(shape, x, generator) + 0.5) + mean


def translate(x: torch.Tensor, ratio: float = 0.125, generator=None) -> torch.Tensor:
    """x: [B, C, T, H, W]; integer shift by up to ratio * size, zero (mid-grey) fill."""
    b, _, _, h, w = x.shape
    sy = torch.round((_rand((b,), x, generator) * 2 - 1) * ratio * h).long()
    sx = torch.round((_rand((b,), x, generator) * 2 - 1) * ratio * w).long()
    ys = torch.arange(h, device=x.device)[None, :] - sy[:, None]  # [B, H] source rows
    xs = torch.arange(w, device=x.device)[None, :] - sx[:, None]  # [B, W] source columns
    valid = ((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]  # [B, H, W]
    flat = rearrange(x, "b c t h w -> b (c t) (h w)")
    src = ys.clamp(0, h - 1)[:, :, None] * w + xs.clamp(0, w - 1)[:, None, :]  # [B, H, W]
    out = torch.gather(flat, 2, rearrange(src, "b h w -> b 1 (h w)").expand(-1, flat.shape[1], -1))
    out = out * rearrange(valid, "b h w -> b 1 (h w)").to(x.dtype)
    return rearrange(out, "b (c t) (h w) -> b c t h w", c=x.shape[1], h=h)


def cutout(x: torch.Tensor, ratio: float = 0.5, generator=None) -> torch.Tensor:
    """x: [B, C, T, H, W]; zero one (ratio*H x ratio*W) rectangle per clip, same in all frames."""
    b, _, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = (_rand((b,), x, generator) * (h + 1 - ch % 2)).long()
    cx = (_rand((b,), x, generator) * (w + 1 - cw % 2)).long()
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    inside_y = (ys >= (cy - ch // 2)[:, None]) & (ys < (cy - ch // 2 + ch)[:, None])
    inside_x = (xs >= (cx - cw // 2)[:, None]) & (xs < (cx - cw // 2 + cw)[:, None])
    mask = ~(inside_y[:, :, None] & inside_x[:, None, :])  # [B, H, W]
    return x * rearrange(mask, "b h w -> b 1 1 h w").to(x.dtype)


def time_stretch(x: torch.Tensor, max_log2: float = 1.0, generator=None) -> torch.Tensor:
    """x: [B, C, T, H, W]; resample each clip in time by s = 2^U(-a, a), linear interpolation.

    Output frame k shows source time o + k * s. For s < 1 (slow motion) the stretched window
    fits inside the clip and its offset o is random; for s > 1 it is centred and clamped at
    the ends (the first / last frame repeats)."""
    b, _, t, _, _ = x.shape
    if t < 2:
        return x
    s = torch.exp2((_rand((b,), x, generator) * 2 - 1) * max_log2).float()
    length = (t - 1) * s
    slack = (t - 1) - length
    offset = torch.where(slack >= 0, _rand((b,), x, generator).float() * slack, slack / 2)
    pos = (offset[:, None] + torch.arange(t, device=x.device)[None, :].float() * s[:, None]).clamp(0, t - 1)
    i0 = pos.floor().long().clamp(max=t - 2)           # [B, T]
    frac = (pos - i0.float()).to(x.dtype)[:, None, :, None, None]
    idx = rearrange(i0, "b t -> b 1 t 1 1").expand(-1, x.shape[1], -1, x.shape[3], x.shape[4])
    x0, x1 = torch.gather(x, 2, idx), torch.gather(x, 2, idx + 1)
    return x0 + (x1 - x0) * frac


def augment(x: torch.Tensor, cfg: AugmentConfig | None = None, generator=None) -> torch.Tensor:
    """x: [B, C, T, H, W] or [B, C, H, W] -> same shape, augmented per clip."""
    cfg = cfg or AugmentConfig()
    image = x.ndim == 4
    if image:
        x = x[:, :, None]
    assert x.ndim == 5, f"expected [B, C, T, H, W] or [B, C, H, W], got {tuple(x.shape)}"
    if cfg.xflip > 0:
        x = xflip(x, cfg.xflip, generator)
    if cfg.time_stretch > 0 and not image:
        x = _apply_p(time_stretch(x, cfg.time_stretch, generator), x, cfg.p, generator)
    if cfg.color:
        x = _apply_p(color(x, generator), x, cfg.p, generator)
    if cfg.translation > 0:
        x = _apply_p(translate(x, cfg.translation, generator), x, cfg.p, generator)
    if cfg.cutout > 0:
        x = _apply_p(cutout(x, cfg.cutout, generator), x, cfg.p, generator)
    return x[:, :, 0] if image else x
