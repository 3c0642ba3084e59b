"""Large CPU scratch buffers on transparent huge pages (2 MB instead of 4 KB).

The volume kernels read and scatter into packed grids, per-task gradient buffers and work grids of
16-130 MB, at addresses that jump across the whole buffer from one sample to the next. With 4 KB
pages, 100 MB needs 25 600 page-table entries, far more than the CPU's TLB holds (a few thousand),
so many samples wait for a page walk; with 2 MB pages it needs 50 (measurements:
docs/performance.md#volume-kernels).

``empty_array(shape, dtype)`` maps anonymous memory aligned to 2 MB and asks the kernel for huge pages
(``madvise(MADV_HUGEPAGE)``: Linux with transparent huge pages in ``always`` or ``madvise`` mode).
Where that is not available (other systems, THP ``never``), the buffer is still correct, just on
small pages. Buffers under 2 MB come from ``np.empty``.
"""

from __future__ import annotations

import math
import mmap

import numpy as np

HUGE_PAGE = 2 << 20  # bytes in an x86-64 / arm64 transparent huge page

_HAVE_ADVICE = getattr(mmap, "MADV_HUGEPAGE", None) is not None and getattr(mmap, "MAP_ANONYMOUS", None) is not None


def empty_array(shape, dtype) -> np.ndarray:
    """``empty`` as a NumPy array of NumPy ``dtype``: on huge pages when it spans at least one and
    the system has them, otherwise ``np.empty``. The array owns its mapping (its base)."""
    shape = tuple(int(s) for s in shape)
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if nbytes < HUGE_PAGE or not _HAVE_ADVICE:
        return np.empty(shape, dtype)
    region = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        region.madvise(mmap.MADV_HUGEPAGE)
    except OSError:  # a kernel without transparent huge pages: small pages, same contents
        pass
    raw = np.frombuffer(region, dtype=np.uint8)
    start = (-raw.ctypes.data) % HUGE_PAGE  # the first 2 MB boundary of the mapping
    return raw[start : start + nbytes].view(dtype).reshape(shape)
