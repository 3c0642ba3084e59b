"""The course: nbgrader sources with solutions, and the student (release) versions made from them.

Layout (nbgrader's)::

    course/nbgrader_config.py
    course/source/<lesson>/<lesson>.ipynb   the lesson with solutions and hidden tests (teachers)
    lessons/<lesson>.ipynb                  the release version students open (generated)

A source marks its exercises with nbgrader cell metadata:

* a **solution cell** (``solution: true``) holds ``### BEGIN SOLUTION`` / ``### END SOLUTION``; the
  release replaces that region with :data:`SOLUTION_STUB`, indented like the marker;
* the **test cell** after it (``grade: true``, ``points``, locked) checks the answer; the part between
  ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` is removed from the release;
* a **task cell** (markdown, ``task: true``, ``points``) is graded by hand;
* ``locked: true`` cells (with a ``grade_id``) cannot be edited or deleted in the release.

Each solution cell also carries ``metadata.p3dlab``: ``kind`` (``"implement"`` or ``"value"``), a
plausible ``wrong_answer`` (code put in place of the solution) and ``wrong_feedback`` (a phrase its
feedback must contain). The tests build a submission from the wrong answers and autograde it; the
release drops this metadata.

``python -m p3dlab.classroom release [--check]`` regenerates ``lessons/`` (``--check`` only reports
drift and exits 1 when a release is out of date).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Iterable, List, Optional

SOLUTION_STUB = 'raise NotImplementedError("write your solution here")'
TEXT_STUB = "YOUR ANSWER HERE"
BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
MIN_EXERCISES, MIN_IMPLEMENT = 5, 2


def _meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def is_solution(cell) -> bool:
    return bool(_meta(cell).get("solution"))


def is_grade(cell) -> bool:
    return bool(_meta(cell).get("grade"))


def is_task(cell) -> bool:
    return bool(_meta(cell).get("task"))


def is_locked(cell) -> bool:
    return bool(_meta(cell).get("locked"))


def _replace_regions(source: str, begin: str, end: str, replacement: Optional[str]) -> str:
    """Replace each ``begin``..``end`` region by ``replacement`` (indented like ``begin``), or drop it."""
    out, inside = [], False
    for line in source.split("\n"):
        if begin in line:
            if inside:
                raise ValueError(f"nested '{begin}'")
            inside = True
            if replacement is not None:
                indent = re.match(r"\s*", line).group(0)
                out += [indent + r if r else r for r in replacement.split("\n")]
        elif end in line:
            if not inside:
                raise ValueError(f"'{end}' without '{begin}'")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"'{begin}' has no matching '{end}'")
    return "\n".join(out)


def _sealed_hidden_tests(source: str) -> str:
    """Each hidden-test region replaced by one call that runs it sealed (see ``grading.seal``)."""
    import textwrap

    from p3dlab.classroom.grading import seal

    out, region, indent = [], None, ""
    for line in source.split("\n"):
        if BEGIN_HIDDEN in line:
            region, indent = [], re.match(r"\s*", line).group(0)
        elif END_HIDDEN in line and region is not None:
            token = seal(textwrap.dedent("\n".join(region)))
            # one line: JupyterLab does not wrap code, so the sealed checks take one row of the cell
            out.append(f"{indent}from p3dlab.classroom import run_sealed  # the hidden checks, answers out of sight")
            out.append(f'{indent}run_sealed(globals(), "{token}")')
            region = None
        elif region is not None:
            region.append(line)
        else:
            out.append(line)
    return "\n".join(out)


def release_notebook(nb, hidden: str = "seal"):
    """The student version of a source notebook: nbgrader's ``generate_assignment`` transformations.

    Solution regions become the stub, outputs are cleared, grade and locked cells become read-only
    (solution cells undeletable), and p3dlab's grading metadata is dropped. Hidden tests are dropped
    (``hidden="drop"``: exactly nbgrader's release, for graded courses) or kept sealed
    (``hidden="seal"``: the self-study release in ``lessons/``, whose checks give full feedback
    without showing an expected value).
    """
    if hidden not in ("seal", "drop"):
        raise ValueError("hidden must be 'seal' or 'drop'")
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        md = cell.setdefault("metadata", {})
        md.pop("p3dlab", None)
        stub = SOLUTION_STUB if cell.cell_type == "code" else TEXT_STUB
        had_region = BEGIN_SOLUTION in cell.source
        cell.source = _replace_regions(cell.source, BEGIN_SOLUTION, END_SOLUTION, stub)
        if is_solution(cell) and not had_region:
            cell.source = stub
        if had_region and not is_solution(cell):
            raise ValueError(f"a solution region outside a solution cell: {cell.source[:80]!r}")
        if hidden == "seal" and cell.cell_type == "code" and BEGIN_HIDDEN in cell.source:
            _replace_regions(cell.source, BEGIN_HIDDEN, END_HIDDEN, None)  # the markers' structure
            cell.source = _sealed_hidden_tests(cell.source)
        cell.source = _replace_regions(cell.source, BEGIN_HIDDEN, END_HIDDEN, None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        if is_solution(cell):
            md["deletable"] = False
        elif is_grade(cell) or is_locked(cell):
            md["deletable"] = False
            md["editable"] = False
    return nb


def wrong_submission(source_nb, hidden: str = "drop"):
    """A student's submission made of the source's plausible wrong answers (for tests and previews)."""
    nb = release_notebook(source_nb, hidden=hidden)
    for src, cell in zip(source_nb.cells, nb.cells):
        wrong = src.get("metadata", {}).get("p3dlab", {}).get("wrong_answer")
        if wrong is None:
            continue
        lines = []
        for line in cell.source.split("\n"):
            if line.strip() == SOLUTION_STUB:
                indent = re.match(r"\s*", line).group(0)
                lines += [indent + w if w else w for w in wrong.split("\n")]
            else:
                lines.append(line)
        cell.source = "\n".join(lines)
    return nb


def exercises(nb) -> List[dict]:
    """The graded items of a source: ``grade_id``, ``points``, ``kind`` and the solution cell's metadata."""
    items, pending = [], None
    for cell in nb.cells:
        m = _meta(cell)
        if is_solution(cell) and cell.cell_type == "code":
            pending = cell
        elif is_grade(cell) and not is_solution(cell) and cell.cell_type == "code":
            extra = (pending.metadata.get("p3dlab", {}) if pending is not None else {}) or {}
            items.append(
                {
                    "grade_id": m.get("grade_id"),
                    "points": float(m.get("points", 0)),
                    "kind": extra.get("kind", "value"),
                    "solution_id": _meta(pending).get("grade_id") if pending is not None else None,
                    "wrong_answer": extra.get("wrong_answer"),
                    "wrong_feedback": extra.get("wrong_feedback"),
                    "source": cell.source,
                }
            )
            pending = None
        elif is_task(cell):
            items.append({"grade_id": m.get("grade_id"), "points": float(m.get("points", 0)), "kind": "task"})
    return items


def validate_source(nb) -> List[str]:
    """Everything that would break grading or the course's format, as a list of problems."""
    problems, ids = [], set()
    for i, cell in enumerate(nb.cells):
        m = _meta(cell)
        if not m:
            if BEGIN_SOLUTION in cell.source or BEGIN_HIDDEN in cell.source:
                problems.append(f"cell {i}: a solution or hidden-test region without nbgrader metadata")
            continue
        gid = m.get("grade_id")
        if (m.get("grade") or m.get("solution") or m.get("locked") or m.get("task")) and not gid:
            problems.append(f"cell {i}: no grade_id")
        if gid in ids:
            problems.append(f"cell {i}: duplicate grade_id {gid!r}")
        ids.add(gid)
        if m.get("schema_version") != 3:
            problems.append(f"cell {i}: nbgrader schema_version must be 3")
        if (m.get("grade") or m.get("task")) and not float(m.get("points", 0)) > 0:
            problems.append(f"cell {i} ({gid}): a grade or task cell needs points > 0")
        if m.get("task") and cell.cell_type != "markdown":
            problems.append(f"cell {i} ({gid}): task cells are markdown")
        if m.get("solution") and cell.cell_type == "code":
            if BEGIN_SOLUTION not in cell.source:
                problems.append(f"cell {i} ({gid}): a solution cell without a solution region")
            extra = cell.metadata.get("p3dlab", {})
            if not extra.get("wrong_answer") or not extra.get("wrong_feedback"):
                problems.append(f"cell {i} ({gid}): metadata.p3dlab needs wrong_answer and wrong_feedback")
            if extra.get("kind") not in ("implement", "value"):
                problems.append(f"cell {i} ({gid}): metadata.p3dlab.kind must be 'implement' or 'value'")
            nxt = nb.cells[i + 1] if i + 1 < len(nb.cells) else None
            if nxt is None or not is_grade(nxt) or is_solution(nxt):
                problems.append(f"cell {i} ({gid}): a solution cell must be followed by its test cell")
        if m.get("grade") and not m.get("solution") and cell.cell_type == "code" and not m.get("locked"):
            problems.append(f"cell {i} ({gid}): test cells are locked")
    items = exercises(nb)
    graded = [e for e in items if e["kind"] != "task"]
    if len(graded) < MIN_EXERCISES:
        problems.append(f"{len(graded)} graded exercises; at least {MIN_EXERCISES} are required")
    if sum(e["kind"] == "implement" for e in graded) < MIN_IMPLEMENT:
        problems.append(f"at least {MIN_IMPLEMENT} 'implement it' exercises are required")
    for e in graded:
        if e["kind"] == "implement" and "check_function" not in e["source"].split(BEGIN_HIDDEN)[-1]:
            problems.append(f"{e['grade_id']}: an 'implement' exercise is checked by check_function in hidden tests")
    if not any(e["kind"] == "task" for e in items):
        problems.append("no task cell (an open task graded by hand)")
    return problems


def _normalised(nb) -> str:
    import nbformat

    return nbformat.writes(nb)


def source_notebooks(source_dir: Path | str = "course/source") -> List[Path]:
    """``<source_dir>/<lesson>/<lesson>.ipynb`` for every lesson, in order."""
    return sorted(p for p in Path(source_dir).glob("*/*.ipynb") if p.stem == p.parent.name)


def release_course(
    source_dir: Path | str = "course/source",
    release_dir: Path | str = "lessons",
    check: bool = False,
    only: Optional[Iterable[str]] = None,
) -> List[str]:
    """Write (or with ``check``, compare) the release version of every source; returns the drifted ones."""
    import nbformat

    drifted = []
    release_dir = Path(release_dir)
    for src in source_notebooks(source_dir):
        if only and not any(src.stem.startswith(o) for o in only):
            continue
        nb = nbformat.read(str(src), as_version=4)
        try:
            text = _normalised(release_notebook(nb))
        except ValueError as exc:
            raise ValueError(f"{src}: {exc}") from None
        dst = release_dir / f"{src.stem}.ipynb"
        current = dst.read_text(encoding="utf-8") if dst.exists() else None
        if current != text:
            drifted.append(src.stem)
            if not check:
                dst.write_text(text, encoding="utf-8")
    return drifted


def summary(source_dir: Path | str = "course/source") -> str:
    """A markdown table of every lesson's graded items and points (for the teacher's guide)."""
    import nbformat

    rows = ["| lesson | grade id | kind | points |", "|---|---|---|---:|"]
    for src in source_notebooks(source_dir):
        for e in exercises(nbformat.read(str(src), as_version=4)):
            rows.append(f"| {src.stem[:2]} | `{e['grade_id']}` | {e['kind']} | {e['points']:g} |")
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------------
# Authoring: cells in the course's format (used by lesson authors' scripts and the tests).


def _nbgrader(grade_id: str, *, grade=False, solution=False, locked=False, task=False, points=None) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3, "solution": solution}
    meta["task"] = task
    if points is not None:
        meta["points"] = points
    return meta


