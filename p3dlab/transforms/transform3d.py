"""Batched 3D transforms in the **row-vector** convention (PyTorch3D's ``Transform3d``).

A point is a row ``[x, y, z, 1]`` multiplied on the right: ``p' = p @ M``, so a 4x4 matrix carries
its translation in the **last row**: ``M = [[R, 0], [t, 1]]`` maps ``x -> x @ R + t``.
Composition reads left to right: ``a.compose(b)`` (or ``a.rotate(...).translate(...)``) applies a
first, then b, and its matrix is ``M_a @ M_b``.

``Rotate(R)`` expects a row-convention R; a textbook / SciPy / ``so3_exp_map`` matrix (column
convention) must be transposed first (``to_row_convention``), otherwise it rotates by -theta.
For column-vector 4x4 matrices (OpenCV, OpenGL) use :func:`from_column_matrix` /
``Transform3d.to_column_matrix``.

Dtypes follow PyTorch3D: ``Translate``/``Scale``/``Rotate``/``RotateAxisAngle`` cast their inputs to
their ``dtype`` argument (float32 unless given), so a float64 rotation from SciPy or NumPy gives a
float32 transform that applies to float32 points; ``Transform3d(matrix=M)`` takes M's dtype; the
``translate``/``scale``/``rotate`` methods build their part in the transform's own dtype. Mixing
dtypes in a composition or between a transform and its points is an error (cast with ``.to``).
"""

from __future__ import annotations

import math
import warnings
from typing import List, Optional

import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.transforms.rotation_conversions import _axis_rotation


def _broadcast_bmm(a: torch.Tensor, b: torch.Tensor, what: str = "Transform3d") -> torch.Tensor:
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise P3DLabValueError(f"{what}: batch sizes {a.shape[0]} and {b.shape[0]} do not broadcast")
    if a.dtype != b.dtype:
        raise P3DLabValueError(
            f"{what}: dtypes {a.dtype} and {b.dtype} differ; build the transforms with one dtype "
            "(the dtype argument) or cast with .to(dtype=...)"
        )
    return a @ b


