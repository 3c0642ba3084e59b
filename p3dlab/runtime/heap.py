"""Giving freed heap memory back to the operating system between the bands of a banded computation.

glibc's ``malloc`` serves allocations below its mmap threshold (which grows up to 32 MB as large
blocks are freed) from a heap that only shrinks from its top. A computation done in bands keeps a few
small results of every band alive (its output, autograd's records) above the band's freed temporaries,
so the heap grows band after band although most of it is free: the process's resident memory then
climbs towards what the unbanded computation needed. ``malloc_trim(0)`` returns the free pages inside
the heap too. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_malloc_trim = None
if sys.platform.startswith("linux"):
    try:
        _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        _malloc_trim.argtypes = [ctypes.c_size_t]
        _malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):  # musl and other C libraries have no malloc_trim
        _malloc_trim = None


def release_free_heap() -> bool:
    """Return the heap's free pages to the operating system (glibc); True when it could."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True
