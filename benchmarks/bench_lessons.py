"""Every lesson inside a free Binder's budget: each lesson of ``course/source`` executed in a fresh
kernel, its wall time and its kernel's peak memory against the budget of ``p3dlab.classroom.book``
(full size: 3 minutes and 1.2 GB; fast mode: 60 s).

One run per lesson (a lesson is minutes, not a micro-benchmark); the "baseline" column is the time
budget, so the speed-up column is the headroom a lesson has left (below 1.0x it is over). The peak
memory is in the name; a lesson over either limit has ``OVER BUDGET`` in its name. ``make bench``
runs it last (``make bench K=lesson`` alone: 5 minutes at full size here).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.harness import Result
from p3dlab.classroom.book import BUDGET_FAST, BUDGET_FULL, execute_lesson, lesson_notebooks, over_budget
from p3dlab.config import fast_mode

LESSONS_DIR = Path(__file__).resolve().parent.parent / "course" / "source"


def lesson_result(name: str, seconds: float, status: str, peak_mb, fast: bool) -> Result:
    """One lesson's row: its time against the time budget, its peak memory and any excess in the name."""
    max_s, max_mb = BUDGET_FAST if fast else BUDGET_FULL
    over = over_budget(seconds, peak_mb, fast)
    label = f"lesson {name} ({'fast mode' if fast else 'full size'}, peak "
    label += "?" if peak_mb is None else f"{peak_mb:.0f} MB"
    label += ")" + (f" OVER BUDGET: {', '.join(over)}" if over else "") + ("" if status == "ok" else f" {status}")
    target = f"<= {max_s:.0f} s" + (f", <= {max_mb:.0f} MB" if max_mb is not None else "")
    return Result(label, seconds, baseline_name="time budget", baseline_median_s=max_s, target=target)


def bench_lesson_budget():
    """Every lesson, full size (or fast mode with P3DLAB_FAST=1)."""
    fast = fast_mode()
    results = []
    for path in lesson_notebooks(LESSONS_DIR):
        _, seconds, status, peak, _ = execute_lesson(path, fast=fast)
        results.append(lesson_result(path.stem, seconds, status, peak, fast))
        print(f"    {results[-1].name}: {seconds:.1f} s", flush=True)
    return results


ALL = [bench_lesson_budget]
