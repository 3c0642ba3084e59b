"""nbgrader's round trip for every lesson (make course): generate_assignment, autograde, scores.

For each lesson: the solved source gets every autograded point, the untouched release 0 with "write
your solution" in each test's one-line feedback and no other cell failing, and the plausible wrong
answers 0 with feedback that holds the exercise's hint and no expected value.
"""

import nbformat
import pytest
from course_roundtrip import SOURCE, problems, roundtrip

from p3dlab.classroom.course import source_notebooks

pytest.importorskip("nbgrader")

SOURCES = source_notebooks(SOURCE)


@pytest.mark.course
@pytest.mark.parametrize("source", SOURCES, ids=[p.stem[:2] for p in SOURCES])
def test_autograde_roundtrip(source, tmp_path):
    result = roundtrip(source, tmp_path)
    src = nbformat.read(str(source), as_version=4)
    found = problems(result, src)
    scores = {s: r["score"] for s, r in result["students"].items()}
    auto_max = sum(g["max"] for g in result["students"]["solved"]["grades"].values() if not g["manual"])
    assert found == [], "\n".join(found)
    assert scores["solved"] == auto_max > 0
    assert scores["untouched"] == 0 and scores["wrong"] == 0
    seconds = ", ".join(f"{s} {r['seconds']:.0f} s" for s, r in result["students"].items())
    print(f"{source.stem}: {scores} of {auto_max}; {seconds}; peak RSS {result['peak_rss_mb']:.0f} MB")
