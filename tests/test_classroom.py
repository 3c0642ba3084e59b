from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from p3dlab import data
from p3dlab.classroom import (
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
    course,
    equals,
    factor,
    negated,
    transposed,
    when,
)
from p3dlab.classroom.course import (
    SOLUTION_STUB,
    exercises,
    locked_cell,
    release_course,
    release_notebook,
    solution_cell,
    source_notebooks,
    task_cell,
    validate_source,
    wrong_submission,
)
from p3dlab.classroom.grading import leaks

ROOT = Path(__file__).resolve().parents[1]
SOURCES = source_notebooks(ROOT / "course" / "source")


def test_every_lesson_has_a_source_and_a_release():
    assert len(SOURCES) >= 9
    released = sorted(p.stem for p in (ROOT / "lessons").glob("[0-9]*.ipynb"))
    assert released == [p.stem for p in SOURCES]


def test_right_answers_pass_with_a_tick(capsys):
    check_close([1.0, 2.0], [1.0, 2.0 + 1e-9], name="pair")
    check_equal(264, 264, name="count")
    check_choice("b", "b", ["a", "b"], name="choice")
    check_shape(torch.zeros(2, 3), (2, 3), name="t")
    check_output_shape(lambda x: x * 2, (torch.ones(4),), (4,), name="double")
    check_function(lambda x: x * 2, lambda x: x + x, [(torch.rand(3),) for _ in range(4)], name="double")
    check_outward(data.cube())
    check_gradient(lambda x: (x**3).sum(), [torch.rand(3)])
    out = capsys.readouterr().out
    assert out.count("✓") == 8 and "`pair` is correct" in out and "4 hidden inputs checked" in out


def _message(fn, *args, **kwargs) -> str:
    with pytest.raises(ExerciseFailed) as info:
        fn(*args, **kwargs)
    return str(info.value)


def test_wrong_answers_get_one_line_with_the_matching_hint():
    msg = _message(check_close, 2.0, 4.0, name="angle", hints=[factor(0.5, "did you use the half-angle?")])
    assert msg == "`angle` is too small. Hint: did you use the half-angle?"
    R = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    msg = _message(check_close, R, R.T, name="R", hints=[factor(2, "x2"), transposed()])
    assert "Hint: row vectors" in msg and "\n" not in msg
    msg = _message(check_close, -3.5, 3.5, name="area", hints=[negated("the winding")], hint="general")
    assert msg.endswith("Hint: the winding")
    msg = _message(check_close, 1.25, 2.0, name="z", hints=[equals(1.25, "screen-space")], hint="general")
    assert msg.endswith("Hint: screen-space")
    msg = _message(check_close, 1.0, 2.0, name="z", hints=[equals(1.5, "no")], hint="general")
    assert msg.endswith("Hint: general")
    msg = _message(check_close, torch.zeros(3), torch.zeros(2), name="v")
    assert "shape (3,)" in msg and "shape (2,)" in msg
    msg = _message(check_close, torch.tensor([1.0, 2.0, float("nan")]), torch.ones(3), name="v")
    assert "NaN" in msg
    msg = _message(check_close, torch.tensor([1.0, 2.0, 3.0]), torch.ones(3), name="v")
    assert "2 of 3 entries are wrong (the first at index 1)" in msg
    msg = _message(check_equal, 300, 264, name="pixels", hints={300: "strictly inside"})
    assert msg == "`pixels` is too large. Hint: strictly inside"
    msg = _message(check_choice, "a", "b", ["a", "b"], name="c", hints={"a": "think of K"})
    assert msg.endswith("Hint: think of K")
    assert "must be one of" in _message(check_choice, "z", "b", ["a", "b"], name="c")
    assert "True" not in _message(check_equal, False, True, name="flag")


