"""Torch datasets over a prepared dataset folder or a raw folder of videos / frames.

ClipDataset[i] -> float [C, T, H, W] in [-1, 1]; with two (or more) resolutions, a dict
{"36x64": [C, T, 36, 64], "144x256": [C, T, 144, 256]} of the SAME frames (aligned).
TimedFrameDataset[i] -> (frame [C, H, W] in [-1, 1], capture time in float seconds since
the epoch (UTC), index).

Sources are opened lazily and kept open per worker process (handles never cross fork());
a clip is read with one batch request, i.e. one seek.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from vidgen.data.align import Alignment
from vidgen.data.manifest import MANIFEST, PreparedClip, load_manifest, parse_resolution, res_name
from vidgen.data.meta import frames_per_chunk
from vidgen.data.prepare import discover
from vidgen.data.prepare_clip import align_clip
from vidgen.data.resize import crop_resize, fit_box
from vidgen.data.sources import FolderSource, VIDEO_EXTS, open_source
from vidgen.data.timestamps import capture_times, parse_interval, video_times
from vidgen.errors import DataError

Resolution = tuple[int, int]


def _as_resolutions(resolution) -> list[Resolution] | None:
    """None | (H, W) | "HxW" | list of those -> list of (H, W) (None: native size)."""
    if resolution is None:
        return None
    if isinstance(resolution, str) or (len(resolution) == 2 and isinstance(resolution[0], int)):
        resolution = [resolution]
    return [parse_resolution(r) if isinstance(r, str) else parse_resolution(res_name(r)) for r in resolution]


def to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float32 in [-1, 1]."""
    return frames.to(torch.float32) / 127.5 - 1.0


