"""Generated frames beside the real frame nearest in time (``timelapse render --compare-real``).

Each rendered frame depicts one instant: the date of its trend time at the time of day of its
daily factor (the trend time alone for sequences without a daily term). The real frame whose
capture time is nearest to that instant is cropped to its valid rectangle, resized to the
generated frame's size and placed to its right (docs/METHODS.md 2, "compare with the nearest real
frame").
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from vidgen.errors import DataError
from vidgen.render.layout import grid, side_by_side
from vidgen.render.writer import to_uint8_frames
from timelapse.frames import TimelapseFrames
from timelapse.time import DAY, TimeAxis


def depicted_seconds(axis: TimeAxis, t: torch.Tensor) -> np.ndarray:
    """The instant (epoch seconds, UTC) each frame shows. t: [T, F] or [T, L, F] per-factor
    normalised times (per-layer times: those of the first w layer)."""
    t = t[:, 0] if t.ndim == 3 else t
    secs = axis.seconds(t.double().cpu().numpy())  # [T, F]
    trend = secs[:, 0]
    if "day" not in axis.factors:
        return trend
    day = secs[:, axis.factors.index("day")]
    return np.floor(trend / DAY) * DAY + np.mod(day, DAY)


class NearestReal:
    """The real frames of a folder or prepared dataset, looked up by capture time."""

    def __init__(self, root, size_hw: tuple[int, int], skip=(), time_pattern: str | None = None):
        self.data = TimelapseFrames(root, max(size_hw), skip, time_pattern)
        self.root, self.size_hw = root, size_hw
        self.seconds = np.asarray(self.data.seconds, dtype=np.float64)
        order = np.argsort(self.seconds, kind="stable")
        self.sorted, self.order = self.seconds[order], order

    def nearest(self, seconds: np.ndarray) -> np.ndarray:
        """Index (capture order) of the real frame nearest in time to each instant. seconds: [T]."""
        s = np.asarray(seconds, dtype=np.float64)
        right = np.clip(np.searchsorted(self.sorted, s), 1, len(self.sorted) - 1)
        left = right - 1
        pick = np.where(np.abs(s - self.sorted[left]) <= np.abs(self.sorted[right] - s), left, right)
        return self.order[pick]

    def frames(self, idx: np.ndarray) -> np.ndarray:
        """uint8 [T, H, W, 3]: the valid rectangle of each real frame at the generated size."""
        x0, y0, x1, y1 = self.data.rect
        out = []
        for i in idx:
            img = self.data.frame(int(i))[:, y0:y1, x0:x1]  # [3, h, w] in [-1, 1]
            if tuple(img.shape[-2:]) != self.size_hw:
                img = F.interpolate(img[None].float(), size=self.size_hw, mode="bilinear", antialias=True,
                                    align_corners=False)[0]
            out.append(img)
        return to_uint8_frames(torch.stack(out), layout="TCHW")


def open_real(root, size_hw: tuple[int, int]) -> NearestReal:
    try:
        return NearestReal(root, size_hw)
    except DataError as exc:
        raise DataError(f"--compare-real {root}: {exc}") from None


def with_real(streams: Iterator[np.ndarray] | Iterator[list[np.ndarray]], seconds: np.ndarray,
              real: NearestReal) -> Iterator[np.ndarray]:
    """Chunks of generated frames ([n, H, W, 3], or a list of such tiles) -> the same chunks
    with the nearest real frames added on the right (as one more tile for tiled renders)."""
    a = 0
    for chunk in streams:
        tiles = chunk if isinstance(chunk, list) else [chunk]
        n = len(tiles[0])
        ref = real.frames(real.nearest(seconds[a:a + n]))
        a += n
        if len(tiles) == 1:
            yield side_by_side(tiles[0], ref, labels=["generated", "real"])
        else:
            yield grid(tiles + [ref], ncols=len(tiles) + 1 if len(tiles) < 4 else None)
