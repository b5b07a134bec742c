"""Write what a person looks at: mp4 (H.264), webm (VP9), gif and png frames.

Frames are appended in chunks and encoded at once, so memory does not grow with the length of
the video. Every output is written atomically: it is built under a hidden temporary name in
the destination folder and renamed into place on close; an exception removes it. The settings
that produced a render are embedded as JSON so the render can be reproduced
(`read_settings(path)` returns them):

- mp4 / webm: the container's ``comment`` tag;
- gif: a GIF comment extension before the first frame (the GIF89a encoder is in gif.py);
- png: a ``vidgen_settings`` tEXt chunk in every frame, plus ``settings.json`` beside them.
"""

from __future__ import annotations

import json
import os
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from einops import rearrange, repeat
from PIL import Image, PngImagePlugin

from vidgen.fileio import fsync_path, temp_beside
from vidgen.render.gif import GifBackend
from vidgen.errors import ConfigError, DataError, VidgenError

FORMATS = ("mp4", "webm", "gif", "png")
PNG_KEY = "vidgen_settings"  # tEXt keyword holding the settings JSON
_CODECS = {"mp4": "libx264", "webm": "libvpx-vp9"}
_LAYOUTS = ("THWC", "CTHW", "TCHW")
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


# ----------------------------------------------------------------------------- frames
def to_uint8_frames(x: Any, layout: str | None = None, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Any frame batch -> uint8 numpy ``[T, H, W, 3]`` (contiguous, on the CPU).

    Accepts numpy arrays or torch tensors (any device):
    - uint8 ``[T, H, W, C]`` or one image ``[H, W, C]``, taken as is;
    - float ``[C, T, H, W]`` (a model's clip), ``[T, C, H, W]`` or ``[T, H, W, C]``, or one image
      ``[C, H, W]``, with values in ``value_range`` (default [-1, 1]) mapped to 0..255.
    ``layout`` ("THWC", "CTHW", "TCHW") settles float shapes that could be read two ways, such as
    ``[3, 3, H, W]``. One channel becomes grey RGB; a fourth (alpha) channel is dropped.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach()
    elif not isinstance(x, np.ndarray):
        x = np.asarray(x)
    is_uint8 = x.dtype in (np.uint8, torch.uint8)
    is_float = x.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) or (
        isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating)
    )
    if not (is_uint8 or is_float):
        raise VidgenError(f"frames must be uint8 (0..255) or float ({value_range[0]}..{value_range[1]}); got dtype {x.dtype}")
    if x.ndim == 3:  # one image: uint8 [H, W, C], float [C, H, W] unless layout says THWC
        if layout is None:
            layout = "THWC" if is_uint8 else "CTHW"
        x = x[None] if layout == "THWC" else x[:, None]
    if x.ndim != 4:
        raise VidgenError(f"frames must be [T, H, W, 3] (uint8) or [C, T, H, W] (float); got shape {tuple(x.shape)}")
    if layout is None:
        layout = "THWC" if is_uint8 else _guess_layout(tuple(x.shape))
    if layout not in _LAYOUTS:
        raise VidgenError(f"layout must be one of {_LAYOUTS}; got {layout!r}")
    pattern = {"THWC": "t h w c -> t h w c", "CTHW": "c t h w -> t h w c", "TCHW": "t c h w -> t h w c"}[layout]
    x = rearrange(x, pattern)  # x: [T, H, W, C]
    if x.shape[-1] not in (1, 3, 4):
        raise VidgenError(f"frames need 1, 3 or 4 channels in layout {layout}; got shape {tuple(x.shape)}")
    if is_float:
        lo, hi = value_range
        if isinstance(x, torch.Tensor) and x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()  # half precision cannot hold 0..255 with the fractions needed to round right
        x = (x - lo) * (255.0 / (hi - lo))
        x = x.round().clamp(0, 255).to(torch.uint8) if isinstance(x, torch.Tensor) else np.clip(np.round(x), 0, 255).astype(np.uint8)
    if isinstance(x, torch.Tensor):
        x = x.cpu().numpy()
    x = x[..., :3]
    if x.shape[-1] == 1:
        x = repeat(x, "t h w 1 -> t h w c", c=3)
    return np.ascontiguousarray(x)