def test_visible_checks_of_types_and_shapes():
    assert check_written(2.5, "x", (float, int)) == 2.5
    assert "should be a float, not str" in _message(check_written, "2.5", "x", (float,))
    assert "should be an int, not float" in _message(check_written, 2.5, "x", (int,))
    assert "not bool" in _message(check_written, True, "x", (int,))
    import numpy as np

    assert check_written(np.int64(3), "x", (int,)) == 3 and check_written(np.float32(0.5), "x", (float,)) == 0.5
    two = lambda x: (x, x[0])
    check_output_shape(two, (torch.ones(2, 3),), [(2, 3), (3,)], "f")
    assert "output 1 of `f` has shape (2, 3)" in _message(
        check_output_shape, lambda x: (x, x), (torch.ones(2, 3),), [(2, 3), (3,)], "f"
    )
    assert "should return 2 tensors" in _message(
        check_output_shape, lambda x: x, (torch.ones(2, 3),), [(2, 3), (3,)], "f"
    )
    assert "should be a torch.Tensor, not list" in _message(check_output_shape, lambda x: [1], (0,), (1,), "f")


def test_function_checks_count_failures_and_diagnose_the_first():
    ref = lambda x: x.sum(-1)
    inputs = [(torch.rand(5, 3, generator=torch.Generator().manual_seed(i)),) for i in range(10)]
    msg = _message(check_function, lambda x: -x.sum(-1), ref, inputs, "total", hints=[negated("sign!")])
    assert "wrong results on 10 of 10 hidden random inputs" in msg and msg.endswith("Hint: sign!")
    msg = _message(
        check_function,
        lambda x: x.sum(-1) if x[0, 0] > 0.5 else x.mean(-1),
        ref,
        inputs,
        "total",
        hints=[when(lambda v, e, a: torch.allclose(v * a[0].shape[-1], e), "a mean is not a sum")],
        describe=lambda args: f"{args[0].shape[0]} points",
    )
    assert "(the first: 5 points)" in msg and "a mean is not a sum" in msg
    assert "shape (5, 3) where (5,) is needed" in _message(check_function, lambda x: x, ref, inputs, "total")
    assert "returns 2 value(s)" in _message(check_function, lambda x: (x, x), ref, inputs, "total")
    assert "raised ZeroDivisionError: boom" in _message(
        check_function, lambda x: (_ for _ in ()).throw(ZeroDivisionError("boom")), ref, inputs, "total"
    )
    assert "not a function" in _message(check_function, None, ref, inputs, "total")


def _stub(*args):
    raise NotImplementedError("write your solution here")


@pytest.mark.parametrize(
    "call",
    [
        lambda: check_close(None, 1.0, "x"),
        lambda: check_equal(None, 1, "x"),
        lambda: check_choice(None, "a", ["a"], "x"),
        lambda: check_shape(None, (1,), "x"),
        lambda: check_output_shape(_stub, (1,), (1,), "f"),
        lambda: check_function(_stub, lambda x: x, [(1,)], "f"),
        lambda: check_gradient(_stub, [torch.ones(1)], "f"),
        lambda: check_outward(None, "m"),
        lambda: check_close(..., 1.0, "x"),
        lambda: check_written(None, "x", (float,)),
    ],
)
def test_unwritten_answers_say_write_your_solution(call):
    with pytest.raises(ExerciseFailed, match="write your solution"):
        call()


def test_feedback_shows_as_one_line_in_ipython():
    err = ExerciseFailed("`x` is too large. Hint: halve it")
    assert err._render_traceback_() == ["\x1b[31m✗ `x` is too large. Hint: halve it\x1b[0m"]
    assert isinstance(err, AssertionError)


def test_check_messages_never_show_the_expected_value(tmp_path, monkeypatch):
    """The scan: every failing check over many random answers; no message contains what was expected."""
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv("P3DLAB_GRADING_LOG", str(log))
    g = torch.Generator().manual_seed(0)

    def wrong_answers(e, v, scale):
        return (
            lambda: check_close(float(v[0]), float(e[0]), "x", hints=[factor(2, "double")]),
            lambda: check_close(v, e, "v", hint="general"),
            lambda: check_close(v[:2], e, "v"),
            lambda: check_equal(int(v[0] * 100), int(e[0] * 100), "n"),
            lambda: check_function(lambda x: x * scale, lambda x: x * 1.5, [(e,)], "f", hints=[factor(2, "double")]),
            lambda: check_choice("wrong", f"{float(e[0]):.3f}", ["wrong", f"{float(e[0]):.3f}"], "c"),
        )

    for _ in range(200):
        e = (torch.rand(3, generator=g) * 20 - 10).double()
        v = e + 0.5 + torch.rand(3, generator=g, dtype=torch.float64)
        for call in wrong_answers(e, v, float(torch.rand(1, generator=g) * 3)):
            with pytest.raises(ExerciseFailed):
                call()
    import json

    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(entries) == 1200 and not any(x["passed"] for x in entries)
    leaked = [x for x in entries if leaks(x["message"], x["expected"])]
    assert leaked == []
    # the scan itself can fail: a message that shows the value is caught
    assert leaks("`x` should be 3.1416", [3.14159265]) == [3.14159265]
    assert leaks("expected 264 pixels", [264.0]) == [264.0]
    assert leaks("2 of 20 inputs", [2.0, 20.0]) == [20.0]


