"""p3dlab in processes forked from a process that already computed (``multiprocessing`` with the
"fork" start method, the Linux default; ``DataLoader`` workers).

A forked child has one thread: the thread pools of its parent are gone, but their libraries do not
know it. GNU OpenMP (``libgomp``, which torch and Numba's default "omp" threading layer use on Linux)
then waits forever for threads that no longer exist, or Numba stops the process ("Terminating:
fork() called from a process already using GNU OpenMP"), and a ``multiprocessing.Pool`` waits
forever for the task its dead worker had. So, in every forked child:

- torch computes with one thread (``torch.set_num_threads(1)``, what ``DataLoader`` does in its
  workers): torch's own operations then never enter OpenMP;
- p3dlab's parallel kernels run their serial builds, one core each, where the parent had started
  Numba's GNU OpenMP threads (``p3dlab.kernels.parallel_jit``, which sees the fork itself): the
  same results, and a pool of N workers keeps N cores busy;
- :func:`check_cpu_kernels` refuses, with a ``P3DLabProcessError`` that says what to set, in the
  one case left: the parent started GNU OpenMP (with Numba code of its own) before it had loaded
  p3dlab's kernels, so the kernels cannot know that this process is a fork, and their parallel
  builds would stop it.

The workqueue threading layer (``NUMBA_THREADING_LAYER=workqueue``) and processes started with
"spawn" or "forkserver" run the parallel builds.
"""

from __future__ import annotations

import os
import sys

_forked = False
_kernels_missed_the_fork = False

# The kernel module that watches for forks (p3dlab.runtime may not import the kernels: only its name).
_FORK_AWARE_KERNELS = "p3dlab.kernels.parallel_jit"


def _after_fork_in_child() -> None:
    global _forked, _kernels_missed_the_fork
    _forked = True
    if _FORK_AWARE_KERNELS not in sys.modules and _gnu_openmp_started():
        _kernels_missed_the_fork = True
    try:
        import torch

        torch.set_num_threads(1)
    except Exception:  # never let a fork fail because of this
        pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def in_forked_child() -> bool:
    """True in a process forked (``os.fork``) after p3dlab was imported."""
    return _forked


def numba_threading_layer():
    """The threading layer Numba has started ("omp", "tbb", "workqueue"), or None before its first
    parallel kernel ran in this process (or its parent, for a forked child) or before Numba was
    imported."""
    if "numba" not in sys.modules:  # nothing started it; and no import inside a fork handler
        return None
    try:
        import numba

        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return None


def _gnu_openmp_started() -> bool:
    if numba_threading_layer() != "omp":
        return False
    try:
        from numba.np.ufunc import omppool

        return getattr(omppool, "openmp_vendor", "GNU") == "GNU"
    except ImportError:
        return True


FORK_ADVICE = (
    "start the workers with the 'spawn' or 'forkserver' method instead of 'fork' "
    "(multiprocessing.get_context('spawn').Pool(...), or DataLoader(..., multiprocessing_context='spawn')), "
    "run one p3dlab operation in the parent before it forks, "
    "or start Python with the environment variable NUMBA_THREADING_LAYER=workqueue"
)


def check_cpu_kernels(op: str) -> None:
    """Refuse to run ``op``'s parallel CPU kernel in a forked child whose parent had started Numba's
    GNU OpenMP threads before loading p3dlab's kernels (their parallel builds would stop the
    process); every other process runs them (serially where it was forked after GNU OpenMP)."""
    if not _kernels_missed_the_fork:
        return
    from p3dlab.errors import P3DLabProcessError

    raise P3DLabProcessError(
        f"{op}: this process was forked from one that had already started Numba's OpenMP threads but "
        "had not yet loaded p3dlab's kernels, so they cannot tell that they run in a forked child, where "
        "GNU OpenMP cannot run: " + FORK_ADVICE
    )
