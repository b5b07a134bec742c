"""Time-stamped frames for the time-lapse GAN: vidgen's TimedFrameDataset (a frame folder, a
prepared dataset or a time-lapse video, optionally registered frame to frame), minus the ranges
of bad frames the user skips, each frame letterboxed into a square (padding -1 = black) with
the valid rectangle recorded so the generator's output can be masked the same way
(docs/METHODS.md section 2, "Data")."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vidgen.data.datasets import TimedFrameDataset
from vidgen.errors import ConfigError, DataError
from timelapse.time import TimeAxis, dequant_sigmas


def parse_skip(ranges) -> list[tuple[int, int]]:
    """['100:250', '900:'] -> [(100, 250), (900, None)]: frame numbers in capture-time order,
    end excluded."""
    out = []
    for text in ranges or ():
        a, sep, b = str(text).partition(":")
        try:
            if not sep:
                raise ValueError
            out.append((int(a) if a else 0, int(b) if b else None))
        except ValueError:
            raise ConfigError(f"--skip {text!r}: expected FIRST:STOP frame numbers (capture order), e.g. 120:180") from None
    return out


def letterbox_rect(h: int, w: int, res: int) -> tuple[int, int, int, int]:
    """Where an h x w frame lands inside a res x res square: (x0, y0, x1, y1)."""
    s = res / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    y0, x0 = (res - nh) // 2, (res - nw) // 2
    return x0, y0, x0 + nw, y0 + nh


def letterbox(frame: torch.Tensor, res: int) -> torch.Tensor:
    """frame: [C, H, W] in [-1, 1] -> [C, res, res]: resized to fit, padded with -1."""
    C, H, W = frame.shape
    x0, y0, x1, y1 = letterbox_rect(H, W, res)
    if (y1 - y0, x1 - x0) != (H, W):
        frame = F.interpolate(frame[None].float(), size=(y1 - y0, x1 - x0), mode="bilinear",
                              antialias=True, align_corners=False)[0].clamp(-1, 1)
    out = torch.full((C, res, res), -1.0, dtype=frame.dtype)
    out[:, y0:y1, x0:x1] = frame
    return out


class TimelapseFrames(torch.utils.data.Dataset):
    """Items: (frame [3, R, R] in [-1, 1], normalised t, dequantisation sigma), in capture order.
    ``axis`` is the frames' own span (where t = 0 and t = 1 lie); a run's axis, with its trend
    features, comes from ``recipe.time_axis``."""

    def __init__(self, root, resolution: int, skip=(), time_pattern: str | None = None,
                 start: str | None = None, interval: str | None = None, align: bool = False):
        # a video time-lapse: frame i at start + i * interval (vidgen.data.datasets)
        self.base = TimedFrameDataset(root, None, time_pattern=time_pattern or None, start=start or None,
                                      interval=interval or None, align=align)
        n = len(self.base)
        keep = np.ones(n, dtype=bool)
        for a, b in parse_skip(skip):
            if a >= n:
                raise ConfigError(f"--skip {a}:{b}: the dataset has only {n} frames")
            keep[a:b] = False
        self.index = np.flatnonzero(keep)
        if len(self.index) < 2:
            raise DataError(f"{root}: fewer than two frames left after --skip; a time-lapse needs at least two")
        self.seconds = self.base.times[self.index]
        self.axis = TimeAxis.from_times(self.seconds)
        self.t = self.axis.normalize(self.seconds).astype(np.float32)
        self.sigma = dequant_sigmas(self.t).astype(np.float32)
        self.resolution = resolution
        first = self.base[int(self.index[0])][0]
        self.frame_size = tuple(first.shape[-2:])  # (H, W) of the source
        self.rect = letterbox_rect(*self.frame_size, resolution)

    def __len__(self) -> int:
        return len(self.index)

    def frame(self, i: int) -> torch.Tensor:
        return letterbox(self.base[int(self.index[i])][0], self.resolution)

    def __getitem__(self, i: int):
        return self.frame(i), torch.tensor(self.t[i]), torch.tensor(self.sigma[i])
