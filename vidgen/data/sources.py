"""One FrameSource interface over a video file, a folder of frames and a zip of frames.

Every source gives random access to any list of frame indices as uint8 ``[T, H, W, 3]`` RGB,
with grayscale / palette / alpha converted to RGB (alpha composited over black) and rotation
metadata applied (display matrix for video, EXIF orientation for images).

Video backends: PyAV (always) and decord (when installed). decord is fast but silently wrong
on some containers (a constant frame offset on MPEG-PS) and refuses others (gif, webm), so
``backend="auto"`` uses it only for mp4/mkv/mov files where it agrees with PyAV on the frame
count and on the pixels of the first, middle and last frame; otherwise PyAV is used and
``meta.note`` says why.
"""

from __future__ import annotations

import functools
import os
import re
import zipfile
from dataclasses import replace
from pathlib import Path, PurePosixPath

import numpy as np

from vidgen.data import _pyav
from vidgen.data.images import IMAGE_EXTS, decode_image, header_size, read_file
from vidgen.data.meta import SourceMeta, max_frame_pixels
from vidgen.errors import DataError

__all__ = ["IMAGE_EXTS", "VIDEO_EXTS", "SourceMeta", "FrameSource", "FolderSource", "ZipSource",
           "PyAVSource", "DecordSource", "open_source", "natural_key", "safe_member"]
VIDEO_EXTS = (".mp4", ".mkv", ".mov", ".m4v", ".avi", ".webm", ".mpg", ".mpeg", ".gif",
              ".wmv", ".flv", ".ts", ".mts", ".ogv")
DECORD_EXTS = (".mp4", ".mkv", ".mov", ".m4v")
DECORD_TOLERANCE = 2.0  # mean absolute difference, uint8 levels, allowed between backends


