"""Frame-exact random access to video files with PyAV.

The index is built once per file by demuxing packets (no decoding): the sorted packet
timestamps are the frame timestamps, keyframe packets mark where a seek can start. A read
seeks to the keyframe at or before the first wanted frame and decodes forward, matching
decoded frames to the index by timestamp; a decoder already positioned before the wanted
frame (and no keyframe in between) just keeps decoding. Files whose packets lack timestamps
fall back to counting decoded frames from the start.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vidgen.data.meta import SourceMeta, check_frame_size
from vidgen.errors import DataError

_AV_ERRORS = (av.error.FFmpegError, OSError, ValueError, IndexError, RuntimeError, EOFError)


@dataclass
class VideoIndex:
    meta: SourceMeta
    pts: np.ndarray           # [N] int64, sorted presentation timestamps
    key_of: np.ndarray        # [N] index of the keyframe to seek to for frame i
    times: np.ndarray         # [N] float64 seconds from the first frame
    counting: bool            # True: no usable timestamps, frames counted from the start


def _open(path: Path):
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except _AV_ERRORS as exc:
        raise DataError(f"{path}: not a readable video ({_reason(exc)}); the file is damaged, "
                        "truncated (missing index) or not a video") from None
    if not container.streams.video:
        container.close()
        raise DataError(f"{path}: has no video stream (audio or data only); remove it from the input")
    return container


def _reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).strip().split("\n")[0][:120]


def build_index(path: Path) -> VideoIndex:
    container = _open(path)
    try:
        stream = container.streams.video[0]
        # the frame size from the header, before anything is decoded
        check_frame_size(stream.codec_context.width or 1, stream.codec_context.height or 1, str(path))
        created = _creation_time(container, stream)
        pts, keys = [], []
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                p = packet.pts if packet.pts is not None else packet.dts
                pts.append(p)
                keys.append(bool(packet.is_keyframe))
        except _AV_ERRORS:
            pass  # a damaged tail: keep the packets read so far, decoding will verify them
        counting = any(p is None for p in pts) or len(set(pts)) != len(pts)
        first = _first_frame(container, stream, path)
        check_frame_size(first.width, first.height, str(path))
        rotation = int(round(getattr(first, "rotation", 0) or 0)) % 360
        tb = stream.time_base or Fraction(1, 1000)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    finally:
        container.close()
    if counting:
        pts, keys = _count_frames(path)
    order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
    pts_arr = np.asarray(pts, dtype=np.int64)[order]
    key_sorted = np.zeros(len(pts_arr), dtype=bool)
    # a keyframe lets a seek start at its own timestamp: mark it in presentation order
    key_pts = {p for p, k in zip(pts, keys) if k}
    key_sorted[[i for i, p in enumerate(pts_arr) if p in key_pts]] = True
    key_sorted[0] = True
    key_of = np.maximum.accumulate(np.where(key_sorted, np.arange(len(pts_arr)), 0))

    n = len(pts_arr)
    times = (pts_arr - pts_arr[0]).astype(np.float64) * float(tb)
    diffs = np.diff(pts_arr)
    fps = float(rate) if rate else None
    if n > 1 and not counting:
        med = float(np.median(diffs))
        vfr = bool(np.any(np.abs(diffs - med) > max(1.0, 0.1 * med)))
        step = med * float(tb)
        duration = float(times[-1]) + step
        avg_fps = (n - 1) / float(times[-1]) if times[-1] > 0 else fps
    else:
        vfr, avg_fps = False, fps
        duration = n / fps if fps else None
        if counting and fps:
            times = np.arange(n, dtype=np.float64) / fps
    h, w = first.height, first.width
    if rotation in (90, 270):
        h, w = w, h
    meta = SourceMeta(path=str(path), num_frames=n, width=w, height=h, fps=fps, avg_fps=avg_fps,
                      duration=duration, vfr=vfr, backend="pyav", rotation=rotation, creation_time=created)
    return VideoIndex(meta=meta, pts=pts_arr, key_of=key_of, times=times, counting=counting)


def _creation_time(container, stream) -> str | None:
    """The container's (else the stream's) ``creation_time`` tag, as written (ISO 8601)."""
    for tags in (container.metadata, stream.metadata):
        text = str((tags or {}).get("creation_time", "")).strip()
        if text:
            return text
    return None


def _first_frame(container, stream, path: Path):
    try:
        container.seek(0)  # demuxing for the index left the container at the end
    except _AV_ERRORS:
        pass
    try:
        for frame in container.decode(stream):
            return frame
    except _AV_ERRORS as exc:
        raise DataError(f"{path}: no frame could be decoded ({_reason(exc)}); the file is "
                        "truncated or damaged") from None
    raise DataError(f"{path}: the video stream has no frames (zero-frame video)")


def _count_frames(path: Path):
    container = _open(path)
    try:
        pts, keys = [], []
        for i, frame in enumerate(container.decode(container.streams.video[0])):
            pts.append(i)
            keys.append(i == 0)
    except _AV_ERRORS:
        pass
    finally:
        container.close()
    if not pts:
        raise DataError(f"{path}: no frame could be decoded; the file is truncated or damaged")
    return pts, keys


class SeekingReader:
    """Keeps one container open and decodes forward from the nearest keyframe."""

    def __init__(self, path: Path, index: VideoIndex):
        self.path, self.index = path, index
        self.container = _open(path)
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self._pos_of = {int(p): i for i, p in enumerate(index.pts)}
        self._frames = None   # live decode iterator
        self._next = None     # index of the next frame that iterator yields (None: unknown)

    def _seek(self, key: int) -> None:
        if self.index.counting or key == 0:
            self.container.seek(0)  # byte/ts 0 of the file: decoding restarts at frame 0
            key = 0
        else:
            self.container.seek(int(self.index.pts[key]), stream=self.stream,
                                backward=True, any_frame=False)
        self._frames = self.container.decode(self.stream)
        self._next = key if self.index.counting or key == 0 else None

    def _decode_next(self):
        """Next decoded frame and its index (None if its timestamp is unknown); None at EOF."""
        try:
            frame = next(self._frames)
        except StopIteration:
            return None
        except _AV_ERRORS as exc:
            raise DataError(f"{self.path}: decoding failed ({_reason(exc)}); the file is damaged") from None
        if self.index.counting:
            i, self._next = self._next, self._next + 1
            return frame, i
        p = frame.pts if frame.pts is not None else frame.dts
        i = self._pos_of.get(int(p)) if p is not None else None
        self._next = None if i is None else i + 1
        return frame, i

    def read(self, indices: list[int]) -> list[np.ndarray]:
        """``indices`` sorted and unique -> RGB frames [H, W, 3] (before rotation)."""
        out = []
        for target in indices:
            key = int(self.index.key_of[target])
            fresh = self._next is None or self._next > target or self._next < key <= target \
                or self._frames is None
            if fresh:
                self._seek(key)
            out.append(self._decode_until(target, key))
        return out

    def _decode_until(self, target: int, key: int) -> np.ndarray:
        retries = 0
        while True:
            got = self._decode_next()
            if got is not None:
                frame, i = got
                if i is None or i < target:
                    continue
                if i == target:
                    return frame.to_ndarray(format="rgb24")
            # the seek landed after the wanted frame (or past the end, as byte-based seeks in
            # MPEG-PS can): start again from an earlier keyframe, finally from the start
            if key == 0 and self._next is not None and got is None:
                raise DataError(f"{self.path}: frame {target} could not be decoded (the stream "
                                "ends early); the file is truncated or damaged")
            retries += 1
            if retries > 5:
                raise DataError(f"{self.path}: frame {target} is missing from the decoded "
                                "stream; re-encode the file")
            key = 0 if (key == 0 or retries > 2) else int(self.index.key_of[max(key - 1, 0)])
            self._seek(key)

    def close(self):
        self._frames = None
        self.container.close()
