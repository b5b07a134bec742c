"""Where evaluated frames come from: real video collections and generated videos or images.

The metric code only needs objects with `len()` and `get(indices) -> uint8 [T, H, W, 3]`
(the `vidgen.data.sources.FrameSource` interface); files are opened by `vidgen.data`.
Generated samples come from a model family's sampler (`vidgen.registry.Sampler`, read from a
checkpoint's state.json), a callable `generate(seed, n) -> uint8 [n, H, W, 3]`, a folder of
rendered videos or a folder of images. For video content `generate(seed, n)` gives frames
0..n-1 of the video `seed` (clips always start at frame 0); for image content it gives the
images of seeds seed..seed+n-1.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Protocol, Sequence

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
    """Generated samples. Video content: `clip(index, seed, indices)`, frames counted from
    frame 0 of generated video `index` / seed `seed`. Image content: `images_at(start, n)`."""

    kind: str                                  # "callable" | "checkpoint" | "directory"
    path: str = ""
    generate: GenerateFn | None = None
    videos: Sequence[VideoLike] = ()
    checkpoint_step: int | None = None
    content: Literal["video", "image"] = "video"
    images: VideoLike | None = None            # a folder of images (content "image", no generator)
    info: dict = field(default_factory=dict)   # the checkpoint's family and sampler settings

    def __len__(self) -> int:
        if self.generate is not None:
            return 1 << 62
        return len(self.images) if self.content == "image" else len(self.videos)

    def _name(self) -> str:
        return self.path or repr(self.generate)

    def _check(self, frames, need: int, what: str) -> np.ndarray:
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) < need:
            raise VidgenError(f"generator {self._name()} returned {frames.dtype} {list(frames.shape)}; "
                              f"expected uint8 [{need}, H, W, 3] ({what})")
        return frames

    def clip(self, index: int, seed: int, indices: np.ndarray) -> np.ndarray:
        """Frames `indices` (counted from frame 0) of generated clip `index` / seed `seed`."""
        if self.content != "video":
            raise VidgenError(f"{self._name()} holds images, not videos: clip metrics (FVD, colour "
                              "change) need a video family's checkpoint or a folder of videos")
        need = int(indices.max()) + 1
        if self.generate is not None:
            return _take(self._check(self.generate(seed, need), need, f"frames of video {seed}"), indices)
        video = self.videos[index]
        if len(video) < need:
            name = self.path + f" (video {index})"
            raise VidgenError(f"{name}: generated video has {len(video)} frames, the protocol needs {need}")
        return video.get(indices)

    def images_at(self, start: int, n: int) -> np.ndarray:
        """Image content: the images of seeds start..start+n-1 (a generator) or the images
        with those indices (a folder): uint8 [n, H, W, 3]."""
        assert self.content == "image"
        if self.generate is not None:
            return self._check(self.generate(start, n), n, f"images of seeds {start}..{start + n - 1}")[:n]
        return self.images.get(np.arange(start, start + n))


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
    if not entries and _image_folder(root):
        entries = [root]  # the folder itself is one frame sequence (e.g. time-lapse frames)
    if not entries:
        raise VidgenError(f"{root}: no videos, frame folders, frame zips or images found")
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


def _image_folder(root: Path) -> bool:
    """A folder whose own files are images (and which holds no videos or frame folders)."""
    from vidgen.data.sources import IMAGE_EXTS

    return any(p.suffix.lower() in IMAGE_EXTS and p.is_file() for p in root.iterdir()) \
        and not _media_entries(root)


def _is_checkpoint(p: Path) -> bool:
    """A checkpoint folder, a file inside one, or a run folder with checkpoints."""
    if p.is_file():
        return (p.parent / "state.json").is_file()
    return (p / "state.json").is_file() or (p / "checkpoints").is_dir()


def _with_overrides(ckpt, family_name: str, overrides: Sequence[str]):
    """The checkpoint with `key=value` overrides applied to its config (checked against the
    family's config class), e.g. the sampler settings `sample.steps=18`."""
    import dataclasses

    from vidgen import registry
    from vidgen.config import config_from_dict, config_to_dict, load_config

    cls = registry.recipe_class(family_name).config_class
    cfg = load_config(cls, None, overrides, base=config_from_dict(cls, ckpt.config))
    return dataclasses.replace(ckpt, state={**ckpt.state, "config": config_to_dict(cfg)})


def load_sampler(path: str | Path, device: str = "cpu", overrides: Sequence[str] = ()) -> FakeVideos:
    """Generated samples of a checkpoint (a run folder, a checkpoint folder or a file in one):
    the family named in its state.json is looked up in `vidgen.registry` and its sampler
    built, after `overrides` ("key=value", e.g. "sample.steps=18") are applied to the
    checkpoint's config. The family's package must have been imported (the command line
    imports them all)."""
    from vidgen import registry
    from vidgen.train.checkpoint import read_checkpoint

    ckpt = read_checkpoint(path)
    family = registry.get(ckpt.family)
    if overrides:
        ckpt = _with_overrides(ckpt, family.name, overrides)
    if not family.sampler:
        raise VidgenError(f"{ckpt.path}: the {family.name!r} family has no sampler for `vidgen eval` yet; "
                          "render its samples into a folder and pass that folder to --fake")
    sampler = registry.resolve(family.sampler, f"family {family.name!r}")(ckpt, device)
    if not isinstance(sampler, registry.Sampler) or sampler.kind not in ("video", "image"):
        raise VidgenError(f"family {family.name!r}: its sampler {family.sampler} does not give "
                          "generate(seed, n), kind 'video' | 'image' and frame_size")
    info = {"family": family.name, "checkpoint": str(ckpt.path), "frame_size": list(sampler.frame_size),
            **({"overrides": list(overrides)} if overrides else {}), **dict(getattr(sampler, "info", {}) or {})}
    return FakeVideos("checkpoint", str(path), generate=sampler.generate, checkpoint_step=ckpt.step,
                      content=sampler.kind, info=info)


def load_fake(spec: str, device: str = "cpu", overrides: Sequence[str] = ()) -> FakeVideos:
    """`spec`: a checkpoint (run folder, checkpoint folder or a file in one; see
    `load_sampler`, which takes the config `overrides`), a folder of rendered videos, a folder
    of images, or `package.module:function` naming a callable
    `generate(seed, num_frames) -> uint8 [T, H, W, 3]`."""
    p = Path(spec).expanduser()
    if p.exists() and _is_checkpoint(p):
        return load_sampler(p, device, overrides)
    if overrides:
        raise VidgenError(f"--fake-set applies to checkpoints; {spec} is not one")
    if p.is_dir():
        if _image_folder(p):
            from vidgen.data.sources import FolderSource

            return FakeVideos("directory", str(p), content="image", images=FolderSource(p))
        videos, _ = open_video_folder(p)
        return FakeVideos("directory", str(p), videos=videos)
    if p.is_file():
        raise VidgenError(f"--fake {p}: not part of a vidgen checkpoint folder (no state.json beside it); "
                          "pass a run folder, a checkpoint folder, or a folder of videos / images")
    if ":" in spec and not p.exists():
        module, _, attr = spec.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise VidgenError(f"--fake {spec}: cannot import callable {attr!r} from {module!r} ({exc})") from exc
        return FakeVideos("callable", spec, generate=fn, checkpoint_step=getattr(fn, "step", None))
    raise VidgenError(f"--fake {spec}: no such folder or checkpoint file (or module:function)")
