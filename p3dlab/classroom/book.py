"""The lesson book: execute every lesson at full size and export HTML with outputs.

``python -m p3dlab.classroom book [LESSONS_DIR] [OUT_DIR]`` (``make book``) runs each notebook in a
fresh kernel, writes ``OUT_DIR/<lesson>.html`` and ``OUT_DIR/<lesson>.ipynb`` (executed) and a timing
table ``OUT_DIR/timings.md``; the lessons in ``LESSONS_DIR`` stay without outputs. A lesson that
fails is reported in the table (with its error) and the others still run; the exit status is 1 if
any failed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import List, Tuple


def build_book(lessons_dir="course/source", out_dir="book", timeout: int = 1800, fast: bool = False) -> List[Tuple]:
    """Execute and export every lesson of ``lessons_dir``; returns (name, seconds, status) rows.

    ``lessons_dir`` holds the notebooks (``NN_*.ipynb``) or, as ``course/source`` does, one folder per
    lesson with the notebook inside; the book executes the versions with solutions.
    """
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import ExecutePreprocessor

    lessons = sorted(Path(lessons_dir).glob("[0-9]*.ipynb")) or sorted(Path(lessons_dir).glob("[0-9]*/[0-9]*.ipynb"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if fast:
        os.environ["P3DLAB_FAST"] = "1"
    else:
        os.environ.pop("P3DLAB_FAST", None)
    rows = []
    for path in lessons:
        nb = nbformat.read(path, as_version=4)
        t0 = time.perf_counter()
        status = "ok"
        try:
            ExecutePreprocessor(timeout=timeout, kernel_name="python3").preprocess(
                nb, {"metadata": {"path": str(path.parent)}}
            )
        except Exception as exc:  # keep going: the table says which lesson failed and why
            status = (
                f"FAILED: {type(exc).__name__}: {str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else ''}"
            )
        seconds = time.perf_counter() - t0
        nbformat.write(nb, out / path.name)
        body, _ = HTMLExporter().from_notebook_node(nb)
        (out / path.with_suffix(".html").name).write_text(body, encoding="utf-8")
        rows.append((path.stem, seconds, status))
        print(f"{path.stem}: {seconds:.1f} s {status}", flush=True)
    lines = ["| lesson | seconds | status |", "|---|---:|---|"]
    lines += [f"| {name} | {sec:.1f} | {status} |" for name, sec, status in rows]
    lines.append(f"| **total** | {sum(r[1] for r in rows):.1f} | |")
    mode = "fast mode (P3DLAB_FAST=1)" if fast else "full size"
    (out / "timings.md").write_text(
        f"# Lesson book, {mode}, {time.strftime('%Y-%m-%d %H:%M')}\n\n" + "\n".join(lines) + "\n"
    )
    return rows
