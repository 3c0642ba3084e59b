"""A tiny benchmark harness: medians of repeated runs, ratios against a baseline from the same run."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch

from p3dlab.runtime.heap import release_free_heap


@dataclass
class Result:
    name: str
    median_s: float
    baseline_name: Optional[str] = None
    baseline_median_s: Optional[float] = None
    target: str = ""
    worst_s: Optional[float] = None  # the slowest of the timed calls, where a row reports it
    baseline_worst_s: Optional[float] = None

    @property
    def speedup(self) -> Optional[float]:
        if self.baseline_median_s is None:
            return None
        return self.baseline_median_s / self.median_s


def median_time(fn: Callable[[], object], repeats: int = 7, warmup: int = 1, min_time: float = 0.0) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times: List[float] = []
    start_all = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start_all < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 200:
            break
    return statistics.median(times)


def paired_median_times(fn: Callable[[], object], baseline: Callable[[], object], repeats: int = 5):
    """Medians of ``fn()`` and ``baseline()`` timed in alternation, so that a machine whose speed
    drifts (a shared VM) slows both alike and the ratio stays meaningful.

    Each timed call runs as a step of a training loop does: right after an untimed call of the same
    function, which finds the heap emptied of the other function's leftovers
    (``release_free_memory``, untimed too). A call timed right after the other function pays for
    them: glibc keeps freed blocks in its heaps and hands them back to the system at some later
    ``free``. After the torch baseline of the EA bench, p3dlab's step released 120-260 MB there
    (``pgfree`` 30 000-66 000 pages) in 8-24 ms of kernel time (12 rounds; step medians 73.5
    against 50.5 ms after a step of its own). One untimed call of p3dlab's fit step in between did
    not take it all: 4-15 ms more in 8 and in 3 of 15 timed fit steps (two runs), none once the
    heap was released first (other costs than the kernels: 3 ms in every one of 15, as in a loop
    of fit steps alone)."""
    fn()
    baseline()
    ours: List[float] = []
    base: List[float] = []
    for _ in range(repeats):
        for f, times in ((baseline, base), (fn, ours)):
            release_free_memory()
            f()  # untimed: the step before the timed one
            t0 = time.perf_counter()
            f()
            times.append(time.perf_counter() - t0)
    return statistics.median(ours), statistics.median(base)


def paired_call_times(fn: Callable[[], object], baseline: Callable[[], object], repeats: int = 15):
    """Wall times of ``repeats`` calls of ``fn`` and of ``baseline``, in alternation (after one untimed
    call of each): two lists, for a median and a worst call."""
    fn()
    baseline()
    ours, base = [], []
    for _ in range(repeats):
        for f, times in ((fn, ours), (baseline, base)):
            t0 = time.perf_counter()
            f()
            times.append(time.perf_counter() - t0)
    return ours, base


@contextmanager
def competing_load(processes: Optional[int] = None, seconds: float = 300.0):
    """One busy Python process per core (or ``processes``) while the block runs: a student's browser,
    the other kernels of a hub. Each stops by itself after ``seconds``, so that a benchmark that dies
    leaves nothing running, and all are killed when the block ends."""
    n = processes if processes is not None else (os.cpu_count() or 1)
    code = f"import time\nend = time.monotonic() + {float(seconds)}\nwhile time.monotonic() < end:\n    pass\n"
    busy = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]
    try:
        time.sleep(0.2)  # the processes are running before the first timed call
        yield busy
    finally:
        for p in busy:
            p.kill()
        for p in busy:
            p.wait()


def release_free_memory():
    """Hand the heaps' free memory back to the system now (glibc's ``malloc_trim(0)``; nothing
    where the C library is another)."""
    release_free_heap()


def machine_speed(mb: int = 32, n: int = 1024, repeats: int = 15) -> Tuple[float, float]:
    """What the machine gives right now: memory bandwidth in GB/s (``torch.add`` of two ``mb`` MB
    float32 tensors into a third: 3 · mb MB moved) and float32 matrix-product speed in GFLOP/s
    (n × n), medians of ``repeats``. On a shared VM both drift by tens of percent within minutes;
    printed with the table, they tell a change of the machine from a change of the code."""
    x, y, z = (torch.ones(mb * 2**18) for _ in range(3))
    a = torch.ones(n, n)
    t_add = median_time(lambda: torch.add(x, y, out=z), repeats=repeats)
    t_mm = median_time(lambda: a @ a, repeats=repeats)
    return 3 * mb * 2**20 / t_add / 1e9, 2 * n**3 / t_mm / 1e9


def format_table(results: List[Result]) -> str:
    worst = any(r.worst_s is not None for r in results)  # worst-call columns only where a row has them
    head = ("benchmark", "median") + (("worst",) if worst else ()) + ("baseline", "baseline median")
    rows = [head + (("baseline worst",) if worst else ()) + ("speed-up", "target")]
    for r in results:
        row = (r.name, _fmt(r.median_s))
        row += (_fmt(r.worst_s) if r.worst_s is not None else "-",) if worst else ()
        row += (r.baseline_name or "-", _fmt(r.baseline_median_s) if r.baseline_median_s is not None else "-")
        row += (_fmt(r.baseline_worst_s) if r.baseline_worst_s is not None else "-",) if worst else ()
        row += (f"{r.speedup:.1f}x" if r.speedup is not None else "-", r.target or "-")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"
