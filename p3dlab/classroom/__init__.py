"""Exercises that grade themselves, and student / instructor versions of the lessons.

Checks raise ``AssertionError`` with a friendly message (and a hint) when an answer is wrong and
print a short confirmation when it is right, so they work with nbgrader's conventions without
requiring nbgrader.

Lessons mark solutions nbgrader-style::

    ### BEGIN SOLUTION
    answer = 42
    ### END SOLUTION

``make_student_version`` replaces every such block by ``raise NotImplementedError("...")`` (indented
like the block) and drops cells tagged ``hidden`` (hidden checks); ``make_instructor_version`` only
removes the marker lines. ``python -m p3dlab.classroom student|instructor SRC DST``.
"""

from __future__ import annotations

import copy
import re
import sys
from typing import Optional, Sequence

import torch

_BEGIN = re.compile(r"^(\s*)### BEGIN SOLUTION\s*$")
_END = re.compile(r"^\s*### END SOLUTION\s*$")


def _fail(message: str, hint: Optional[str]) -> None:
    raise AssertionError(message + (f"\nHint: {hint}" if hint else ""))


def check_close(
    value, expected, name: str = "answer", atol: float = 1e-6, rtol: float = 1e-5, hint: Optional[str] = None
) -> None:
    """``value`` must equal ``expected`` within tolerance (numbers, sequences or tensors)."""
    v = torch.as_tensor(value, dtype=torch.float64)
    e = torch.as_tensor(expected, dtype=torch.float64)
    if v.shape != e.shape:
        _fail(f"{name}: expected shape {tuple(e.shape)}, got {tuple(v.shape)}", hint)
    if not torch.allclose(v, e, atol=atol, rtol=rtol):
        _fail(f"{name}: expected {e.tolist()}, got {v.tolist()}", hint)
    print(f"{name}: correct")


def check_shape(tensor, shape: Sequence[int], name: str = "tensor", hint: Optional[str] = None) -> None:
    if tuple(tensor.shape) != tuple(shape):
        _fail(f"{name}: expected shape {tuple(shape)}, got {tuple(tensor.shape)}", hint)
    print(f"{name}: shape {tuple(shape)} correct")


def check_outward(mesh, name: str = "mesh", hint: Optional[str] = "reverse the faces with faces[:, [0, 2, 1]]") -> None:
    """A closed mesh must be wound outward: positive signed volume ``sum v0 . (v1 x v2) / 6``."""
    v, f = mesh.verts_packed(), mesh.faces_packed()
    vol = float((v[f[:, 0]] * torch.cross(v[f[:, 1]], v[f[:, 2]], dim=1)).sum() / 6)
    if vol <= 0:
        _fail(f"{name}: signed volume {vol:.4g} <= 0, the faces are wound inward", hint)
    print(f"{name}: wound outward (signed volume {vol:.4g})")


def check_gradient(fn, inputs, name: str = "gradient", hint: Optional[str] = None) -> None:
    """``torch.autograd.gradcheck`` on float64 copies of ``inputs``."""
    ins = tuple(torch.as_tensor(x, dtype=torch.float64).detach().requires_grad_(True) for x in inputs)
    try:
        ok = torch.autograd.gradcheck(fn, ins, raise_exception=False)
    except Exception as e:  # the function itself failed
        _fail(f"{name}: the function raised {type(e).__name__}: {e}", hint)
    if not ok:
        _fail(f"{name}: analytic and numerical gradients disagree", hint)
    print(f"{name}: correct")


def _strip_solutions(source: str, student: bool) -> str:
    out, inside = [], False
    for line in source.split("\n"):
        m = _BEGIN.match(line)
        if m:
            inside = True
            if student:
                out.append(f'{m.group(1)}raise NotImplementedError("write your solution here")')
            continue
        if _END.match(line):
            inside = False
            continue
        if not (inside and student):
            out.append(line)
    if inside:
        raise ValueError("a '### BEGIN SOLUTION' has no matching '### END SOLUTION'")
    return "\n".join(out)


def _convert(nb, student: bool):
    nb = copy.deepcopy(nb)
    cells = []
    for cell in nb.cells:
        if student and "hidden" in cell.get("metadata", {}).get("tags", []):
            continue
        if cell.cell_type == "code":
            cell.source = _strip_solutions(cell.source, student)
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    nb.cells = cells
    return nb


def make_student_version(src, dst) -> None:
    """Write the student notebook: solutions replaced by ``NotImplementedError``, hidden cells removed."""
    import nbformat

    nbformat.write(_convert(nbformat.read(str(src), as_version=4), student=True), str(dst))


def make_instructor_version(src, dst) -> None:
    """Write the instructor notebook: solutions kept, marker lines removed."""
    import nbformat

    nbformat.write(_convert(nbformat.read(str(src), as_version=4), student=False), str(dst))


USAGE = """usage:
  python -m p3dlab.classroom student|instructor SRC.ipynb DST.ipynb   student / instructor version
  python -m p3dlab.classroom book [LESSONS_DIR] [OUT_DIR] [--fast]    execute lessons, export HTML + timings
  python -m p3dlab.classroom warmup                                   compile the Numba kernels once"""


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["warmup"]:
        from p3dlab.classroom.warmup import warmup

        print(f"p3dlab kernels compiled and cached in {warmup():.1f} s")
        return 0
    if argv[:1] == ["book"]:
        from p3dlab.classroom.book import build_book

        args = [a for a in argv[1:] if a != "--fast"]
        rows = build_book(*(args[:2]), fast="--fast" in argv)
        return 0 if all(r[2] == "ok" for r in rows) else 1
    if len(argv) != 3 or argv[0] not in ("student", "instructor"):
        print(USAGE, file=sys.stderr)
        return 2
    (make_student_version if argv[0] == "student" else make_instructor_version)(argv[1], argv[2])
    return 0
