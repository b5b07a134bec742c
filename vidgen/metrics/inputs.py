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
    resolution: str | None = None   # "HxW" read (None: each video's native size)
    prepared: bool = False          # read from a `vidgen data prepare` dataset

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


# ---------------------------------------------------------------------- real data
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


def folder_hash(root: Path, entries: list[Path]) -> str:
    """Identity of a raw folder: SHA-256 of the sorted (relative path, size, mtime) of every
    file of every entry, so it changes when the data does (without reading every byte)."""
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
        raise VidgenError(f"{root}: not a folder of videos, frame folders or frame zips")
    from vidgen.data.sources import open_source

    entries = _media_entries(root)
    if not entries:
        raise VidgenError(f"{root}: no videos, frame folders or frame zips found")
    return [open_source(e) for e in entries], entries


class ResizedVideo:
    """A raw video seen at ``res`` (h, w): centre crop + antialiased resize, the same
    operation `vidgen data prepare` applies, so raw and prepared data give the same pixels."""

    def __init__(self, video: VideoLike, res: tuple[int, int]):
        self.video, self.res = video, res

    def __len__(self) -> int:
        return len(self.video)

    def get(self, indices) -> np.ndarray:
        from vidgen.data.resize import crop_resize

        frames = self.video.get(indices)                 # uint8 [T, H, W, 3]
        return np.stack([np.asarray(crop_resize(f, self.res)) for f in frames])


def load_real(path: str | Path, resolution: str | None = None) -> RealVideos:
    """Real videos for the metrics: a PREPARED dataset (manifest.json + one shard folder per
    resolution, written by `vidgen data prepare`; ``resolution`` "HxW" picks one, default the
    largest) or a raw folder whose entries are videos, frame folders or frame zips (one entry
    = one video; ``resolution`` crop-resizes them). The cache identity is the SHA-256 of the
    manifest (prepared) or of the folder listing (raw), together with the resolution."""
    from vidgen.fileio import sha256_file
    from vidgen.data.manifest import is_prepared, open_prepared, parse_resolution

    root = Path(path).expanduser()
    if not root.is_dir():
        raise VidgenError(f"--real {root}: no such folder; pass a prepared dataset (with manifest.json) "
                          "or a folder of videos / frame folders")
    if is_prepared(root):
        manifest, res, clips = open_prepared(root, resolution)
        return RealVideos(clips, sha256_file(root / "manifest.json"), str(root),
                          [c["name"] for c in manifest["clips"]], resolution=res, prepared=True)
    videos, entries = open_video_folder(root)
    if resolution is not None:
        size = parse_resolution(resolution)
        videos = [ResizedVideo(v, size) for v in videos]
        resolution = f"{size[0]}x{size[1]}"
    return RealVideos(videos, folder_hash(root, entries), str(root), [e.name for e in entries],
                      resolution=resolution)


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
