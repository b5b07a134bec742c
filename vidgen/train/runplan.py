"""Which run folder a training uses, and from which checkpoint it starts (rank 0 decides).

    --resume none|""   a new numbered folder
    --resume auto      the newest run of this recipe that has a checkpoint, from its newest good
                       checkpoint; else the newest run of this recipe stopped before its first
                       checkpoint, started again in place; else a new folder
    --resume PATH      a run folder or checkpoint folder

The chosen folder is locked (:class:`vidgen.lockfile.PathLock`, ``.RUN.lock`` beside it)
before its checkpoint is read, so two trainers never continue one run; a lock left by a
killed trainer is taken over with a note.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vidgen.errors import VidgenError
from vidgen.lockfile import PathLock
from vidgen.train import checkpoint as ckpt


@dataclass
class RunPlan:
    run_dir: Path
    source: Path | None  # checkpoint folder to resume from; None: start at step 0
    lock: PathLock
    notes: list[str]  # what the log should say about the choice


def _unfinished_start(out_dir: Path, run_name: str) -> Path | None:
    """The newest run folder ``NNNNN-{run_name}`` without a checkpoint (a start that was
    stopped before its first checkpoint), if it is the newest folder of that name."""
    runs = [run for _, run in ckpt._runs(out_dir) if run.name.split("-", 1)[1] == run_name]
    if runs and not ckpt.list_checkpoints(runs[-1]):
        return runs[-1]
    return None


def _locked(run_dir: Path, notes: list[str]) -> PathLock:
    try:
        return PathLock(run_dir, "vidgen train", notes.append).acquire()
    except OSError as exc:
        raise VidgenError(f"cannot train in {run_dir}: {exc.filename}: {exc.strerror}") from None


def plan_run(out_dir: str | os.PathLike, run_name: str, resume: str | None) -> RunPlan:
    """Choose and lock the run folder (see the module docstring)."""
    out_dir, notes = Path(out_dir), []
    if resume in (None, "", "none"):
        return _new(out_dir, run_name, notes)
    if resume == "auto":
        run = ckpt.latest_run(out_dir, run_name)
        if run is None:
            start = _unfinished_start(out_dir, run_name)
            if start is None:
                return _new(out_dir, run_name, notes)
            lock = _locked(start, notes)
            return RunPlan(start, None, lock, notes + [f"{start} has no checkpoint yet (its last start was stopped "
                                                       "before the first one): starting again in that folder"])
        lock = _locked(run, notes)
        return _with_source(run, lock, lambda: ckpt.resolve_checkpoint(run), notes)
    source = ckpt.resolve_checkpoint(resume)
    run = source.parent.parent
    return _with_source(run, _locked(run, notes), lambda: ckpt.resolve_checkpoint(source), notes)


def _with_source(run_dir: Path, lock: PathLock, resolve, notes: list[str]) -> RunPlan:
    try:  # resolved again under the lock: a trainer that held it may have written a newer one
        source = resolve()
    except BaseException:
        lock.release()
        raise
    return RunPlan(run_dir, source, lock, notes)


def _new(out_dir: Path, run_name: str, notes: list[str]) -> RunPlan:
    try:
        run_dir = ckpt.new_run_dir(out_dir, run_name)
    except OSError as exc:
        raise VidgenError(f"cannot create a run folder under {out_dir}: {exc.filename or out_dir}: "
                          f"{exc.strerror}") from None
    return RunPlan(run_dir, None, _locked(run_dir, notes), notes)