def _tensor(frames: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    """uint8 frames [T][H, W, 3] -> float32 [T, 3, H, W] in [-1, 1]."""
    return to_float(rearrange(torch.from_numpy(np.stack(frames)), "t h w c -> t c h w"))


class _SourceSet:
    """The clips of a dataset root: lengths known up front, readers opened per process.

    Prepared datasets are read through PreparedClip (the one shard reader); raw sources are
    read in byte-bounded chunks and crop-resized with vidgen/data/resize.py, exactly as
    `vidgen data prepare` does, so both give the same pixels up to JPEG error. With
    ``align`` (raw sources), each clip is registered once (vidgen/data/align.py) and read
    as the common valid rectangle of its frames. A training folder is the user's own: its
    symlinks are followed (a folder of links is a common way to pick clips from an archive)
    unless ``follow_symlinks`` is False; symlink loops never are."""

    def __init__(self, root, resolutions: list[Resolution] | None, backend: str, align: bool = False,
                 follow_symlinks: bool = True):
        self.root, self.backend = Path(root), backend
        self.skipped: list[dict] = []
        self.alignments: dict[int, Alignment] = {}
        self._pid, self._open = None, {}
        if (self.root / MANIFEST).is_file():
            self.manifest = load_manifest(self.root)
            have = self.manifest["resolutions"]
            if resolutions is None:
                if len(have) != 1:
                    raise DataError(f"{self.root}: prepared at {', '.join(have)}; pass resolution=")
                resolutions = [parse_resolution(have[0])]
            for r in resolutions:
                if res_name(r) not in have:
                    raise DataError(f"{self.root}: no {res_name(r)} shards (prepared: {', '.join(have)}); "
                                    "prepare that resolution or pick another")
            self.clips = self.manifest["clips"]
            self.lengths = [c["num_frames"] for c in self.clips]
            self.names = [c["name"] for c in self.clips]
        else:
            self.manifest = None
            roots: list[Path] = []
            paths, self.skipped = discover([str(self.root)], roots, follow_symlinks)
            if follow_symlinks:
                roots = [None] * len(paths)
            self.clips, self.roots, self.lengths, self.names = [], [], [], []
            for p, top in zip(paths, roots):
                try:
                    with open_source(p, backend, root=top) as src:
                        self.lengths.append(len(src))
                        self.skipped += getattr(src, "skipped", [])
                except DataError as exc:
                    self.skipped.append({"path": str(p), "reason": str(exc)})
                    continue
                self.clips.append(p)
                self.roots.append(top)
                self.names.append(p.name)
        if not self.clips:
            first = f": {self.skipped[0]['reason']}" if self.skipped else ""
            raise DataError(f"{self.root}: no readable clip ({len(self.skipped)} skipped{first}); "
                            "point to a prepared dataset or a folder of videos / frames")
        self.resolutions = resolutions
        if align and self.manifest is None:
            for k in range(len(self.clips)):
                if self.lengths[k] > 1:
                    src = self._reader(k, None)
                    self.alignments[k] = align_clip(src, np.arange(len(src)))

    def _reader(self, k: int, res: Resolution | None):
        if self._pid != os.getpid():  # new worker process: never reuse the parent's handles
            self._pid, self._open = os.getpid(), {}
        key = (k, res if self.manifest is not None else None)
        if key not in self._open:
            if self.manifest is not None:
                self._open[key] = PreparedClip(self.root, res_name(res), self.clips[k])
            else:
                self._open[key] = open_source(self.clips[k], self.backend, root=self.roots[k])
        return self._open[key]

    def read(self, k: int, indices) -> list[torch.Tensor]:
        """Frames ``indices`` of clip k at every resolution -> list of float [T, 3, H, W]."""
        if self.manifest is not None:
            return [_tensor(self._reader(k, r).get(indices)) for r in self.resolutions]
        src = self._reader(k, None)
        h, w = src.meta.height, src.meta.width
        al = self.alignments.get(k)
        rect = al.valid_rect if al else (0.0, 0.0, float(w), float(h))
        sizes = self.resolutions or [(int(rect[3] - rect[1]), int(rect[2] - rect[0]))]
        boxes = [fit_box(rect, r) for r in sizes]
        out: list[list[np.ndarray]] = [[] for _ in sizes]
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        step = frames_per_chunk(h, w)
        for start in range(0, len(indices), step):  # bounded memory for any frame size
            part = indices[start:start + step]
            for i, frame in zip(part, src.get(part)):
                for o, r, box in zip(out, sizes, boxes):
                    o.append(crop_resize(frame, r, al.box(int(i), box) if al else box))
            frame = None  # a view of the chunk: released before the next one is read
        return [_tensor(o) for o in out]

    def __getstate__(self):  # open handles stay behind when pickled for a worker
        state = dict(self.__dict__)
        state["_pid"], state["_open"] = None, {}
        return state


class ClipDataset(torch.utils.data.Dataset):
    """Fixed-length clips: ``clip_len`` frames taken every ``stride`` source frames.

    random_start=True: one item per clip (video), a random window each time (torch RNG, so
    DataLoader workers differ and runs are reproducible under ``torch.manual_seed``).
    random_start=False: every non-overlapping window of every clip, in order (evaluation).
    resolution: (H, W) | "HxW" -> [C, T, H, W]; a list of several -> dict {"HxW": [C, T, H, W]};
    None -> native size (raw sources) or the only prepared resolution.
    """

    def __init__(self, root, clip_len: int, stride: int = 1, resolution=None,
                 random_start: bool = True, backend: str = "auto", follow_symlinks: bool = True):
        assert clip_len >= 1 and stride >= 1
        self.clip_len, self.stride, self.random_start = clip_len, stride, random_start
        res = _as_resolutions(resolution)
        self.multi = res is not None and len(res) > 1
        self.sources = _SourceSet(root, res, backend, follow_symlinks=follow_symlinks)
        self.span = (clip_len - 1) * stride + 1
        self.clip_ids = [k for k, n in enumerate(self.sources.lengths) if n >= self.span]
        for k, n in enumerate(self.sources.lengths):
            if n < self.span:
                self.sources.skipped.append({"path": str(self.sources.names[k]),
                                             "reason": f"{n} frames < clip span {self.span}"})
        if not self.clip_ids:
            raise DataError(f"{root}: no clip has {self.span} frames (clip_len {clip_len}, stride {stride}); "
                            f"longest has {max(self.sources.lengths)}")
        self.windows = [(k, s) for k in self.clip_ids
                        for s in range(0, self.sources.lengths[k] - self.span + 1, self.span)]

    def __len__(self) -> int:
        return len(self.clip_ids) if self.random_start else len(self.windows)

    def window(self, i: int) -> tuple[int, int]:
        """(clip number, first frame) of item ``i`` (random for random_start)."""
        if not self.random_start:
            return self.windows[i]
        k = self.clip_ids[i]
        start = int(torch.randint(0, self.sources.lengths[k] - self.span + 1, ()).item())
        return k, start

    def __getitem__(self, i: int):
        k, start = self.window(i)
        idx = np.arange(start, start + self.span, self.stride)
        clips = [rearrange(x, "t c h w -> c t h w") for x in self.sources.read(k, idx)]
        if not self.multi:
            return clips[0]
        return {res_name(r): c for r, c in zip(self.sources.resolutions, clips)}


class TimedFrameDataset(torch.utils.data.Dataset):
    """Time-stamped frames from a prepared dataset (its capture times), a raw folder of
    frames / of frame folders (times from names, EXIF or a sidecar; frames without a time are
    left out and listed in ``skipped``), or a time-lapse delivered as a video: frame i at
    ``start`` + i * ``interval`` (``start`` default: the video's creation time). Items are in
    capture-time order. ``align`` registers the frames of raw sources to a reference and
    crops them to their common valid rectangle (vidgen/data/align.py)."""

    def __init__(self, root, resolution=None, time_pattern: str | None = None, backend: str = "auto",
                 start: str | None = None, interval: str | float | None = None, align: bool = False,
                 follow_symlinks: bool = True):
        res = _as_resolutions(resolution)
        if res is not None and len(res) != 1:
            raise DataError("TimedFrameDataset takes one resolution")
        step = parse_interval(interval) if interval not in (None, "") else None
        if start and step is None:
            raise DataError("--start needs --interval (the time between frames of the video, e.g. 60s)")
        self.sources = _SourceSet(root, res, backend, align, follow_symlinks)
        self.skipped = self.sources.skipped
        items = []  # (time, clip number, frame index)
        for k, clip in enumerate(self.sources.clips):
            if self.sources.manifest is not None:
                for j, t in enumerate(clip.get("times") or []):
                    items.append((_epoch(t), k, j))
                continue
            if not Path(clip).is_dir():
                if step is None or Path(clip).suffix.lower() not in VIDEO_EXTS:
                    self.skipped.append({"path": str(clip), "reason": "a video has no capture times "
                                         "(give start= and interval=, --start/--interval on the command line)"})
                    continue
                src = self.sources._reader(k, None)
                times = video_times(start, step, range(len(src)), str(clip), src.meta.creation_time)
                items += [(t.timestamp(), k, j) for j, t in enumerate(times)]
                continue
            rep = capture_times(FolderSource(clip, self.sources.roots[k]).files, pattern=time_pattern)
            self.skipped += [{"path": str(Path(clip) / f), "reason": r} for f, r in rep.unparseable]
            items += [(t.timestamp(), k, j) for j, t in enumerate(rep.times) if t is not None]
        if not items:
            raise DataError(f"{root}: no frame with a capture time; name frames like "
                            "20130502_071500.jpg, pass time_pattern=, add times.csv, or for a video "
                            "give its start and interval")
        items.sort()
        self.times = np.asarray([t for t, _, _ in items], dtype=np.float64)
        self.items = [(k, j) for _, k, j in items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        k, j = self.items[i]
        frame = self.sources.read(k, [j])[0][0]  # [3, H, W]
        return frame, float(self.times[i]), i


def _epoch(text: str) -> float:
    from vidgen.data.timestamps import parse_time_value

    return parse_time_value(text).timestamp()


def all_capture_times(dataset: TimedFrameDataset) -> np.ndarray:
    """Capture times of every item, float64 seconds since the epoch, in item order
    (sorted); the time-lapse model normalises t over this span."""
    return dataset.times.copy()