def _guess_layout(shape: tuple[int, ...]) -> str:
    """Float frames: the one layout whose channel axis has 3 entries (else the one with 1)."""
    for channels in (3, 1):
        fits = [name for name, axis in (("CTHW", 0), ("TCHW", 1), ("THWC", 3)) if shape[axis] == channels]
        if len(fits) == 1:
            return fits[0]
        if fits:
            break
    raise VidgenError(f"cannot tell the channel axis of float frames with shape {shape}; pass layout='CTHW', 'TCHW' or 'THWC'")


# ----------------------------------------------------------------------------- settings
def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.generic, torch.Tensor, np.ndarray)):
        return value.tolist() if not isinstance(value, np.generic) else value.item()
    if isinstance(value, (Path, Fraction)):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if hasattr(value, "__dataclass_fields__"):
        return {k: getattr(value, k) for k in value.__dataclass_fields__}
    raise TypeError(type(value).__name__)


def settings_payload(settings: dict | None) -> str:
    """The ASCII JSON text embedded in an output: ``{"vidgen": 1, "settings": {...}}``."""
    if settings is not None and not isinstance(settings, dict):
        raise ConfigError(f"settings must be a dict; got {type(settings).__name__}")
    try:
        return json.dumps({"vidgen": 1, "settings": settings or {}}, default=_jsonable, sort_keys=True, ensure_ascii=True)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"settings cannot be saved as JSON ({e}); use numbers, strings, lists and dicts") from None


def _parse_payload(text: str | bytes | None, path: Path) -> dict:
    try:
        payload = json.loads(text) if text else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        payload = None
    if not isinstance(payload, dict) or "vidgen" not in payload or not isinstance(payload.get("settings"), dict):
        raise DataError(f"{path}: no vidgen settings embedded (the file was not written by vidgen.render)")
    return payload["settings"]


def read_settings(path: str | os.PathLike) -> dict:
    """The settings dict embedded by `open_writer` / `save_png` in a video, gif, png or frame folder."""
    path = Path(path)
    if "%" in path.name or "*" in path.name:  # a numbered-frame pattern: its folder
        path = path.parent
    if path.is_dir():
        sidecar = path / "settings.json"
        if sidecar.is_file():
            return _parse_payload(sidecar.read_text(), sidecar)
        frames = sorted(path.glob("*.png"))
        if not frames:
            raise DataError(f"{path}: no settings.json and no png frames in this folder")
        return read_png_settings(frames[0])
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".png":
        return read_png_settings(path)
    if suffix == ".gif":
        try:
            with Image.open(path) as im:
                return _parse_payload(im.info.get("comment"), path)
        except (OSError, SyntaxError) as e:
            raise DataError(f"{path}: not a readable gif ({e})") from None
    try:
        with av.open(str(path)) as container:
            tags = {k.lower(): v for k, v in container.metadata.items()}
    except av.error.FFmpegError as e:
        raise DataError(f"{path}: not a readable video ({e})") from None
    return _parse_payload(tags.get("comment"), path)


