"""Which run folder a training uses, and from which checkpoint it starts (rank 0 decides).

    --resume none|""   a new numbered folder
    --resume auto      the newest run of this recipe that has a checkpoint, from its newest good
                       checkpoint; else the newest run of this recipe stopped before its first
                       checkpoint, started again in place; else a new folder
    --resume PATH      a run folder or checkpoint folder

The chosen folder is locked (:mod:`vidgen.train.runlock`) before its checkpoint is read, so
two trainers never continue one run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vidgen.errors import VidgenError
from vidgen.train import checkpoint as ckpt
from vidgen.train.runlock import RunLock


@dataclass
class RunPlan:
    run_dir: Path
    source: Path | None  # checkpoint folder to resume from; None: start at step 0
    lock: RunLock
    notes: list[str]  # what the log should say about the choice


def _unfinished_start(out_dir: Path, run_name: str) -> Path | None:
    """The newest run folder ``NNNNN-{run_name}`` without a checkpoint (a start that was
    stopped before its first checkpoint), if it is the newest folder of that name."""
    runs = [run for _, run in ckpt._runs(out_dir) if run.name.split("-", 1)[1] == run_name]
    if runs and not ckpt.list_checkpoints(runs[-1]):
        return runs[-1]
    return None


def _locked(run_dir: Path) -> RunLock:
    try:
        return RunLock(run_dir).acquire()
    except OSError as exc:
        raise VidgenError(f"cannot train in {run_dir}: {exc.filename}: {exc.strerror}") from None


def plan_run(out_dir: str | os.PathLike, run_name: str, resume: str | None) -> RunPlan:
    """Choose and lock the run folder (see the module docstring)."""
    out_dir = Path(out_dir)
    if resume in (None, "", "none"):
        return _new(out_dir, run_name)
    if resume == "auto":
        run = ckpt.latest_run(out_dir, run_name)
        if run is None:
            start = _unfinished_start(out_dir, run_name)
            if start is None:
                return _new(out_dir, run_name)
            lock = _locked(start)
            return RunPlan(start, None, lock, [f"{start} has no checkpoint yet (its last start was stopped "
                                               "before the first one): starting again in that folder"])
        lock = _locked(run)
        return _with_source(run, lock, lambda: ckpt.resolve_checkpoint(run))
    source = ckpt.resolve_checkpoint(resume)
    return _with_source(source.parent.parent, _locked(source.parent.parent), lambda: ckpt.resolve_checkpoint(source))


def _with_source(run_dir: Path, lock: RunLock, resolve) -> RunPlan:
    try:  # resolved again under the lock: a trainer that held it may have written a newer one
        source = resolve()
    except BaseException:
        lock.release()
        raise
    return RunPlan(run_dir, source, lock, [lock.stale] if lock.stale else [])


def _new(out_dir: Path, run_name: str) -> RunPlan:
    try:
        run_dir = ckpt.new_run_dir(out_dir, run_name)
    except OSError as exc:
        raise VidgenError(f"cannot create a run folder under {out_dir}: {exc.filename or out_dir}: "
                          f"{exc.strerror}") from None
    return RunPlan(run_dir, None, _locked(run_dir), [])
