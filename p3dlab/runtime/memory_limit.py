"""How much memory this process can still take: the bound the volume operations check a grid's
scratch against before allocating it, so that a grid too large for the machine (or a few values
expanded to a huge grid with stride 0) raises a clear error instead of getting the process killed.

``available_bytes()`` is the smallest of
- the system's ``MemAvailable`` (``/proc/meminfo``),
- the container's limit less its usage: cgroup v2 (``memory.max`` − ``memory.current``) or v1
  (``memory.limit_in_bytes`` − ``memory.usage_in_bytes``). A free Binder instance is such a
  container (2 GB), whose ``MemAvailable`` still shows the host's memory.

None where none of these can be read (other systems): no bound is checked there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

_CGROUP = Path("/sys/fs/cgroup")
_PAIRS = (  # (limit, usage): cgroup v2, then v1
    ("memory.max", "memory.current"),
    ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),
)


def _read_int(path: Path) -> Optional[int]:
    """The integer in a one-line file; None if it cannot be read or holds none ("max")."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _meminfo_available(meminfo: Path) -> Optional[int]:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_bytes(cgroup: Path = _CGROUP, meminfo: Path = Path("/proc/meminfo")) -> Optional[int]:
    """Bytes this process can still allocate (see the module docstring), or None if unknown."""
    bounds = [_meminfo_available(meminfo)]
    for limit_file, usage_file in _PAIRS:
        limit, usage = _read_int(cgroup / limit_file), _read_int(cgroup / usage_file)
        if limit is not None and usage is not None:
            bounds.append(max(limit - usage, 0))  # v1's "no limit" is a huge number: harmless
    known = [b for b in bounds if b is not None]
    return min(known) if known else None
