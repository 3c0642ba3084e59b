"""The benchmark harness (``make bench``): paired timings alternate the two functions."""

import time

from benchmarks.harness import Result, paired_median_times


def test_paired_median_times_alternates_and_returns_both_medians():
    calls = []

    def ours():
        calls.append("ours")

    def baseline():
        calls.append("base")
        time.sleep(0.002)

    t_ours, t_base = paired_median_times(ours, baseline, repeats=4)
    assert calls == ["ours", "base"] + ["base", "ours"] * 4  # one warm-up each, then alternating
    assert t_base >= 0.002 > t_ours
    assert Result("x", t_ours, "b", t_base).speedup > 1
