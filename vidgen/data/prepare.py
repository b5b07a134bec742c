"""Sources -> an on-disk dataset: ``manifest.json`` + one folder per resolution of zip shards.

Layout (every resolution lists the same clips, frame j of clip k at every resolution shows
the same source frame; METHODS.md section 10):

    DIR/manifest.json          clips, frame counts, fps, source checksums, capture times
    DIR/report.json            skipped inputs / frames with the reason for each
    DIR/36x64/000000.zip       JPEG frames 000000.jpg ... of clip 0 (stored, not deflated)
    DIR/144x256/000000.zip

Frames are centre-cropped to the target aspect ratio, then resized with an antialiased
bicubic filter. The folder is built under a temporary name beside DIR and renamed when
complete, so an interrupted run leaves nothing half-written and can simply be rerun.

Nothing the command did not create is ever deleted: DIR may not be, contain or lie inside
an input; ``overwrite`` replaces only a folder that is a vidgen dataset (its manifest, its
shards and nothing else); a lock beside DIR (``.DIR.lock``, with the owner's PID) lets one
run at a time write it, and the temporary folders of a run that died are recognised by the
PID in their names (a parked old dataset is put back when the new one was never published).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import io
import json
import multiprocessing as mp
import os
import re
import shutil
import sys
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from vidgen.fileio import atomic_dir, pid_alive, sha256_file, temp_owner, update_sha256, write_json
from vidgen.lockfile import PathLock
from vidgen.data.workers import die_with_parent
from vidgen.data.sources import (IMAGE_EXTS, VIDEO_EXTS, FolderSource, FrameSource, SourceMeta,
                                 ZipSource, natural_key, open_source)
from vidgen.data.timestamps import capture_times
from vidgen.errors import DataError

MANIFEST = "manifest.json"
FORMAT = "vidgen-dataset/1"
_OWN_FILES = (MANIFEST, "report.json", "contact_sheet.png")  # what a dataset folder may hold
_SHARD = re.compile(r"\d{6,}\.zip")


class OutputError(DataError):
    """Writing the dataset failed (full disk, read-only or forbidden folder): the run stops."""


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


@dataclass
class PrepareConfig:
    inputs: list[str]
    out: str
    resolutions: list[tuple[int, int]] = field(default_factory=lambda: [(36, 64)])
    fps: float | None = None                     # resample videos to this rate (nearest frame)
    trim: tuple[float, float | None] | None = None  # keep [start, end) seconds; end < 0: from the end
    min_frames: int = 1
    workers: int = 1
    strict: bool = False
    backend: str = "auto"
    quality: int = 95
    time_pattern: str | None = None
    overwrite: bool = False
    benchmark: str | None = None  # definition (name or YAML path) the result must match


def parse_resolution(text: str) -> tuple[int, int]:
    """'36x64' -> (36, 64) (height x width)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        assert h > 0 and w > 0
    except (ValueError, AssertionError):
        raise DataError(f"resolution '{text}' is not HEIGHTxWIDTH, e.g. 36x64") from None
    return h, w


def res_name(res: tuple[int, int]) -> str:
    return f"{res[0]}x{res[1]}"


def parse_trim(text: str) -> tuple[float, float | None]:
    """'START:END' seconds (END empty = to the end, negative = before the end)."""
    try:
        a, b = text.split(":")
        return float(a or 0), (float(b) if b.strip() else None)
    except ValueError:
        raise DataError(f"--trim '{text}' is not START:END in seconds, e.g. 1.5:-2") from None


