"""Host (CPU) memory allocator settings for PyTorch work on the CPU.

glibc's malloc hands every block above a threshold (32 MiB at most) to a fresh ``mmap`` and
unmaps it on ``free``. A CPU training step of the long-video GAN allocates hundreds of such
blocks (one 128-frame activation at 36x64 with 64 channels is 75 MB), so every step the
kernel faults in and zeroes several GB of pages and takes them back: on a 2-core machine
that is 5-7 s of system time in a 16 s low-res G+D step (``tools/bench_lvg.py``).

``heap`` mode (the default of the ``vidgen`` and ``timelapse`` commands) keeps large blocks
on malloc's heap and up to 1 GiB of free memory at its top, so steps reuse the same pages,
as jemalloc or tcmalloc would. The cost is resident memory: it stays near the peak, plus
fragmentation (about +30% peak on that benchmark). ``system`` leaves malloc as it is.

Choose with ``VIDGEN_HOST_MALLOC=heap|system``. Settings made by the user (any ``MALLOC_*``
variable, or a preloaded allocator) are left alone, and so are non-glibc systems.
"""

from __future__ import annotations

import ctypes
import os
import sys

from vidgen.errors import VidgenError

MODES = ("heap", "system")
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc <malloc.h>
TRIM_THRESHOLD = 1 << 30

_applied: str | None = None


def tune_host_allocator(mode: str | None = None) -> str:
    """Apply ``mode`` (default: $VIDGEN_HOST_MALLOC, else ``heap``) to this process's malloc.

    Returns what is in effect: ``heap``, ``system``, or ``user`` (the user's own allocator
    settings were found and kept). Safe to call more than once; the first call decides.
    """
    global _applied
    if _applied is not None:
        return _applied
    mode = mode or os.environ.get("VIDGEN_HOST_MALLOC") or "heap"
    if mode not in MODES:
        raise VidgenError(f"VIDGEN_HOST_MALLOC={mode!r}: expected one of {', '.join(MODES)}")
    preload = os.environ.get("LD_PRELOAD", "")
    if mode == "system" or not sys.platform.startswith("linux"):
        _applied = "system"
    elif any(k.startswith("MALLOC_") for k in os.environ) or "malloc" in preload:
        _applied = "user"
    else:
        _applied = "heap" if _glibc_heap_mode() else "system"
    return _applied


def _glibc_heap_mode() -> bool:
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (glibc only: musl has mallopt as a no-op stub)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