def _tiny_source():
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cells = [new_markdown_cell("# A tiny lesson"), new_code_cell("import torch")]
    for i in range(1, 6):
        kind = "implement" if i <= 2 else "value"
        if kind == "implement":
            sol = f"def f{i}(x):\n    '''x: (N,) -> (N,), {i} times x'''\n    ### BEGIN SOLUTION\n    return {i} * x\n    ### END SOLUTION"
            test = (
                "from p3dlab.classroom import check_function, check_output_shape, factor\n"
                f"check_output_shape(f{i}, (torch.ones(3),), (3,), 'f{i}')\n"
                "### BEGIN HIDDEN TESTS\n"
                f"check_function(f{i}, lambda x: {i} * x, [(torch.rand(4),) for _ in range(5)], 'f{i}',"
                " hints=[factor(0.5, 'half of it')])\n### END HIDDEN TESTS"
            )
            wrong = f"return {i / 2} * x"
        else:
            sol = f"a{i} = None  # float\n### BEGIN SOLUTION\na{i} = {i}.5\n### END SOLUTION"
            test = (
                "from p3dlab.classroom import check_close, factor\n### BEGIN HIDDEN TESTS\n"
                f"check_close(a{i}, {i}.5, 'a{i}', hints=[factor(2, 'half of it')])\n### END HIDDEN TESTS"
            )
            wrong = f"a{i} = {2 * (i + 0.5)}"
        cells += [
            locked_cell(f"ex{i}_text", f"**Exercise {i}**"),
            solution_cell(f"ex{i}", sol, kind=kind, wrong_answer=wrong, wrong_feedback="half of it"),
            course.test_cell(f"ex{i}_test", test, points=2),
        ]
    cells.append(task_cell("task", "**Task.** Explain.", points=2))
    nb.cells = cells
    return nb


def test_release_strips_solutions_hidden_tests_and_grading_metadata():
    src = _tiny_source()
    assert validate_source(src) == []
    rel = release_notebook(src)
    text = "\n".join(c.source for c in rel.cells)
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text and "check_function(" not in text
    assert "return 1 * x" not in text and "2.5" not in text and text.count("run_sealed(globals()") == 5
    dropped = "\n".join(c.source for c in release_notebook(src, hidden="drop").cells)
    assert "run_sealed" not in dropped and "HIDDEN TESTS" not in dropped and "2.5" not in dropped
    assert rel.cells[3].source == "def f1(x):\n    '''x: (N,) -> (N,), 1 times x'''\n    " + SOLUTION_STUB
    assert rel.cells[9].source == f"a3 = None  # float\n{SOLUTION_STUB}"
    assert all("p3dlab" not in c.metadata for c in rel.cells)
    assert rel.cells[4].metadata["editable"] is False and rel.cells[3].metadata["deletable"] is False
    assert "editable" not in rel.cells[3].metadata  # students edit their answer cells
    assert [e["kind"] for e in exercises(src)] == ["implement"] * 2 + ["value"] * 3 + ["task"]
    wrong = wrong_submission(src)
    assert "return 0.5 * x" in wrong.cells[3].source and "a3 = 7.0" in wrong.cells[9].source