def discover(inputs: list[str]) -> tuple[list[Path], list[dict]]:
    """Input paths -> clip sources (videos, zips, frame folders) and ignored entries."""
    clips, ignored = [], []

    def visit(p: Path, top: bool):
        if p.is_file():
            if p.suffix.lower() in VIDEO_EXTS + (".zip",) or top:
                clips.append(p)
            elif p.suffix.lower() not in IMAGE_EXTS:
                ignored.append({"path": str(p), "reason": "not a video, zip or frame folder"})
            return
        children = sorted(p.iterdir(), key=lambda c: natural_key(c.name))
        if any(c.suffix.lower() in IMAGE_EXTS and c.is_file() for c in children):
            clips.append(p)  # a frame folder is one clip; its files are frames
            return
        for c in children:
            if not c.name.startswith("."):
                visit(c, False)

    for text in inputs:
        p = Path(text)
        if not p.exists():
            raise DataError(f"{p}: no such file or folder")
        visit(p, True)
    return clips, ignored


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, or of a frame folder (every file's name and bytes, in frame order)."""
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted((f for f in path.iterdir() if f.is_file()), key=lambda f: natural_key(f.name)):
        h.update(f.name.encode() + b"\0")
        update_sha256(h, f)
    return h.hexdigest()


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


def crop_resize(frame: np.ndarray, res: tuple[int, int]) -> Image.Image:
    """uint8 [H, W, 3] -> PIL image of ``res`` (h, w): centre crop to the aspect, then resize."""
    h, w = frame.shape[:2]
    th, tw = res
    if h * tw > w * th:   # too tall: crop rows
        ch, cw = w * th / tw, w
    else:                 # too wide: crop columns
        ch, cw = h, h * tw / th
    box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
    # PIL scales the filter support with the reduction factor: an antialiased resize
    return Image.fromarray(frame).resize((tw, th), Image.Resampling.BICUBIC, box=box)


def _prepare_clip(job: dict) -> dict:
    """Worker: one source -> its zip shards at every resolution; returns the manifest entry."""
    path, tmp, cid = Path(job["path"]), Path(job["tmp"]), job["id"]
    src = open_source(path, backend=job["backend"])
    with src:
        meta = src.meta
        keep, times, skipped, notes = np.arange(len(src)), None, [], []
        if isinstance(src, FolderSource):
            rep = capture_times(src.files, pattern=job["time_pattern"])
            if any(t is not None for t in rep.times):  # a time-stamped sequence
                for name, reason in rep.unparseable:
                    skipped.append({"path": str(path / name), "reason": f"unreadable timestamp: {reason}"})
                seen, ok = set(), []
                for i, t in enumerate(rep.times):
                    if t is None:
                        continue
                    if t in seen:
                        skipped.append({"path": str(src.files[i]), "reason": "duplicate capture time "
                                        f"{t.isoformat()}"})
                        continue
                    seen.add(t)
                    ok.append(i)
                if rep.out_of_order:
                    notes.append(f"{len(rep.out_of_order)} frames out of time order by name; sorted by time")
                ok.sort(key=lambda i: rep.times[i])
                keep = np.asarray(ok, dtype=np.int64)
                times = [rep.times[i].isoformat() for i in keep]
        else:
            keep = select_frames(src.times(), len(src), job["fps"], job["trim"])
        if len(keep) < job["min_frames"]:
            raise DataError(f"{path}: {len(keep)} usable frames, fewer than --min-frames {job['min_frames']}")
        writers, shard = {}, tmp
        try:
            for res in job["resolutions"]:
                shard = tmp / res_name(res) / f"{cid}.zip"
                shard.parent.mkdir(parents=True, exist_ok=True)
                writers[res] = zipfile.ZipFile(shard, "w", zipfile.ZIP_STORED)
            for start in range(0, len(keep), 32):
                chunk = src.get(keep[start:start + 32])
                for j, frame in enumerate(chunk, start):
                    for res, zf in writers.items():
                        buf = io.BytesIO()
                        crop_resize(frame, res).save(buf, "JPEG", quality=job["quality"], subsampling=0)
                        shard = Path(zf.filename)
                        zf.writestr(f"{j:06d}.jpg", buf.getvalue())
            for zf in writers.values():
                shard = Path(zf.filename)
                zf.close()
        except OSError as exc:
            raise OutputError(f"{getattr(exc, 'filename', None) or shard}: {_os_reason(exc)}") from None
        finally:
            for zf in writers.values():
                try:
                    zf.close()
                except OSError:
                    pass
    fps = job["fps"] if (job["fps"] and times is None and meta.fps) else meta.fps
    return {"id": cid, "name": path.stem if path.is_file() else path.name, "source": str(path),
            "kind": meta.backend if meta.backend in ("folder", "zip") else "video",
            "sha256": sha256_of(path), "num_frames": int(len(keep)), "fps": fps,
            "source_frames": len(src), "source_size": [meta.height, meta.width], "vfr": meta.vfr,
            "source_indices": [int(i) for i in keep], "times": times,
            "_skipped": skipped, "_notes": notes}


def prepare(cfg: PrepareConfig, log=None) -> dict:
    """Build the dataset; returns the report. Raises DataError when nothing was usable or,
    with ``strict``, when anything was skipped (then nothing is written)."""
    log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
    out = Path(cfg.out).resolve()
    check_target(out, cfg.inputs, cfg.overwrite)  # before anything is created
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        lock = PathLock(out, "vidgen data prepare", log).acquire()
    except OSError as exc:
        raise DataError(f"{exc.filename or out.parent}: cannot write there ({_os_reason(exc)}); "
                        "choose a writable --out; nothing was written") from None
    try:
        _recover_interrupted(out, log)
        check_target(out, cfg.inputs, cfg.overwrite)  # again, now that no one else writes it
        existed = out.exists()
        try:
            return _prepare_locked(cfg, out, log)
        except OSError as exc:
            kept = (f"the old dataset {out} is kept unchanged" if existed and out.exists()
                    else f"nothing was written to {out}")
            raise DataError(f"{exc.filename or out}: {_os_reason(exc)}; {kept}") from None
        except OutputError as exc:
            kept = (f"the old dataset {out} is kept unchanged" if existed and out.exists()
                    else f"nothing was written to {out}")
            raise DataError(f"cannot write {exc}; {kept}") from None
    finally:
        lock.release()


def _prepare_locked(cfg: PrepareConfig, out: Path, log) -> dict:
    sources, skipped = discover(cfg.inputs)
    for s in skipped:
        log(f"skip {s['path']}: {s['reason']}")
    with atomic_dir(out) as tmp:  # a temporary folder beside ``out``, renamed into place when complete
        jobs = [{"path": str(p), "tmp": str(tmp), "id": f"{k:06d}", "backend": cfg.backend,
                 "fps": cfg.fps, "trim": cfg.trim, "min_frames": cfg.min_frames,
                 "resolutions": cfg.resolutions, "quality": cfg.quality,
                 "time_pattern": cfg.time_pattern} for k, p in enumerate(sources)]
        clips = []
        for job, result in _run_jobs(jobs, cfg.workers):
            if isinstance(result, OutputError):
                raise result
            if isinstance(result, DataError):
                msg = str(result)
                reason = msg[len(job["path"]) + 2:] if msg.startswith(job["path"] + ": ") else msg
                skipped.append({"path": job["path"], "reason": reason})
                log(f"skip {job['path']}: {reason}")
                for res in cfg.resolutions:  # drop a partial shard of the failed clip
                    (tmp / res_name(res) / f"{job['id']}.zip").unlink(missing_ok=True)
                continue
            for s in result.pop("_skipped"):
                skipped.append(s)
                log(f"skip {s['path']}: {s['reason']}")
            for note in result.pop("_notes"):
                log(f"note {job['path']}: {note}")
            clips.append(result)
        report = {"clips": len(clips), "frames": sum(c["num_frames"] for c in clips),
                  "skipped": skipped, "out": str(out)}
        if not clips:
            raise DataError(f"no usable clip in {', '.join(cfg.inputs)} ({len(skipped)} inputs skipped, "
                            "see the lines above)")
        if cfg.strict and skipped:
            raise DataError(f"--strict: {len(skipped)} inputs or frames were skipped; fix them or drop --strict")
        manifest = {"format": FORMAT, "created": datetime.now(timezone.utc).isoformat(),
                    "resolutions": [res_name(r) for r in cfg.resolutions], "fps": cfg.fps,
                    "options": {k: v for k, v in asdict(cfg).items() if k not in ("inputs", "out")},
                    "inputs": [str(Path(i).resolve()) for i in cfg.inputs],
                    "num_frames": report["frames"], "clips": clips}
        if cfg.benchmark:
            _check_benchmark(cfg, manifest, report, log)
        write_json(tmp / "report.json", report)
        write_json(tmp / MANIFEST, manifest)
    return report


def _run_jobs(jobs: list[dict], workers: int):
    """Yield (job, manifest entry or DataError) in job order, with a progress bar."""
    bar = tqdm(total=len(jobs), desc="prepare", unit="clip", file=sys.stderr, disable=None)
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            try:
                yield job, _prepare_clip(job)
            except DataError as exc:
                yield job, exc
            bar.update()
    else:
        # workers die with this process (vidgen/data/workers.py); on an early exit the queued
        # jobs are cancelled rather than waited for
        pool = cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                      initializer=die_with_parent, initargs=(os.getpid(),))
        try:
            futures = [pool.submit(_prepare_clip, job) for job in jobs]
            for job, fut in zip(jobs, futures):
                try:
                    yield job, fut.result()
                except DataError as exc:
                    yield job, exc
                bar.update()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    bar.close()


