"""``import p3dlab`` sets how its kernels and torch share the CPUs (``p3dlab.runtime.threads``): idle
OpenMP threads sleep instead of spinning against the other runtime's, and both compute with as many
threads as the process has CPUs (its affinity mask, its cgroup's quota, or ``P3DLAB_NUM_THREADS``),
never overriding what the user set. Each process-level scenario runs in a child Python."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from p3dlab.errors import P3DLabValueError
from p3dlab.runtime.threads import CpuBudget, affinity_cpus, cgroup_cpu_limit, cpu_budget

# What the parent (pytest, make) may have set, p3dlab included: each child starts without it.
THREAD_VARIABLES = (
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "OMP_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "NUMBA_THREADING_LAYER",
    "P3DLAB_NUM_THREADS",
)

# argv[1]: which of torch and p3dlab is imported first; argv[2]: a CPU to pin the process to before
# importing p3dlab ("-": none). Then a torch operation and a parallel kernel run, and the child
# prints its OpenMP runtimes, thread counts and thread setup as JSON. With OMP_DISPLAY_ENV=verbose
# each GNU OpenMP runtime prints its settings to stderr when it is loaded; the markers after each
# step tell which step loaded it.
CHILD = textwrap.dedent(
    """
    import json, os, sys

    def mark(step):
        print(f"## {step}", file=sys.stderr, flush=True)

    first, cpu = sys.argv[1], sys.argv[2]
    if first == "torch":
        import torch; mark("torch")
    if cpu != "-":
        os.sched_setaffinity(0, {int(cpu)})
    import p3dlab; mark("p3dlab")
    import torch; mark("torch")
    import numba

    from p3dlab.ops import sample_grid
    from p3dlab.runtime.threads import thread_setup

    torch.softmax(torch.rand(1_000_000), 0); mark("torch op")
    sample_grid(torch.rand(1, 4, 8, 8, 8), torch.rand(1, 500, 3) * 2 - 1); mark("kernel")
    runtimes = sorted({line.split()[-1] for line in open("/proc/self/maps") if "libgomp" in line})
    print(json.dumps({
        "runtimes": runtimes,
        "layer": numba.threading_layer(),
        "torch_threads": torch.get_num_threads(),
        "numba_threads": numba.get_num_threads(),
        "setup": thread_setup()._asdict(),
    }))
    """
)


def _child(first: str, cpu="-", **env) -> tuple[dict, dict]:
    """Run CHILD; returns its report and {step: GOMP_SPINCOUNT of the OpenMP runtime that step loaded}."""
    clean = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, first, str(cpu)],
        env={**clean, "OMP_DISPLAY_ENV": "verbose", **env},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    spin_counts, pending = {}, []
    for line in done.stderr.splitlines():
        if line.strip().startswith("GOMP_SPINCOUNT ="):
            pending.append(line.split("=", 1)[1].strip().strip("'"))
        elif line.startswith("## ") and pending:
            spin_counts[line[3:]] = pending.pop()
            assert not pending, done.stderr[-3000:]  # one runtime per step at most
    return json.loads(done.stdout.splitlines()[-1]), spin_counts


CAN_PIN = hasattr(os, "sched_setaffinity") and affinity_cpus() >= 2
ONE_CPU = min(os.sched_getaffinity(0)) if CAN_PIN else "-"  # pinned to it, a child has fewer CPUs than us
linux_only = pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads /proc/self/maps")
_runs: dict = {}


def _pinned_child(first: str) -> tuple[dict, dict]:
    """CHILD pinned to one CPU, torch or p3dlab imported first, nothing set: run once per order."""
    if first not in _runs:
        _runs[first] = _child(first, ONE_CPU)
    return _runs[first]


# ----------------------------------------------------------------------------- the wait policy
@linux_only
def test_p3dlab_imported_first_both_openmp_runtimes_sleep_soon_when_idle():
    """The documented alternative to one runtime: torch's and Numba's GNU OpenMP stay two runtimes
    (Numba cannot use torch's copy), and both read GOMP_SPINCOUNT=1000 when they are loaded (a short
    spin, then sleep); OMP_WAIT_POLICY=PASSIVE is there for other OpenMP runtimes."""
    report, spins = _pinned_child("p3dlab")
    assert report["layer"] == "omp"
    assert len(report["runtimes"]) == len(spins) == 2, (report, spins)
    assert spins == {"torch": "1000", "kernel": "1000"}, spins
    setup = report["setup"]
    assert (setup["wait_policy"], setup["spin_count"]) == ("PASSIVE", "1000") and not setup["torch_missed_policy"]


@linux_only
def test_torch_imported_first_keeps_its_spinning_runtime_and_numbas_sleeps():
    """torch's runtime read the environment at ``import torch``, before p3dlab could set anything:
    it keeps GNU OpenMP's default spinning (the README says to set the variables before Python starts,
    or to import p3dlab first); Numba's, loaded by the first kernel, spins briefly, then sleeps."""
    report, spins = _pinned_child("torch")
    assert len(report["runtimes"]) == len(spins) == 2, (report, spins)
    assert spins["kernel"] == "1000" and spins["torch"] == "300000", spins
    assert report["setup"]["torch_missed_policy"]


# ----------------------------------------------------------------------------- thread counts
@linux_only
@pytest.mark.skipif(not CAN_PIN, reason="needs an affinity mask of 2 CPUs or more")
@pytest.mark.parametrize("first", ["torch", "p3dlab"])
def test_thread_counts_follow_an_affinity_mask_set_before_importing_p3dlab(first):
    """Pinned to one CPU (after torch picked its count from the whole mask, when imported first):
    torch and the kernels compute with one thread."""
    report, _ = _pinned_child(first)
    assert (report["torch_threads"], report["numba_threads"]) == (1, 1), report
    assert report["setup"]["budget"] == [1, "CPU affinity"]


