"""glibc heap tuning for the aggregator's NumPy close path.

A window close works on whole polls at once: NumPy arrays of a few hundred thousand samples
(megabytes each), dozens of them per close, allocated and freed again within milliseconds.
With glibc's defaults (mmap threshold and trim threshold 128 KiB, adapted at run time) those
frees hand the memory back to the kernel (munmap, or trimming the top of the heap) and the
next allocation faults every page in again: measured on the close path's counter arithmetic,
~70 ns per sample against ~18 ns with the memory kept for reuse (2026-12-01, bench method in
docs/aggregator.md). `retain_freed_heap` makes glibc keep it: arrays up to 32 MiB come from
the heap, and up to `retain_mb` of free memory at its top is kept rather than trimmed.

The price is resident memory: after a large close the process keeps up to that much freed
memory mapped (it is reused by the next close, not leaked). Only glibc has `mallopt`; on any
other C library (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import platform

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit (HEAP_MAX_SIZE / 2)


def retain_freed_heap(retain_mb: int) -> bool:
    """Keep up to `retain_mb` MiB of freed heap for reuse (glibc only); 0 leaves glibc's
    defaults. Returns True when the setting was applied. Process-wide and idempotent."""
    if retain_mb <= 0 or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    trim = min(retain_mb << 20, 2**31 - 1)
    ok = bool(mallopt(_M_MMAP_THRESHOLD, min(_MMAP_THRESHOLD, trim)))
    ok = bool(mallopt(_M_TRIM_THRESHOLD, trim)) and ok
    if not ok:
        log.debug("mallopt refused the heap settings; glibc defaults stay")
    return ok
