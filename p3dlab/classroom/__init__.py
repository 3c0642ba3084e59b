"""The classroom: graded exercises, the course's student versions, the lesson book, kernel warm-up.

* :mod:`p3dlab.classroom.grading` — the checks test cells call (``check_close``, ``check_function``,
  ...): one line of feedback with a hint, never the expected value.
* :mod:`p3dlab.classroom.course` — nbgrader sources (``course/source``) and the release versions
  students open (``lessons/``).

Command line::

    python -m p3dlab.classroom release [SOURCE_DIR] [RELEASE_DIR] [--check]
    python -m p3dlab.classroom validate [SOURCE_DIR]
    python -m p3dlab.classroom summary [SOURCE_DIR]
    python -m p3dlab.classroom book [LESSONS_DIR] [OUT_DIR] [--fast] [--strict]
    python -m p3dlab.classroom warmup
"""

from __future__ import annotations

import sys

from p3dlab.classroom.grading import (
    Diagnosis,
    ExerciseFailed,
    check_choice,
    check_close,
    check_equal,
    check_function,
    check_gradient,
    check_output_shape,
    check_outward,
    check_shape,
    check_written,
    equals,
    factor,
    negated,
    run_sealed,
    transposed,
    when,
)

__all__ = [
    "Diagnosis",
    "ExerciseFailed",
    "check_choice",
    "check_close",
    "check_equal",
    "check_function",
    "check_gradient",
    "check_output_shape",
    "check_outward",
    "check_shape",
    "check_written",
    "equals",
    "factor",
    "negated",
    "run_sealed",
    "transposed",
    "when",
    "main",
]

USAGE = """usage:
  python -m p3dlab.classroom release [SOURCE_DIR] [RELEASE_DIR] [--check]   student versions from the sources
  python -m p3dlab.classroom validate [SOURCE_DIR]                          check the sources' grading format
  python -m p3dlab.classroom summary [SOURCE_DIR]                           exercises and points per lesson
  python -m p3dlab.classroom book [LESSONS_DIR] [OUT_DIR] [--fast] [--strict]  lessons executed: HTML, time, memory
  python -m p3dlab.classroom warmup                                         compile the Numba kernels once
defaults: SOURCE_DIR=course/source, RELEASE_DIR=lessons"""


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command, args = (argv[0] if argv else ""), [a for a in argv[1:] if not a.startswith("--")]
    if command == "warmup":
        from p3dlab.classroom.warmup import warmup

        print(f"p3dlab kernels compiled and cached in {warmup():.1f} s")
        return 0
    if command == "book":
        from p3dlab.classroom.book import build_book

        rows = build_book(*(args[:2]), fast="--fast" in argv)
        failed = any(r[2] != "ok" for r in rows)
        over = [r[0] for r in rows if r[5]]
        if over:
            print(f"over budget: {', '.join(over)}", file=sys.stderr)
        return 1 if failed or (over and "--strict" in argv) else 0
    if command == "release":
        from p3dlab.classroom.course import release_course

        check = "--check" in argv
        drifted = release_course(*(args[:2]), check=check)
        for name in drifted:
            print(f"{'out of date' if check else 'written'}: {name}")
        if check and drifted:
            print("run `python -m p3dlab.classroom release` (make release) and commit lessons/", file=sys.stderr)
            return 1
        return 0
    if command == "validate":
        import nbformat

        from p3dlab.classroom.course import source_notebooks, validate_source

        bad = 0
        for path in source_notebooks(*(args[:1])):
            for problem in validate_source(nbformat.read(str(path), as_version=4)):
                print(f"{path.stem}: {problem}")
                bad += 1
        return 1 if bad else 0
    if command == "summary":
        from p3dlab.classroom.course import summary

        print(summary(*(args[:1])))
        return 0
    print(USAGE, file=sys.stderr)
    return 2
