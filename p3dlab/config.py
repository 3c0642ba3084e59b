"""Run-time switches read from the environment.

``P3DLAB_FAST=1`` puts lessons and benchmarks in their small-size mode (used by CI).
"""

import os


def fast_mode() -> bool:
    """True when ``P3DLAB_FAST`` is set to a true value (1, true, yes)."""
    return os.environ.get("P3DLAB_FAST", "").strip().lower() in ("1", "true", "yes", "on")


def pick(full, fast):
    """Return ``fast`` in fast mode, ``full`` otherwise: ``n_iter = pick(200, 20)``."""
    return fast if fast_mode() else full
