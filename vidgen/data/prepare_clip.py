"""One clip of `vidgen data prepare` (run in a worker process): which frames to keep and
when each was captured, the optional registration of every frame to a reference
(vidgen/data/align.py), and the zip shards of JPEG frames at every resolution.

Frames are read in chunks of at most CHUNK_BYTES of decoded RGB (vidgen/data/meta.py), and
every resize is vidgen/data/resize.py's ``crop_resize``.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from vidgen.data.align import Alignment, register, to_gray, work_factor
from vidgen.data.manifest import res_name
from vidgen.data.meta import frames_per_chunk
from vidgen.data.resize import crop_resize, fit_box
from vidgen.data.sources import FolderSource, FrameSource, natural_key, open_source
from vidgen.data.timestamps import capture_times, video_times
from vidgen.errors import DataError
from vidgen.fileio import sha256_file, update_sha256

ALIGN_CANDIDATES = 9  # frames tried as the registration reference (the most detailed wins)


class OutputError(DataError):
    """Writing the dataset failed (full disk, read-only or forbidden folder): the run stops."""


def os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def select_frames(times: np.ndarray | None, n: int, fps: float | None,
                  trim: tuple[float, float | None] | None) -> np.ndarray:
    """Indices of the frames to keep: inside the trim window, resampled to ``fps`` by taking
    the frame nearest to each tick k / fps (VFR-safe: uses the real timestamps)."""
    if times is None:
        return np.arange(n)
    t0, t1 = 0.0, float(times[-1]) + 1e-9
    if trim:
        t0 = trim[0]
        if trim[1] is not None:
            t1 = trim[1] if trim[1] >= 0 else float(times[-1]) + trim[1]
    inside = np.flatnonzero((times >= t0 - 1e-9) & (times < t1))
    if fps is None or inside.size == 0:
        return inside
    ticks = np.arange(t0 if trim else 0.0, t1, 1.0 / fps)
    ticks = ticks[(ticks >= times[inside[0]] - 0.5 / fps) & (ticks <= times[inside[-1]] + 0.5 / fps)]
    sub = times[inside]
    pos = np.clip(np.searchsorted(sub, ticks), 1, len(sub) - 1) if len(sub) > 1 else np.zeros(len(ticks), int)
    if len(sub) > 1:
        pos = np.where(np.abs(sub[pos - 1] - ticks) <= np.abs(sub[pos] - ticks), pos - 1, pos)
    return inside[pos]


def sha256_of(path: Path, exclude: set[str] = frozenset()) -> str:
    """SHA-256 of a file, or of a frame folder (every file's name and bytes, in frame order;
    files in ``exclude``, such as symlinks leading outside the input, left out)."""
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted((f for f in path.iterdir() if f.is_file() and str(f) not in exclude),
                    key=lambda f: natural_key(f.name)):
        h.update(f.name.encode() + b"\0")
        update_sha256(h, f)
    return h.hexdigest()


def _timed_folder(src: FolderSource, path: Path, pattern: str | None):
    """A frame folder's frames with a capture time, in time order -> (keep, times, skipped, notes);
    (None, ...) when no frame has a time (the folder is an ordinary clip)."""
    rep = capture_times(src.files, pattern=pattern)
    if not any(t is not None for t in rep.times):
        return None, None, [], []
    skipped = [{"path": str(path / name), "reason": f"unreadable timestamp: {reason}"}
               for name, reason in rep.unparseable]
    seen, ok = set(), []
    for i, t in enumerate(rep.times):
        if t is None:
            continue
        if t in seen:
            skipped.append({"path": str(src.files[i]), "reason": f"duplicate capture time {t.isoformat()}"})
            continue
        seen.add(t)
        ok.append(i)
    notes = ([f"{len(rep.out_of_order)} frames out of time order by name; sorted by time"]
             if rep.out_of_order else [])
    ok.sort(key=lambda i: rep.times[i])
    return np.asarray(ok, dtype=np.int64), [rep.times[i].isoformat() for i in ok], skipped, notes


def chunks(src: FrameSource, keep: np.ndarray):
    """The frames ``keep`` of ``src`` as uint8 [T, H, W, 3] chunks of bounded bytes."""
    step = frames_per_chunk(src.meta.height, src.meta.width)
    for start in range(0, len(keep), step):
        yield src.get(keep[start:start + step])


def _detail(frame: np.ndarray) -> float:
    """Mean gradient magnitude of the luma: a lit, sharp frame scores high, night or fog low."""
    g = to_gray(frame, work_factor(*frame.shape[:2]))
    return float(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())


def align_clip(src: FrameSource, keep: np.ndarray) -> Alignment:
    """Register every kept frame to the most detailed of a few frames from the middle half."""
    n = len(keep)
    candidates = np.unique(np.linspace(n // 4, max(n // 4, (3 * n) // 4 - 1), ALIGN_CANDIDATES).round().astype(int))
    frames = src.get(keep[candidates])
    best = int(np.argmax([_detail(f) for f in frames]))
    return register(chunks(src, keep), frames[best], int(candidates[best]))


def prepare_clip(job: dict) -> dict:
    """Worker: one source -> its zip shards at every resolution; returns the manifest entry."""
    path, tmp, cid = Path(job["path"]), Path(job["tmp"]), job["id"]
    src = open_source(path, backend=job["backend"], root=job.get("root"))
    with src:
        meta = src.meta
        keep, times, notes, warnings = None, None, [], []
        skipped = list(getattr(src, "skipped", []))
        if isinstance(src, FolderSource):
            keep, times, more, notes = _timed_folder(src, path, job["time_pattern"])
            skipped += more
        if keep is None:
            keep = select_frames(src.times(), len(src), job["fps"], job["trim"])
        if job.get("interval") and times is None and meta.backend not in ("folder", "zip"):
            times = [t.isoformat() for t in video_times(job.get("start"), job["interval"], keep,
                                                          str(path), meta.creation_time)]
        if len(keep) < job["min_frames"]:
            raise DataError(f"{path}: {len(keep)} usable frames, fewer than --min-frames {job['min_frames']}")
        alignment = align_clip(src, keep) if job.get("align") and len(keep) > 1 else None
        rect = alignment.valid_rect if alignment else (0.0, 0.0, float(meta.width), float(meta.height))
        if alignment:
            moved = float(np.abs(alignment.shifts).max())
            notes.append(f"aligned to frame {alignment.reference}: shifts up to {moved:.1f} px, valid "
                         f"rectangle {rect[2] - rect[0]:.0f}x{rect[3] - rect[1]:.0f} of {meta.width}x{meta.height}"
                         + (f"; {len(alignment.unreliable)} frames not registered (too dark or unlike the "
                            "reference) take their neighbour's shift" if alignment.unreliable else ""))
        for res in job["resolutions"]:
            x0, y0, x1, y1 = fit_box(rect, res)
            up = max(res[0] / (y1 - y0), res[1] / (x1 - x0))
            if up > 1.0 + 1e-6:
                warnings.append(f"its {x1 - x0:.0f}x{y1 - y0:.0f} frames are upscaled x{up:.1f} to "
                                f"{res_name(res)} (width x height {res[1]}x{res[0]}); they will look blurry")
        _write_shards(src, keep, job, tmp, cid, rect, alignment)
    fps = job["fps"] if (job["fps"] and times is None and meta.fps) else meta.fps
    entry = {"id": cid, "name": path.stem if path.is_file() else path.name, "source": str(path),
             "kind": meta.backend if meta.backend in ("folder", "zip") else "video",
             "sha256": sha256_of(path, {s["path"] for s in skipped}), "num_frames": int(len(keep)), "fps": fps,
             "source_frames": len(src), "source_size": [meta.height, meta.width], "vfr": meta.vfr,
             "source_indices": [int(i) for i in keep], "times": times,
             "_skipped": skipped, "_notes": notes, "_warnings": warnings}
    if alignment:
        entry["align"] = alignment.to_json()
    return entry


def _write_shards(src: FrameSource, keep: np.ndarray, job: dict, tmp: Path, cid: str, rect,
                  alignment: Alignment | None) -> None:
    writers, shard = {}, tmp
    boxes = {res: fit_box(rect, res) for res in job["resolutions"]}
    try:
        for res in job["resolutions"]:
            shard = tmp / res_name(res) / f"{cid}.zip"
            shard.parent.mkdir(parents=True, exist_ok=True)
            writers[res] = zipfile.ZipFile(shard, "w", zipfile.ZIP_STORED)
        j = 0
        for chunk in chunks(src, keep):
            for frame in chunk:
                for res, zf in writers.items():
                    box = alignment.box(j, boxes[res]) if alignment else boxes[res]
                    buf = io.BytesIO()
                    Image.fromarray(crop_resize(frame, res, box)).save(buf, "JPEG", quality=job["quality"],
                                                                       subsampling=0)
                    shard = Path(zf.filename)
                    zf.writestr(f"{j:06d}.jpg", buf.getvalue())
                j += 1
            chunk = frame = None  # before the next chunk is read: one chunk in memory at a time
        for zf in writers.values():
            shard = Path(zf.filename)
            zf.close()
    except OSError as exc:
        raise OutputError(f"{getattr(exc, 'filename', None) or shard}: {os_reason(exc)}") from None
    finally:
        for zf in writers.values():
            try:
                zf.close()
            except OSError:
                pass