class FrameSource:
    """Random access to the frames of one clip; subclasses fill ``meta`` and ``_read``."""

    meta: SourceMeta

    def __len__(self) -> int:
        return self.meta.num_frames

    def get(self, indices) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) -> uint8 [T, H, W, 3]."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"{self.meta.path}: frame index out of range 0..{n - 1}")
        uniq, inverse = np.unique(idx, return_inverse=True)
        frames = self._read([int(i) for i in uniq])  # sorted, unique
        if not frames:
            return np.zeros((0, self.meta.height, self.meta.width, 3), np.uint8)
        if len(frames) == 1 and len(idx) == 1:
            return frames[0][None]  # a view: a large frame is not copied again
        out = np.stack(frames)
        del frames
        return out if np.array_equal(idx, uniq) else out[inverse]

    def times(self) -> np.ndarray | None:
        """Presentation time of every frame in seconds from the first (None: no timing)."""
        return None

    def _read(self, indices: list[int]) -> list[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------- images (folder / zip)

def natural_key(name: str):
    """Sort key that orders frame_2 before frame_10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


class _ImageSequence(FrameSource):
    """Shared checks of a frame folder / zip: frames exist and all have one size."""

    def _init_meta(self, path: Path, names: list[str], opener, backend: str) -> None:
        if not names:
            raise DataError(f"{path}: no frames ({'/'.join(IMAGE_EXTS)}) found: point to a folder "
                            "or zip that contains image files")
        sizes = [header_size(opener(n), f"{path}/{n}") for n in names]
        first = sizes[0]
        for n, s in zip(names, sizes):
            if s != first:
                raise DataError(f"{path}: frames of mixed sizes: {names[0]} is {first[0]}x{first[1]} "
                                f"but {n} is {s[0]}x{s[1]}; resize them to one size first")
        self.meta = SourceMeta(path=str(path), num_frames=len(names), width=first[0],
                               height=first[1], fps=None, avg_fps=None, duration=None,
                               vfr=False, backend=backend)


class FolderSource(_ImageSequence):
    """The image files of one folder, in natural name order. With ``root`` (the input folder
    the user gave), a symlink that leads outside it is not followed: it is left out and
    listed in ``skipped`` with the reason."""

    def __init__(self, path: str | os.PathLike, root: str | os.PathLike | None = None):
        self.path = Path(path)
        self.skipped: list[dict] = []
        names = []
        for p in self.path.iterdir():
            if p.suffix.lower() not in IMAGE_EXTS:
                continue
            outside = escapes(p, Path(root)) if root is not None else ""
            if outside:
                self.skipped.append({"path": str(p), "reason": outside})
            elif p.is_file():
                names.append(p.name)
        self.names = sorted(names, key=natural_key)
        self._init_meta(self.path, self.names, lambda n: self.path / n, "folder")

    @property
    def files(self) -> list[Path]:
        return [self.path / n for n in self.names]

    def _read(self, indices):
        out = []
        for i in indices:
            p = self.path / self.names[i]
            out.append(decode_image(read_file(p), str(p)))
        return out


def escapes(path: Path, root: Path) -> str:
    """'' when ``path`` stays inside ``root`` once symlinks are resolved, else the reason."""
    if not path.is_symlink():
        return ""
    target, top = path.resolve(), root.resolve()
    if target == top or top in target.parents:
        return ""
    return f"symlink to {target}, outside the input folder {root}; not followed"


def safe_member(name: str) -> bool:
    """True when a zip entry stays inside the archive (no absolute path, no '..')."""
    p = PurePosixPath(name.replace("\\", "/"))
    return not (p.is_absolute() or ".." in p.parts or re.match(r"^[A-Za-z]:", name))


class ZipSource(_ImageSequence):
    """Frames stored in a zip, optionally only those under ``prefix`` (a folder inside it)."""

    def __init__(self, path: str | os.PathLike, prefix: str = ""):
        self.path = Path(path)
        self._pid, self._zip = None, None
        try:
            members = self._archive().namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"{self.path}: not a readable zip archive ({exc})") from None
        for m in members:
            if not safe_member(m):
                raise DataError(f"{self.path}: entry '{m}' escapes the archive; refusing to read "
                                "it (rebuild the zip with relative names)")
        self.names = sorted((m for m in members if m.startswith(prefix)
                             and PurePosixPath(m).suffix.lower() in IMAGE_EXTS), key=natural_key)
        self._init_meta(self.path, self.names, self._member, "zip")

    def _member(self, name: str) -> bytes:
        """The bytes of one entry, refused unread when it would inflate past any frame."""
        info = self._archive().getinfo(name)
        if info.file_size > 4 * max_frame_pixels():
            raise DataError(f"{self.path}:{name}: inflates to {info.file_size} bytes, more than any "
                            "frame (a zip bomb?); not read")
        try:
            return self._archive().read(info)
        except (OSError, zipfile.BadZipFile, EOFError) as exc:
            raise DataError(f"{self.path}:{name}: cannot read the entry ({exc})") from None

    def _archive(self) -> zipfile.ZipFile:
        # a zip handle shared across fork() would share its file offset: reopen per process
        if self._pid != os.getpid():
            self._zip, self._pid = zipfile.ZipFile(self.path), os.getpid()
        return self._zip

    def _read(self, indices):
        return [decode_image(self._member(self.names[i]), f"{self.path}:{self.names[i]}") for i in indices]

    def close(self):
        if self._zip is not None and self._pid == os.getpid():
            self._zip.close()
        self._zip = None


# ---------------------------------------------------------------- video

class PyAVSource(FrameSource):
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._pid, self._reader = None, None
        self._index = _pyav.build_index(self.path)  # raises DataError for bad files
        self.meta = self._index.meta

    def reader(self) -> _pyav.SeekingReader:
        if self._pid != os.getpid():  # container handles must not cross fork()
            self._reader, self._pid = _pyav.SeekingReader(self.path, self._index), os.getpid()
        return self._reader

    def times(self):
        return self._index.times

    def _read(self, indices):
        return [_rotate(f, self.meta.rotation) for f in self.reader().read(indices)]

    def close(self):
        if self._reader is not None and self._pid == os.getpid():
            self._reader.close()
        self._reader = None


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


class DecordSource(FrameSource):
    """decord reader (it applies the display rotation itself); metadata and timing come from
    the PyAV index, and ``auto`` checks its pixels against PyAV before trusting it."""

    def __init__(self, path: str | os.PathLike, pyav: PyAVSource | None = None):
        import decord

        self.path = Path(path)
        pyav = pyav or PyAVSource(path)
        self._pyav_times = pyav.times()
        self._pid, self._vr = None, None
        try:
            n = len(self._vr_open())
        except Exception as exc:  # decord raises its own and RuntimeError types
            raise DataError(f"{self.path}: decord cannot open it ({str(exc).strip()[-120:]}); "
                            "use --backend pyav") from None
        self.meta = replace(pyav.meta, num_frames=n, backend="decord")
        self._decord = decord

    def _vr_open(self):
        if self._pid != os.getpid():
            import decord
            self._vr, self._pid = decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=1), os.getpid()
        return self._vr

    def times(self):
        return self._pyav_times

    def _read(self, indices):
        try:
            batch = self._vr_open().get_batch(indices).asnumpy()
        except Exception as exc:
            raise DataError(f"{self.path}: decord failed to decode frames ({str(exc).strip()[-120:]})") from None
        return list(batch)  # decord applies the display rotation itself

    def close(self):
        self._vr = None


def _rotate(frame: np.ndarray, degrees: int) -> np.ndarray:
    # display matrix angle is counter-clockwise, as np.rot90 with positive k
    return np.ascontiguousarray(np.rot90(frame, k=degrees // 90)) if degrees % 360 else frame


def compare_backends(pyav: FrameSource, other: FrameSource) -> str:
    """'' when ``other`` matches PyAV in frame count and pixels; else the reason it does not."""
    n = len(pyav)
    if len(other) != n:
        return f"decord reports {len(other)} frames, PyAV {n}"
    probe = sorted({0, n // 2, n - 1})
    a, b = pyav.get(probe).astype(np.int16), other.get(probe).astype(np.int16)
    for k, i in enumerate(probe):
        mad = np.abs(a[k] - b[k]).mean()
        if mad > DECORD_TOLERANCE:
            return f"decord frame {i} differs from PyAV (mean abs diff {mad:.1f})"
    return ""


@functools.lru_cache(maxsize=4096)
def _decord_verdict(path: str, size: int, mtime_ns: int) -> str:
    """Cached per file version: '' when decord may be used, else why not."""
    pyav = PyAVSource(path)
    try:
        return compare_backends(pyav, DecordSource(path, pyav))
    except DataError as exc:
        return str(exc)
    finally:
        pyav.close()


def _open_video(path: Path, backend: str) -> FrameSource:
    if backend == "pyav":
        return PyAVSource(path)
    if backend == "decord":
        if not decord_available():
            raise DataError("backend 'decord' requested but decord is not installed "
                            "(pip install decord, or use --backend auto|pyav)")
        return DecordSource(path)
    pyav = PyAVSource(path)  # validates the file and gives the reference index
    if not decord_available():
        return _with_note(pyav, "decord not installed")
    if path.suffix.lower() not in DECORD_EXTS:
        return _with_note(pyav, f"decord not trusted for {path.suffix} files")
    st = path.stat()
    reason = _decord_verdict(str(path), st.st_size, st.st_mtime_ns)
    if reason:
        return _with_note(pyav, f"decord rejected: {reason}")
    return DecordSource(path, pyav)


def _with_note(src: FrameSource, note: str) -> FrameSource:
    src.meta = replace(src.meta, note=note)
    return src


def open_source(path: str | os.PathLike, backend: str = "auto",
                root: str | os.PathLike | None = None) -> FrameSource:
    """Open a video file, a folder of frames or a zip of frames.

    ``backend`` applies to video files: "auto" (verified decord, else PyAV), "decord", "pyav".
    ``root``: the input folder a frame folder came from; frames that are symlinks leading
    outside it are left out (``skipped``); None follows every symlink. Raises DataError naming the file and the reason
    for anything unreadable.
    """
    if backend not in ("auto", "decord", "pyav"):
        raise DataError(f"unknown backend '{backend}': use auto, decord or pyav")
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_dir():
        return FolderSource(p, root)
    if p.stat().st_size == 0:
        raise DataError(f"{p}: file is empty (0 bytes)")
    if p.suffix.lower() == ".zip":
        return ZipSource(p)
    if p.suffix.lower() in IMAGE_EXTS:
        raise DataError(f"{p}: a single image is not a clip; point to the folder of frames")
    return _open_video(p, backend)
