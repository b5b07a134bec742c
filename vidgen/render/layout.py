"""Arrange frames for a person to look at: grids, comparisons, contact sheets, time-lapse
stacks and strips, and line plots.

Everything takes uint8 numpy frames (``[T, H, W, 3]`` clips or ``[H, W, 3]`` images; use
`vidgen.render.writer.to_uint8_frames` for tensors) and returns uint8 numpy. Text is drawn
with Pillow's default font, plots with Pillow alone (no matplotlib needed).
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
from einops import rearrange
from PIL import Image, ImageDraw, ImageFont

from vidgen.errors import VidgenError
from vidgen.render.writer import save_png

PadValue = int | tuple[int, int, int]
# distinguishable line colours (the common "category10" hues)
COLORS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
          (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def _check(x: np.ndarray, name: str, ndims: tuple[int, ...]) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim not in ndims or x.shape[-1] != 3:
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise VidgenError(f"{name} must be a uint8 numpy array of shape {' or '.join(_SHAPES[n] for n in ndims)}; "
                          f"got {getattr(x, 'dtype', '')} {shape} (vidgen.render.to_uint8_frames converts tensors)")
    return x


_SHAPES = {3: "[H, W, 3]", 4: "[T, H, W, 3]", 5: "[N, T, H, W, 3]"}


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one fixed-size bitmap font
        return ImageFont.load_default()


def _text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font: ImageFont.ImageFont,
          anchor: str = "la", fill: tuple[int, int, int] = (0, 0, 0)) -> None:
    """Draw ``text`` with its ink box anchored at ``xy`` (l/m/r, a(top)/m/d(bottom)); any Pillow font."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = xy[0] - {"l": left, "m": (left + right) / 2, "r": right}[anchor[0]]
    y = xy[1] - {"a": top, "m": (top + bottom) / 2, "d": bottom}[anchor[1]]
    draw.text((x, y), text, fill=fill, font=font)


def label_band(text: str, width: int, height: int = 16, fg: PadValue = 255, bg: PadValue = 0) -> np.ndarray:
    """``text`` centred on a ``[height, width, 3]`` band (clipped at the sides if too long)."""
    img = Image.new("RGB", (width, height), _rgb(bg))
    draw = ImageDraw.Draw(img)
    _text(draw, (width / 2, height / 2), text, _font(max(8, height - 4)), "mm", _rgb(fg))
    return np.asarray(img)


def _rgb(value: PadValue) -> tuple[int, int, int]:
    return (value,) * 3 if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)


def _with_labels(clips: list[np.ndarray], labels: Sequence[str] | None, height: int) -> list[np.ndarray]:
    """Put a text band above each clip ``[T, H, W, 3]``; the band is the same at every frame."""
    if labels is None:
        return clips
    if len(labels) != len(clips):
        raise VidgenError(f"got {len(labels)} labels for {len(clips)} clips; give one label per clip")
    out = []
    for clip, text in zip(clips, labels):
        band = label_band(str(text), clip.shape[2], height)
        out.append(np.concatenate([np.broadcast_to(band, (clip.shape[0], *band.shape)), clip], axis=1))
    return out


def _as_clips(items: np.ndarray | Sequence[np.ndarray], name: str) -> tuple[list[np.ndarray], bool]:
    """A batch (array ``[N, ...]`` or list) of clips or images -> (clips ``[T, H, W, 3]``, were images)."""
    if isinstance(items, np.ndarray):
        _check(items, name, (4, 5))
        items = list(items)
    if len(items) == 0:
        raise VidgenError(f"{name} is empty; give at least one clip or image")
    items = [_check(x, f"{name}[{i}]", (3, 4)) for i, x in enumerate(items)]
    images = all(x.ndim == 3 for x in items)
    return [x[None] if x.ndim == 3 else x for x in items], images


def _hold_last(clip: np.ndarray, t: int) -> np.ndarray:
    """Extend a clip to ``t`` frames by repeating its last frame (clips of unequal length)."""
    return clip[np.minimum(np.arange(t), len(clip) - 1)]


