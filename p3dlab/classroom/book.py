"""The lesson book: execute every lesson at full size and export HTML with outputs.

``python -m p3dlab.classroom book [LESSONS_DIR] [OUT_DIR]`` (``make book``) runs each notebook in a
fresh kernel, writes ``OUT_DIR/<lesson>.html`` and ``OUT_DIR/<lesson>.ipynb`` (executed) and a table
``OUT_DIR/timings.md`` with each lesson's wall time, its kernel's peak memory (the kernel's own peak
resident set, ``VmHWM`` on Linux, read by one extra cell run after the lesson and left out of the
exported book) and the memory the kernel still held at the end; the lessons in ``LESSONS_DIR`` stay
without outputs.

A lesson over its budget is marked in the table: at full size 3 minutes and 1.2 GB (so that the
Jupyter server and a second, idle kernel still fit in a free Binder's 2 GB), in fast mode 60 s. A
lesson that fails is reported in the table (with its error) and the others still run; the exit
status is 1 if any failed, or with ``--strict`` if any is over its budget.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import List, Optional, Tuple

#: (seconds, peak MB) a lesson may take: at full size, and in fast mode (no memory bound there)
BUDGET_FULL = (180.0, 1200.0)
BUDGET_FAST = (60.0, None)

# run in the lesson's kernel after its last cell: peak and current resident memory in MB. Linux's
# VmHWM is the peak of this process image; ru_maxrss (elsewhere) also counts the parent that forked
# the kernel, which Linux carries across exec.
_MEMORY_PROBE = """
import resource as _resource, sys as _sys
try:
    _status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    _peak, _now = (int(_status[key].split()[0]) / 1024 for key in ("VmHWM", "VmRSS"))
except (OSError, KeyError, ValueError):
    _peak = _resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024 if _sys.platform == "darwin" else 1024)
    _now = float("nan")
print(f"P3DLAB_MEMORY {_peak:.1f} {_now:.1f}")
"""


def _read_probe(nb) -> Tuple[Optional[float], Optional[float]]:
    """(peak MB, end MB) printed by the memory probe cell (the notebook's last), or (None, None)."""
    for output in nb.cells[-1].get("outputs", []):
        for line in str(output.get("text", "")).splitlines():
            if line.startswith("P3DLAB_MEMORY "):
                peak, now = (float(x) for x in line.split()[1:3])
                return peak, now
    return None, None


def over_budget(seconds: float, peak_mb: Optional[float], fast: bool) -> List[str]:
    """What a lesson exceeds of its budget (empty when it fits)."""
    max_s, max_mb = BUDGET_FAST if fast else BUDGET_FULL
    over = [f"{seconds:.0f} s > {max_s:.0f} s"] if seconds > max_s else []
    if max_mb is not None and peak_mb is not None and peak_mb > max_mb:
        over.append(f"{peak_mb:.0f} MB > {max_mb:.0f} MB")
    return over


def lesson_notebooks(lessons_dir="course/source") -> List[Path]:
    """The lessons of ``lessons_dir``: notebooks ``NN_*.ipynb`` or, as ``course/source`` has them, one
    folder per lesson with its notebook inside."""
    return sorted(Path(lessons_dir).glob("[0-9]*.ipynb")) or sorted(Path(lessons_dir).glob("[0-9]*/[0-9]*.ipynb"))


def execute_lesson(path, timeout: int = 1800, fast: bool = False):
    """Run one lesson in a fresh kernel (in its own folder), at full size or in fast mode; returns
    ``(executed notebook, seconds, status, peak MB, end MB)``, status "ok" or "FAILED: ...". The
    memory probe has been removed from the returned notebook."""
    import nbformat
    from nbconvert.preprocessors import ExecutePreprocessor

    path = Path(path)
    saved = os.environ.get("P3DLAB_FAST")
    if fast:
        os.environ["P3DLAB_FAST"] = "1"
    else:
        os.environ.pop("P3DLAB_FAST", None)
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(_MEMORY_PROBE))
    t0 = time.perf_counter()
    status = "ok"
    try:
        ExecutePreprocessor(timeout=timeout, kernel_name="python3").preprocess(
            nb, {"metadata": {"path": str(path.parent)}}
        )
    except Exception as exc:  # the caller reports which lesson failed and why
        text = str(exc).strip()
        status = f"FAILED: {type(exc).__name__}: {text.splitlines()[-1][:200] if text else ''}"
    finally:
        if saved is None:
            os.environ.pop("P3DLAB_FAST", None)
        else:
            os.environ["P3DLAB_FAST"] = saved
    seconds = time.perf_counter() - t0
    peak, end = _read_probe(nb)
    nb.cells.pop()  # the probe is not part of the lesson
    return nb, seconds, status, peak, end


def build_book(lessons_dir="course/source", out_dir="book", timeout: int = 1800, fast: bool = False) -> List[Tuple]:
    """Execute and export every lesson of ``lessons_dir``; returns (name, seconds, status, peak MB,
    end MB, over-budget notes) rows. The book executes the versions with solutions."""
    import nbformat
    from nbconvert import HTMLExporter

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in lesson_notebooks(lessons_dir):
        nb, seconds, status, peak, end = execute_lesson(path, timeout, fast)
        nbformat.write(nb, out / path.name)
        body, _ = HTMLExporter().from_notebook_node(nb)
        (out / path.with_suffix(".html").name).write_text(body, encoding="utf-8")
        over = over_budget(seconds, peak, fast)
        rows.append((path.stem, seconds, status, peak, end, over))
        mb = lambda v: "?" if v is None else f"{v:.0f} MB"  # noqa: E731
        print(f"{path.stem}: {seconds:.1f} s, peak {mb(peak)}, end {mb(end)} {status}"
              + (f" OVER BUDGET ({', '.join(over)})" if over else ""), flush=True)  # fmt: skip
    fmt = lambda v: "?" if v is None else f"{v:.0f}"  # noqa: E731
    lines = ["| lesson | seconds | peak MB | MB at the end | budget | status |", "|---|---:|---:|---:|---|---|"]
    lines += [
        f"| {name} | {sec:.1f} | {fmt(peak)} | {fmt(end)} | {'over: ' + ', '.join(over) if over else 'ok'} | {status} |"
        for name, sec, status, peak, end, over in rows
    ]
    lines.append(f"| **total** | {sum(r[1] for r in rows):.1f} | | | | |")
    mode = "fast mode (P3DLAB_FAST=1)" if fast else "full size"
    max_s, max_mb = BUDGET_FAST if fast else BUDGET_FULL
    budget = f"{max_s:.0f} s" + (f" and {max_mb:.0f} MB peak" if max_mb else "") + " a lesson"
    (out / "timings.md").write_text(
        f"# Lesson book, {mode}, {time.strftime('%Y-%m-%d %H:%M')}\n\nBudget: {budget}.\n\n" + "\n".join(lines) + "\n"
    )
    return rows
