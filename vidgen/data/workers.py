"""Worker processes that die with their parent.

A process pool's workers block on their task queue forever once the parent is gone (each
holds its own end of the queue's pipe, so they never see end-of-file), keeping their memory.
:func:`die_with_parent` is the pool's initialiser: on Linux the kernel sends the worker
SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``); everywhere, a daemon thread
checks once a second that the parent is still its parent and exits when it is not.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _set_parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # no prctl (another libc): the watcher thread alone does the job


def _watch(parent: int, period: float) -> None:
    while True:
        time.sleep(period)
        if os.getppid() != parent:
            os._exit(1)


def die_with_parent(parent: int, period: float = 1.0) -> None:
    """Pool initialiser: ``ProcessPoolExecutor(..., initializer=die_with_parent,
    initargs=(os.getpid(),))``. ``parent`` is passed in, not read here, because the parent
    may already be gone when the worker starts."""
    _set_parent_death_signal()
    if os.getppid() != parent:  # it died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch, args=(parent, period), daemon=True, name="parent-watch").start()
