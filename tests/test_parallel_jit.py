"""``parallel_njit`` (kernels/parallel_jit.py): a parallel kernel with a serial build of the same
source for forked children, and a lock around its launches where Numba's threading layer needs one.
The scenarios in real forked and threaded processes are tests/test_fork_safety.py."""

import threading

import numpy as np
import pytest

from p3dlab.kernels import parallel_jit
from p3dlab.kernels.interpolate import interpolate_cpu
from p3dlab.kernels.parallel_jit import ParallelKernel


def _interpolate(kernel):
    rng = np.random.default_rng(0)
    p2f = rng.integers(-1, 5, size=200)
    bary = rng.random((200, 3))
    attr = rng.random((5, 3, 4))
    out = np.full((200, 4), np.nan)
    kernel(p2f, bary, attr, out)
    return out


def test_the_serial_build_is_a_separate_serial_compilation_of_the_same_source():
    parallel, serial = interpolate_cpu.parallel, interpolate_cpu.serial
    assert parallel.targetoptions.get("parallel") is True
    assert not serial.targetoptions.get("parallel")
    assert serial.targetoptions.get("cache") == parallel.targetoptions.get("cache")
    assert serial.py_func is not parallel.py_func and serial.py_func.__code__ is parallel.py_func.__code__
    assert serial.py_func.__qualname__ == "interpolate_cpu_serial"  # its own files in Numba's on-disk cache
    np.testing.assert_array_equal(_interpolate(serial), _interpolate(interpolate_cpu))
    assert not np.isnan(_interpolate(serial)).any()


def test_the_kernel_answers_for_its_parallel_build():
    assert interpolate_cpu.__name__ == "interpolate_cpu" and interpolate_cpu.__doc__ == interpolate_cpu.py_func.__doc__
    assert interpolate_cpu.py_func is interpolate_cpu.parallel.py_func
    _interpolate(interpolate_cpu)
    assert interpolate_cpu.signatures == interpolate_cpu.parallel.signatures != []


def _spy_kernel():
    """A ``ParallelKernel`` whose builds are replaced by spies that record which one ran and
    whether another thread could take the launch lock meanwhile."""
    kernel = ParallelKernel(lambda: None, {})
    calls = []

    def lock_is_free():
        free = []

        def probe():
            free.append(parallel_jit._launch_lock.acquire(blocking=False))
            if free[0]:
                parallel_jit._launch_lock.release()

        thread = threading.Thread(target=probe)
        thread.start()
        thread.join()
        return free[0]

    kernel.parallel = lambda: calls.append(("parallel", lock_is_free()))
    kernel._serial = lambda: calls.append(("serial", lock_is_free()))
    return kernel, calls


@pytest.mark.parametrize(
    "layer, locked",
    [("workqueue", True), (None, True), ("omp", False), ("tbb", False)],
)
def test_launches_hold_the_lock_where_the_threading_layer_is_not_thread_safe(monkeypatch, layer, locked):
    def threading_layer():
        if layer is None:
            raise ValueError("Threading layer is not initialized.")  # what Numba says before choosing one
        return layer

    monkeypatch.setattr(parallel_jit, "threading_layer", threading_layer)
    kernel, calls = _spy_kernel()
    kernel()
    assert calls == [("parallel", not locked)]


def test_a_child_forked_after_gnu_openmp_runs_the_serial_build_without_the_lock(monkeypatch):
    monkeypatch.setattr(parallel_jit, "_serial_here", True)
    monkeypatch.setattr(parallel_jit, "threading_layer", lambda: "omp")
    kernel, calls = _spy_kernel()
    kernel()
    assert calls == [("serial", True)]
