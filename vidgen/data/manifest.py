"""Reading a prepared dataset: its manifest and the one reader of its shards.

A prepared dataset (written by vidgen/data/prepare.py) is ``manifest.json`` plus one folder
per resolution ``HxW/`` holding a zip per clip (``000000.zip``) of JPEG frames ``000000.jpg``
... (stored, not deflated). :class:`PreparedClip` is a FrameSource over one shard, used by
the datasets, the metrics and ``data inspect`` alike.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from vidgen.data.images import decode_image, header_size
from vidgen.data.meta import SourceMeta, max_frame_pixels
from vidgen.data.sources import FrameSource
from vidgen.errors import DataError

MANIFEST = "manifest.json"
FORMAT = "vidgen-dataset/1"
MAX_SIDE = 8192                  # a prepared resolution's longest side
MAX_RESOLUTION_PIXELS = 1 << 25  # and its pixel count (e.g. 4096x8192)


def parse_resolution(text: str) -> tuple[int, int]:
    """'36x64' -> (36, 64) (height x width); sizes up to 8192 a side and 2^25 pixels."""
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
        assert h > 0 and w > 0
    except (ValueError, AssertionError):
        raise DataError(f"resolution '{text}' is not HEIGHTxWIDTH, e.g. 36x64") from None
    if max(h, w) > MAX_SIDE or h * w > MAX_RESOLUTION_PIXELS:
        raise DataError(f"resolution '{text}' is too large: at most {MAX_SIDE} pixels a side and "
                        f"{MAX_RESOLUTION_PIXELS} in all (e.g. 4096x8192)")
    return h, w


def res_name(res: tuple[int, int]) -> str:
    return f"{res[0]}x{res[1]}"


def is_prepared(root: str | Path) -> bool:
    return (Path(root) / MANIFEST).is_file()


def load_manifest(root: str | Path) -> dict:
    path = Path(root) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the dataset manifest ({exc}); rerun `vidgen data prepare`") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DataError(f"{path}: format {found!r} is not {FORMAT}; rerun `vidgen data prepare`")
    return manifest


def pick_resolution(manifest: dict, resolution: str | tuple[int, int] | None, where: str = "") -> str:
    """The prepared resolution to read: ``resolution`` when given (it must be prepared),
    else the largest one (by pixel count)."""
    have = manifest["resolutions"]
    if resolution is None:
        return max(have, key=lambda r: parse_resolution(r)[0] * parse_resolution(r)[1])
    name = res_name(parse_resolution(resolution) if isinstance(resolution, str) else resolution)
    if name not in have:
        raise DataError(f"{where or 'dataset'}: no {name} shards (prepared: {', '.join(have)}); "
                        "pick one of those or prepare that resolution")
    return name


def shard_path(root: str | Path, res: str, clip: dict) -> Path:
    return Path(root) / res / f"{clip['id']}.zip"


class PreparedClip(FrameSource):
    """One clip of a prepared dataset at one resolution (uint8 [T, H, W, 3] like any source).

    Length, size and fps come from the manifest; the shard is opened on the first read (once
    per process: a zip handle must not cross fork()), so listing thousands of clips costs
    nothing. Frame j is read by its name ``{j:06d}.jpg`` and checked against the manifest."""

    def __init__(self, root: str | Path, res: str, clip: dict):
        h, w = parse_resolution(res)
        self.path = shard_path(root, res, clip)
        self._zip, self._pid = None, None
        n = int(clip["num_frames"])
        fps = clip.get("fps")
        self.meta = SourceMeta(path=str(self.path), num_frames=n, width=w, height=h, fps=fps,
                               avg_fps=fps, duration=n / fps if fps else None, vfr=False, backend="zip")

    def _archive(self) -> zipfile.ZipFile:
        if self._pid != os.getpid():
            try:
                z = zipfile.ZipFile(self.path)
            except (OSError, zipfile.BadZipFile) as exc:
                raise DataError(f"{self.path}: cannot open the shard ({exc}); rerun `vidgen data prepare`") from None
            n, (w, h) = len(z.namelist()), (0, 0)
            if n:
                try:
                    w, h = header_size(z.read(z.namelist()[0]), f"{self.path}:{z.namelist()[0]}")
                except (OSError, zipfile.BadZipFile) as exc:
                    raise DataError(f"{self.path}: unreadable ({exc}); rerun `vidgen data prepare`") from None
            if (n, h, w) != (len(self), self.meta.height, self.meta.width):
                z.close()
                raise DataError(f"{self.path}: {n} frames of {h}x{w}, the manifest says {len(self)} of "
                                f"{self.meta.height}x{self.meta.width}; rerun `vidgen data prepare`")
            self._zip, self._pid = z, os.getpid()
        return self._zip

    def _read(self, indices):
        z, out = self._archive(), []
        want = (self.meta.height, self.meta.width, 3)
        for i in indices:
            name = f"{self.path}:{i:06d}.jpg"
            try:
                info = z.getinfo(f"{i:06d}.jpg")
                if info.file_size > 4 * max_frame_pixels():
                    raise DataError(f"{name}: {info.file_size} bytes, more than any frame; rerun `vidgen data prepare`")
                frame = decode_image(z.read(info), name)
            except (KeyError, OSError, zipfile.BadZipFile) as exc:
                raise DataError(f"{name}: unreadable ({exc}); rerun `vidgen data prepare`") from None
            if frame.shape != want:
                raise DataError(f"{name}: {frame.shape[0]}x{frame.shape[1]}, the manifest says "
                                f"{want[0]}x{want[1]}; rerun `vidgen data prepare`")
            out.append(frame)
        return out

    def close(self) -> None:
        if self._zip is not None and self._pid == os.getpid():
            self._zip.close()
        self._zip, self._pid = None, None

    def __getstate__(self):  # an open handle stays behind when pickled for a worker
        return {**self.__dict__, "_zip": None, "_pid": None}


def open_prepared(root: str | Path, resolution=None) -> tuple[dict, str, list[PreparedClip]]:
    """(manifest, resolution name, one source per clip) of a prepared dataset folder."""
    root = Path(root)
    manifest = load_manifest(root)
    res = pick_resolution(manifest, resolution, str(root))
    missing = [c["id"] for c in manifest["clips"] if not shard_path(root, res, c).is_file()]
    if missing:
        raise DataError(f"{root / res}: shards of clips {', '.join(missing[:5])} are missing; "
                        "rerun `vidgen data prepare`")
    return manifest, res, [PreparedClip(root, res, c) for c in manifest["clips"]]

