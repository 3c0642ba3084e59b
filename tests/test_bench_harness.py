"""The benchmark harness (``make bench``): paired timings alternate the two functions."""

import math
import os
import platform
import time

from benchmarks import harness
from benchmarks.harness import Result, machine_speed, paired_median_times


def test_paired_median_times_alternates_and_returns_both_medians(monkeypatch):
    calls = []
    monkeypatch.setattr(harness, "release_free_memory", lambda: calls.append("release"))

    def ours():
        calls.append("ours")

    def baseline():
        calls.append("base")
        time.sleep(0.002)

    t_ours, t_base = paired_median_times(ours, baseline, repeats=4)
    # one warm-up each, then alternating pairs: the heap released, an untimed call, the timed one
    assert calls == ["ours", "base"] + ["release", "base", "base", "release", "ours", "ours"] * 4
    assert t_base >= 0.002 > t_ours
    assert Result("x", t_ours, "b", t_base).speedup > 1


def test_timed_calls_do_not_pay_for_the_other_functions_leftovers():
    last = []

    def after_the_other(me):  # slow right after the other function, as a step that frees its heap
        slow = bool(last) and last[-1] != me
        last.append(me)
        time.sleep(0.02 if slow else 0.001)

    t_ours, t_base = paired_median_times(lambda: after_the_other("ours"), lambda: after_the_other("base"), repeats=3)
    assert t_ours < 0.01 and t_base < 0.01


def test_machine_speed_measures_memory_bandwidth_and_matmul_speed():
    gb_s, gflop_s = machine_speed(mb=1, n=64, repeats=3)
    assert math.isfinite(gb_s) and math.isfinite(gflop_s)
    assert 0.1 < gb_s < 10_000 and 0.01 < gflop_s < 1_000_000  # any CPU of this century


def test_release_free_memory_finds_glibcs_malloc_trim():
    harness.release_free_memory()  # nothing where the C library is another: never an error
    from p3dlab.runtime.heap import release_free_heap

    assert release_free_heap() == (platform.libc_ver()[0] == "glibc")


def test_the_lesson_budget_benchmark_runs_every_lesson_and_flags_the_ones_over(tmp_path, monkeypatch):
    """``make bench``'s lesson rows: time against the budget (the speed-up column is the headroom),
    peak memory in the name, OVER BUDGET when a lesson exceeds either; the lesson's kernel sees the
    mode the benchmark runs in, and the benchmark leaves P3DLAB_FAST as it found it."""
    import nbformat

    from benchmarks import bench_lessons

    for name, code in [
        ("01_fits", "import os\nassert os.environ.get('P3DLAB_FAST') == '1'"),
        ("02_big", "import numpy as np\nbig = np.ones(40_000_000)  # 320 MB\ndel big"),
    ]:
        folder = tmp_path / name
        folder.mkdir()
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)]), folder / f"{name}.ipynb")
    monkeypatch.setattr(bench_lessons, "LESSONS_DIR", tmp_path)
    monkeypatch.setenv("P3DLAB_FAST", "1")
    rows = bench_lessons.bench_lesson_budget()
    assert [r.name.split(" (")[0] for r in rows] == ["lesson 01_fits", "lesson 02_big"]
    assert all(r.baseline_median_s == 60.0 and r.speedup > 1 and "OVER" not in r.name for r in rows), rows
    peak_small, peak_big = (float(r.name.split("peak ")[1].split(" MB")[0]) for r in rows)
    assert peak_big > peak_small + 290
    assert os.environ["P3DLAB_FAST"] == "1"

    over = bench_lessons.lesson_result("03_slow", 200.0, "ok", 1300.0, fast=False)
    assert over.speedup < 1 and over.target == "<= 180 s, <= 1200 MB"
    assert "OVER BUDGET: 200 s > 180 s, 1300 MB > 1200 MB" in over.name
    failed = bench_lessons.lesson_result("04_broken", 1.0, "FAILED: NameError: x", None, fast=True)
    assert "peak ?" in failed.name and failed.name.endswith("FAILED: NameError: x")


def test_competing_load_runs_one_busy_process_each_and_leaves_none():
    import psutil

    with harness.competing_load(processes=2, seconds=30) as busy:
        assert len(busy) == 2
        time.sleep(0.3)
        assert all(p.poll() is None for p in busy)  # running
        cpu = [psutil.Process(p.pid).cpu_times().user for p in busy]
        assert min(cpu) > 0.05  # and busy
    assert all(p.poll() is not None for p in busy)  # killed when the block ends
    with harness.competing_load(processes=1, seconds=0.3) as busy:
        busy[0].wait(timeout=20)  # stops by itself: a benchmark that dies leaves nothing behind
        assert busy[0].returncode == 0


def test_load_rows_compare_the_loaded_calls_with_the_quiet_median_and_flag_a_miss():
    from benchmarks.bench_load import load_rows

    quiet = ([1.0, 1.0, 1.2], [10.0, 11.0, 12.0])
    within = ([2.0, 2.4, 3.9], [20.0, 21.0, 30.0])  # median 2.4x, worst 3.9x: within 2.5x and 4x
    rows = load_rows("w", quiet, within, "base", 2)
    assert [r.median_s for r in rows] == [1.0, 2.4] and [r.worst_s for r in rows] == [1.2, 3.9]
    assert rows[1].baseline_median_s == 21.0 and rows[1].baseline_worst_s == 30.0
    assert "median 2.4x, worst 3.9x quiet" in rows[1].name and "OVER" not in rows[1].name
    slow_tail = ([2.0, 2.4, 4.5], None)  # worst 4.5x quiet: a miss, and no baseline
    rows = load_rows("w", (quiet[0], None), slow_tail, None, 2)
    assert rows[1].name.endswith("OVER TARGET") and rows[1].baseline_median_s is None
    table = harness.format_table(rows)
    assert "worst" in table.splitlines()[0] and "4.50 s" in table


def test_bench_under_load_times_each_workload_quiet_and_loaded():
    from benchmarks.bench_load import bench_under_load

    chosen = [("sleep", lambda: time.sleep(0.001), "nothing", lambda: None), ("alone", lambda: None, None, None)]
    rows = bench_under_load(processes=1, repeats=3, chosen=chosen)
    assert [r.name.split(" (")[0] for r in rows] == ["sleep", "sleep", "alone", "alone"]
    assert rows[0].median_s >= 0.001 and rows[0].baseline_name == "nothing"
    assert rows[2].baseline_median_s is None and "(1 busy process)" in rows[3].name
