"""Keep freed memory in the process for the next model instead of handing it back at once.

A fedpact process moves the same few megabytes again and again: a hub receives an update
in 256 KiB reads, each copied into a fresh buffer; a client allocates the arrays of each
round's model. glibc's defaults serve every allocation above 128 KiB with a fresh
``mmap`` and give freed memory back to the kernel as soon as 128 KiB sit free at the top
of the heap, so each of those buffers is new memory that faults in page by page. On a
virtual machine a page fault costs microseconds: receiving one 4 MB body cost a bare
uvicorn server 8 ms of CPU that way, and 1.3 ms once freed memory is kept for reuse
(docs/benchmarks.md, section (b)).

:func:`keep_freed_memory` raises both thresholds: allocations up to 32 MiB come from the
heap, and up to 128 MiB of freed heap stays in the process. An operator who set glibc's
own variables (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``)
keeps them; ``FEDPACT_KEEP_FREED_MEMORY=0`` leaves the allocator alone. Elsewhere (macOS,
musl, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading

#: mallopt's parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Allocations up to this size come from the heap, not a fresh mapping (glibc's maximum on 64-bit).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Freed heap up to this size stays in the process for the next allocation.
TRIM_THRESHOLD = 128 * 1024 * 1024
#: The variables by which an operator tunes glibc's allocator; any of them set: hands off.
GLIBC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
OPT_OUT = "FEDPACT_KEEP_FREED_MEMORY"

_lock = threading.Lock()
_state: bool | None = None


def keep_freed_memory() -> bool:
    """Tune this process's allocator once; whether it is tuned (False where it cannot or may not be)."""
    global _state
    with _lock:
        if _state is None:
            _state = _tune()
        return _state


def _tune() -> bool:
    if not sys.platform.startswith("linux") or os.environ.get(OPT_OUT, "1") == "0":
        return False
    if any(name in os.environ for name in GLIBC_VARIABLES):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
