"""How p3dlab's kernels and torch share the CPUs: set once, at ``import p3dlab`` (``p3dlab/__init__.py``).

**Wait policy.** On Linux torch computes on its own copy of GNU OpenMP (``torch/lib/libgomp.so.1``)
and Numba's default "omp" threading layer on the system's (``libgomp.so.1.0.0``, loaded at the first
parallel kernel): two runtimes, two thread pools, and Numba cannot be made to use torch's copy (its
layer asks the loader for the other file name). By default a GNU OpenMP thread that has finished its
share spins for a while (``GOMP_SPINCOUNT``, 300000 pauses) before it sleeps, so each pool burns the
cores the other one is about to compute on; on a loaded machine a spinning barrier can wait for a
descheduled thread for a whole time slice (measured in the README's "Threads"). p3dlab sets
``GOMP_SPINCOUNT=1000`` (an idle thread spins about 15 microseconds, then sleeps) and
``OMP_WAIT_POLICY=PASSIVE`` (for OpenMP runtimes other than GNU's, which do not read the spin count;
GNU's reads it in place of the policy) in ``os.environ``, unless the environment already has
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``. Sleeping at once (spin count 0) made every small torch
operation that uses threads pay for waking them: a (642 x 4) @ (4 x 4) ``bmm`` took 95 microseconds
against 4-5 with the short spin, and whole rows of ``make bench`` ran 10-35 % slower
(docs/performance.md#the-spin-count). Each runtime reads the variables once, when it is loaded:

- Numba's is loaded after ``import p3dlab`` in any case: it always follows the setting;
- torch's is loaded by ``import torch``: it follows only when p3dlab was imported first (or the
  variable was in the environment the interpreter started with: the hub sets it). A program that
  imports torch first keeps torch's pool spinning; nothing can change that after its load.
  ``thread_setup().torch_missed_policy`` says which case the process is in.

Processes started from this one (``spawn`` workers, ``subprocess``) inherit the variable, so both
runtimes there sleep when idle.

**Thread counts.** ``cpu_budget()`` is the number of CPUs this process may use: the CPUs of its
affinity mask (``os.sched_getaffinity``; ``taskset``, a batch system's pinning), capped by its
cgroup's CPU quota (a container or a systemd unit limited to 1.5 CPUs gets 2 threads), or
``P3DLAB_NUM_THREADS`` when set. A variable the user set for a runtime itself wins for that runtime:
``OMP_NUM_THREADS`` for torch, ``NUMBA_NUM_THREADS`` for Numba. Otherwise:

- Numba launches ``NUMBA_NUM_THREADS`` threads, read when numba is imported; p3dlab sets it where the
  budget differs from Numba's own default (the affinity mask), before numba is imported. (Where a
  program imported numba before p3dlab and has already run parallel code, the importing thread is
  given ``numba.set_num_threads(budget)`` instead; where it has run none, nothing is changed: asking
  Numba would start its GNU OpenMP layer here, and a child forked before p3dlab's kernels were
  loaded would then refuse to run them, ``p3dlab.runtime.fork_safety``.)
- torch picks the affinity mask's size when it is imported. p3dlab lowers torch's count to the
  budget (``torch.set_num_threads``) when torch is already imported with more threads (a program may
  have chosen fewer: those stay), or imports torch itself to do so when the budget is smaller than
  the affinity mask (a quota); ``P3DLAB_NUM_THREADS`` sets torch's count exactly.

Numba's ``NUMBA_NUM_THREADS``, like the wait policy, stays in ``os.environ`` (Numba reads it
again at each compilation), so child processes inherit it as if the user had set it: a child meant
to run on other CPUs than its parent is best started with the parent's variables removed.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple

from p3dlab.errors import P3DLabValueError

OVERRIDE = "P3DLAB_NUM_THREADS"
#: What ``import p3dlab`` puts in the environment when neither variable is there.
WAIT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "1000"}
_CGROUP = Path("/sys/fs/cgroup")
_PROC_CGROUP = Path("/proc/self/cgroup")


class CpuBudget(NamedTuple):
    """How many threads to compute with, and where the number came from."""

    threads: int
    source: str  # "P3DLAB_NUM_THREADS", "cgroup cpu.max", "cgroup cpu.cfs_quota_us", "CPU affinity"


class ThreadSetup(NamedTuple):
    """What ``apply_thread_policy`` found and did in this process."""

    budget: CpuBudget
    wait_policy: Optional[str]  # OMP_WAIT_POLICY as the runtimes loaded from now on read it
    spin_count: Optional[str]  # GOMP_SPINCOUNT as GNU OpenMP runtimes loaded from now on read it
    torch_missed_policy: bool  # torch's OpenMP runtime was loaded before p3dlab set the policy: it spins
    torch_threads: Optional[int]  # what torch.set_num_threads was given; None: left alone
    numba_threads: Optional[int]  # the count p3dlab gave Numba; None: left alone


_setup: Optional[ThreadSetup] = None


def affinity_cpus() -> int:
    """The number of CPUs this process may run on (its affinity mask; all CPUs where there is none)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _own_cgroups(proc_cgroup: Path) -> Dict[str, Tuple[str, str]]:
    """``{"v2": ("", path), "v1": (controllers, path)}`` from ``/proc/self/cgroup``, what is found."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return {}
    found = {}
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            found["v2"] = ("", path)
        elif "cpu" in controllers.split(","):
            found["v1"] = (controllers, path)
    return found


def _up_to(mount: Path, own: str) -> Iterator[Path]:
    """The process's cgroup directory under ``mount`` and each one above it, ``mount`` last. Inside a
    container the own path may name the host's hierarchy, absent here: then the mount is its cgroup."""
    d = mount / own.strip("/")
    while d != mount and mount in d.parents:
        yield d
        d = d.parent
    yield mount


