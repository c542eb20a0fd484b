"""The worker's heap: freed memory kept for the next photo rather than handed back.

Every forward and every effect allocates the same large arrays again and again. By default
glibc serves each one over 32 MiB (and, once the threshold adapts, many smaller ones) with
a fresh mmap and returns it to the kernel when freed, so each photo pays for zeroed pages
once more: on a 2-core AVX2 EPYC an eager fp32 forward spent 0.9 to 1.2 s of its 4.4 to
5.6 s in the kernel (320,000 page faults), and the four effects at 12 MP ran 1.8 to 2.0 s
against 1.2 to 1.3 s with the heap kept. The cost is that a worker's resident size stays
at its peak between photos, which its memory limit must allow for anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

#: mallopt's parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
#: The largest value mallopt takes (an int): every allocation comes from the heap.
NEVER = 2**31 - 1
#: Grown by this much at a time, so that the heap's top is not moved for each array.
HEAP_GROWTH_BYTES = 512 * 1024 * 1024

_kept = False


def keep_freed_memory() -> bool:
    """Serve large allocations from the heap and never trim it, once per process. False
    where the C library has no glibc mallopt (musl, macOS): there nothing changes."""
    global _kept
    if _kept:
        return True
    mallopt = _glibc_mallopt()
    if mallopt is None:
        logger.info("the C library has no mallopt: freed memory goes back to the system")
        return False
    settings = {M_MMAP_THRESHOLD: NEVER, M_TRIM_THRESHOLD: NEVER, M_TOP_PAD: HEAP_GROWTH_BYTES}
    _kept = all(mallopt(parameter, value) == 1 for parameter, value in settings.items())
    if not _kept:
        logger.warning("mallopt refused a setting: freed memory goes back to the system")
    return _kept


def _glibc_mallopt() -> ctypes._NamedFuncPointer | None:
    name = ctypes.util.find_library("c")
    library = ctypes.CDLL(name) if name else None
    if library is None or not hasattr(library, "gnu_get_libc_version"):
        return None
    mallopt = library.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt
