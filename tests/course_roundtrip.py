"""nbgrader's whole round trip for one lesson, in a temporary course folder.

``generate_assignment`` from the lesson's source, then one ``autograde`` of three submissions:

* ``solved``    the source with its solutions (must get every autograded point);
* ``untouched`` the release as a student receives it (0 points; each test says "write your solution");
* ``wrong``     the release with each solution cell's plausible wrong answer (0 points; each test's
  feedback is one line containing the exercise's ``wrong_feedback`` phrase and no expected value).

The self-study release of ``lessons/`` keeps the hidden tests sealed instead of dropping them: each
sealed call must hold exactly one hidden-test region of the source, which ``run_sealed`` executes in
the notebook's globals as the ``wrong`` submission's hidden tests run above (checked here without
executing the lesson a fourth time; ``tests/test_classroom.py`` executes a tiny sealed lesson
solved, untouched and wrong).

Run as a script for one lesson (``python tests/course_roundtrip.py 03``) to see the scores and
feedback while writing exercises.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

from p3dlab.classroom.course import (
    BEGIN_HIDDEN,
    END_HIDDEN,
    exercises,
    release_notebook,
    source_notebooks,
    wrong_submission,
)
from p3dlab.classroom.grading import leaks, unseal

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "course" / "source"
STUDENTS = ("solved", "untouched", "wrong")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def lesson_path(prefix: str) -> Path:
    (path,) = [p for p in source_notebooks(SOURCE) if p.stem.startswith(prefix)]
    return path


def _nbgrader(args, cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if res.returncode != 0:
        raise RuntimeError(f"nbgrader {' '.join(args)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}")
    return res


def _peak_rss_children_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def error_text(cell) -> str:
    """The error a cell shows (its traceback lines, without colour codes), or '' when it has none."""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return _ANSI.sub("", "\n".join(out.get("traceback") or [f"{out['ename']}: {out['evalue']}"]))
    return ""


def roundtrip(source: Path, workdir: Path) -> dict:
    """Run the round trip; returns per student: scores by grade id, autograded notebook, grading log."""
    course = workdir / "course"
    lesson = source.stem
    (course / "source" / lesson).mkdir(parents=True)
    shutil.copy(ROOT / "course" / "nbgrader_config.py", course / "nbgrader_config.py")
    shutil.copy(source, course / "source" / lesson / source.name)
    # nbgrader runs `alembic` from PATH: the interpreter's own bin folder first
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    # GOMP_SPINCOUNT=1000, OMP_WAIT_POLICY=PASSIVE: torch's and Numba's OpenMP pools do not spin
    # against each other in the grading kernels (on a loaded 2-core machine a spinning pair stalled
    # one run for minutes). ``import p3dlab`` sets them too, but the lessons import torch first:
    # torch's pool needs them here.
    env = dict(os.environ, P3DLAB_FAST="1", PYTHONWARNINGS="ignore", PATH=path)
    if "OMP_WAIT_POLICY" not in env and "GOMP_SPINCOUNT" not in env:
        env.update(OMP_WAIT_POLICY="PASSIVE", GOMP_SPINCOUNT="1000")
    t0 = time.perf_counter()
    _nbgrader(["generate_assignment", lesson, "--force"], course, env)
    generate_s = time.perf_counter() - t0

    src_nb = nbformat.read(str(source), as_version=4)
    released = nbformat.read(str(course / "release" / lesson / source.name), as_version=4)
    submissions = {"solved": src_nb, "untouched": released, "wrong": wrong_submission(src_nb)}
    result = {"lesson": lesson, "generate_s": generate_s, "release": released, "students": {}}
    for student, nb in submissions.items():
        target = course / "submitted" / student / lesson
        target.mkdir(parents=True)
        nbformat.write(nb, str(target / source.name))
    # one nbgrader run grades the three students (each nbgrader start costs seconds); each check's
    # log line carries its kernel's folder, autograded/<student>/<lesson>, which tells them apart
    log = workdir / "grading.jsonl"
    t0 = time.perf_counter()
    _nbgrader(["autograde", lesson], course, dict(env, P3DLAB_GRADING_LOG=str(log)))
    seconds = time.perf_counter() - t0
    entries = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    for student in submissions:
        graded = nbformat.read(str(course / "autograded" / student / lesson / source.name), as_version=4)
        folder = str(course / "autograded" / student / lesson)
        mine = [e for e in entries if os.path.realpath(e["cwd"]) == os.path.realpath(folder)]
        result["students"][student] = {"seconds": seconds / len(submissions), "notebook": graded, "log": mine}
    stray = [e for e in entries if not any(e in r["log"] for r in result["students"].values())]
    if stray:
        raise RuntimeError(f"grading log lines from no student's folder: {stray[:3]}")
    result["peak_rss_mb"] = _peak_rss_children_mb()

    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id="p3dlab") as gb:
        for student in STUDENTS:
            sub = gb.find_submission_notebook(lesson, lesson, student)
            result["students"][student]["grades"] = {
                g.name: {"auto": g.auto_score, "max": g.max_score, "manual": g.needs_manual_grade} for g in sub.grades
            }
            result["students"][student]["score"] = sub.score
    return result


def problems(result: dict, source_nb) -> list:
    """Every way the round trip falls short of the course's rules (empty when all is well)."""
    out = []
    items = {e["grade_id"]: e for e in exercises(source_nb)}
    auto = {gid: e for gid, e in items.items() if e["kind"] != "task"}
    mine = release_notebook(source_nb, hidden="drop")
    theirs = result["release"]
    if [c.source for c in mine.cells] != [c.source for c in theirs.cells]:
        out.append("lessons/ release differs from nbgrader's generate_assignment release")
    for student in STUDENTS:
        s = result["students"][student]
        cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in s["notebook"].cells}
        for gid, e in auto.items():
            grade = s["grades"].get(gid)
            if grade is None:
                out.append(f"{student}: no grade recorded for {gid}")
                continue
            err = error_text(cells.get(gid, {}))
            if student == "solved":
                if grade["auto"] != grade["max"]:
                    out.append(f"solved: {gid} scored {grade['auto']} of {grade['max']}: {err[:300]}")
                continue
            if grade["auto"] != 0:
                out.append(f"{student}: {gid} scored {grade['auto']} (a wrong or missing answer must score 0)")
            lines = [line for line in err.splitlines() if line.strip()]
            if len(lines) != 1 or "ExerciseFailed" in err or "Traceback" in err:
                out.append(f"{student}: {gid}'s feedback is not one line of a check: {err[:400]!r}")
            if student == "untouched" and "write your solution" not in err:
                out.append(f"untouched: {gid}'s feedback does not say 'write your solution': {err[:300]!r}")
            if student == "wrong" and (e.get("wrong_feedback") or "\0") not in err:
                out.append(f"wrong: {gid}'s feedback lacks {e.get('wrong_feedback')!r}: {err[:300]!r}")
        for gid, e in items.items():
            if e["kind"] == "task" and not s["grades"].get(gid, {}).get("manual", False):
                out.append(f"{student}: task {gid} is not left for manual grading")
        # the solved lesson runs without any error (what `make lessons` checks under nbval), and a
        # missing answer must not crash the lesson itself: only solution and test cells may fail
        for i, c in enumerate(s["notebook"].cells):
            m = c.metadata.get("nbgrader", {})
            exercise = m.get("solution") or m.get("grade")
            if c.cell_type == "code" and error_text(c) and (student == "solved" or not exercise):
                what = "" if student == "solved" else " (not an exercise)"
                out.append(f"{student}: cell {i}{what} fails: {error_text(c)[-300:]}")
        for entry in s["log"]:
            if not entry["passed"]:
                leaked = leaks(entry["message"], entry["expected"])
                if leaked:
                    out.append(f"{student}: feedback for {entry['name']} shows the expected value {leaked}")
    out.extend(sealing_problems(source_nb))
    return out


