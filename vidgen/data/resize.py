"""The one crop-and-resize of vidgen (docs/METHODS.md section 12): every frame that changes
size (prepared shards, raw datasets, metric inputs, aligned time-lapses) goes through
:func:`crop_resize`.

The source region is a box with fractional corners (by default the centred box of the target
aspect ratio), resampled with PIL's bicubic filter, whose support widens with the reduction
factor: an antialiased resize that is defined exactly for any box, including the sub-pixel
offsets of registered frames (vidgen/data/align.py).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) in pixels, x1/y1 exclusive


def fit_box(rect: Box, res: tuple[int, int]) -> Box:
    """The largest box of aspect ``res`` (h, w) centred in ``rect``."""
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    th, tw = res
    if h * tw > w * th:   # too tall: crop rows
        ch, cw = w * th / tw, w
    else:                 # too wide: crop columns
        ch, cw = h, h * tw / th
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (cx - cw / 2, cy - ch / 2, cx + cw / 2, cy + ch / 2)


def crop_box(height: int, width: int, res: tuple[int, int]) -> Box:
    """Centre box of aspect ``res`` (h, w) in a ``height`` x ``width`` frame."""
    return fit_box((0.0, 0.0, float(width), float(height)), res)


def crop_resize(frame: np.ndarray, res: tuple[int, int], box: Box | None = None) -> np.ndarray:
    """frame: uint8 [H, W, 3] -> uint8 [h, w, 3] for ``res`` = (h, w): the region ``box`` of
    the frame (default: the centre crop to the target aspect), resampled to the target size."""
    h, w = frame.shape[:2]
    th, tw = res
    box = crop_box(h, w, res) if box is None else box
    if (th, tw) == (h, w) and tuple(box) == (0.0, 0.0, float(w), float(h)):
        return frame
    return np.asarray(Image.fromarray(np.ascontiguousarray(frame)).resize(
        (tw, th), Image.Resampling.BICUBIC, box=tuple(float(v) for v in box)))


def upscale_factor(height: int, width: int, res: tuple[int, int]) -> float:
    """How much the centre crop of a ``height`` x ``width`` frame is enlarged to reach ``res``."""
    x0, y0, x1, y1 = crop_box(height, width, res)
    return max(res[0] / (y1 - y0), res[1] / (x1 - x0))
