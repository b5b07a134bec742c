"""Torch datasets over a prepared dataset folder or a raw folder of videos / frames.

ClipDataset[i] -> float [C, T, H, W] in [-1, 1]; with two (or more) resolutions, a dict
{"36x64": [C, T, 36, 64], "144x256": [C, T, 144, 256]} of the SAME frames (aligned).
TimedFrameDataset[i] -> (frame [C, H, W] in [-1, 1], capture time in float seconds since
the epoch (UTC), index).

Sources are opened lazily and kept open per worker process (handles never cross fork());
a clip is read with one batch request, i.e. one seek.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image

from vidgen.data.prepare import MANIFEST, discover, load_manifest, parse_resolution, res_name
from vidgen.data.sources import FolderSource, open_source
from vidgen.data.timestamps import capture_times
from vidgen.errors import DataError

Resolution = tuple[int, int]


def _as_resolutions(resolution) -> list[Resolution] | None:
    """None | (H, W) | "HxW" | list of those -> list of (H, W) (None: native size)."""
    if resolution is None:
        return None
    if isinstance(resolution, str) or (len(resolution) == 2 and isinstance(resolution[0], int)):
        resolution = [resolution]
    return [parse_resolution(r) if isinstance(r, str) else (int(r[0]), int(r[1])) for r in resolution]


def to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float32 in [-1, 1]."""
    return frames.to(torch.float32) / 127.5 - 1.0


def crop_resize(frames: torch.Tensor, res: Resolution) -> torch.Tensor:
    """frames: uint8 [T, H, W, 3] -> float32 [T, 3, h, w] in [-1, 1]: centre crop to the
    target aspect, then antialiased bilinear resize (as prepare does with PIL)."""
    x = rearrange(frames, "t h w c -> t c h w")  # a channels-last view: torch's fast uint8 path
    h, w = x.shape[-2:]
    th, tw = res
    if (h, w) != (th, tw):
        ch, cw = (round(w * th / tw), w) if h * tw > w * th else (h, round(h * tw / th))
        top, left = (h - ch) // 2, (w - cw) // 2
        x = x[..., top:top + ch, left:left + cw]
        x = F.interpolate(x, size=(th, tw), mode="bilinear", antialias=True, align_corners=False)
    return to_float(x.contiguous())


class _Shard:
    """JPEG frames ``000000.jpg ...`` of one clip at one resolution (written by prepare)."""

    def __init__(self, path: Path):
        self.path, self._zip = path, zipfile.ZipFile(path)

    def get(self, indices) -> np.ndarray:
        out = []
        for i in indices:
            try:
                with Image.open(io.BytesIO(self._zip.read(f"{int(i):06d}.jpg"))) as im:
                    out.append(np.asarray(im.convert("RGB")))
            except (KeyError, OSError) as exc:
                raise DataError(f"{self.path}: frame {i} unreadable ({exc}); rerun `vidgen data prepare`") from None
        return np.stack(out)


class _SourceSet:
    """The clips of a dataset root: lengths known up front, readers opened per process."""

    def __init__(self, root, resolutions: list[Resolution] | None, backend: str):
        self.root, self.backend = Path(root), backend
        self.skipped: list[dict] = []
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
            paths, self.skipped = discover([str(self.root)])
            self.clips, self.lengths, self.names = [], [], []
            for p in paths:
                try:
                    with open_source(p, backend) as src:
                        self.lengths.append(len(src))
                except DataError as exc:
                    self.skipped.append({"path": str(p), "reason": str(exc)})
                    continue
                self.clips.append(p)
                self.names.append(p.name)
        if not self.clips:
            first = f": {self.skipped[0]['reason']}" if self.skipped else ""
            raise DataError(f"{self.root}: no readable clip ({len(self.skipped)} skipped{first}); "
                            "point to a prepared dataset or a folder of videos / frames")
        self.resolutions = resolutions

    def _reader(self, k: int, res: Resolution | None):
        if self._pid != os.getpid():  # new worker process: never reuse the parent's handles
            self._pid, self._open = os.getpid(), {}
        key = (k, res if self.manifest is not None else None)
        if key not in self._open:
            if self.manifest is not None:
                self._open[key] = _Shard(self.root / res_name(res) / f"{self.clips[k]['id']}.zip")
            else:
                self._open[key] = open_source(self.clips[k], self.backend)
        return self._open[key]

    def read(self, k: int, indices) -> list[torch.Tensor]:
        """Frames ``indices`` of clip k at every resolution -> list of float [T, 3, H, W]."""
        if self.manifest is not None:
            return [to_float(rearrange(torch.from_numpy(self._reader(k, r).get(indices)), "t h w c -> t c h w"))
                    for r in self.resolutions]
        frames = torch.from_numpy(self._reader(k, None).get(indices))
        if self.resolutions is None:
            return [to_float(rearrange(frames, "t h w c -> t c h w"))]
        return [crop_resize(frames, r) for r in self.resolutions]

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
                 random_start: bool = True, backend: str = "auto"):
        assert clip_len >= 1 and stride >= 1
        self.clip_len, self.stride, self.random_start = clip_len, stride, random_start
        res = _as_resolutions(resolution)
        self.multi = res is not None and len(res) > 1
        self.sources = _SourceSet(root, res, backend)
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
    """Time-stamped frames from a prepared dataset (its capture times) or a raw folder of
    frames / of frame folders (times from names, EXIF or a sidecar; frames without a time are
    left out and listed in ``skipped``). Items are in capture-time order."""

    def __init__(self, root, resolution=None, time_pattern: str | None = None, backend: str = "auto"):
        res = _as_resolutions(resolution)
        if res is not None and len(res) != 1:
            raise DataError("TimedFrameDataset takes one resolution")
        self.sources = _SourceSet(root, res, backend)
        self.skipped = self.sources.skipped
        items = []  # (time, clip number, frame index)
        for k, clip in enumerate(self.sources.clips):
            if self.sources.manifest is not None:
                for j, t in enumerate(clip.get("times") or []):
                    items.append((_epoch(t), k, j))
                continue
            if not Path(clip).is_dir():
                self.skipped.append({"path": str(clip), "reason": "a video has no capture times"})
                continue
            rep = capture_times(FolderSource(clip).files, pattern=time_pattern)
            self.skipped += [{"path": str(Path(clip) / f), "reason": r} for f, r in rep.unparseable]
            items += [(t.timestamp(), k, j) for j, t in enumerate(rep.times) if t is not None]
        if not items:
            raise DataError(f"{root}: no frame with a capture time; name frames like "
                            "20130502_071500.jpg, pass time_pattern=, or add times.csv")
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
