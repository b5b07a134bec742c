"""Where evaluated clips come from: real video collections and generated clips.

The metric code only needs objects with `len()` and `get(indices) -> uint8 [T, H, W, 3]`
(the `vidgen.data.sources.FrameSource` interface); files are opened by `vidgen.data`.
Generated clips come from a callable `generate(seed, num_frames) -> uint8 [T, H, W, 3]`
(always starting at frame 0) or from a folder of rendered videos.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from vidgen.errors import VidgenError

GenerateFn = Callable[[int, int], np.ndarray]


class VideoLike(Protocol):
    def __len__(self) -> int: ...
    def get(self, indices) -> np.ndarray: ...  # -> uint8 [T, H, W, 3]


class ArrayVideo:
    """An in-memory video: frames uint8 [T, H, W, 3]."""

    def __init__(self, frames: np.ndarray):
        frames = np.asarray(frames)
        assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3, frames.shape
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def get(self, indices) -> np.ndarray:
        return self.frames[np.asarray(indices, dtype=np.int64)]


@dataclass
class RealVideos:
    """A collection of real videos plus the hash that identifies it in stats caches."""

    videos: Sequence[VideoLike]
    manifest_sha256: str
    path: str = ""
    names: list[str] = field(default_factory=list)

    def lengths(self) -> list[int]:
        return [len(v) for v in self.videos]


@dataclass
class FakeVideos:
    """Generated clips: `clip(index, seed, num_frames)` always starts at frame 0."""

    kind: str                                  # "callable" | "checkpoint" | "directory"
    path: str = ""
    generate: GenerateFn | None = None
    videos: Sequence[VideoLike] = ()
    checkpoint_step: int | None = None

    def __len__(self) -> int:
        return len(self.videos) if self.generate is None else 1 << 62

    def clip(self, index: int, seed: int, indices: np.ndarray) -> np.ndarray:
        """Frames `indices` (counted from frame 0) of generated clip `index` / seed `seed`."""
        need = int(indices.max()) + 1
        if self.generate is not None:
            frames = np.asarray(self.generate(seed, need))
            if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) < need:
                raise VidgenError(f"generator {self.path or self.generate!r} returned "
                                  f"{frames.dtype} {list(frames.shape)}; expected uint8 [{need}, H, W, 3]")
            return _take(frames, indices)
        video = self.videos[index]
        if len(video) < need:
            name = self.path + f" (video {index})"
            raise VidgenError(f"{name}: generated video has {len(video)} frames, the protocol needs {need}")
        return video.get(indices)


def _take(frames: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """frames[indices], as a view (no copy) when the indices are evenly spaced."""
    step = int(indices[1] - indices[0]) if len(indices) > 1 else 1
    if step > 0 and np.array_equal(indices, indices[0] + step * np.arange(len(indices))):
        return frames[int(indices[0]):int(indices[-1]) + 1:step]
    return frames[indices]


# ---------------------------------------------------------------------- folders
def _media_entries(root: Path) -> list[Path]:
    from vidgen.data.sources import IMAGE_EXTS, VIDEO_EXTS

    entries = []
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix.lower() in VIDEO_EXTS + (".zip",):
            entries.append(p)
        elif p.is_dir() and any(q.suffix.lower() in IMAGE_EXTS for q in p.iterdir()):
            entries.append(p)
    return entries


def manifest_hash(root: Path, entries: list[Path]) -> str:
    """SHA-256 of `manifest.json` when the folder has one (a prepared dataset), otherwise of
    the sorted list of (relative path, size, mtime) of every entry: changes when data does."""
    manifest = root / "manifest.json"
    if manifest.is_file():
        return hashlib.sha256(manifest.read_bytes()).hexdigest()
    rows = []
    for e in entries:
        files = sorted(e.rglob("*")) if e.is_dir() else [e]
        for f in files:
            if f.is_file():
                st = f.stat()
                rows.append((str(f.relative_to(root)), st.st_size, st.st_mtime_ns))
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def open_video_folder(path: str | Path) -> tuple[list, list[Path]]:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise VidgenError(f"{root}: not a folder of videos / frame folders")
    try:
        from vidgen.data.sources import open_source
    except ImportError as exc:
        raise VidgenError("reading video folders needs vidgen.data.sources, which is not installed") from exc
    entries = _media_entries(root)
    if not entries:
        raise VidgenError(f"{root}: no videos, frame folders or frame zips found")
    return [open_source(e) for e in entries], entries


def load_real(path: str | Path) -> RealVideos:
    """A folder whose entries are videos, frame folders or frame zips (one entry = one video)."""
    videos, entries = open_video_folder(path)
    root = Path(path).expanduser()
    return RealVideos(videos, manifest_hash(root, entries), str(root), [e.name for e in entries])


def load_fake(spec: str) -> FakeVideos:
    """`spec`: a folder of rendered videos, a checkpoint file (resolved through
    `vidgen.render.stream.load_generator`), or `package.module:function` naming a callable
    `generate(seed, num_frames) -> uint8 [T, H, W, 3]`."""
    p = Path(spec).expanduser()
    if p.is_dir():
        videos, _ = open_video_folder(p)
        return FakeVideos("directory", str(p), videos=videos)
    if p.is_file():
        try:
            from vidgen.render.stream import load_generator
        except ImportError as exc:
            raise VidgenError(f"{p}: evaluating a checkpoint needs vidgen.render.stream.load_generator, "
                              "which is not available in this installation; render videos into a "
                              "folder and pass that folder to --fake instead") from exc
        generate = load_generator(p)
        return FakeVideos("checkpoint", str(p), generate=generate,
                          checkpoint_step=getattr(generate, "step", None))
    if ":" in spec and not p.exists():
        module, _, attr = spec.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise VidgenError(f"--fake {spec}: cannot import callable {attr!r} from {module!r} ({exc})") from exc
        return FakeVideos("callable", spec, generate=fn, checkpoint_step=getattr(fn, "step", None))
    raise VidgenError(f"--fake {spec}: no such folder or checkpoint file (or module:function)")
