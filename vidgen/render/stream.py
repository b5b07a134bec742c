"""Chunked rendering of arbitrarily long videos in bounded memory.

A :class:`VideoGenerator` renders any frame range [start, stop) of the video with a given
seed, without rendering from frame 0, so a long video is produced window by window and each
window goes straight to the writer: memory does not grow with the number of frames. The
generators themselves live with their families (e.g. ``vidgen.lvg.family``); this module
only streams and writes.
"""

from __future__ import annotations

import os
from typing import Iterator, Protocol, runtime_checkable

import torch
from tqdm import tqdm

from vidgen.errors import VidgenError
from vidgen.render.writer import open_writer, to_uint8_frames


@runtime_checkable
class VideoGenerator(Protocol):
    """Renders frames [start, stop) of the video ``seed``: float [C, T, H, W] in [-1, 1]."""

    frame_size: tuple[int, int]  # (H, W)

    def render(self, seed: int, start: int, stop: int) -> torch.Tensor: ...


def stream_frames(generator: VideoGenerator, seed: int, num_frames: int, window: int = 64,
                  start: int = 0, with_lowres: bool = False) -> Iterator:
    """uint8 [t, H, W, 3] chunks of frames [start, start + num_frames), ``window`` at a time.

    With ``with_lowres`` (super-res generators only) yields (frames, lowres frames) pairs.
    """
    if num_frames < 1 or window < 1:
        raise VidgenError(f"frames ({num_frames}) and window ({window}) must be at least 1")
    if with_lowres and not hasattr(generator, "render_both"):
        raise VidgenError("the low-res frames can only be saved next to a super-res render (pass --superres)")
    for a in range(start, start + num_frames, window):
        b = min(a + window, start + num_frames)
        if with_lowres:
            hi, lo = generator.render_both(seed, a, b)
            yield to_uint8_frames(hi, layout="CTHW"), to_uint8_frames(lo, layout="CTHW")
        else:
            yield to_uint8_frames(generator.render(seed, a, b), layout="CTHW")


def render_to_file(generator: VideoGenerator, seed: int, num_frames: int, out: str | os.PathLike, fps: float = 30.0,
                   window: int = 64, settings: dict | None = None, lowres_out: str | os.PathLike | None = None,
                   start: int = 0, progress: bool = True) -> None:
    """Stream a video to ``out`` (and its low-res frames to ``lowres_out``), settings embedded."""
    settings = dict(settings or {})
    # the bar is closed (its line ended) also when writing fails, so an error message starts a line
    with tqdm(total=num_frames, unit="frame", desc="render", disable=not progress) as bar, \
            open_writer(out, fps, settings) as writer:
        if lowres_out is None:
            for chunk in stream_frames(generator, seed, num_frames, window, start):
                writer.append(chunk)
                bar.update(len(chunk))
        else:
            with open_writer(lowres_out, fps, {**settings, "lowres": True}) as low:
                for chunk, chunk_lo in stream_frames(generator, seed, num_frames, window, start, with_lowres=True):
                    writer.append(chunk)
                    low.append(chunk_lo)
                    bar.update(len(chunk))
