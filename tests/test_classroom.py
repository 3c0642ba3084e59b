from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbformat.v4 import new_code_cell, new_notebook

from p3dlab import data
from p3dlab.classroom import (
    check_close,
    check_gradient,
    check_outward,
    check_shape,
    make_instructor_version,
    make_student_version,
)

LESSONS = sorted((Path(__file__).resolve().parents[1] / "lessons").glob("*.ipynb"))


def test_checks_pass_and_fail_with_messages(capsys):
    check_close([1.0, 2.0], [1.0, 2.0 + 1e-9], name="pair")
    assert "pair: correct" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="(?s)expected \\[3.0\\].*Hint: add"):
        check_close([2.0], [3.0], hint="add one")
    with pytest.raises(AssertionError, match="shape"):
        check_shape(torch.zeros(2, 3), (3, 2))
    check_outward(data.cube())
    with pytest.raises(AssertionError, match="inward"):
        check_outward(data.cube(inverted=True))
    check_gradient(lambda x: (x**3).sum(), [torch.rand(3)])
    with pytest.raises(AssertionError, match="disagree"):
        check_gradient(_BadGrad.apply, [torch.rand(3)])


class _BadGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return (x**2).sum()

    @staticmethod
    def backward(ctx, g):
        return g * torch.ones(3, dtype=torch.float64)  # wrong on purpose


def _tiny_notebook(path):
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        new_code_cell("def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"),
        new_code_cell("from p3dlab.classroom import check_close\ncheck_close(double(21), 42)"),
    ]
    hidden = new_code_cell("assert double(0) == 0")
    hidden.metadata["tags"] = ["hidden"]
    nb.cells.append(hidden)
    nbformat.write(nb, str(path))


def test_student_version_fails_its_checks_and_instructor_version_passes(tmp_path):
    src = tmp_path / "lesson.ipynb"
    _tiny_notebook(src)
    make_student_version(src, tmp_path / "student.ipynb")
    make_instructor_version(src, tmp_path / "instructor.ipynb")
    student = nbformat.read(str(tmp_path / "student.ipynb"), as_version=4)
    assert "return 2 * x" not in student.cells[0].source and "NotImplementedError" in student.cells[0].source
    assert len(student.cells) == 2  # the hidden check is removed
    instructor = nbformat.read(str(tmp_path / "instructor.ipynb"), as_version=4)
    assert "BEGIN SOLUTION" not in instructor.cells[0].source and "return 2 * x" in instructor.cells[0].source
    NotebookClient(instructor, timeout=60).execute()
    with pytest.raises(CellExecutionError, match="NotImplementedError"):
        NotebookClient(student, timeout=60).execute()


@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_every_lesson_has_exercises_with_solutions_to_strip(lesson, tmp_path):
    src = nbformat.read(str(lesson), as_version=4)
    blocks = sum(c.source.count("### BEGIN SOLUTION") for c in src.cells if c.cell_type == "code")
    assert blocks >= 2, "every lesson ends with auto-checked exercises"
    make_student_version(lesson, tmp_path / "s.ipynb")
    student = nbformat.read(str(tmp_path / "s.ipynb"), as_version=4)
    text = "\n".join(c.source for c in student.cells if c.cell_type == "code")
    assert "BEGIN SOLUTION" not in text and text.count("NotImplementedError") >= blocks