def _read_numbers(path: Path) -> Optional[List[str]]:
    try:
        return path.read_text().split()
    except OSError:
        return None


def _cpus(quota: str, period: str) -> Optional[int]:
    """ceil(quota / period), at least 1; None for no quota ("max", -1) or what does not parse."""
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return max(1, math.ceil(q / p)) if q > 0 and p > 0 else None


def cgroup_cpu_limit(cgroup_root: Path = _CGROUP, proc_cgroup: Path = _PROC_CGROUP) -> Optional[Tuple[int, str]]:
    """The CPUs this process's cgroup quota allows, rounded up, and the file's name; None without a quota.

    cgroup v2: ``cpu.max`` ("quota period", or "max period") of the process's cgroup and of each
    cgroup above it (the smallest counts). cgroup v1: ``cpu.cfs_quota_us`` (-1: none) over
    ``cpu.cfs_period_us`` under the cpu controller's mount (``cpu,cpuacct`` or ``cpu``).
    """
    own = _own_cgroups(proc_cgroup)
    limits = []
    for d in _up_to(cgroup_root, own.get("v2", ("", "/"))[1]):
        numbers = _read_numbers(d / "cpu.max")
        if numbers and len(numbers) == 2 and (n := _cpus(*numbers)) is not None:
            limits.append((n, "cgroup cpu.max"))
    controllers, path = own.get("v1", ("cpu,cpuacct", "/"))
    mounts = [cgroup_root / controllers, cgroup_root / "cpu,cpuacct", cgroup_root / "cpu"]
    mount = next((m for m in mounts if m.is_dir()), None)
    for d in _up_to(mount, path) if mount is not None else ():
        quota, period = _read_numbers(d / "cpu.cfs_quota_us"), _read_numbers(d / "cpu.cfs_period_us")
        if quota and period and (n := _cpus(quota[0], period[0])) is not None:
            limits.append((n, "cgroup cpu.cfs_quota_us"))
    return min(limits) if limits else None


def _override(environ) -> Optional[int]:
    value = environ.get(OVERRIDE, "").strip()
    if not value:
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise P3DLabValueError(f"{OVERRIDE} must be a whole number of threads, 1 or more; it is {value!r}")
    return n


def cpu_budget(environ=None, cgroup_root: Path = _CGROUP, proc_cgroup: Path = _PROC_CGROUP) -> CpuBudget:
    """The threads to compute with: ``P3DLAB_NUM_THREADS`` when set, otherwise the CPUs of the
    affinity mask capped by the cgroup's CPU quota (the paths are parameters for tests)."""
    environ = os.environ if environ is None else environ
    pinned = _override(environ)
    if pinned is not None:
        return CpuBudget(pinned, OVERRIDE)
    cpus = affinity_cpus()
    limit = cgroup_cpu_limit(cgroup_root, proc_cgroup)
    if limit is not None and limit[0] < cpus:
        return CpuBudget(*limit)
    return CpuBudget(cpus, "CPU affinity")


def _numba_threads(budget: CpuBudget, environ) -> Optional[int]:
    """Set Numba's thread count (its pool's size, before numba reads it); the count, or None where
    Numba was left alone."""
    if "numba" in sys.modules:
        parallel = sys.modules.get("numba.np.ufunc.parallel")
        if parallel is None or not getattr(parallel, "_is_initialized", False):
            return None  # asking would start its threads (see the module's docstring)
        import numba

        n = min(budget.threads, numba.config.NUMBA_NUM_THREADS)
        numba.set_num_threads(n)  # for this thread only
        return n
    if "NUMBA_NUM_THREADS" in environ or budget.threads == affinity_cpus():  # the user's, or Numba's own
        return None
    environ["NUMBA_NUM_THREADS"] = str(budget.threads)
    return budget.threads


def _torch_threads(budget: CpuBudget, environ) -> Optional[int]:
    """Set torch's thread count; the count given, or None where torch was left alone."""
    if "OMP_NUM_THREADS" in environ:  # the user's choice for torch (torch read it at its import)
        return None
    pinned = budget.source == OVERRIDE
    if "torch" not in sys.modules and not pinned and budget.threads >= affinity_cpus():
        return None  # torch will pick the affinity mask's size itself
    import torch

    if pinned or torch.get_num_threads() > budget.threads:
        torch.set_num_threads(budget.threads)
        return budget.threads
    return None


def apply_thread_policy(environ=None) -> ThreadSetup:
    """Set the wait policy and the thread counts (see the module's docstring); what was done."""
    global _setup
    environ = os.environ if environ is None else environ
    torch_loaded = "torch" in sys.modules
    policy_given = "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ
    if not policy_given:
        environ.update(WAIT_POLICY)
    budget = cpu_budget(environ)
    _setup = ThreadSetup(
        budget=budget,
        wait_policy=environ.get("OMP_WAIT_POLICY"),
        spin_count=environ.get("GOMP_SPINCOUNT"),
        torch_missed_policy=torch_loaded and not policy_given,
        torch_threads=_torch_threads(budget, environ),
        numba_threads=_numba_threads(budget, environ),
    )
    return _setup


def thread_setup() -> Optional[ThreadSetup]:
    """What ``import p3dlab`` set in this process (None before it ran)."""
    return _setup
