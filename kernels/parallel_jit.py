"""``parallel_njit``: the decorator of every parallel CPU kernel, in place of ``njit(parallel=True)``.

Numba runs a parallel kernel on its threading layer, and two of the layers fail where p3dlab is
used:

- GNU OpenMP (the "omp" layer, Numba's default on Linux) cannot run in a process forked after the
  parent started its threads (``multiprocessing`` with "fork", ``DataLoader`` workers): Numba stops
  the child ("Terminating: fork() called from a process already using GNU OpenMP").
- The "workqueue" layer (no OpenMP needed) runs one parallel kernel at a time per process: two
  threads that launch one at once make Numba abort the whole process.

A ``ParallelKernel`` is called like the dispatcher it wraps, and picks the build that works:

- in a process forked after its parent started GNU OpenMP, a serial build of the same source
  (``parallel=False``: ``prange`` runs as ``range``), compiled on its first use there. It computes
  the same results on one core, which is what each worker of a pool of them should use anyway;
- under the workqueue layer (and before Numba has chosen a layer), the parallel build while holding
  one lock shared by all the kernels, so that threads take turns;
- otherwise the parallel build, directly.

The serial build compiles a copy of the Python function renamed ``<name>_serial``: Numba's on-disk
cache names its files after the function's qualified name and first line, so the two builds of one
source keep separate cache files. A ``ParallelKernel`` cannot be called from inside another
``njit`` function: a kernel that needs another's work does it inline (``rasterize_meshes_cpu``).
Attributes other than the call (``py_func``, ``signatures``, ``stats``, ...) are the parallel
build's.
"""

from __future__ import annotations

import functools
import os
import threading
import types

from numba import njit, threading_layer

_serial_here = False  # this process was forked after its parent started GNU OpenMP
_launch_lock = threading.RLock()


def _gnu_openmp_started() -> bool:
    """True once this process (or the parent it was forked from) started Numba's threads with GNU OpenMP."""
    try:
        if threading_layer() != "omp":
            return False
    except ValueError:  # no parallel kernel has run yet
        return False
    try:
        from numba.np.ufunc import omppool

        return getattr(omppool, "openmp_vendor", "GNU") == "GNU"
    except ImportError:
        return True


def _after_fork_in_child() -> None:
    global _serial_here, _launch_lock
    _launch_lock = threading.RLock()  # another thread of the parent may have held it: it never lets go here
    if _gnu_openmp_started():
        _serial_here = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def runs_serial_builds() -> bool:
    """True in a process forked after its parent started GNU OpenMP: the kernels run their serial builds."""
    return _serial_here


def _launches_need_the_lock() -> bool:
    """Whether two threads must not launch parallel kernels at once: under the workqueue layer, and
    before Numba has chosen a layer (the first launch chooses it, and it may choose workqueue)."""
    try:
        return threading_layer() == "workqueue"
    except ValueError:
        return True


class ParallelKernel:
    """A parallel kernel and, built on first need, its serial twin (see the module's docstring)."""

    def __init__(self, py_func, options: dict):
        self._options = dict(options)
        self.parallel = njit(parallel=True, **self._options)(py_func)
        self._serial = None
        self._serial_lock = threading.Lock()
        functools.update_wrapper(self, py_func)

    @property
    def serial(self):
        """The ``parallel=False`` build of a renamed copy of the function, compiled on first use."""
        if self._serial is None:
            with self._serial_lock:
                if self._serial is None:
                    self._serial = njit(**self._options)(_renamed_copy(self.parallel.py_func, "_serial"))
        return self._serial

    def __call__(self, *args, **kwargs):
        if _serial_here:
            return self.serial(*args, **kwargs)
        if not _launches_need_the_lock():
            return self.parallel(*args, **kwargs)
        with _launch_lock:
            return self.parallel(*args, **kwargs)

    def __getattr__(self, name):
        if name == "parallel":  # not built yet (during __init__): no recursion
            raise AttributeError(name)
        return getattr(self.parallel, name)

    def __repr__(self) -> str:
        return f"<ParallelKernel {self.__qualname__}>"


def _renamed_copy(fn: types.FunctionType, suffix: str) -> types.FunctionType:
    """A new function object running ``fn``'s code, with ``suffix`` added to its name."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__qualname__ = fn.__qualname__ + suffix
    copy.__doc__ = fn.__doc__
    return copy


def parallel_njit(**options):
    """``njit(parallel=True, **options)`` for a kernel called from Python: returns a ``ParallelKernel``."""

    def decorate(py_func):
        return ParallelKernel(py_func, options)

    return decorate
