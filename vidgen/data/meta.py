"""What a frame source is (:class:`SourceMeta`) and the limits every input is held to.

Memory stays bounded on any input: a frame's size is checked from the file's header before
anything is decoded (an image or video whose header claims 100000x100000 pixels is refused
with one line, not decoded), and frames are read in chunks sized by bytes, not by count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vidgen.errors import DataError

DEFAULT_MAX_PIXELS = 150_000_000   # per frame: a 12000x12000 panorama (432 MB as RGB) passes
CHUNK_BYTES = 256 << 20            # decoded RGB bytes read at once


@dataclass(frozen=True)
class SourceMeta:
    """What a source is: sizes are after rotation; ``fps`` is the nominal rate (None for
    frame folders), ``avg_fps`` the measured one; ``vfr`` marks uneven frame timing;
    ``creation_time`` is the container's creation time (ISO 8601) when it records one."""

    path: str
    num_frames: int
    width: int
    height: int
    fps: float | None
    avg_fps: float | None
    duration: float | None
    vfr: bool
    backend: str  # "pyav" | "decord" | "folder" | "zip"
    rotation: int = 0
    note: str = ""
    creation_time: str | None = None


def max_frame_pixels() -> int:
    """Largest frame (width x height) vidgen decodes; ``$VIDGEN_MAX_PIXELS`` changes it."""
    text = os.environ.get("VIDGEN_MAX_PIXELS", "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(text))
        assert value > 0
    except (ValueError, AssertionError, OverflowError):
        raise DataError(f"VIDGEN_MAX_PIXELS={text!r} is not a positive pixel count, e.g. 200000000") from None
    return value


def check_frame_size(width: int, height: int, name: str) -> None:
    """Refuse a frame size read from a header before any pixel is decoded."""
    if width <= 0 or height <= 0:
        raise DataError(f"{name}: the header gives a frame size of {width}x{height}; the file is damaged")
    limit = max_frame_pixels()
    if width * height > limit:
        raise DataError(f"{name}: the header claims {width}x{height} pixels per frame "
                        f"({width * height / 1e6:.0f} megapixels), over the limit of {limit / 1e6:.0f}; "
                        "not decoded (a damaged or hostile file?). Downscale it first, or raise "
                        "VIDGEN_MAX_PIXELS if it is genuine and fits in memory")


def frames_per_chunk(height: int, width: int, budget: int | None = None) -> int:
    """How many RGB frames of this size fit in ``budget`` bytes (default CHUNK_BYTES; at least one)."""
    return max(1, (CHUNK_BYTES if budget is None else budget) // max(1, height * width * 3))