def _inside(path: Path, folder: Path) -> bool:
    return folder == path or folder in path.parents


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_target(out: Path, inputs: list[str], overwrite: bool) -> None:
    """Refuse an ``out`` that is, contains or lies inside an input, and an existing ``out``
    that is not a vidgen dataset (``overwrite`` replaces datasets only); ``out`` resolved."""
    for text in inputs:
        real = Path(text).resolve()
        if _inside(real, out) or _same(real, out):
            raise DataError(f"--out {out} is or contains the input {text}; refusing to write over "
                            "the inputs: choose an --out outside them")
        if _inside(out, real):
            raise DataError(f"--out {out} lies inside the input {text}; the dataset would be read "
                            "as input next time: choose an --out outside the inputs")
    if not out.exists() and not out.is_symlink():
        return
    if out.is_dir() and not any(out.iterdir()):
        return  # an empty folder: nothing to lose
    if not overwrite:
        raise DataError(f"{out} already exists: choose another --out or pass --overwrite")
    problem = foreign_content(out)
    if problem:
        raise DataError(f"--overwrite refused: {out} {problem}; --overwrite only replaces a dataset "
                        "made by `vidgen data prepare`: move those files or choose another --out")


def foreign_content(root: Path) -> str:
    """'' when ``root`` holds a vidgen dataset and nothing else, else what is not ours."""
    if not root.is_dir():
        return "is not a folder"
    try:
        manifest = load_manifest(root)
    except DataError:
        return f"is not a vidgen dataset (no valid {MANIFEST})"
    resolutions = set(manifest.get("resolutions") or [])
    foreign = []
    for entry in sorted(root.iterdir()):
        if entry.name in resolutions and entry.is_dir() and not entry.is_symlink():
            foreign += [f"{entry.name}/{f.name}" for f in sorted(entry.iterdir())
                        if not (_SHARD.fullmatch(f.name) and f.is_file() and not f.is_symlink())]
        elif not (entry.name in _OWN_FILES and entry.is_file() and not entry.is_symlink()):
            foreign.append(entry.name)
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        return f"holds files that are not part of its dataset ({', '.join(foreign[:3])}{more})"
    return ""


