"""Run-time switches read from the environment.

``P3DLAB_FAST=1`` puts lessons and benchmarks in their small-size mode (used by CI).
``P3DLAB_VOLUME_BUFFER_MB`` (default 1024) bounds the volume kernels' scratch (``volume_buffer_bytes``).
"""

import os


def fast_mode() -> bool:
    """True when ``P3DLAB_FAST`` is set to a true value (1, true, yes)."""
    return os.environ.get("P3DLAB_FAST", "").strip().lower() in ("1", "true", "yes", "on")


def pick(full, fast):
    """Return ``fast`` in fast mode, ``full`` otherwise: ``n_iter = pick(200, 20)``."""
    return fast if fast_mode() else full


def volume_buffer_bytes() -> int:
    """The volume kernels' scratch budget in bytes, ``P3DLAB_VOLUME_BUFFER_MB`` (default 1024): it
    bounds their per-thread gradient buffers, and a quarter of it the unused buffers
    ``p3dlab.runtime.recycled`` keeps for reuse."""
    return int(float(os.environ.get("P3DLAB_VOLUME_BUFFER_MB", "1024")) * 2**20)