class Transform3d:
    """A batch of N affine (or projective) transforms stored as (N, 4, 4) row-layout matrices.

    Args:
        dtype, device: of the identity created when ``matrix`` is None.
        matrix: (4, 4) or (N, 4, 4) row-layout matrix.
    """

    def __init__(self, dtype: torch.dtype = torch.float32, device="cpu", matrix: Optional[torch.Tensor] = None):
        if matrix is None:
            matrix = torch.eye(4, dtype=dtype, device=device)[None]
        else:
            if matrix.shape[-2:] != (4, 4) or matrix.ndim not in (2, 3):
                raise P3DLabValueError(f"Transform3d: matrix must be (4, 4) or (N, 4, 4), got {tuple(matrix.shape)}")
            matrix = matrix.reshape(-1, 4, 4)
        self._matrix = matrix
        self._transforms: List["Transform3d"] = []
        self.device = matrix.device
        self.dtype = matrix.dtype

    # -------------------------------------------------------------- matrices
    def get_matrix(self) -> torch.Tensor:
        """(N, 4, 4) matrix of the whole composition, in row layout."""
        m = self._matrix
        for t in self._transforms:
            m = _broadcast_bmm(m, t.get_matrix())
        return m

    def to_column_matrix(self) -> torch.Tensor:
        """(N, 4, 4) matrix for column vectors (``M_col @ [x; 1]``): the transpose."""
        return self.get_matrix().transpose(1, 2)

    def _get_matrix_inverse(self) -> torch.Tensor:
        return torch.linalg.inv(self._matrix)

    def __len__(self) -> int:
        return self.get_matrix().shape[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(N={len(self)}, dtype={self.dtype}, device={self.device})"

    def __getitem__(self, index) -> "Transform3d":
        if isinstance(index, int):
            index = [index]
        return Transform3d(matrix=self.get_matrix()[index])

    # -------------------------------------------------------------- composition
    def compose(self, *others: "Transform3d") -> "Transform3d":
        """Apply self, then each of ``others`` in order."""
        out = Transform3d(matrix=self._matrix)
        out._transforms = self._transforms + list(others)
        for o in others:
            if not isinstance(o, Transform3d):
                raise P3DLabValueError(f"compose expects Transform3d objects, got {type(o).__name__}")
            if o.device != self.device:
                raise P3DLabValueError(f"compose: transforms on {self.device} and {o.device}")
        return out

    def inverse(self, invert_composed: bool = False) -> "Transform3d":
        """The inverse transform: the inverses of the parts in reverse order (or one inversion of
        the composed matrix with ``invert_composed=True``)."""
        if invert_composed or not self._transforms:
            inv = torch.linalg.inv(self.get_matrix()) if invert_composed else self._get_matrix_inverse()
            return Transform3d(matrix=inv)
        parts = [t.inverse() for t in reversed(self._transforms)]
        return parts[0].compose(*parts[1:], Transform3d(matrix=self._get_matrix_inverse()))

    def stack(self, *others: "Transform3d") -> "Transform3d":
        """Concatenate batches of transforms."""
        return Transform3d(matrix=torch.cat([self.get_matrix()] + [o.get_matrix() for o in others], 0))

    def translate(self, *args, **kwargs) -> "Transform3d":
        return self.compose(Translate(*args, device=self.device, dtype=self.dtype, **kwargs))

    def scale(self, *args, **kwargs) -> "Transform3d":
        return self.compose(Scale(*args, device=self.device, dtype=self.dtype, **kwargs))

    def rotate(self, *args, **kwargs) -> "Transform3d":
        return self.compose(Rotate(*args, device=self.device, dtype=self.dtype, **kwargs))

    def rotate_axis_angle(self, *args, **kwargs) -> "Transform3d":
        return self.compose(RotateAxisAngle(*args, device=self.device, dtype=self.dtype, **kwargs))

    # -------------------------------------------------------------- application
    def transform_points(self, points: torch.Tensor, eps: Optional[float] = None) -> torch.Tensor:
        """Apply to (P, 3) or (N, P, 3) points, dividing by the homogeneous w.

        ``eps`` clamps |w| from below (keeping its sign) so projective transforms never divide by 0.
        """
        if points.shape[-1] != 3 or points.ndim not in (2, 3):
            raise P3DLabValueError(f"transform_points: expected (P, 3) or (N, P, 3), got {tuple(points.shape)}")
        M = self.get_matrix()
        pts = points[None] if points.ndim == 2 else points
        if pts.shape[0] != M.shape[0] and 1 not in (pts.shape[0], M.shape[0]):
            raise P3DLabValueError(f"transform_points: {pts.shape[0]} point sets for {M.shape[0]} transforms")
        _check_dtype(points, M, "transform_points")
        out = pts @ M[:, :3, :] + M[:, 3:, :]
        w = out[..., 3:]
        if eps is not None:
            sign = torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w))
            w = sign * w.abs().clamp(min=eps)
        out = out[..., :3] / w
        if points.ndim == 2 and M.shape[0] == 1:
            out = out[0]
        return out

    def transform_normals(self, normals: torch.Tensor) -> torch.Tensor:
        """Apply the inverse-transpose of the linear part to (P, 3) or (N, P, 3) normals."""
        if normals.shape[-1] != 3 or normals.ndim not in (2, 3):
            raise P3DLabValueError(f"transform_normals: expected (P, 3) or (N, P, 3), got {tuple(normals.shape)}")
        A = self.get_matrix()[:, :3, :3]
        _check_dtype(normals, A, "transform_normals")
        out = (normals[None] if normals.ndim == 2 else normals) @ torch.linalg.inv(A).transpose(1, 2)
        if normals.ndim == 2 and A.shape[0] == 1:
            out = out[0]
        return out

    # -------------------------------------------------------------- copies
    def clone(self) -> "Transform3d":
        return Transform3d(matrix=self.get_matrix().clone())

    def detach(self) -> "Transform3d":
        return Transform3d(matrix=self.get_matrix().detach())

    def to(self, device=None, dtype=None) -> "Transform3d":
        return Transform3d(matrix=self.get_matrix().to(device=device, dtype=dtype))

    def cpu(self) -> "Transform3d":
        return self.to("cpu")


def _check_dtype(x: torch.Tensor, M: torch.Tensor, what: str) -> None:
    """PyTorch3D applies a transform only to tensors of its own dtype; say so clearly."""
    if x.dtype != M.dtype:
        raise P3DLabValueError(
            f"{what}: {x.dtype} input for a {M.dtype} transform; cast one of them "
            f"(x.to({M.dtype}) or transform.to(dtype={x.dtype}))"
        )


def from_column_matrix(matrix: torch.Tensor) -> Transform3d:
    """Wrap a column-vector 4x4 matrix (``M @ [x; 1]``, OpenCV/OpenGL style) as a Transform3d."""
    return Transform3d(matrix=matrix.transpose(-1, -2))


def _vec3(x, y, z, dtype, device, name: str) -> torch.Tensor:
    """Parse (N, 3) / (3,) tensors or three scalars / (N,) tensors into an (N, 3) tensor."""
    if y is None and z is None:
        t = torch.as_tensor(x, dtype=dtype, device=device)
        if t.ndim == 1 and t.shape[0] == 3:
            t = t[None]
        if t.ndim != 2 or t.shape[1] != 3:
            raise P3DLabValueError(f"{name}: expected an (N, 3) tensor or three values, got shape {tuple(t.shape)}")
        return t
    if y is None or z is None:
        raise P3DLabValueError(f"{name}: give x, y and z, or one (N, 3) tensor")
    parts = [torch.as_tensor(v, dtype=dtype, device=device).reshape(-1) for v in (x, y, z)]
    n = max(p.shape[0] for p in parts)
    if any(p.shape[0] not in (1, n) for p in parts):
        raise P3DLabValueError(f"{name}: x, y and z have incompatible batch sizes")
    return torch.stack([p.expand(n) for p in parts], 1)


