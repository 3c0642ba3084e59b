"""The benchmark harness (``make bench``): paired timings alternate the two functions."""

import math
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
    if platform.libc_ver()[0] == "glibc":
        assert harness._TRIM is not None
