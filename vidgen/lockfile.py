"""An exclusive lock on an output path, held by one process at a time.

The lock is a file (``.NAME.lock`` beside the output) holding the owner's PID. Exclusion is
an ``flock`` on that file, which the kernel drops when the owner dies (even by SIGKILL), so a
lock left by a killed process is never mistaken for a live one; the PID in the file names the
holder in messages and tells a stale lock (its process is gone) apart, which is taken over
with a warning. Releasing removes the file.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path
from typing import Callable

from vidgen.errors import VidgenError
from vidgen.fileio import pid_alive


class LockedError(VidgenError):
    """Another live process holds the lock."""


def lock_path(target: str | os.PathLike) -> Path:
    target = Path(target)
    return target.parent / f".{target.name}.lock"


def _read_owner(fd: int) -> tuple[int | None, str]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 256).decode(errors="replace").split()
    except OSError:
        return None, ""
    pid = int(text[0]) if text and text[0].isdigit() else None
    return pid, text[1] if len(text) > 1 else ""


class PathLock:
    """``with PathLock(out, "vidgen data prepare", warn): ...`` -- raise :class:`LockedError`
    (one line, naming the holder's PID) when another process holds ``out``'s lock."""

    def __init__(self, target: str | os.PathLike, what: str, warn: Callable[[str], None] | None = None):
        self.target, self.what = Path(target), what
        self.path = lock_path(self.target)
        self.warn = warn or (lambda msg: None)
        self._fd: int | None = None

    def acquire(self) -> "PathLock":
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                pid, host = _read_owner(fd)
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                    raise
                who = f"PID {pid}" + (f" on {host}" if host and host != socket.gethostname() else "") \
                    if pid else "another process"
                raise LockedError(f"{self.target}: another `{self.what}` ({who}) is writing it now "
                                  f"(lock {self.path}); wait for it to finish or choose another output") from None
            # the file may have been released and removed between open() and flock(): retry on
            # the file now at that path, so two processes never hold locks on different inodes
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            break
        pid, _ = _read_owner(fd)
        if pid is not None and pid != os.getpid():
            state = "no longer running" if not pid_alive(pid) else "not holding it"
            self.warn(f"warning: {self.path}: taking over a stale lock of PID {pid} ({state})")
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # unlink while still holding: no one waits on it
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "PathLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