def _recover_interrupted(out: Path, log) -> None:
    """Clean up after runs into ``out`` that died (called with the lock held): their
    temporary folders go; a parked old dataset (``.NAME.tmp-PID-HEX.old``) is put back when
    no new one was published, else removed. Temporaries of a live process are left alone."""
    for tmp in sorted(out.parent.glob(f".{out.name}.tmp-*")):
        owner = temp_owner(tmp)
        if owner is not None and owner != os.getpid() and pid_alive(owner):
            continue
        if tmp.name.endswith(".old") and tmp.is_dir() and not out.exists():
            os.replace(tmp, out)
            log(f"warning: {out} was put back from {tmp.name}, where an interrupted run had parked it")
            continue
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def load_manifest(root: str | Path) -> dict:
    path = Path(root) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the dataset manifest ({exc}); rerun `vidgen data prepare`") from None
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path}: format {manifest.get('format')!r} is not {FORMAT}; rerun `vidgen data prepare`")
    return manifest


def _check_benchmark(cfg: PrepareConfig, manifest: dict, report: dict, log) -> None:
    """Compare the finished dataset with its benchmark definition before it is published;
    the outcome goes into the manifest and report.json. With ``strict`` a difference is an
    error (nothing is written)."""
    from vidgen.data.benchmarks import check_prepared, load_benchmark

    bench = load_benchmark(cfg.benchmark)
    problems = check_prepared(bench, manifest)
    manifest["benchmark"] = report["benchmark"] = {**bench.summary(), "problems": problems}
    for p in problems:
        log(f"benchmark {bench.name}: {p}")
    if problems and cfg.strict:
        raise DataError(f"--strict: the prepared data does not match benchmark {bench.name} "
                        f"({'; '.join(problems)})")


