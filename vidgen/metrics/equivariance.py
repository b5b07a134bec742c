"""Equivariance metrics EQ-T (integer and sub-pixel translations) and EQ-R (rotations) of an
image generator whose input can be transformed (SG3 §4 and Appendix E; docs/METHODS.md 8).

For each batch the generator draws the images once as they are and once with its input
moved by a random translation (or rotation); the first is moved by the same amount in pixel
space (integer shift; Lanczos-3 sub-pixel shift; band-limited rotation) and compared with the
second over the pixels where both are defined:

    PSNR = 20 log10(2) - 10 log10( sum(mask (a - b)^2) / sum(mask) )   in dB, images in [-1, 1]

Translations are uniform in [-0.125, 0.125] of the image size (integer: rounded to whole
pixels), angles uniform in [-180, 180] degrees; one draw per batch, as the reference does.
For EQ-R the generated image is filtered by the same band-limit filter (a "pseudo-rotation"
by 0 degrees), so only the rotation's own error counts.

The metric takes a callable, not a model: ``render(seeds, transform)`` returns float images
[N, C, H, W] for the seeds, with ``transform`` ([3, 3], or None for the identity) the inverse
transform applied to the generator's continuous input (a translation by +t is shown by
``transform[:2, 2] = -t``, in units of the image size). Equal seeds must give equal latents.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F

from vidgen.nn.alias_free import upfirdn2d

Render = Callable[[list[int], "torch.Tensor | None"], torch.Tensor]
Kind = Literal["eqt_int", "eqt_frac", "eqr"]


@dataclass(frozen=True)
class EquivarianceProtocol:
    name: str
    kind: Kind
    num: int  # generated images
    translate_max: float = 0.125  # fraction of the image size
    rotate_max: float = 1.0  # fraction of a half turn

    def describe(self) -> dict:
        return {"kind": self.kind, "num_images": self.num, "translate_max": self.translate_max,
                "rotate_max_degrees": 180 * self.rotate_max, "peak": "2 (images in [-1, 1])",
                "one transform per batch": True}


_NAME = re.compile(r"eq(t|r)(\d+)(k?)(_int|_frac)?")


def equivariance_protocol(name: str) -> EquivarianceProtocol | None:
    """``eqt50k_int``, ``eqt50k_frac``, ``eqr50k`` (any count: ``eqt1k_frac``, ``eqr200``);
    None for other names."""
    m = _NAME.fullmatch(name)
    if not m:
        return None
    axis, count, k, part = m.groups()
    if (axis == "t") != (part is not None):
        return None
    num = int(count) * (1000 if k else 1)
    kind: Kind = "eqr" if axis == "r" else ("eqt_int" if part == "_int" else "eqt_frac")
    return EquivarianceProtocol(name, kind, num) if num > 0 else None


# --- pixel-space transforms ---------------------------------------------------------------

def _shift(x: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """x moved by n samples along dim (content at i goes to i + n), zeros shifted in."""
    L = x.shape[dim]
    out = torch.zeros_like(x)
    if abs(n) < L:
        src = x.narrow(dim, max(-n, 0), L - abs(n))
        out.narrow(dim, max(n, 0), L - abs(n)).copy_(src)
    return out


def integer_translate(x: torch.Tensor, tx: float, ty: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x: [N, C, H, W] moved by (round(tx W), round(ty H)) pixels; (image, mask of defined pixels)."""
    H, W = x.shape[-2:]
    ix, iy = round(tx * W), round(ty * H)
    out = _shift(_shift(x, ix, -1), iy, -2)
    return out, _shift(_shift(torch.ones_like(x), ix, -1), iy, -2)


def _sinc(x: torch.Tensor) -> torch.Tensor:
    y = (x * math.pi).abs()
    return torch.where(y < 1e-30, torch.ones_like(x), torch.sin(y) / y.clamp(min=1e-30))


def _lanczos(x: torch.Tensor, a: float) -> torch.Tensor:
    x = x.abs() / a
    return torch.where(x < 1, _sinc(x), torch.zeros_like(x))


