"""Adaptive discriminator augmentation (ADA, Karras et al. 2020): the augmentation
probability p follows the overfitting heuristic r_t = E[sign(D(real))], and
:func:`ada_augment` is the 'bgc' pipeline it drives (blits, general geometry, colour).

Every ``interval`` steps p moves by ``sign(r_t - target) * images / (speed_kimg * 1000)``,
where ``images`` is the number of real images seen since the last update, and is clipped to
[0, p_max]. The state is two JSON-able numbers, checkpointed through the recipe.

Under DDP every rank calls :meth:`AdaController.step` once per step; the signs and counts
accumulated on each rank since the previous step are summed over ranks there (one
all-reduce of two numbers), so r_t covers the global batch and every rank holds the same p
and the same state, whichever rank's checkpoint is read.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange

from vidgen.nn.filters import binomial4_sum


class AdaController:
    def __init__(self, target: float = 0.6, speed_kimg: float = 500.0, interval: int = 4,
                 p_init: float = 0.0, p_max: float = 1.0):
        self.target = target
        self.speed_kimg = speed_kimg
        self.interval = interval
        self.p_max = p_max
        self.p = float(p_init)
        self._sign_sum = 0.0  # since the last update of p, all ranks
        self._count = 0
        self._local = [0.0, 0]  # this rank, since the last step()

    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Record the discriminator's logits on (augmented) real images of one batch."""
        self._local[0] += float(torch.sign(real_logits.detach()).sum())
        self._local[1] += real_logits.numel()

    def _merge(self) -> None:
        total = list(self._local)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            t = torch.tensor(total, dtype=torch.float64, device=device)
            dist.all_reduce(t)
            total = t.tolist()
        self._sign_sum += total[0]
        self._count += int(round(total[1]))
        self._local = [0.0, 0]

    def step(self, step: int) -> None:
        """Call once per training step on every rank; adjusts p every ``interval`` steps."""
        self._merge()
        if (step + 1) % self.interval or self._count == 0:
            return
        r_t = self._sign_sum / self._count
        adjust = (1.0 if r_t > self.target else -1.0) * self._count / (self.speed_kimg * 1000.0)
        self.p = min(max(self.p + adjust, 0.0), self.p_max)
        self._sign_sum, self._count = 0.0, 0

    @property
    def r_t(self) -> float:
        """Mean sign since the last update of p (this rank's not yet merged part included)."""
        n = self._count + self._local[1]
        return (self._sign_sum + self._local[0]) / n if n else 0.0

    def state_dict(self) -> dict:
        return {"p": self.p, "sign_sum": self._sign_sum + self._local[0], "count": self._count + self._local[1]}

    def load_state_dict(self, state: dict) -> None:
        self.p = float(state["p"])
        self._sign_sum = float(state["sign_sum"])
        self._count = int(state["count"])
        self._local = [0.0, 0]


# --- the augmentation pipeline ------------------------------------------------------------

@dataclass(frozen=True)
class AdaOps:
    """Probability multipliers (each op runs with probability ``mult * p``) and strengths of
    the ADA 'bgc' pipeline; the defaults are the paper's."""

    xflip: float = 1.0
    rotate90: float = 1.0
    xint: float = 1.0
    xint_max: float = 0.125  # integer translation, fraction of the size, uniform
    scale: float = 1.0
    rotate: float = 1.0
    aniso: float = 1.0
    xfrac: float = 1.0
    scale_std: float = 0.2  # log2 of the isotropic scale ~ N(0, std)
    rotate_max: float = 1.0  # angle ~ U(-pi, pi) * max; pre- and post-rotation
    aniso_std: float = 0.2
    xfrac_std: float = 0.125  # fractional translation, fraction of the size, ~ N(0, std)
    brightness: float = 1.0
    contrast: float = 1.0
    lumaflip: float = 1.0
    hue: float = 1.0
    saturation: float = 1.0
    brightness_std: float = 0.2
    contrast_std: float = 0.5  # log2
    hue_max: float = 1.0  # angle ~ U(-pi, pi) * max around the luma axis
    saturation_std: float = 1.0  # log2

    @classmethod
    def preset(cls, name: str) -> "AdaOps":
        """The paper's pipelines: 'b' (blits), 'bg' (+ general geometry), 'bgc' (+ colour)."""
        if name not in PIPELINES:
            raise ValueError(f"unknown ADA pipeline {name!r}: expected one of {', '.join(PIPELINES)}")
        off = {"b": _GEOMETRY + _COLOUR, "bg": _COLOUR, "bgc": ()}[name]
        return cls(**{k: 0.0 for k in off})


AdaPipeline = typing.Literal["b", "bg", "bgc"]  # a config field of this type is checked on load
PIPELINES = typing.get_args(AdaPipeline)
_GEOMETRY = ("scale", "rotate", "aniso", "xfrac")
_COLOUR = ("brightness", "contrast", "lumaflip", "hue", "saturation")


