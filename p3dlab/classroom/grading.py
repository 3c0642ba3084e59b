"""Checks for graded exercises: one line of feedback that says what is wrong and hints, never the answer.

A check prints ``✓ `name` is correct`` when the answer is right and raises :class:`ExerciseFailed`
otherwise. IPython shows that exception as the one line of its message (no traceback), and nbgrader
scores a test cell with an error as 0, so the same checks serve students running a lesson and a
teacher autograding a class.

Messages never contain the expected value. They say what kind of thing is wrong (shape, sign, too
large or too small, how many of the hidden inputs fail) and, when a :class:`Diagnosis` recognises a
typical mistake (a factor of 2, a transposed matrix, a known wrong formula), its hint. An answer that
is still the stub (``None``, ``...``, or a function that raises ``NotImplementedError``) gets the
message "write your solution ...".

Setting ``P3DLAB_GRADING_LOG`` to a file path makes every check append one JSON line (its name, pass
or fail, its message, the expected values and the kernel's working folder, which tells the students
of one ``nbgrader autograde`` apart), so tests can prove no message leaks an answer.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any, Callable, Iterable, Optional, Sequence

import torch

from p3dlab.errors import P3DLabError

NOT_WRITTEN = "write your solution in its cell (replace the line that raises NotImplementedError)"


class ExerciseFailed(P3DLabError, AssertionError):
    """A wrong or missing answer. Shown by IPython as its one-line message, without a traceback."""

    def _render_traceback_(self):  # IPython's hook for custom error display
        return [f"\x1b[31m✗ {self}\x1b[0m"]


# --------------------------------------------------------------------------------------------------
# Diagnoses: typical mistakes recognised in a wrong answer, each with its hint.


class Diagnosis:
    """A typical mistake: ``matches(value, expected, args)`` says whether a wrong answer shows it.

    ``value`` and ``expected`` are float64 tensors (for a function check, the outputs on the first
    failing input, whose arguments are ``args``; otherwise ``args`` is ``None``).
    """

    def __init__(self, matches: Callable[[torch.Tensor, torch.Tensor, Optional[tuple]], bool], hint: str):
        self._matches, self.hint = matches, hint

    def matches(self, value, expected, args=None) -> bool:
        try:
            return bool(self._matches(value, expected, args))
        except Exception:  # a diagnosis that cannot apply (shapes differ, ...) does not match
            return False


def _near(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return a.shape == b.shape and bool(torch.allclose(a, b, atol=atol, rtol=rtol, equal_nan=False))


def factor(k: float, hint: str) -> Diagnosis:
    """The answer is ``k`` times the right one (a missing half-angle, a doubled area, ...)."""
    return Diagnosis(lambda v, e, a: _near(v, k * e), hint)


def negated(hint: str) -> Diagnosis:
    """The answer has the wrong sign (a winding order, a flipped axis)."""
    return Diagnosis(lambda v, e, a: _near(v, -e), hint)


def transposed(hint: str = "row vectors: points multiply as `X @ R`, not `R @ X`") -> Diagnosis:
    """The answer is the transpose of the right matrix (or batch of matrices)."""
    return Diagnosis(lambda v, e, a: _near(v, e.transpose(-1, -2)), hint)


def equals(alternative, hint: str) -> Diagnosis:
    """The answer equals a known wrong answer: a value, or a function of the inputs."""

    def matches(v, e, a):
        alt = alternative(*a) if callable(alternative) else alternative
        return _near(v, _as_float64(alt))

    return Diagnosis(matches, hint)


def when(predicate: Callable[..., bool], hint: str) -> Diagnosis:
    """Any other test: ``predicate(value, expected)`` (or ``(value, expected, args)`` for functions)."""

    def matches(v, e, a):
        return predicate(v, e) if a is None else predicate(v, e, a)

    return Diagnosis(matches, hint)


# --------------------------------------------------------------------------------------------------
# Checks.


def _log(name: str, passed: bool, message: str, expected) -> None:
    path = os.environ.get("P3DLAB_GRADING_LOG")
    if not path:
        return
    numbers = []
    for e in expected if isinstance(expected, (list, tuple)) else [expected]:
        try:
            numbers += torch.as_tensor(e, dtype=torch.float64).flatten()[:256].tolist()
        except Exception:
            numbers.append(str(e))
    with open(path, "a", encoding="utf-8") as f:
        entry = {"name": name, "passed": passed, "message": message, "expected": numbers, "cwd": os.getcwd()}
        f.write(json.dumps(entry) + "\n")


def _fail(name: str, message: str, expected=None, hint: Optional[str] = None):
    text = message + (f" Hint: {hint}" if hint else "")
    text = " ".join(text.split())  # one line, whatever the hint's formatting
    _log(name, False, text, expected)
    raise ExerciseFailed(text)


def _pass(name: str, expected=None, note: str = "") -> None:
    _log(name, True, "", expected)
    print(f"✓ `{name}` is correct" + (f" — {note}" if note else ""))


def _is_stub(value) -> bool:
    return value is None or value is Ellipsis


def _as_float64(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64)
    return torch.as_tensor(x, dtype=torch.float64)


def _describe_difference(v: torch.Tensor, e: torch.Tensor, atol: float, rtol: float) -> str:
    """What is wrong, in words that do not give the expected value away."""
    if not torch.isfinite(v).all():
        return "contains NaN or infinite values"
    if v.numel() == 1:
        return "is too large" if float(v) > float(e) else "is too small"
    wrong = ~torch.isclose(v, e, atol=atol, rtol=rtol)
    n_wrong, n = int(wrong.sum()), v.numel()
    if n_wrong == n:
        return "has the right shape but every entry is wrong"
    first = tuple(int(i) for i in torch.nonzero(wrong)[0])
    where = first[0] if len(first) == 1 else first
    return f"has the right shape but {n_wrong} of {n} entries are wrong (the first at index {where})"


def _diagnose(v, e, args, hints: Sequence[Diagnosis]) -> Optional[str]:
    for d in hints:
        if d.matches(v, e, args):
            return d.hint
    return None


def check_close(
    value,
    expected,
    name: str = "answer",
    atol: float = 1e-6,
    rtol: float = 1e-5,
    hint: Optional[str] = None,
    hints: Sequence[Diagnosis] = (),
) -> None:
    """``value`` must equal ``expected`` within tolerance (a number, a sequence or a tensor).

    ``hints`` are tried in order on a wrong answer; the first that matches gives the hint, otherwise
    ``hint`` (a general one) is shown.
    """
    if _is_stub(value):
        _fail(name, f"`{name}` is not set yet: {NOT_WRITTEN}.", expected)
    try:
        v = _as_float64(value)
    except Exception:
        _fail(name, f"`{name}` should be a number or a tensor of numbers, not {type(value).__name__}.", expected, hint)
    e = _as_float64(expected)
    if v.shape != e.shape and not (v.numel() == 1 and e.numel() == 1):
        _fail(name, f"`{name}` has shape {tuple(v.shape)} but should have shape {tuple(e.shape)}.", expected, hint)
    v = v.reshape(e.shape)
    if torch.isfinite(v).all() and torch.allclose(v, e, atol=atol, rtol=rtol):
        _pass(name, expected)
        return
    _fail(name, f"`{name}` {_describe_difference(v, e, atol, rtol)}.", expected, _diagnose(v, e, None, hints) or hint)


def check_equal(value, expected, name: str = "answer", hint: Optional[str] = None, hints: dict | None = None) -> None:
    """``value == expected`` for integers, booleans and strings. ``hints`` maps known wrong answers to hints."""
    if _is_stub(value):
        _fail(name, f"`{name}` is not set yet: {NOT_WRITTEN}.", expected)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if type(expected) is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(expected, bool):
        ok = isinstance(value, bool) and value is expected
    else:
        ok = not isinstance(value, bool) and value == expected
    if ok:
        _pass(name, expected)
        return
    known = (hints or {}).get(value) if _hashable(value) else None
    if isinstance(expected, (int, float)) and not isinstance(expected, bool) and isinstance(value, (int, float)):
        what = "too large" if value > expected else "too small"
        _fail(name, f"`{name}` is {what}.", expected, known or hint)
    _fail(name, f"`{name}` is not right.", expected, known or hint)


def _hashable(x) -> bool:
    try:
        hash(x)
        return True
    except TypeError:
        return False


def _call(fn, name: str, args):
    try:
        return fn(*args)
    except NotImplementedError:
        _fail(name, f"`{name}` is not written yet: {NOT_WRITTEN}.")
    except ExerciseFailed:
        raise
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        _fail(name, f"`{name}` raised {type(exc).__name__}" + (f": {detail}" if detail else "") + ".")


def _outputs(x) -> list:
    return list(x) if isinstance(x, (tuple, list)) else [x]


def check_function(
    fn,
    reference: Callable,
    inputs: Iterable[tuple],
    name: str = "function",
    atol: float = 1e-5,
    rtol: float = 1e-4,
    hint: Optional[str] = None,
    hints: Sequence[Diagnosis] = (),
    describe: Optional[Callable[[tuple], str]] = None,
) -> None:
    """``fn(*args)`` must equal ``reference(*args)`` on every argument tuple of ``inputs``.

    Lessons pass hidden random inputs (in a hidden-test region) and the library's implementation as
    ``reference``. The message counts the failing inputs and, through ``describe(args)``, may say what
    kind of input the first failure was (never its expected output).
    """
    if _is_stub(fn) or not callable(fn):
        _fail(name, f"`{name}` is not a function yet: {NOT_WRITTEN}.")
    inputs = list(inputs)
    failures, first = 0, None
    expected_all = []
    for args in inputs:
        got = _outputs(_call(fn, name, args))
        want = _outputs(reference(*args))
        expected_all += [_as_float64(w) for w in want]
        if len(got) != len(want):
            _fail(name, f"`{name}` returns {len(got)} value(s) but should return {len(want)}.", expected_all, hint)
        for g, w in zip(got, want):
            try:
                g64 = _as_float64(g)
            except Exception:
                _fail(name, f"`{name}` should return a tensor, not {type(g).__name__}.", expected_all, hint)
            w64 = _as_float64(w)
            if g64.shape != w64.shape:
                _fail(
                    name,
                    f"`{name}` returns shape {tuple(g64.shape)} where {tuple(w64.shape)} is needed.",
                    expected_all,
                    hint,
                )
            if not (torch.isfinite(g64).all() and torch.allclose(g64, w64, atol=atol, rtol=rtol)):
                failures += 1
                if first is None:
                    first = (g64, w64, args)
                break
    if failures == 0:
        _pass(name, expected_all, f"{len(inputs)} hidden inputs checked")
        return
    g64, w64, args = first
    kind = f" (the first: {describe(args)})" if describe else ""
    _fail(
        name,
        f"`{name}` gives wrong results on {failures} of {len(inputs)} hidden random inputs{kind}.",
        expected_all,
        _diagnose(g64, w64, args, hints) or hint,
    )


def check_choice(value, correct, options: Sequence, name: str = "answer", hints: dict | None = None) -> None:
    """A multiple-choice answer: ``value`` must be one of ``options`` and equal ``correct``."""
    if _is_stub(value):
        _fail(name, f"`{name}` is not set yet: {NOT_WRITTEN}.", correct)
    if value not in options:
        _fail(name, f"`{name}` must be one of {', '.join(repr(o) for o in options)}.")
    if value == correct:
        _pass(name, correct)
        return
    _fail(name, f"`{name}` is not the right choice.", correct, (hints or {}).get(value))


def check_shape(tensor, shape: Sequence[int], name: str = "tensor", hint: Optional[str] = None) -> None:
    """``tensor`` must be a tensor of the given shape (the stub's docstring states the shape)."""
    if _is_stub(tensor):
        _fail(name, f"`{name}` is not set yet: {NOT_WRITTEN}.")
    if not isinstance(tensor, torch.Tensor):
        _fail(name, f"`{name}` should be a torch.Tensor, not {type(tensor).__name__}.", None, hint)
    if tuple(tensor.shape) != tuple(shape):
        _fail(name, f"`{name}` has shape {tuple(tensor.shape)} but should have shape {tuple(shape)}.", None, hint)
    print(f"✓ `{name}` has shape {tuple(shape)}")


def check_written(value, name: str = "answer", types: tuple = (), hint: Optional[str] = None):
    """``value`` must be set (not the stub's ``None``) and, when ``types`` are given, one of them.

    The visible part of a value exercise whose checks are hidden: it tells an unanswered exercise
    ("write your solution") and a wrong type apart from a wrong value, without judging the value.
    """
    if _is_stub(value):
        _fail(name, f"`{name}` is not set yet: {NOT_WRITTEN}.")
    if types and not _is_instance(value, tuple(types)):
        wanted = " or ".join(_a(t.__name__) for t in types)
        _fail(name, f"`{name}` should be {wanted}, not {type(value).__name__}.", None, hint)
    print(f"✓ `{name}` is set ({type(value).__name__})")
    return value


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _is_instance(value, types: tuple) -> bool:
    """``isinstance``, with NumPy's and torch's scalar numbers counted as ``int`` / ``float``."""
    import numbers

    if isinstance(value, bool):
        return bool in types
    if isinstance(value, types):
        return True
    if int in types and isinstance(value, numbers.Integral):
        return True
    return float in types and isinstance(value, numbers.Real)


def _is_shape(shape) -> bool:
    return all(isinstance(d, int) for d in shape)


def check_output_shape(fn, args: tuple, shape, name: str = "function", hint: Optional[str] = None):
    """``fn(*args)`` must run and return a tensor of ``shape`` (or a tuple of tensors, one shape each).

    The visible part of an "implement it" test: a stub that still raises ``NotImplementedError`` gets
    "write your solution", any other exception one line naming it. Returns the output.
    """
    if _is_stub(fn) or not callable(fn):
        _fail(name, f"`{name}` is not a function yet: {NOT_WRITTEN}.")
    out = _call(fn, name, args)
    shapes = [tuple(shape)] if _is_shape(shape) else [tuple(s) for s in shape]
    outs = [out] if _is_shape(shape) else (list(out) if isinstance(out, (tuple, list)) else [out])
    if len(outs) != len(shapes):
        _fail(name, f"`{name}` should return {len(shapes)} tensors, not {len(outs)} value(s).", None, hint)
    for k, (o, sh) in enumerate(zip(outs, shapes)):
        which = f"output {k} of `{name}`" if len(shapes) > 1 else f"`{name}`"
        if not isinstance(o, torch.Tensor):
            _fail(name, f"{which} should be a torch.Tensor, not {type(o).__name__}.", None, hint)
        if tuple(o.shape) != sh:
            _fail(name, f"{which} has shape {tuple(o.shape)} but should have shape {sh}.", None, hint)
    shown = ", ".join(str(s) for s in shapes)
    print(f"✓ `{name}` runs and returns shape {shown}")
    return out


def check_outward(mesh, name: str = "mesh", hint: Optional[str] = "reverse the faces with faces[:, [0, 2, 1]]") -> None:
    """A closed mesh must be wound outward: positive signed volume ``sum v0 . (v1 x v2) / 6``."""
    if _is_stub(mesh):
        _fail(name, f"`{name}` is not set yet: {NOT_WRITTEN}.")
    v, f = mesh.verts_packed(), mesh.faces_packed()
    vol = float((v[f[:, 0]] * torch.cross(v[f[:, 1]], v[f[:, 2]], dim=1)).sum() / 6)
    if not vol > 0:
        _fail(name, f"`{name}` has signed volume {vol:.4g} <= 0: its faces are wound inward.", None, hint)
    _pass(name, None, f"wound outward (signed volume {vol:.4g})")


def check_gradient(fn, inputs, name: str = "gradient", hint: Optional[str] = None) -> None:
    """``torch.autograd.gradcheck`` of ``fn`` on float64 copies of ``inputs``."""
    if _is_stub(fn) or not callable(fn):
        _fail(name, f"`{name}` is not a function yet: {NOT_WRITTEN}.")
    ins = tuple(_as_float64(x).requires_grad_(True) for x in inputs)
    try:
        ok = torch.autograd.gradcheck(fn, ins, raise_exception=False)
    except NotImplementedError:
        _fail(name, f"`{name}` is not written yet: {NOT_WRITTEN}.")
    except Exception as exc:  # the function itself failed
        _fail(name, f"`{name}` raised {type(exc).__name__}: {str(exc)[:160]}.", None, hint)
    if not ok:
        _fail(name, f"`{name}`: analytic and numerical gradients disagree.", None, hint)
    _pass(name)


# --------------------------------------------------------------------------------------------------
# Sealed checks: the self-study release (lessons/) keeps the hidden tests, unreadable at a glance.

_SEAL_KEY = b"p3dlab: the answer is in the lesson, not in this string"


def _xor(data: bytes) -> bytes:
    key = _SEAL_KEY * (len(data) // len(_SEAL_KEY) + 1)
    return bytes(a ^ b for a, b in zip(data, key))


def seal(code: str) -> str:
    """``code`` scrambled and base64-encoded: not readable at a glance, the same bytes everywhere.

    This is not security (``unseal`` is public): it keeps the expected values of the self-study
    release out of sight. Graded courses hand out nbgrader's release, which has no hidden tests.
    """
    import base64

    return base64.b64encode(_xor(code.encode("utf-8"))).decode("ascii")


def unseal(token: str) -> str:
    import base64

    return _xor(base64.b64decode(token)).decode("utf-8")


def run_sealed(namespace: dict, token: str) -> None:
    """Run sealed checks in the notebook's namespace (``globals()``): the student's answers are there."""
    exec(compile(unseal(token), "<hidden checks>", "exec"), namespace)


_STRUCTURAL = re.compile(r"\d+ of \d+ (hidden random inputs|entries)|index \(?[\d, ]+\)?|shape \([\d, ]*\)")


def leaks(message: str, expected: Iterable[Any]) -> list:
    """The expected values that ``message`` shows, in any of the usual printed forms.

    Integers below 10 in absolute value are not counted (they appear in any sentence), nor are the
    counts, indices and shapes the checks' own sentences state ("7 of 20 hidden random inputs").
    """
    message = _STRUCTURAL.sub("", message)
    found = []
    for x in expected:
        if isinstance(x, str):
            if len(x) > 2 and x in message:
                found.append(x)
            continue
        if not math.isfinite(x):
            continue
        if float(x).is_integer():
            if abs(x) >= 10 and str(int(x)) in message.replace(",", ""):
                found.append(x)
            continue
        forms = {repr(x), f"{x:.2f}", f"{x:.3f}", f"{x:.4f}", f"{x:.3g}", f"{x:.4g}", f"{x:.5g}"}
        forms = {f for f in forms if len(f.strip("-0.")) >= 2}  # "0.1" alone is too common to count
        if any(f in message for f in forms):
            found.append(x)
    return found
