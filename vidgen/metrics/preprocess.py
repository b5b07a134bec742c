"""What each detector is fed: the exact resize and value range of the published protocols.

Every detector takes uint8 pixels and does its own preprocessing (docs/METRICS.md,
"What each detector sees"); these are the pieces, kept in one place so that tests can check
them against the protocols they name.

- Inception-v3 (FID; the TTUR graph ``inception-2015-12-05``): TensorFlow 1 bilinear resize
  to 299 x 299 of the float pixels in [0, 255] (``tf.image.resize_bilinear``,
  ``align_corners=False`` and no half-pixel centres: output pixel i samples input
  coordinate ``i * in / out``), then ``(x - 128) / 128``. The graph resizes without
  cropping, so non-square frames are stretched.
- DINOv2 ViT-L/14 (FD_DINOv2; Stein et al. 2023, "Exposing flaws of generative model
  evaluation metrics", dgm-eval): PIL bicubic resize of the uint8 image to 224 x 224 (PIL's
  bicubic is antialiased, a = -0.5, and rounds back to uint8), then ``x / 255`` and the
  ImageNet mean / std. ``"torch"`` mode is EDM2's fast variant: torch's antialiased bicubic on
  float pixels, no rounding or clamping.
- CLIP image tower (CLIP-FD): bicubic resize of the shorter side to the tower's input size,
  centre crop, ``x / 255`` and the tower's mean / std (the preprocessing CLIP was trained with).
- I3D (FVD): the reference TorchScript module does its own preprocessing; it is called as
  the StyleGAN-V and long-video-GAN code call it (see ``detectors.I3D_KWARGS``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

INCEPTION_SIZE = 299
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _tf1_axis(n_in: int, n_out: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source taps of TF1's legacy bilinear scaler along one axis: (lower, upper, fraction)."""
    scale = torch.tensor(n_in / n_out, dtype=torch.float32, device=device)  # float32, as in TF
    src = torch.arange(n_out, dtype=torch.float32, device=device) * scale  # i * in / out, >= 0
    lo = src.floor()
    frac = src - lo
    lo = lo.long()
    return lo, (lo + 1).clamp(max=n_in - 1), frac


def tf1_resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """x: float [B, C, H, W] -> [B, C, *size] as TensorFlow 1's ``resize_bilinear`` with
    ``align_corners=False`` (no half-pixel centres): rows first, then the vertical lerp."""
    H, W = x.shape[-2:]
    y0, y1, fy = _tf1_axis(H, size[0], x.device)
    x0, x1, fx = _tf1_axis(W, size[1], x.device)
    fx, fy = fx.to(x.dtype), fy.to(x.dtype)[:, None]

    def horizontal(rows: torch.Tensor) -> torch.Tensor:
        left, right = rows.index_select(3, x0), rows.index_select(3, x1)
        return left + (right - left) * fx

    top = horizontal(x.index_select(2, y0))
    bottom = horizontal(x.index_select(2, y1))
    return top + (bottom - top) * fy


def inception_input(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> the FID graph's input [B, 3, 299, 299] in [-1, 1)."""
    assert x.dtype == torch.uint8, x.dtype
    x = tf1_resize_bilinear(x.to(dtype), (INCEPTION_SIZE, INCEPTION_SIZE))
    return (x - 128) / 128


def pil_resize(x: torch.Tensor, size: tuple[int, int], resample: str = "bicubic") -> torch.Tensor:
    """uint8 [B, 3, H, W] -> uint8 [B, 3, *size] resized by PIL (``Image.resize``)."""
    from PIL import Image

    assert x.dtype == torch.uint8, x.dtype
    mode = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}[resample]
    frames = rearrange(x.cpu(), "b c h w -> b h w c").numpy()
    out = np.stack([np.asarray(Image.fromarray(f, "RGB").resize((size[1], size[0]), mode)) for f in frames])
    return rearrange(torch.from_numpy(out), "b h w c -> b c h w").to(x.device)


def dinov2_input(x: torch.Tensor, size: int = 224, mode: Literal["pil", "torch"] = "pil",
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> DINOv2 input [B, 3, size, size], ImageNet-normalised."""
    assert x.dtype == torch.uint8, x.dtype
    if mode == "pil":  # dgm-eval: PIL bicubic on the uint8 image
        x = pil_resize(x, (size, size)).to(dtype)
    elif mode == "torch":  # EDM2's fast variant: antialiased bicubic on float pixels
        x = F.interpolate(x.to(dtype), size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    else:
        raise ValueError(f"unknown DINOv2 resize mode {mode!r} (use 'pil' or 'torch')")
    mean = torch.tensor(IMAGENET_MEAN, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    return (x / 255 - mean) / std


def clip_input(x: torch.Tensor, size: int, mean, std, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> CLIP image-tower input [B, 3, size, size]: the shorter side
    resized to ``size`` (PIL bicubic), a centre crop, then the tower's normalisation."""
    assert x.dtype == torch.uint8, x.dtype
    H, W = x.shape[-2:]
    # the shorter side becomes `size`, the longer one is truncated (torchvision's Resize(int))
    h, w = (size, int(size * W / H)) if H <= W else (int(size * H / W), size)
    x = pil_resize(x, (h, w))
    top, left = int(round((h - size) / 2)), int(round((w - size) / 2))  # CenterCrop
    x = x[..., top:top + size, left:left + size].to(dtype)
    mean = torch.as_tensor(mean, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.as_tensor(std, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    return (x / 255 - mean) / std
