"""One trainer per run folder: ``RUN/train.lock``, held while a process trains the run.

The file holds the trainer's PID and host, and the process holds an advisory lock (``flock``)
on it, which the kernel drops when the process ends however it ends. A second process that
wants the run (``--resume auto`` started twice) cannot take the lock and is told who holds it.
A lock file left by a killed trainer is stale: its PID no longer runs and its ``flock`` is gone,
so the next trainer takes it over and says so. Where ``flock`` does not exist, the PID alone
decides (a live PID on this host holds the run).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from vidgen.errors import VidgenError

NAME = "train.lock"

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None


class RunLockedError(VidgenError):
    """Another live process trains this run."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(path: Path) -> dict:
    try:
        info = json.loads(path.read_text())
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


class RunLock:
    """``with RunLock(run_dir) as lock: ...``; :attr:`stale` describes a lock taken over."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / NAME
        self.fd: int | None = None
        self.stale: str | None = None

    def _refuse(self, info: dict) -> RunLockedError:
        who = f"process {info.get('pid', '?')} on {info.get('host', '?')}"
        return RunLockedError(f"{self.path.parent} is being trained by {who} (lock file {self.path}); "
                              "wait for it to finish or stop it, then resume")

    def acquire(self) -> "RunLock":
        host = socket.gethostname()
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    raise self._refuse(_read(self.path)) from None
                try:  # the file may have been unlinked by its releasing owner since we opened it
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
            old = _read(self.path)
            pid = old.get("pid")
            if isinstance(pid, int) and pid != os.getpid():
                if fcntl is None and old.get("host") == host and _alive(pid):
                    os.close(fd)
                    raise self._refuse(old)
                self.stale = f"took over the stale lock of process {pid} on {old.get('host', '?')} (no longer running)"
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps({"pid": os.getpid(), "host": host}) + "\n").encode(), 0)
            self.fd = fd
            return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:  # a read-only folder now: the flock still ends with the descriptor
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