# ---------------------------------------------------------------- reading a prepared dataset

def is_prepared(root: str | Path) -> bool:
    return (Path(root) / MANIFEST).is_file()


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


class PreparedClip(FrameSource):
    """One clip of a prepared dataset at one resolution (uint8 [T, H, W, 3] like any source).

    Length, size and fps come from the manifest; the shard is opened (as a ZipSource) on the
    first read, so listing thousands of clips costs nothing."""

    def __init__(self, root: Path, res: str, clip: dict):
        h, w = parse_resolution(res)
        self.path, self._src = Path(root) / res / f"{clip['id']}.zip", None
        n = int(clip["num_frames"])
        self.meta = SourceMeta(path=str(self.path), num_frames=n, width=w, height=h, fps=clip.get("fps"),
                               avg_fps=clip.get("fps"), duration=n / clip["fps"] if clip.get("fps") else None,
                               vfr=False, backend="zip")

    def _shard(self) -> ZipSource:
        if self._src is None:
            src = ZipSource(self.path)
            if (len(src), src.meta.height, src.meta.width) != (len(self), self.meta.height, self.meta.width):
                raise DataError(f"{self.path}: {len(src)} frames of {src.meta.height}x{src.meta.width}, the "
                                f"manifest says {len(self)} of {self.meta.height}x{self.meta.width}; "
                                "rerun `vidgen data prepare`")
            self._src = src
        return self._src

    def _read(self, indices):
        return self._shard()._read(indices)

    def close(self) -> None:
        if self._src is not None:
            self._src.close()


def open_prepared(root: str | Path, resolution=None) -> tuple[dict, str, list[PreparedClip]]:
    """(manifest, resolution name, one source per clip) of a prepared dataset folder."""
    root = Path(root)
    manifest = load_manifest(root)
    res = pick_resolution(manifest, resolution, str(root))
    missing = [c["id"] for c in manifest["clips"] if not (root / res / f"{c['id']}.zip").is_file()]
    if missing:
        raise DataError(f"{root / res}: shards of clips {', '.join(missing[:5])} are missing; "
                        "rerun `vidgen data prepare`")
    return manifest, res, [PreparedClip(root, res, c) for c in manifest["clips"]]