def fractional_translate(x: torch.Tensor, tx: float, ty: float, a: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """x: [N, C, H, W] moved by (tx W, ty H) pixels with Lanczos-a interpolation (2a taps per
    axis, normalised); the mask keeps pixels whose taps all fall inside the image."""
    out, mask = x, torch.ones_like(x)
    for dim, shift in ((-1, tx * x.shape[-1]), (-2, ty * x.shape[-2])):
        i = math.floor(shift)
        frac = shift - i
        taps = torch.arange(-(a - 1), a + 1, dtype=torch.float64)  # output j reads input j - i - k
        w = _sinc(taps - frac) * _sinc((taps - frac) / a)
        w = (w / w.sum()).tolist()
        out = sum(wk * _shift(out, i + int(k), dim) for wk, k in zip(w, taps.tolist()))
        L = x.shape[dim]
        lo, hi = max(i + a, 0), min(i - (a - 1), 0) + L  # every tap j - i - k inside [0, L)
        keep = torch.zeros(L, dtype=x.dtype, device=x.device)
        if lo < hi:
            keep[lo:hi] = 1
        mask = mask * (keep if dim == -1 else keep[:, None])
    return out, mask


def rotation_matrix(angle: float) -> torch.Tensor:
    """[3, 3] rotation by ``angle`` radians in the convention of the pixel-space resampler."""
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def bandlimit_filter(mat: torch.Tensor, a: int = 3, amax: int = 16, aflt: int = 64, up: int = 4) -> torch.Tensor:
    """2-D FIR [2 amax up - 1, 2 amax up - 1] for resampling at ``up`` x the pixel rate under the
    linear map ``mat[:2, :2]``: the convolution of an input-aligned and an output-aligned 2-D
    sinc (cutoff: the pixel rate's Nyquist), windowed by the convolution of the two matching
    Lanczos-a windows; each of the up x up polyphase parts has unit gain."""
    mat = torch.as_tensor(mat, dtype=torch.float64)
    n = aflt * up * 2 - 1
    # tap positions (pixels), FFT order: 0, 1/up, ..., then the negative ones
    taps = ((torch.arange(n, dtype=torch.float64) + 1) / up - aflt).roll(1 - aflt * up)
    yi, xi = torch.meshgrid(taps, taps, indexing="ij")
    xo, yo = (torch.stack([xi, yi], dim=2) @ mat[:2, :2].t()).unbind(2)
    conv = lambda p, q: torch.fft.ifftn(torch.fft.fftn(p) * torch.fft.fftn(q)).real  # noqa: E731 (circular)
    f = conv(_sinc(xi) * _sinc(yi), _sinc(xo) * _sinc(yo))
    f = f * conv(_lanczos(xi, a) * _lanczos(yi, a), _lanczos(xo, a) * _lanczos(yo, a))
    c = (aflt - amax) * up
    f = f.roll([aflt * up - 1] * 2, dims=[0, 1])[c:-c, c:-c]  # centred, 2 amax up - 1 taps
    f = F.pad(f, [0, 1, 0, 1]).reshape(amax * 2, up, amax * 2, up)
    f = f / f.sum(dim=(0, 2), keepdim=True) / up ** 2
    return f.reshape(amax * 2 * up, amax * 2 * up)[:-1, :-1].float()


def rotate(x: torch.Tensor, angle: float, a: int = 3, up: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """x: [N, C, H, W] rotated by ``angle`` radians about the centre: upsampled x ``up`` with
    :func:`bandlimit_filter`, then sampled bilinearly on the rotated grid; the mask keeps the
    pixels whose filter support lies inside the image."""
    N, C, H, W = x.shape
    mat = rotation_matrix(angle)
    f = bandlimit_filter(mat, a=a, amax=2 * a, up=up).to(x.device)
    p = f.shape[0] // 2
    k = f.shape[0]
    y = upfirdn2d(x, f, up=up, padding=(p + (k + up - 1) // 2, p + (k - up) // 2,
                                        p + (k + up - 1) // 2, p + (k - up) // 2), gain=up ** 2)
    theta = torch.linalg.inv(mat.double())
    theta[:2, 2] *= 2
    theta[0, 2] += 1 / up / W
    theta[1, 2] += 1 / up / H
    theta[0, :] *= W / (W + p / up * 2)  # y holds a border of p / up pixels on each side
    theta[1, :] *= H / (H + p / up * 2)
    grid = F.affine_grid(theta[:2].expand(N, 2, 3).to(x.device, x.dtype), [N, C, H, W], align_corners=False)
    out = F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    valid = torch.zeros_like(y)
    valid[:, :, 2 * p + 1:-(2 * p + 1), 2 * p + 1:-(2 * p + 1)] = 1
    mask = F.grid_sample(valid, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out, mask


def pseudo_rotate(x: torch.Tensor, angle: float, a: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """x filtered by the rotation's band-limit filter at the pixel rate (no resampling): what
    :func:`rotate` does to the spectrum, without moving anything; same size, with its mask."""
    f = bandlimit_filter(rotation_matrix(-angle), a=a, amax=2 * a, up=1).to(x.device)
    k = f.shape[0]
    y = upfirdn2d(x, f, padding=(k // 2, (k - 1) // 2, k // 2, (k - 1) // 2))
    mask = torch.zeros_like(y)
    c = k // 2
    mask[:, :, c:-c, c:-c] = 1
    return y, mask


# --- the metric -----------------------------------------------------------------------------

def equivariance_psnr(render: Render, kinds: tuple[Kind, ...] = ("eqt_int", "eqt_frac", "eqr"), num: int = 50_000,
                      batch: int = 8, seed: int = 0, translate_max: float = 0.125, rotate_max: float = 1.0,
                      progress: bool = False) -> dict[str, float]:
    """PSNR in dB of each of ``kinds`` over ``num`` images (seeds seed .. seed + num - 1).
    The random transforms come from a generator seeded with ``seed``: the result is a pure
    function of (render, seed, num, batch)."""
    g = torch.Generator().manual_seed(int(seed))
    sums = {k: torch.zeros(2, dtype=torch.float64) for k in kinds}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=num, unit="img", desc="equivariance")
    eye = torch.eye(3)
    for start in range(0, num, batch):
        seeds = list(range(seed + start, seed + min(start + batch, num)))
        orig = render(seeds, None).float()
        res = orig.shape[-1]
        for kind in kinds:
            m = eye.clone()
            if kind in ("eqt_int", "eqt_frac"):
                t = (torch.rand(2, generator=g, dtype=torch.float64) * 2 - 1) * translate_max
                if kind == "eqt_int":
                    t = (t * res).round() / res
                m[:2, 2] = -t.float()
                img = render(seeds, m).float()
                fn = integer_translate if kind == "eqt_int" else fractional_translate
                ref, mask = fn(orig, float(t[0]), float(t[1]))
            else:
                angle = float((torch.rand((), generator=g, dtype=torch.float64) * 2 - 1) * rotate_max * math.pi)
                m = rotation_matrix(-angle)
                img = render(seeds, m).float()
                ref, ref_mask = rotate(orig, angle)
                img, img_mask = pseudo_rotate(img, angle)
                mask = ref_mask * img_mask
            sums[kind] += torch.stack([((ref - img).square() * mask).double().sum(), mask.double().sum()]).cpu()
        if bar is not None:
            bar.update(len(seeds))
    if bar is not None:
        bar.close()
    out = {}
    for kind, (se, count) in sums.items():
        mse = float(se / count) if count > 0 else float("nan")
        out[kind] = float("inf") if mse == 0 else 20 * math.log10(2) - 10 * math.log10(mse)
    return out


def evaluate_equivariance(protocols: list[EquivarianceProtocol], render: Render, seed: int = 0, batch: int = 8,
                          progress: bool = False) -> dict[str, dict]:
    """Report entries ``{name: {"value", "protocol"}}``; protocols with the same image count
    and limits share their batches (the reference computes them in one pass)."""
    out: dict[str, dict] = {}
    groups: dict[tuple, list[EquivarianceProtocol]] = {}
    for p in protocols:
        groups.setdefault((p.num, p.translate_max, p.rotate_max), []).append(p)
    for (num, tmax, rmax), ps in groups.items():
        values = equivariance_psnr(render, tuple(p.kind for p in ps), num, batch, seed, tmax, rmax, progress)
        for p in ps:
            out[p.name] = {"value": values[p.kind], "unit": "dB", "protocol": p.describe(), "seed": seed}
    return out


def supports_transforms(sampler) -> bool:
    """True for a sampler that offers the ``render(seeds, transform)`` interface."""
    return callable(getattr(sampler, "render", None))


__all__ = ["EquivarianceProtocol", "equivariance_protocol", "equivariance_psnr", "evaluate_equivariance",
           "integer_translate", "fractional_translate", "rotate", "pseudo_rotate", "bandlimit_filter",
           "supports_transforms", "open_transformable"]


def open_transformable(spec: str, device: str = "cpu") -> tuple[Render, dict]:
    """``render(seeds, transform)`` of the generator in a run folder or checkpoint (the
    sampler its family registers), and a description of it for the report."""
    from vidgen import registry
    from vidgen.errors import VidgenError
    from vidgen.train.checkpoint import read_checkpoint

    c = read_checkpoint(spec)
    family = registry.get(c.family)
    sampler = registry.resolve(family.sampler, f"family {family.name!r}")(c, device) if family.sampler else None
    if sampler is None or not supports_transforms(sampler):
        raise VidgenError(f"{spec}: the equivariance metrics need a generator whose input can be moved "
                          f"(sg3); a {c.family!r} generator cannot")
    return sampler.render, {"kind": "checkpoint", "path": str(spec), "family": c.family, "checkpoint_step": c.step}


def report_entries(protocols: list[EquivarianceProtocol], render: Render, runs: int = 1, seed: int = 0,
                   seed_stride: int = 1_000_000, batch: int = 8, progress: bool = False) -> dict[str, dict]:
    """Entries for `vidgen eval`'s report (the fields of vidgen.metrics.report.ENTRY_FIELDS):
    run r draws the images of seeds ``seed + r * seed_stride`` onward and its transforms from
    that same seed."""
    entries: dict[str, dict] = {}
    for r in range(runs):
        s = seed + r * seed_stride
        for name, res in evaluate_equivariance(protocols, render, s, batch, progress).items():
            e = entries.setdefault(name, {"name": name, "values": [], "protocol": res["protocol"], "num_real": [],
                                          "num_fake": [], "real_sampling": "none (no real data)",
                                          "seeds": {"real": [], "fake": []}, "detector": None,
                                          "real_stats_cached": [], "unit": "dB"})
            e["values"].append(res["value"])
            e["num_real"].append(0)
            e["num_fake"].append(res["protocol"]["num_images"])
            e["seeds"]["fake"].append(s)
            e["real_stats_cached"].append(False)
    for e in entries.values():
        v = torch.tensor(e["values"], dtype=torch.float64)
        e["value"] = float(v.mean())
        e["std"] = float(v.std()) if len(v) > 1 else 0.0
        e["runs"] = len(v)
    return entries
