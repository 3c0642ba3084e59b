"""The memory an operation may still allocate, and the refusal when it needs more.

The operations estimate their memory from their arguments before allocating anything (fragments,
neighbour lists, samples, marching-cubes scratch) and call :func:`check_fits`. It compares the
estimate with the smallest of

- what the machine or its container can still give: ``memory_limit.available_bytes()``
  (``MemAvailable``, and the cgroup's ``memory.max`` less its usage);
- the address space this process has left under ``RLIMIT_AS`` (``ulimit -v``): its soft limit less
  the address space in use (``VmSize`` in ``/proc/self/status``). A capped process gets an
  allocator error from torch when it runs out of address space, however much memory is free;

and raises :class:`~p3dlab.errors.P3DLabMemoryError` naming the need, the bound, where the bound
comes from and which argument to lower, instead of letting torch's allocator fail half-way (or the
operating system kill the process). Needs up to ``FITS_ANYWHERE`` are never checked: no file is
read in the hot path of an ordinary call.
"""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Optional, Tuple

from p3dlab.errors import P3DLabMemoryError
from p3dlab.runtime import memory_limit

FITS_ANYWHERE = 64 * 2**20


def address_space_left(status: Path = Path("/proc/self/status")) -> Optional[int]:
    """Bytes of address space this process may still map under ``RLIMIT_AS``; None if unlimited or
    unknown."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmSize:"):
                return max(soft - int(line.split()[1]) * 1024, 0)  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def allowance() -> Tuple[Optional[int], str]:
    """(bytes this process can still allocate, where that bound comes from), or (None, "") if unknown."""
    bounds = []
    memory = memory_limit.available_bytes()
    if memory is not None:
        bounds.append((memory, "memory available to this process (MemAvailable, cgroup memory.max less its usage)"))
    space = address_space_left()
    if space is not None:
        bounds.append((space, "address space left under RLIMIT_AS (ulimit -v)"))
    if not bounds:
        return None, ""
    return min(bounds)


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``: sizes in the errors, binary units."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_fits(op: str, need: int, what: str, lower: str) -> None:
    """Raise ``P3DLabMemoryError`` if ``need`` bytes (the memory ``what`` takes, e.g. "the fragments
    of 1 x 512 x 512 x K=100 slots") exceed what this process can still allocate; ``lower`` names the
    arguments to lower, as the user passed them."""
    if need <= FITS_ANYWHERE:
        return
    available, source = allowance()
    if available is not None and need > available:
        raise P3DLabMemoryError(
            f"{op}: {what} would take {format_bytes(need)} ({need:,} bytes), more than the {format_bytes(available)} "
            f"this process can still allocate ({source}); lower {lower}"
        )
