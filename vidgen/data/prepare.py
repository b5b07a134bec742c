"""Sources -> an on-disk dataset: ``manifest.json`` + one folder per resolution of zip shards.

Layout (every resolution lists the same clips, frame j of clip k at every resolution shows
the same source frame; docs/METHODS.md section 12):

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
import math
import multiprocessing as mp
import os
import re
import shutil
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from vidgen.data.manifest import (FORMAT, MANIFEST, load_manifest, open_prepared, parse_resolution,  # noqa: F401
                                  res_name)
from vidgen.data.prepare_clip import OutputError, os_reason, prepare_clip, select_frames  # noqa: F401
from vidgen.data.sources import IMAGE_EXTS, VIDEO_EXTS, escapes, natural_key
from vidgen.data.timestamps import parse_interval, parse_start
from vidgen.data.workers import die_with_parent
from vidgen.errors import DataError
from vidgen.fileio import atomic_dir, pid_alive, temp_owner, write_json
from vidgen.lockfile import PathLock

_OWN_FILES = (MANIFEST, "report.json", "contact_sheet.png")  # what a dataset folder may hold
_SHARD = re.compile(r"\d{6,}\.zip")


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
    backend: Literal["auto", "decord", "pyav"] = "auto"
    quality: int = 95
    time_pattern: str | None = None
    overwrite: bool = False
    benchmark: str | None = None  # definition (name or YAML path) the result must match
    start: str | None = None      # a time-lapse video: capture time of its first frame (ISO 8601)
    interval: str | float | None = None  # a time-lapse video: time between frames ("60s"; seconds)
    align: bool = False           # register every frame to a reference and crop to the common area
    follow_symlinks: bool = False  # read symlinks that lead outside the inputs (default: skip them)

    def __post_init__(self):
        self.resolutions = [parse_resolution(res_name(r)) for r in self.resolutions]  # bounds checked
        if not self.resolutions:
            raise DataError("no --resolution given")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise DataError(f"--fps {self.fps}: the frame rate must be a positive number, e.g. 30")
        if self.trim is not None and not all(math.isfinite(v) for v in self.trim if v is not None):
            raise DataError(f"--trim {self.trim}: START and END must be finite seconds")
        for name, value, low, high in (("--min-frames", self.min_frames, 1, None), ("--workers", self.workers, 1, 256),
                                       ("--quality", self.quality, 1, 100)):
            if not isinstance(value, int) or value < low or (high is not None and value > high):
                raise DataError(f"{name} {value}: expected an integer from {low}" + (f" to {high}" if high else " up"))
        if self.interval is not None:
            self.interval = parse_interval(self.interval)
        if self.start is not None:
            if self.interval is None:
                raise DataError("--start needs --interval (the time between frames of the video, e.g. 60s)")
            parse_start(self.start)


def parse_trim(text: str) -> tuple[float, float | None]:
    """'START:END' seconds (END empty = to the end, negative = before the end)."""
    try:
        a, b = text.split(":")
        return float(a or 0), (float(b) if b.strip() else None)
    except ValueError:
        raise DataError(f"--trim '{text}' is not START:END in seconds, e.g. 1.5:-2") from None


def discover(inputs: list[str], roots: list[Path] | None = None,
             follow_symlinks: bool = False) -> tuple[list[Path], list[dict]]:
    """Input paths -> clip sources (videos, zips, frame folders) and ignored entries. Inside
    a folder, a symlink that leads outside that input is not followed (listed as ignored)
    unless ``follow_symlinks``; a symlink loop is never followed. ``roots``, when given,
    receives the input each clip came from."""
    clips, ignored = [], []

    def visit(p: Path, top: Path, seen: set[Path]):
        if p != top and not follow_symlinks:
            outside = escapes(p, top)
            if outside:
                ignored.append({"path": str(p), "reason": outside})
                return
        if p.is_file():
            if p.suffix.lower() in VIDEO_EXTS + (".zip",) or p == top:
                clips.append(p)
                if roots is not None:
                    roots.append(top)
            elif p.suffix.lower() not in IMAGE_EXTS:
                ignored.append({"path": str(p), "reason": "not a video, zip or frame folder"})
            return
        real = p.resolve()
        if real in seen:  # a symlink loop back into the input
            ignored.append({"path": str(p), "reason": f"symlink loop (back to {real}); not followed"})
            return
        seen = seen | {real}
        try:
            children = sorted(p.iterdir(), key=lambda c: natural_key(c.name))
        except OSError as exc:
            ignored.append({"path": str(p), "reason": f"cannot list the folder ({os_reason(exc)})"})
            return
        if any(c.suffix.lower() in IMAGE_EXTS and c.is_file() for c in children):
            clips.append(p)  # a frame folder is one clip; its files are frames
            if roots is not None:
                roots.append(top)
            return
        for c in children:
            if not c.name.startswith("."):
                visit(c, top, seen)

    for text in inputs:
        p = Path(text)
        if not p.exists():
            raise DataError(f"{p}: no such file or folder")
        visit(p, p, set())
    return clips, ignored


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
        raise DataError(f"{exc.filename or out.parent}: cannot write there ({os_reason(exc)}); "
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
            raise DataError(f"{exc.filename or out}: {os_reason(exc)}; {kept}") from None
        except OutputError as exc:
            kept = (f"the old dataset {out} is kept unchanged" if existed and out.exists()
                    else f"nothing was written to {out}")
            raise DataError(f"cannot write {exc}; {kept}") from None
    finally:
        lock.release()


def _prepare_locked(cfg: PrepareConfig, out: Path, log) -> dict:
    roots: list[Path] = []
    sources, skipped = discover(cfg.inputs, roots, cfg.follow_symlinks)
    for s in skipped:
        log(f"skip {s['path']}: {s['reason']}")
    if cfg.start is not None:
        videos = [p for p in sources if p.suffix.lower() in VIDEO_EXTS]
        if len(videos) != 1:
            raise DataError(f"--start gives the first capture time of one video; the inputs hold {len(videos)} "
                            "videos: prepare them one at a time (or drop --start to use each video's creation time)")
    with atomic_dir(out) as tmp:  # a temporary folder beside ``out``, renamed into place when complete
        jobs = [{"path": str(p), "root": None if cfg.follow_symlinks else str(r), "tmp": str(tmp), "id": f"{k:06d}", "backend": cfg.backend,
                 "fps": cfg.fps, "trim": cfg.trim, "min_frames": cfg.min_frames,
                 "resolutions": cfg.resolutions, "quality": cfg.quality, "time_pattern": cfg.time_pattern,
                 "start": cfg.start, "interval": cfg.interval, "align": cfg.align}
                for k, (p, r) in enumerate(zip(sources, roots))]
        clips, warnings = [], []
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
            for warning in result.pop("_warnings"):
                warnings.append({"path": job["path"], "warning": warning})
                log(f"warning {job['path']}: {warning}")
            clips.append(result)
        report = {"clips": len(clips), "frames": sum(c["num_frames"] for c in clips),
                  "skipped": skipped, "warnings": warnings, "out": str(out)}
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
                yield job, prepare_clip(job)
            except DataError as exc:
                yield job, exc
            bar.update()
    else:
        # workers die with this process (vidgen/data/workers.py); on an early exit the queued
        # jobs are cancelled rather than waited for
        pool = cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                      initializer=die_with_parent, initargs=(os.getpid(),))
        try:
            futures = [pool.submit(prepare_clip, job) for job in jobs]
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