def grid(clips: np.ndarray | Sequence[np.ndarray], ncols: int | None = None, pad: int = 2,
         pad_value: PadValue = 0, labels: Sequence[str] | None = None) -> np.ndarray:
    """Tile a batch of clips into one clip, row by row.

    clips: ``[N, T, H, W, 3]`` or a list of ``[T, H, W, 3]`` -> ``[T, H', W', 3]``; images
    ``[N, H, W, 3]`` or a list of ``[H, W, 3]`` -> ``[H', W', 3]``. ``pad`` pixels of
    ``pad_value`` separate the tiles (no outer border); empty cells are ``pad_value``. Shorter
    clips hold their last frame. ``ncols`` defaults to a near-square grid.
    """
    clips, images = _as_clips(clips, "clips")
    clips = _with_labels(clips, labels, 16)
    h, w = clips[0].shape[1:3]
    if any(c.shape[1:3] != (h, w) for c in clips):
        raise VidgenError(f"grid tiles must share one size; got {sorted({c.shape[1:3] for c in clips})} (HxW)")
    n, t = len(clips), max(len(c) for c in clips)
    ncols = ncols or math.ceil(math.sqrt(n))
    if ncols < 1:
        raise VidgenError(f"ncols must be >= 1; got {ncols}")
    nrows = math.ceil(n / ncols)
    out = np.empty((t, nrows * h + (nrows - 1) * pad, ncols * w + (ncols - 1) * pad, 3), np.uint8)
    out[:] = _rgb(pad_value)
    for i, clip in enumerate(clips):
        y, x = (i // ncols) * (h + pad), (i % ncols) * (w + pad)
        out[:, y:y + h, x:x + w] = _hold_last(clip, t)
    return out[0] if images else out


def side_by_side(*clips: np.ndarray, labels: Sequence[str] | None = None, pad: int = 2,
                 pad_value: PadValue = 0) -> np.ndarray:
    """Clips (``[T, H, W, 3]``) or images (``[H, W, 3]``) of one height placed left to right.

    Widths may differ; ``labels`` puts a caption above each (e.g. ``["real", "generated"]``).
    """
    items, images = _as_clips(list(clips), "clips")
    items = _with_labels(items, labels, 16)
    if len({c.shape[1] for c in items}) > 1:
        raise VidgenError(f"side_by_side needs clips of one height; got heights {[c.shape[1] for c in items]}")
    t = max(len(c) for c in items)
    sep = np.empty((t, items[0].shape[1], pad, 3), np.uint8)
    sep[:] = _rgb(pad_value)
    parts = []
    for i, clip in enumerate(items):
        parts += ([sep] if i else []) + [_hold_last(clip, t)]
    out = np.concatenate(parts, axis=2)
    return out[0] if images else out


def contact_sheet(frames: np.ndarray | Sequence[np.ndarray], ncols: int = 8, labels: Sequence[str] | None = None,
                  pad: int = 2, pad_value: PadValue = 0) -> np.ndarray:
    """Frames ``[N, H, W, 3]`` as one image ``[H', W', 3]``, ``ncols`` per row, optionally captioned."""
    if isinstance(frames, np.ndarray):
        frames = list(_check(frames, "frames", (4,)))
    return grid(list(frames), ncols=min(ncols, len(frames)) or 1, pad=pad, pad_value=pad_value, labels=labels)


def filmstrip(frames: np.ndarray, n: int = 8, pad: int = 2, pad_value: PadValue = 0,
              labels: Sequence[str] | None = None) -> np.ndarray:
    """``n`` frames evenly spaced in time from ``[T, H, W, 3]``, in one row -> ``[H', W', 3]``."""
    frames = _check(frames, "frames", (4,))
    idx = np.unique(np.round(np.linspace(0, len(frames) - 1, min(n, len(frames)))).astype(int))
    return grid(list(frames[idx]), ncols=len(idx), pad=pad, pad_value=pad_value, labels=labels)


def stack_strip(frames: np.ndarray, axis: int = 1, slice_width: int | None = None, mode: str = "tile") -> np.ndarray:
    """A time-lapse stack: slices of successive frames side by side, time running along ``axis``.

    frames: ``[T, H, W, 3]``. ``axis=1`` cuts vertical slices (time runs left to right),
    ``axis=0`` horizontal ones (time runs top to bottom).
    - ``mode="tile"``: slice k covers the k-th band of the picture and comes from a frame
      evenly spaced in time, so the result ``[H, W, 3]`` shows the scene changing across the
      picture. ``slice_width`` defaults to ``W // T`` (at least 1).
    - ``mode="slit"``: the same centre slice of every frame, concatenated: ``[H, T*slice_width, 3]``
      (slice_width defaults to 1), a slit-scan of the whole sequence.
    """
    frames = _check(frames, "frames", (4,))
    if axis not in (0, 1):
        raise VidgenError(f"axis must be 0 (horizontal slices) or 1 (vertical slices); got {axis}")
    if axis == 0:  # cut rows by transposing, cutting columns, transposing back
        return rearrange(stack_strip(rearrange(frames, "t h w c -> t w h c"), 1, slice_width, mode), "w h c -> h w c")
    t, _, w, _ = frames.shape
    if slice_width is not None and not 1 <= slice_width <= w:
        raise VidgenError(f"slice_width must be in 1..{w} (the frame size along the cut); got {slice_width}")
    if mode == "slit":
        sw = slice_width or 1
        x0 = (w - sw) // 2
        return np.ascontiguousarray(rearrange(frames[:, :, x0:x0 + sw], "t h s c -> h (t s) c"))
    if mode != "tile":
        raise VidgenError(f"mode must be 'tile' or 'slit'; got {mode!r}")
    n = w // slice_width if slice_width else min(t, w)
    edges = np.round(np.linspace(0, w, n + 1)).astype(int)
    times = np.round(np.linspace(0, t - 1, n)).astype(int)
    out = np.empty_like(frames[0])
    for k in range(n):
        out[:, edges[k]:edges[k + 1]] = frames[times[k], :, edges[k]:edges[k + 1]]
    return out


def _nice_ticks(lo: float, hi: float, count: int = 5, min_step: float = 0.0) -> np.ndarray:
    """Round tick values (1, 2 or 5 times a power of ten apart), about ``count`` of them in [lo, hi]."""
    mag = 10 ** math.floor(math.log10((hi - lo) / count))
    step = min((m * mag for m in (1, 2, 5, 10)), key=lambda s: abs((hi - lo) / s - count))
    step = max(step, min_step)
    return np.arange(math.ceil(lo / step) * step, hi + step * 1e-9, step)


def line_plot(curves: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | os.PathLike | None = None,
              title: str = "", xlabel: str = "", ylabel: str = "", size: tuple[int, int] = (640, 400),
              logy: bool = False) -> np.ndarray:
    """Plot named ``(x, y)`` curves; returns uint8 ``[H, W, 3]`` and writes a png if ``path`` is given.

    Non-finite points (and non-positive ones with ``logy``) are left out. Drawn with Pillow only.
    """
    if not curves:
        raise VidgenError("line_plot needs at least one curve")
    width, height = size
    left, right, top, bottom = 70, 16, 34 if title else 14, 46 if xlabel else 30
    data = {}
    for name, (x, y) in curves.items():
        x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
        if x.shape != y.shape:
            raise VidgenError(f"curve {name!r}: x has {x.size} values but y has {y.size}")
        y = np.log10(np.where(y > 0, y, np.nan)) if logy else y
        data[name] = (x, y)
    finite = [(x[m], y[m]) for x, y in data.values() for m in [np.isfinite(x) & np.isfinite(y)] if m.any()]
    if not finite:
        raise VidgenError(f"line_plot: no finite points in curves {list(curves)}")
    xs, ys = np.concatenate([f[0] for f in finite]), np.concatenate([f[1] for f in finite])
    (x0, x1), (y0, y1) = [(v.min(), v.max()) if v.max() > v.min() else (v.min() - 0.5, v.min() + 0.5) for v in (xs, ys)]
    y0, y1 = y0 - 0.04 * (y1 - y0), y1 + 0.04 * (y1 - y0)
    pw, ph = width - left - right, height - top - bottom

    def to_px(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return left + (x - x0) / (x1 - x0) * pw, top + (y1 - y) / (y1 - y0) * ph

    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw, font = ImageDraw.Draw(img), _font(11)
    for tick in _nice_ticks(x0, x1):
        px = to_px(np.array(tick), np.array(y0))[0]
        draw.line([(px, top), (px, top + ph)], fill=(230, 230, 230))
        _text(draw, (px, top + ph + 4), f"{tick:g}", font, "ma")
    for tick in _nice_ticks(y0, y1, min_step=1.0 if logy and y1 - y0 >= 2 else 0.0):  # whole decades
        py = to_px(np.array(x0), np.array(tick))[1]
        draw.line([(left, py), (left + pw, py)], fill=(230, 230, 230))
        _text(draw, (left - 4, py), f"{10 ** tick:.3g}" if logy else f"{tick:g}", font, "rm")
    draw.rectangle([left, top, left + pw, top + ph], outline=(0, 0, 0))
    text_w = max(draw.textlength(name, font=font) for name in data)
    legend = [left + pw - text_w - 36, top + 2, left + pw - 2, top + 10 + 14 * len(data)]
    for i, (name, (x, y)) in enumerate(data.items()):
        px, py = to_px(x, y)
        ok = np.isfinite(px) & np.isfinite(py)
        color = COLORS[i % len(COLORS)]
        for run in np.split(np.arange(len(px)), np.flatnonzero(~ok)):  # a gap at each missing point
            run = run[ok[run]]
            if len(run) > 1:
                draw.line(list(zip(px[run], py[run])), fill=color, width=2, joint="curve")
            elif len(run) == 1:
                draw.ellipse([px[run[0]] - 2, py[run[0]] - 2, px[run[0]] + 2, py[run[0]] + 2], fill=color)
    draw.rectangle(legend, fill=(255, 255, 255), outline=(200, 200, 200))  # legend, top right
    for i, name in enumerate(data):
        ly, color = top + 12 + 14 * i, COLORS[i % len(COLORS)]
        draw.line([(legend[0] + 6, ly), (legend[0] + 24, ly)], fill=color, width=2)
        _text(draw, (legend[0] + 30, ly), name, font, "lm")
    if title:
        _text(draw, (left + pw / 2, 8), title, _font(14), "ma")
    if xlabel:
        _text(draw, (left + pw / 2, height - 6), xlabel, font, "md")
    if ylabel:  # drawn horizontally, then turned to read bottom to top
        label = Image.new("RGB", (ph, 16), (255, 255, 255))
        _text(ImageDraw.Draw(label), (ph / 2, 8), ylabel, font, "mm")
        img.paste(label.rotate(90, expand=True), (4, top))
    out = np.asarray(img).copy()
    if path is not None:
        save_png(path, out, {"plot": title, "curves": list(curves)})
    return out