def read_png_settings(path: str | os.PathLike) -> dict:
    """The settings dict in a png's ``vidgen_settings`` tEXt chunk."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            text = getattr(im, "text", {}).get(PNG_KEY)
    except (OSError, SyntaxError) as e:
        raise DataError(f"{path}: not a readable png ({e})") from None
    return _parse_payload(text, path)


# ----------------------------------------------------------------------------- atomic files
# temporary names and fsync come from vidgen.fileio (one implementation for every output)
def _commit(tmp: Path, final: Path) -> None:
    """fsync, then rename into place and fsync the folder so the rename survives a crash."""
    if tmp.is_file():
        fsync_path(tmp)
    os.replace(tmp, final)
    fsync_path(final.parent)


def _remove(path: Path) -> None:
    if path.is_dir():
        for child in path.iterdir():
            child.unlink()
        path.rmdir()
    elif path.exists():
        path.unlink()


def _png_info(payload: str) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_KEY, payload)  # tEXt: the payload is plain ASCII JSON
    return info


def save_png(path: str | os.PathLike, image: Any, settings: dict | None = None) -> Path:
    """Write one image atomically as png with `settings` in a tEXt chunk; returns the path.

    ``image``: uint8 ``[H, W, 3]`` (also ``[H, W]`` grey or ``[H, W, 4]`` RGBA), or anything
    `to_uint8_frames` accepts for a single image, such as float ``[3, H, W]`` in [-1, 1].
    """
    path = Path(path)
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 2:
        image = image[..., None]
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 4:
        pil = Image.fromarray(np.ascontiguousarray(image), "RGBA")
    else:
        frames = to_uint8_frames(image)
        if frames.shape[0] != 1:
            raise VidgenError(f"save_png takes one image; got {frames.shape[0]} frames (use open_writer for a folder of frames)")
        pil = Image.fromarray(frames[0], "RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path, ".png")
    try:
        pil.save(tmp, format="PNG", pnginfo=_png_info(settings_payload(settings)))
        _commit(tmp, path)
    finally:
        _remove(tmp)
    return path


# ----------------------------------------------------------------------------- backends
class _AvBackend:
    """mp4 (libx264) or webm (libvpx-vp9) through PyAV, encoding each chunk as it arrives."""

    def __init__(self, tmp: Path, fmt: str, fps: Fraction, size: tuple[int, int], payload: str, crf: int, preset: str):
        codec = _CODECS[fmt]
        if codec not in av.codecs_available:
            raise VidgenError(f"the {codec} encoder is missing from this PyAV/FFmpeg build, so .{fmt} cannot be written; "
                              f"write .mp4 or .gif instead, or install a PyAV build that includes {codec}")
        h, w = size
        # yuv420p stores colour at half resolution, so H.264 needs even sizes: pad by repeating the edge
        self.pad = (h % 2, w % 2) if fmt == "mp4" else (0, 0)
        self.container = av.open(str(tmp), "w", format=fmt, options={"movflags": "+faststart"} if fmt == "mp4" else {})
        self.container.metadata["comment"] = payload
        self.stream = self.container.add_stream(codec, rate=fps)
        self.stream.width, self.stream.height = w + self.pad[1], h + self.pad[0]
        self.stream.pix_fmt = "yuv420p"
        if fmt == "mp4":
            self.stream.options = {"crf": str(crf), "preset": preset}
        else:  # constant quality mode of libvpx needs b=0
            self.stream.options = {"crf": str(crf), "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}
        try:  # PyAV converts RGB with the BT.601 limited-range matrix; tag it so players agree
            ctx = self.stream.codec_context
            ctx.colorspace, ctx.color_primaries, ctx.color_trc, ctx.color_range = 6, 6, 6, 1
        except AttributeError:
            pass
        self.index = 0

    def write(self, frames: np.ndarray) -> None:  # frames: [T, H, W, 3] uint8
        if any(self.pad):
            frames = np.pad(frames, ((0, 0), (0, self.pad[0]), (0, self.pad[1]), (0, 0)), mode="edge")
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = self.index
            self.index += 1
            self.container.mux(self.stream.encode(vf))

    def finish(self) -> None:
        self.container.mux(self.stream.encode(None))  # flush delayed frames
        self.container.close()

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # the file is deleted anyway; the original error matters
            pass


class _PngBackend:
    """Numbered png frames in a folder built under a temporary name."""

    def __init__(self, tmp: Path, name: str, payload: str):
        self.tmp, self.name, self.payload, self.index = tmp, name, payload, 0
        tmp.mkdir()

    def frame_name(self, i: int) -> str:
        return self.name % i if "%" in self.name else self.name.replace("*", f"{i:06d}")

    def write(self, frames: np.ndarray) -> None:  # frames: [T, H, W, 3] uint8
        for frame in frames:
            Image.fromarray(frame, "RGB").save(self.tmp / self.frame_name(self.index), format="PNG",
                                               pnginfo=_png_info(self.payload), compress_level=4)
            self.index += 1

    def finish(self) -> None:
        (self.tmp / "settings.json").write_text(json.dumps(json.loads(self.payload), indent=2) + "\n")
        for child in self.tmp.iterdir():
            fsync_path(child)

    def abort(self) -> None:
        pass


# ----------------------------------------------------------------------------- writer
def _output_kind(path: Path, format: str | None) -> tuple[str, Path, str | None]:
    """(format, final path, png frame name): frames go to a folder, a pattern names them."""
    suffix = path.suffix.lower()
    if format is None:
        by_suffix = {".mp4": "mp4", ".m4v": "mp4", ".webm": "webm", ".gif": "gif", ".png": "png"}
        if suffix in by_suffix:
            format = by_suffix[suffix]
        elif suffix == "" or path.is_dir():
            format = "png"
        else:
            raise ConfigError(f"{path}: unknown output type '{suffix}'; use .mp4, .webm, .gif, a folder, "
                              f"or a png pattern such as frames/%06d.png")
    format = format.lower().lstrip(".")
    if format not in FORMATS:
        raise ConfigError(f"{path}: format must be one of {FORMATS}; got {format!r}")
    if format != "png":
        return format, path, None
    if "%" in path.name or "*" in path.name:
        try:
            path.name % 0 if "%" in path.name else None
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: a frame pattern needs exactly one integer field such as %06d") from None
        return "png", path.parent, path.name
    if suffix == ".png":
        raise ConfigError(f"{path}: one .png holds one image (use save_png); for frames give a folder or a "
                          f"pattern such as {path.with_name(path.stem + '_%06d.png')}")
    return "png", path, "%06d.png"


class VideoWriter:
    """Appends chunks of frames to one output and publishes it atomically on close.

    Use it as a context manager (see `open_writer`): leaving the block normally renames the
    finished file into place; leaving it through an exception deletes the temporary file.
    """

    def __init__(self, path: str | os.PathLike, fps: float, settings: dict | None = None, crf: int = 18,
                 format: str | None = None, preset: str = "medium", gif_colors: int = 256):
        self.format, self.path, self._frame_name = _output_kind(Path(path), format)
        if not (isinstance(fps, (int, float, Fraction)) and fps > 0):
            raise ConfigError(f"{path}: fps must be a positive number; got {fps!r}")
        top = {"mp4": 51, "webm": 63}.get(self.format, 63)
        if not (isinstance(crf, int) and 0 <= crf <= top):
            raise ConfigError(f"{path}: crf must be an integer in 0..{top} for {self.format} (lower is better); got {crf!r}")
        if self.format == "mp4" and preset not in X264_PRESETS:
            raise ConfigError(f"{path}: preset must be one of {X264_PRESETS} (slower = smaller file); got {preset!r}")
        if not 2 <= gif_colors <= 256:
            raise ConfigError(f"{path}: gif_colors must be in 2..256; got {gif_colors}")
        self.fps = Fraction(fps).limit_denominator(1001)  # 29.97 -> 2997/100, 30000/1001 exact
        self.crf, self.preset, self.gif_colors = crf, preset, gif_colors
        self.frames_written, self.size = 0, None
        self._payload = settings_payload(settings)
        # pattern frames go into an existing folder one by one; otherwise the whole folder is renamed
        self._merge = self.format == "png" and self._frame_name != "%06d.png" and self.path.is_dir()
        if self.format == "png" and not self._merge and self.path.is_dir() and any(self.path.iterdir()):
            raise VidgenError(f"{self.path}: output folder already exists and is not empty; remove it or choose another")
        self._backend, self._tmp, self._closed = None, None, False

    def _start(self, size: tuple[int, int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.format == "png":
            self._tmp = self.path / f".tmp-{uuid.uuid4().hex[:8]}" if self._merge else temp_beside(self.path)
            self._backend = _PngBackend(self._tmp, self._frame_name, self._payload)
        elif self.format == "gif":
            self._tmp = temp_beside(self.path, ".gif")
            self._backend = GifBackend(self._tmp, self.fps, size, self._payload, self.gif_colors)
        else:
            self._tmp = temp_beside(self.path, "." + self.format)
            self._backend = _AvBackend(self._tmp, self.format, self.fps, size, self._payload, self.crf, self.preset)

    def append(self, frames: Any, layout: str | None = None) -> None:
        """Encode a chunk now. ``frames``: uint8 ``[T, H, W, 3]`` (see `to_uint8_frames` for others)."""
        if self._closed:
            raise VidgenError(f"{self.path}: writer is already closed")
        frames = to_uint8_frames(frames, layout)  # frames: [T, H, W, 3] uint8
        if self.size is None:
            self.size = frames.shape[1:3]
            self._start(self.size)
        elif frames.shape[1:3] != self.size:
            raise VidgenError(f"{self.path}: all frames must be {self.size[0]}x{self.size[1]} (HxW); "
                              f"got a chunk of {frames.shape[1]}x{frames.shape[2]}")
        self._backend.write(frames)
        self.frames_written += len(frames)

    def close(self) -> Path:
        """Finish encoding and move the output into place; returns its path."""
        if self._closed:
            return self.path
        if self._backend is None:
            self.abort()
            raise VidgenError(f"{self.path}: no frames were appended, so nothing was written")
        try:
            self._backend.finish()
            if self._merge:  # pattern frames into an existing folder
                for child in sorted(self._tmp.iterdir()):
                    os.replace(child, self.path / child.name)
                self._tmp.rmdir()
                fsync_path(self.path)
            else:
                if self.format == "png" and self.path.is_dir():
                    self.path.rmdir()  # empty (checked when opened), so the rename can take its place
                _commit(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Stop and delete everything written so far."""
        self._closed = True
        if self._backend is not None:
            self._backend.abort()
        if self._tmp is not None:
            _remove(self._tmp)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:  # a writer dropped without close leaves no temporary file behind
        if not getattr(self, "_closed", True):
            self.abort()


