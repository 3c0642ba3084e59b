"""Large CPU tensors whose memory serves again once nothing refers to them: the volume kernels'
packed grids, per-task buffers and kept samples once their call is done, and the gradients they
hand to autograd once the caller has let go of them.

A training step that sets the gradients to None (``optimizer.zero_grad()``, PyTorch's default)
frees last step's gradients, and the backward allocates new ones of the same shapes. For a 128³
density + RGB volume that is 32 MB a step. From glibc's allocator, such a block either comes back
from the system with fresh pages, each faulted in and zeroed by the kernel, or it was held at the
top of the heap, and some later ``free`` hands the heap's top back to the system first. Either costs
milliseconds of kernel time in some steps and not in others (docs/performance.md#volume-kernels).

``empty(shape, dtype, budget)`` keeps, for each tensor it returned, the NumPy array under it. A
later call for the same shape and dtype gets the memory back (the most recently handed out first)
when nothing uses that array any more: no tensor, view or NumPy array refers to it (its reference
count is the pool's own, measured on this interpreter in ``_unused_count``), so no caller has to
say when it is done with a buffer. Unused arrays are kept up to ``budget`` bytes in all, the least
recently handed out dropped first. Buffers of 2 MB or more are on huge pages
(``huge_pages.empty_array``).
"""

from __future__ import annotations

import sys
import threading
from typing import List

import numpy as np
import torch

from p3dlab.runtime import huge_pages

_NUMPY = {torch.float32: np.float32, torch.float64: np.float64, torch.int64: np.int64}
_POOL: List[np.ndarray] = []  # arrays under tensors this module handed out, least recent first
_LOCK = threading.Lock()  # one thread at a time looks for an unused array and takes it


def _refs(pool: list, i: int) -> int:
    return sys.getrefcount(pool[i])


def _unused_count() -> int:
    """``_refs`` of an array only a pool list refers to (interpreters differ in the temporaries
    they count)."""
    pool = [np.empty(0)]
    return _refs(pool, 0)


_UNUSED = _unused_count()


def in_use(i: int) -> bool:
    """Whether anything besides the pool refers to its i-th array."""
    return _refs(_POOL, i) > _UNUSED


def empty(shape, dtype: torch.dtype, budget: int) -> torch.Tensor:
    """An uninitialised CPU tensor of ``shape`` and ``dtype`` (float32, float64 or int64; others come
    from ``torch.empty``), on memory of an earlier one nothing uses any more when there is one (see the
    module docstring). Unused arrays beyond ``budget`` bytes in all are dropped."""
    shape = tuple(int(s) for s in shape)
    if dtype not in _NUMPY:
        return torch.empty(shape, dtype=dtype)
    kind = np.dtype(_NUMPY[dtype])
    with _LOCK:
        for i in reversed(range(len(_POOL))):  # the most recent first: its lines may still be cached
            if _POOL[i].shape == shape and _POOL[i].dtype == kind and not in_use(i):
                array = _POOL.pop(i)
                break
        else:
            array = huge_pages.empty_array(shape, kind)
        _POOL.append(array)  # most recent last
        _drop_unused(budget)
        return torch.from_numpy(array)


def _drop_unused(budget: int):
    """Drop the least recently handed out unused arrays until the unused ones take ``budget`` bytes
    or less."""
    unused = [i for i in range(len(_POOL)) if not in_use(i)]
    kept = sum(_POOL[i].nbytes for i in unused)
    dropped = []
    for i in unused:  # least recent first
        if kept <= budget:
            break
        kept -= _POOL[i].nbytes
        dropped.append(i)
    for i in reversed(dropped):
        del _POOL[i]


def pooled_bytes() -> int:
    """Bytes of the arrays the pool holds, in use or not."""
    return sum(a.nbytes for a in _POOL)