def solution_cell(grade_id: str, source: str, *, kind: str, wrong_answer: str, wrong_feedback: str):
    """A solution cell: ``source`` holds a ``### BEGIN SOLUTION`` region; ``kind`` is implement or value."""
    from nbformat.v4 import new_code_cell

    cell = new_code_cell(source)
    cell.metadata["nbgrader"] = _nbgrader(grade_id, solution=True)
    cell.metadata["p3dlab"] = {"kind": kind, "wrong_answer": wrong_answer, "wrong_feedback": wrong_feedback}
    return cell


def test_cell(grade_id: str, source: str, points: float):
    """An autograded test cell (locked); hidden checks go between the hidden-test markers."""
    from nbformat.v4 import new_code_cell

    cell = new_code_cell(source)
    cell.metadata["nbgrader"] = _nbgrader(grade_id, grade=True, locked=True, points=points)
    return cell


def task_cell(grade_id: str, source: str, points: float):
    """An open task graded by hand (markdown); students answer in cells they add below it."""
    from nbformat.v4 import new_markdown_cell

    cell = new_markdown_cell(source)
    cell.metadata["nbgrader"] = _nbgrader(grade_id, locked=True, task=True, points=points)
    return cell


def locked_cell(grade_id: str, source: str, cell_type: str = "markdown"):
    """A read-only cell (exercise text, fixtures the tests rely on)."""
    from nbformat.v4 import new_code_cell, new_markdown_cell

    cell = (new_markdown_cell if cell_type == "markdown" else new_code_cell)(source)
    cell.metadata["nbgrader"] = _nbgrader(grade_id, locked=True)
    return cell