def open_writer(path: str | os.PathLike, fps: float, settings: dict | None = None, crf: int = 18,
                format: str | None = None, preset: str = "medium", gif_colors: int = 256) -> VideoWriter:
    """A `VideoWriter` for ``path``; the extension picks the format unless ``format`` is given.

    ``.mp4``: H.264 (libx264, yuv420p, ``crf`` 0..51, ``preset``; odd sizes are padded by one
    repeated row/column to even). ``.webm``: VP9 (libvpx-vp9, ``crf`` 0..63). ``.gif``: a
    ``gif_colors`` palette per frame, delays in 1/100 s. A folder (or a path without extension)
    gets ``000000.png, 000001.png, ...``; a pattern such as ``out/frame_%05d.png`` or
    ``out/frame_*.png`` names the frames. ``settings`` is embedded for `read_settings`.
    """
    return VideoWriter(path, fps, settings, crf, format, preset, gif_colors)


def write_video(path: str | os.PathLike, frames: Any, fps: float, settings: dict | None = None, **kw: Any) -> Path:
    """Write a whole clip (an array/tensor, or an iterable of chunks) in one call; returns the path."""
    with open_writer(path, fps, settings, **kw) as writer:
        if isinstance(frames, (np.ndarray, torch.Tensor)):
            writer.append(frames)
        else:
            for chunk in frames:
                writer.append(chunk)
    return writer.path