def hidden_regions(source: str) -> list:
    """The hidden-test regions of a cell's source, dedented, in order."""
    import textwrap

    regions, region = [], None
    for line in source.split("\n"):
        if BEGIN_HIDDEN in line:
            region = []
        elif END_HIDDEN in line and region is not None:
            regions.append(textwrap.dedent("\n".join(region)))
            region = None
        elif region is not None:
            region.append(line)
    return regions


def sealing_problems(source_nb) -> list:
    """Where the self-study release's sealed calls do not hold exactly the source's hidden tests."""
    out = []
    sealed = {
        c.metadata.get("nbgrader", {}).get("grade_id"): c for c in release_notebook(source_nb, hidden="seal").cells
    }
    for cell in source_nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        regions = hidden_regions(cell.source)
        if not regions:
            continue
        tokens = re.findall(r'run_sealed\(globals\(\), "([^"]+)"\)', sealed[gid].source if gid in sealed else "")
        if [unseal(t) for t in tokens] != regions:
            out.append(f"self-study: {gid}'s sealed checks are not its hidden tests")
        if BEGIN_HIDDEN in sealed.get(gid, cell).source:
            out.append(f"self-study: {gid} shows its hidden tests")
    return out


def main(prefix: str) -> int:
    import tempfile

    source = lesson_path(prefix)
    with tempfile.TemporaryDirectory() as tmp:
        result = roundtrip(source, Path(tmp))
    src_nb = nbformat.read(str(source), as_version=4)
    for student in STUDENTS:
        s = result["students"][student]
        print(f"{student}: score {s['score']}  ({s['seconds']:.1f} s, a third of the autograde run)")
        cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in s["notebook"].cells}
        for gid, g in s["grades"].items():
            print(f"   {gid}: {g['auto']}/{g['max']}  {error_text(cells.get(gid, {}))[:200]}")
    print(f"generate_assignment {result['generate_s']:.1f} s, peak RSS of a child {result['peak_rss_mb']:.0f} MB")
    found = problems(result, src_nb)
    print("\n".join(["PROBLEMS:"] + found) if found else "round trip OK")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