def test_released_tiny_lesson_runs_solved_untouched_and_wrong(tmp_path):
    src = _tiny_source()
    solved = NotebookClient(src, timeout=120, allow_errors=True).execute()
    untouched = NotebookClient(release_notebook(src), timeout=120, allow_errors=True).execute()
    wrong = NotebookClient(wrong_submission(src, hidden="seal"), timeout=120, allow_errors=True).execute()

    def errors(nb):
        return [
            "\n".join(o["traceback"])
            for c in nb.cells
            if c.cell_type == "code"
            for o in c.outputs
            if o.output_type == "error"
        ]

    assert errors(solved) == []
    tests = [c for c in untouched.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert len(tests) == 5 and all("write your solution" in errors(new_notebook(cells=[c]))[0] for c in tests)
    wrong_errors = [e for e in errors(wrong) if "✗" in e]
    assert len(wrong_errors) == 5 and all("half of it" in e and "\n" not in e for e in wrong_errors)


def test_validate_finds_format_problems():
    nb = _tiny_source()
    nb.cells[3].metadata["p3dlab"].pop("wrong_answer")
    nb.cells[4].metadata["nbgrader"]["locked"] = False
    del nb.cells[-1]
    nb.cells.append(new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION"))
    found = "\n".join(validate_source(nb))
    assert "wrong_answer" in found and "locked" in found and "task cell" in found and "without nbgrader" in found
    few = _tiny_source()
    few.cells = few.cells[:5]
    assert any("at least 5" in p for p in validate_source(few))


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem[:2] for p in SOURCES])
def test_every_lesson_source_follows_the_course_format(source):
    assert validate_source(nbformat.read(str(source), as_version=4)) == []


def test_lessons_folder_is_the_release_of_the_sources():
    drifted = release_course(ROOT / "course" / "source", ROOT / "lessons", check=True)
    assert drifted == [], "run `make release` and commit lessons/"


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem[:2] for p in SOURCES])
def test_released_lessons_hold_no_solutions(source):
    rel = nbformat.read(str(ROOT / "lessons" / source.name), as_version=4)
    text = "\n".join(c.source for c in rel.cells)
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    assert all(not c.get("outputs") for c in rel.cells if c.cell_type == "code")


def test_the_book_reports_time_peak_memory_and_budget(tmp_path, monkeypatch):
    """``make book``'s table: each lesson's time, its kernel's peak and final memory, and whether it
    fits the budget; the memory probe is not left in the exported book."""
    import nbformat

    from p3dlab.classroom import book

    lessons = tmp_path / "lessons"
    lessons.mkdir()
    for name, code in [
        ("01_small", "x = 1 + 1"),
        ("02_big", "import numpy as np\nbig = np.ones(40_000_000)  # 320 MB\ndel big"),
    ]:
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)]), lessons / f"{name}.ipynb")
    monkeypatch.setattr(book, "BUDGET_FAST", (0.001, None))  # every lesson over its time budget
    rows = book.build_book(lessons, tmp_path / "book", timeout=120, fast=True)
    (small, s_sec, s_status, s_peak, s_end, s_over), (big, b_sec, b_status, b_peak, b_end, b_over) = rows
    assert (small, big, s_status, b_status) == ("01_small", "02_big", "ok", "ok")
    assert b_peak > s_peak + 290 and b_end < b_peak - 250  # the array counted at its peak, freed by the end
    assert s_over == [f"{s_sec:.0f} s > 0 s"] and len(b_over) == 1
    table = (tmp_path / "book" / "timings.md").read_text()
    assert "| peak MB | MB at the end | budget |" in table and table.count("| over: ") == 2
    monkeypatch.setattr(book, "BUDGET_FAST", (60.0, s_peak + 150))  # a memory bound between the two
    assert book.over_budget(s_sec, s_peak, fast=True) == [] and book.over_budget(b_sec, b_peak, fast=True) == [
        f"{b_peak:.0f} MB > {s_peak + 150:.0f} MB"
    ]
    assert book.over_budget(200.0, 1300.0, fast=False) == ["200 s > 180 s", "1300 MB > 1200 MB"]
    exported = nbformat.read(tmp_path / "book" / "02_big.ipynb", as_version=4)
    assert len(exported.cells) == 1 and "P3DLAB_MEMORY" not in (tmp_path / "book" / "02_big.html").read_text()
