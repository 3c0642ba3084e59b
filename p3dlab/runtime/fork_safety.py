"""p3dlab in processes forked from a process that already computed (``multiprocessing`` with the
"fork" start method, the Linux default; ``DataLoader`` workers).

A forked child has one thread: the thread pools of its parent are gone, but their libraries do not
know it. GNU OpenMP (``libgomp``, which torch and Numba's default "omp" threading layer use on Linux)
then waits forever for threads that no longer exist, or Numba stops the process ("Terminating:
fork() called from a process already using GNU OpenMP"), and a ``multiprocessing.Pool`` waits
forever for the task its dead worker had. So, in every forked child:

- torch computes with one thread (``torch.set_num_threads(1)``, what ``DataLoader`` does in its
  workers): torch's own operations then never enter OpenMP;
- before a parallel kernel runs, :func:`check_cpu_kernels` refuses, with a ``P3DLabProcessError``
  that says what to set, if the parent already started Numba's threads with GNU OpenMP. The
  workqueue threading layer (``NUMBA_THREADING_LAYER=workqueue``) and processes started with
  "spawn" or "forkserver" run the kernels.
"""

from __future__ import annotations

import os

_forked = False


def _after_fork_in_child() -> None:
    global _forked
    _forked = True
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
    parallel kernel ran in this process (or its parent, for a forked child)."""
    try:
        import numba

        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return None


def _gnu_openmp() -> bool:
    try:
        from numba.np.ufunc import omppool

        return getattr(omppool, "openmp_vendor", "GNU") == "GNU"
    except ImportError:
        return True


FORK_ADVICE = (
    "start the workers with the 'spawn' or 'forkserver' method instead of 'fork' "
    "(multiprocessing.get_context('spawn').Pool(...), or DataLoader(..., multiprocessing_context='spawn')), "
    "or start Python with the environment variable NUMBA_THREADING_LAYER=workqueue"
)


def check_cpu_kernels(op: str) -> None:
    """Refuse to run ``op``'s parallel CPU kernel in a forked child whose parent started Numba's
    threads with GNU OpenMP (it would stop the process); nothing to check anywhere else."""
    if not _forked or numba_threading_layer() != "omp" or not _gnu_openmp():
        return
    from p3dlab.errors import P3DLabProcessError

    raise P3DLabProcessError(
        f"{op}: this process was forked from one that had already run p3dlab's parallel kernels with "
        "Numba's OpenMP threads, and GNU OpenMP cannot run in a forked child: " + FORK_ADVICE
    )