def _device_of(x, device):
    """PyTorch3D's rule: the given device, else the input tensor's, else the CPU."""
    if device is not None:
        return device
    return x.device if isinstance(x, torch.Tensor) else "cpu"


class Translate(Transform3d):
    """``x -> x + t``. ``Translate(x, y, z)`` or ``Translate(t)`` with t (N, 3), cast to ``dtype``."""

    def __init__(self, x, y=None, z=None, dtype: torch.dtype = torch.float32, device=None):
        t = _vec3(x, y, z, dtype, _device_of(x, device), "Translate")
        m = torch.eye(4, dtype=t.dtype, device=t.device).repeat(t.shape[0], 1, 1)
        m[:, 3, :3] = t
        super().__init__(matrix=m)

    def _get_matrix_inverse(self) -> torch.Tensor:
        inv = self._matrix.clone()
        inv[:, 3, :3] = -self._matrix[:, 3, :3]
        return inv


class Scale(Transform3d):
    """``x -> x * s`` per axis. ``Scale(s)`` (uniform), ``Scale(sx, sy, sz)`` or ``Scale(s (N, 3))``,
    cast to ``dtype``."""

    def __init__(self, x, y=None, z=None, dtype: torch.dtype = torch.float32, device=None):
        device, dt = _device_of(x, device), dtype
        if y is None and z is None:
            t = torch.as_tensor(x, dtype=dt, device=device)
            if t.ndim == 0 or (t.ndim == 1 and t.shape[0] != 3):
                t = t.reshape(-1, 1).expand(-1, 3)
            s = _vec3(t, None, None, dt, device, "Scale")
        else:
            s = _vec3(x, y, z, dt, device, "Scale")
        m = torch.diag_embed(torch.cat([s, s.new_ones(s.shape[0], 1)], 1))
        super().__init__(matrix=m)

    def _get_matrix_inverse(self) -> torch.Tensor:
        d = torch.diagonal(self._matrix, dim1=1, dim2=2)
        return torch.diag_embed(1.0 / d)


class Rotate(Transform3d):
    """``x -> x @ R`` for a **row-convention** rotation R (3, 3) or (N, 3, 3), cast to ``dtype``.

    A column-convention matrix (textbook, SciPy, ``so3_exp_map``) must be transposed first.
    A warning is raised when R is not orthonormal within ``orthogonal_tol``.
    """

    def __init__(self, R: torch.Tensor, dtype: torch.dtype = torch.float32, device=None, orthogonal_tol: float = 1e-5):
        R = torch.as_tensor(R).to(dtype=dtype, device=_device_of(R, device))
        if R.ndim == 2:
            R = R[None]
        if R.ndim != 3 or R.shape[1:] != (3, 3):
            raise P3DLabValueError(f"Rotate: R must be (3, 3) or (N, 3, 3), got {tuple(R.shape)}")
        with torch.no_grad():
            eye = torch.eye(3, dtype=R.dtype, device=R.device)
            err = (R @ R.transpose(1, 2) - eye).abs().max() if R.numel() else 0.0
            if float(err) > orthogonal_tol:
                warnings.warn(f"Rotate: R is not orthonormal (max |R R^T - I| = {float(err):.2e})", stacklevel=2)
        m = torch.eye(4, dtype=R.dtype, device=R.device).repeat(R.shape[0], 1, 1)
        m = torch.cat([torch.cat([R, m[:, :3, 3:]], 2), m[:, 3:, :]], 1)
        super().__init__(matrix=m)

    def _get_matrix_inverse(self) -> torch.Tensor:
        return self._matrix.transpose(1, 2)


class RotateAxisAngle(Rotate):
    """Rotate points by +``angle`` about a coordinate ``axis`` ("X", "Y", "Z"), right-hand rule.

    ``angle`` is a scalar or (N,) tensor, in degrees unless ``degrees=False``.
    """

    def __init__(self, angle, axis: str = "X", degrees: bool = True, dtype: torch.dtype = torch.float32, device=None):
        axis = axis.upper()
        if axis not in ("X", "Y", "Z"):
            raise P3DLabValueError(f"RotateAxisAngle: axis must be X, Y or Z, got {axis!r}")
        a = torch.as_tensor(angle).to(dtype=dtype, device=_device_of(angle, device)).reshape(-1)
        if degrees:
            a = a * (math.pi / 180.0)
        # The column-convention matrix transposed acts on row vectors by the same +angle.
        super().__init__(_axis_rotation(axis, a).transpose(1, 2), dtype=a.dtype, device=a.device)
