"""The checks the operations run at their boundary, where a kernel is called: one small helper per
rule, each raising a ``P3DLabValueError`` that names the operation and the argument as the user
passed it.

A structure is validated when it is built (``Meshes`` checks its faces), but its tensors can be
changed afterwards, in place or through ``.data``, and an index a kernel trusts is a read anywhere
in memory. So every index a kernel (or a torch gather) reads is checked again here, with one
min/max reduction, the cost of reading the indices once; the indices an autograd function saved
for its backward are checked again before the backward kernel reads them.

Input rules shared by the kernel-backed operations (``knn_points``, ``chamfer_distance``, the mesh
and point rasterizers, ``marching_cubes``, ``sample_points_from_meshes``):

- float16 and bfloat16 tensors are refused, with a message saying to call ``.float()``: the
  kernels compute in float32 or float64, and a silent round trip through float32 would hide where
  the precision went;
- complex tensors are refused: no operation here has a meaning for them;
- counts (``K``, ``num_samples``, ``faces_per_pixel``...) are Python (or NumPy, or 0-d tensor)
  integers, never floats or bools.
"""

from __future__ import annotations

import math
import operator

import torch

from p3dlab.errors import P3DLabValueError

_HALF = (torch.float16, torch.bfloat16)


def check_kernel_dtype(t: torch.Tensor, name: str, op: str, fix: str = "") -> None:
    """Refuse float16/bfloat16 (saying what to do: ``fix``, by default "pass {name}.float()") and
    complex tensors for a kernel-backed op."""
    if t.dtype in _HALF:
        fix = fix or f"pass {name}.float()"
        raise P3DLabValueError(f"{op}: {name} is {t.dtype}; p3dlab's kernels compute in float32 or float64: {fix}")
    if t.is_complex():
        raise P3DLabValueError(f"{op}: {name} is complex ({t.dtype}); pass a real floating-point tensor")


def check_count(value, name: str, op: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``: an int, a NumPy integer or a 0-d integer tensor, never a
    float or a bool (``2.0`` is refused rather than truncated)."""
    if isinstance(value, bool) or (torch.is_tensor(value) and (value.ndim or value.is_floating_point())):
        raise P3DLabValueError(f"{op}: {name} must be an int >= {minimum}, got {value!r}")
    try:
        n = operator.index(value)
    except TypeError:
        raise P3DLabValueError(f"{op}: {name} must be an int >= {minimum}, got {value!r}") from None
    if n < minimum:
        raise P3DLabValueError(f"{op}: {name} must be an int >= {minimum}, got {n}")
    return n


def check_finite_number(value, name: str, op: str, minimum: float = -math.inf) -> float:
    """``value`` as a finite float >= ``minimum`` (NaN and infinities refused)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise P3DLabValueError(f"{op}: {name} must be a finite number, got {value!r}") from None
    if not math.isfinite(x) or x < minimum:
        bound = "" if minimum == -math.inf else f" >= {minimum:g}"
        raise P3DLabValueError(f"{op}: {name} must be a finite number{bound}, got {value!r}")
    return x


def index_bounds(idx: torch.Tensor):
    """(min, max) of an integer tensor as Python ints, in one reduction; None for an empty one."""
    if idx.numel() == 0:
        return None
    lo, hi = torch.aminmax(idx)
    return int(lo), int(hi)


def check_index_range(idx: torch.Tensor, low: int, high: int, name: str, op: str, noun: str, of: str) -> None:
    """Every value of ``idx`` in ``[low, high)``, else an error such as "rasterize_meshes:
    meshes.faces_packed() refers to vertex 1000000, outside [0, 2] (the 3 packed vertices)":
    ``noun`` is what one index points at, ``of`` what they index. ``low = -1`` admits PyTorch3D's
    padding value -1 and nothing below it."""
    bounds = index_bounds(idx)
    if bounds is None:
        return
    lo, hi = bounds
    if lo < low or hi >= high:
        bad = lo if lo < low else hi
        padding = "; -1 is the only padding value" if low == -1 and bad < -1 else ""
        raise P3DLabValueError(f"{op}: {name} refers to {noun} {bad}, outside [{low}, {high - 1}] ({of}){padding}")


def check_packed_ranges(first: torch.Tensor, counts: torch.Tensor, total: int, name: str, op: str) -> None:
    """Per-item ranges of a packed tensor of ``total`` rows, which a kernel walks without bounds
    checks: counts >= 0, each range starting where the previous one ended, all within ``total``
    rows (``name`` says whose ranges, e.g. "the faces of meshes"). N values: no measurable cost."""
    if counts.numel() == 0:
        return
    ends = torch.cumsum(counts, 0)
    if bool((counts < 0).any()) or not torch.equal(first, ends - counts) or int(ends[-1]) > total:
        raise P3DLabValueError(
            f"{op}: the per-item counts of {name} ({counts.tolist()[:8]}...) do not match its {total} packed rows; "
            "were the structure's cached tensors changed in place?"
        )


def check_saved_indices(idx: torch.Tensor, high: int, shape, name: str, op: str, values: bool = True) -> None:
    """Before a backward kernel reads the indices its forward saved: an integer tensor of the
    forward's ``shape`` with every value in ``[-1, high)``. Anything else means the forward's output
    was changed in place behind autograd's back (through ``.data``, which skips the version check),
    and the kernel would read outside its arrays. ``values=False`` checks the dtype and shape only,
    for a kernel that checks each index it reads itself (``saved_index_error`` reports what it found)."""
    problem = None
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        problem = f"{name} is {idx.dtype}"
    elif tuple(idx.shape) != tuple(shape):
        problem = f"{name} has shape {tuple(idx.shape)}, not {tuple(shape)}"
    elif values:
        bounds = index_bounds(idx)
        if bounds is not None and (bounds[0] < -1 or bounds[1] >= high):
            bad = bounds[0] if bounds[0] < -1 else bounds[1]
            problem = f"{name} holds {bad}, outside [-1, {high - 1}]"
    if problem:
        raise saved_index_error(problem, op)


def saved_index_error(problem: str, op: str) -> P3DLabValueError:
    """The error for saved indices changed after the forward pass (``check_saved_indices``)."""
    return P3DLabValueError(
        f"{op} (backward): the saved fragments were modified after the forward pass: {problem}. "
        "Do not write into the fragments (e.g. through .data); clone them first"
    )