@linux_only
@pytest.mark.parametrize(
    "first, env, spin",
    [
        ("torch", {"OMP_WAIT_POLICY": "ACTIVE", "P3DLAB_NUM_THREADS": "2"}, "30000000000"),
        ("p3dlab", {"GOMP_SPINCOUNT": "1000", "OMP_NUM_THREADS": "2", "NUMBA_NUM_THREADS": "2"}, "1000"),
    ],
)
def test_what_the_user_set_is_kept(first, env, spin):
    """A wait policy or spin count of the user's reaches both runtimes unchanged; p3dlab's override,
    or each runtime's own variable, sets the thread counts (here on one CPU, where it can pin)."""
    report, spins = _child(first, ONE_CPU, **env)
    assert set(spins.values()) == {spin} and len(spins) == 2, spins
    assert not report["setup"]["torch_missed_policy"]
    assert (report["torch_threads"], report["numba_threads"]) == (2, 2), report


def test_the_override_must_be_a_positive_whole_number():
    assert cpu_budget({"P3DLAB_NUM_THREADS": " 3 "}) == CpuBudget(3, "P3DLAB_NUM_THREADS")
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(P3DLabValueError, match="P3DLAB_NUM_THREADS"):
            cpu_budget({"P3DLAB_NUM_THREADS": bad})


# ----------------------------------------------------------------------------- cgroup quotas
def _cgroup(tmp_path, own: str, files: dict):
    """A fake /sys/fs/cgroup under tmp_path and a /proc/self/cgroup naming the process's cgroup ``own``."""
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text + "\n")
    (tmp_path / "proc-cgroup").write_text(own + "\n")
    return tmp_path, tmp_path / "proc-cgroup"


@pytest.mark.parametrize(
    "cpu_max, expected",
    [("max 100000", None), ("150000 100000", 2), ("50000 100000", 1), ("200000 100000", 2), ("1000 100000", 1)],
)
def test_cgroup_v2_quota_is_rounded_up_to_whole_cpus(tmp_path, cpu_max, expected):
    limit = cgroup_cpu_limit(*_cgroup(tmp_path, "0::/", {"cpu.max": cpu_max}))
    assert limit == (None if expected is None else (expected, "cgroup cpu.max"))


def test_cgroup_v2_the_smallest_quota_above_the_process_counts(tmp_path):
    """A systemd unit or a pod inside a slice: the process's own cgroup has no quota, its parent has."""
    files = {"kubepods/pod1/ctr/cpu.max": "max 100000", "kubepods/pod1/cpu.max": "150000 100000"}
    assert cgroup_cpu_limit(*_cgroup(tmp_path, "0::/kubepods/pod1/ctr", files)) == (2, "cgroup cpu.max")
    # a container that sees the host's path for its cgroup, but its own cgroup mounted at the root
    assert cgroup_cpu_limit(*_cgroup(tmp_path, "0::/elsewhere", {"cpu.max": "50000 100000"})) == (1, "cgroup cpu.max")


@pytest.mark.parametrize("quota, expected", [("-1", None), ("250000", 3), ("100000", 1)])
def test_cgroup_v1_quota(tmp_path, quota, expected):
    files = {"cpu,cpuacct/cpu.cfs_quota_us": quota, "cpu,cpuacct/cpu.cfs_period_us": "100000"}
    limit = cgroup_cpu_limit(*_cgroup(tmp_path, "4:cpu,cpuacct:/", files))
    assert limit == (None if expected is None else (expected, "cgroup cpu.cfs_quota_us"))


def test_no_cgroup_files_no_limit(tmp_path):
    assert cgroup_cpu_limit(tmp_path, tmp_path / "missing") is None


def test_the_budget_is_the_affinity_mask_capped_by_the_quota(tmp_path):
    root, own = _cgroup(tmp_path, "0::/", {"cpu.max": "50000 100000"})
    one_cpu = cpu_budget({}, root, own)
    assert one_cpu.threads == 1
    assert one_cpu.source == ("cgroup cpu.max" if affinity_cpus() > 1 else "CPU affinity")
    root, own = _cgroup(tmp_path, "0::/", {"cpu.max": "max 100000"})
    assert cpu_budget({}, root, own) == CpuBudget(affinity_cpus(), "CPU affinity")
    assert cpu_budget({"P3DLAB_NUM_THREADS": "5"}, root, own) == CpuBudget(5, "P3DLAB_NUM_THREADS")


def test_every_lesson_imports_p3dlab_before_torch():
    """torch's OpenMP runtime reads OMP_WAIT_POLICY when ``import torch`` loads it: a lesson that imports
    torch first keeps torch's idle threads spinning against the kernels' in any Jupyter that was not
    started with the variable (``make lab``, Binder's ``start`` and the hub set it)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sources = sorted((root / "course" / "source").glob("*/*.ipynb"))
    assert len(sources) >= 9
    for path in sources:
        cells = json.loads(path.read_text())["cells"]
        first = "".join(next(c for c in cells if c["cell_type"] == "code")["source"]).splitlines()
        p3dlab_line = next(
            (i for i, line in enumerate(first) if line.startswith(("import p3dlab", "from p3dlab"))), None
        )
        torch_line = next((i for i, line in enumerate(first) if line.startswith(("import torch", "from torch"))), None)
        assert p3dlab_line is not None and torch_line is not None, path.name
        assert p3dlab_line < torch_line, f"{path.name}: import p3dlab before torch in the first code cell"