def _affine(B: int, a, b, c, d, e, f) -> torch.Tensor:
    """[B, 3, 3] matrices [[a, b, c], [d, e, f], [0, 0, 1]] from per-sample tensors or numbers."""
    rows = [torch.as_tensor(v, dtype=torch.float32).expand(B) for v in (a, b, c, d, e, f)]
    out = torch.zeros(B, 3, 3)
    out[:, 0, 0], out[:, 0, 1], out[:, 0, 2], out[:, 1, 0], out[:, 1, 1], out[:, 1, 2] = rows
    out[:, 2, 2] = 1
    return out


def _rot(angle: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    return _affine(angle.shape[0], c, -s, 0, s, c, 0)


def _warp(frames: torch.Tensor, m: torch.Tensor, mode: str, antialias: bool) -> torch.Tensor:
    """Resample frames [B, K, H, W] by output->input maps m [B, 3, 3] in pixel units about the
    image centre, reflected at the edges. ``antialias``: sample a x2 upsampled copy on a x2
    grid and low-pass it back down, so that shrinking and rotating alias less."""
    B, K, H, W = frames.shape
    up = 2 if antialias else 1
    src = F.interpolate(frames, scale_factor=2, mode="bilinear", align_corners=False) if antialias else frames
    dev = frames.device  # the grid is made where the frames are (the matrices are small, on the CPU)
    ys = (torch.arange(H * up, dtype=torch.float32, device=dev) + 0.5) / up - H / 2  # output pixel centres
    xs = (torch.arange(W * up, dtype=torch.float32, device=dev) + 0.5) / up - W / 2
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    pts = torch.stack([gx, gy, torch.ones_like(gx)], -1).reshape(1, -1, 3)  # [1, P, 3]
    inp = pts @ m.to(dev).transpose(1, 2)  # [B, P, 3] input positions
    grid = torch.stack([inp[..., 0] / (W / 2), inp[..., 1] / (H / 2)], -1).reshape(B, H * up, W * up, 2)
    out = F.grid_sample(src, grid.to(frames.dtype), mode=mode, padding_mode="reflection", align_corners=False)
    if not antialias:
        return out
    out = F.pad(out, (1, 1, 1, 1), mode="replicate")  # edges kept: constants stay constant
    return binomial4_sum(out, (2, 3), (0, 0), down=2) / 64  # [1, 3, 3, 1] / 8 per axis, x1/2


def ada_augment(x: torch.Tensor, p: float, ops: AdaOps = AdaOps(),
                generator: torch.Generator | None = None) -> torch.Tensor:
    """ADA 'bgc' augmentation of images [B, 3, H, W] or clips [B, 3, T, H, W] in [-1, 1], one draw
    per sample (every frame of a clip gets the same transform). Differentiable in x.

    Each op runs with probability ``p`` times its multiplier (the two rotations with
    1 - sqrt(1 - p), so that some rotation happens with probability p):
    - blits (exact, nearest sampling): x-flip, rotation by a multiple of 90 degrees, integer
      translation up to ``xint_max`` of the size;
    - general geometry (one anti-aliased bilinear resample, reflected edges): isotropic scale,
      rotation, anisotropic scale, rotation, fractional translation;
    - colour (one 4x4 matrix on RGB1): brightness, contrast, luma flip, hue rotation,
      saturation.
    Samples that draw no op of a stage are passed through that stage untouched; p = 0 returns x.
    """
    if p <= 0:
        return x
    video = x.ndim == 5
    B, C, H, W = x.shape[0], x.shape[1], x.shape[-2], x.shape[-1]
    frames = rearrange(x, "b c t h w -> b (c t) h w") if video else x
    T = x.shape[2] if video else 1

    def rand(*shape):
        return torch.rand(shape, generator=generator)

    def randn(*shape):
        return torch.randn(shape, generator=generator)

    def gate(mult: float, prob: float | None = None) -> torch.Tensor:
        return rand(B) < (p if prob is None else prob) * mult

    def where(on: torch.Tensor, value: torch.Tensor, identity: float) -> torch.Tensor:
        return torch.where(on, value, torch.full_like(value, identity))

    # Blits: x-flip, k x 90 degrees, integer translation (pixel units; maps output -> input).
    flip = where(gate(ops.xflip), (rand(B) < 0.5).float(), 0.0)
    k = where(gate(ops.rotate90), torch.floor(rand(B) * 4), 0.0)
    t = where(gate(ops.xint)[:, None], (rand(B, 2) * 2 - 1) * ops.xint_max, 0.0)
    t = torch.round(t * torch.tensor([W, H], dtype=torch.float32))
    m = _affine(B, 1 - 2 * flip, 0, 0, 0, 1, 0) @ _rot(-k * math.pi / 2) @ _affine(B, 1, 0, -t[:, 0], 0, 1, -t[:, 1])
    if H != W:  # a quarter turn of a non-square image is not a blit: it joins the general stage
        quarter = k % 2 == 1
        m_blit = torch.where(quarter[:, None, None], _affine(B, 1 - 2 * flip, 0, 0, 0, 1, 0), m)
        m_rest = torch.where(quarter[:, None, None], torch.linalg.solve(m_blit, m), torch.eye(3).expand(B, 3, 3))
    else:
        m_blit, m_rest = m, torch.eye(3).expand(B, 3, 3)
    blit = (m_blit - torch.eye(3)).abs().amax(dim=(1, 2)) > 0
    if blit.any():
        moved = _warp(frames, m_blit, "nearest", antialias=False)
        frames = torch.where(blit.to(frames.device)[:, None, None, None], moved, frames)

    # General geometry.
    p_rot = 1 - math.sqrt(max(0.0, 1 - min(1.0, p * ops.rotate)))
    s = where(gate(ops.scale), torch.exp2(randn(B) * ops.scale_std), 1.0)
    r0 = where(gate(1.0, p_rot), (rand(B) * 2 - 1) * math.pi * ops.rotate_max, 0.0)
    a = where(gate(ops.aniso), torch.exp2(randn(B) * ops.aniso_std), 1.0)
    r1 = where(gate(1.0, p_rot), (rand(B) * 2 - 1) * math.pi * ops.rotate_max, 0.0)
    f = where(gate(ops.xfrac)[:, None], randn(B, 2) * ops.xfrac_std, 0.0) * torch.tensor([W, H], dtype=torch.float32)
    # The output->input map inverts each op: 1/s, -angle, 1/a, -shift, applied in that order.
    g = (_affine(B, 1 / s, 0, 0, 0, 1 / s, 0) @ _rot(-r0) @ _affine(B, 1 / a, 0, 0, 0, a, 0) @ _rot(-r1)
         @ _affine(B, 1, 0, -f[:, 0], 0, 1, -f[:, 1]))
    g = m_rest @ g
    general = (g - torch.eye(3)).abs().amax(dim=(1, 2)) > 1e-7
    if general.any():
        moved = _warp(frames, g, "bilinear", antialias=True)
        frames = torch.where(general.to(frames.device)[:, None, None, None], moved, frames)

    # Colour: 4x4 matrices on [r, g, b, 1].
    if C == 3:
        v = torch.tensor([1.0, 1.0, 1.0, 0.0]) / math.sqrt(3)  # luma axis
        vv = torch.outer(v, v)
        eye = torch.eye(4)
        b = where(gate(ops.brightness), randn(B) * ops.brightness_std, 0.0)
        cm = eye.expand(B, 4, 4).clone()  # brightness: a shift of r, g, b
        cm[:, :3, 3] = b[:, None]
        c = where(gate(ops.contrast), torch.exp2(randn(B) * ops.contrast_std), 1.0)
        cm = torch.diag_embed(torch.stack([c, c, c, torch.ones(B)], -1)) @ cm
        flipl = where(gate(ops.lumaflip), (rand(B) < 0.5).float(), 0.0)
        cm = (eye - 2 * vv * flipl[:, None, None]) @ cm
        theta = where(gate(ops.hue), (rand(B) * 2 - 1) * math.pi * ops.hue_max, 0.0)
        cm = _rotate_about(v[:3], theta) @ cm
        sat = where(gate(ops.saturation), torch.exp2(randn(B) * ops.saturation_std), 1.0)
        cm = (vv + (eye - vv) * sat[:, None, None]) @ cm
        colour = (cm - eye).abs().amax(dim=(1, 2)) > 0
        if colour.any():
            cm = cm.to(frames.device, frames.dtype)
            rgb = rearrange(frames, "b (c t) h w -> b c (t h w)", c=3)
            out = cm[:, :3, :3] @ rgb + cm[:, :3, 3:]
            out = rearrange(out, "b c (t h w) -> b (c t) h w", t=T, h=H)
            frames = torch.where(colour.to(frames.device)[:, None, None, None], out, frames)
    return rearrange(frames, "b (c t) h w -> b c t h w", c=C) if video else frames


def _rotate_about(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """[B, 4, 4] rotations of RGB by ``angle`` about the unit ``axis`` (Rodrigues)."""
    B = angle.shape[0]
    k = torch.tensor([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    s, c = torch.sin(angle)[:, None, None], torch.cos(angle)[:, None, None]
    r = torch.eye(3) + s * k + (1 - c) * (k @ k)
    out = torch.eye(4).expand(B, 4, 4).clone()
    out[:, :3, :3] = r
    return out
