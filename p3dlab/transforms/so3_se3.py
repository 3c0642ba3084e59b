"""Exponential and logarithm maps of SO(3) and SE(3) (docs/conventions.md#extrinsics-and-transforms).

``so3_exp_map`` / ``so3_log_map`` use **column-convention** matrices like PyTorch3D's (so
``Rotate(so3_exp_map(w))`` rotates row vectors by -theta; use ``to_row_convention``).
``se3_exp_map`` / ``se3_log_map`` use the **row layout** of ``Transform3d``: a (N, 4, 4) matrix
``[[R^T, 0], [t, 1]]`` applied as ``[x, 1] @ M``, i.e. ``x -> R x + t`` in column terms.
"""

from __future__ import annotations

import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.transforms.rotation_conversions import (
    _rodrigues_factors,
    axis_angle_to_matrix,
    hat,
    matrix_to_axis_angle,
)


def hat_inv(h: torch.Tensor, tol: float = 1e-5) -> torch.Tensor:
    """(..., 3, 3) skew-symmetric matrices -> (..., 3) vectors (inverse of ``hat``)."""
    if h.shape[-2:] != (3, 3):
        raise P3DLabValueError(f"hat_inv: expected (..., 3, 3), got {tuple(h.shape)}")
    asym = (h + h.transpose(-1, -2)).detach().abs().max() if h.numel() else h.new_zeros(())
    if float(asym) > tol:
        raise P3DLabValueError(f"hat_inv: input is not skew-symmetric (|H + H^T| max {float(asym):.3g})")
    return torch.stack([h[..., 2, 1], h[..., 0, 2], h[..., 1, 0]], -1)


def so3_exp_map(log_rot: torch.Tensor) -> torch.Tensor:
    """(N, 3) rotation vectors -> (N, 3, 3) column-convention rotations (Rodrigues' formula)."""
    if log_rot.ndim != 2 or log_rot.shape[1] != 3:
        raise P3DLabValueError(f"so3_exp_map: expected (N, 3), got {tuple(log_rot.shape)}")
    return axis_angle_to_matrix(log_rot)


def so3_log_map(R: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) column-convention rotations -> (N, 3) rotation vectors, angle in [0, pi].

    Computed through the quaternion, so it is accurate near angle 0 and at angle pi, where the
    textbook ``theta/(2 sin theta) (R - R^T)`` divides 0 by 0.
    """
    if R.ndim != 3 or R.shape[1:] != (3, 3):
        raise P3DLabValueError(f"so3_log_map: expected (N, 3, 3), got {tuple(R.shape)}")
    return matrix_to_axis_angle(R)


def so3_rotation_angle(
    R: torch.Tensor, eps: float = 1e-4, cos_angle: bool = False, cos_bound: float = 1e-4
) -> torch.Tensor:
    """(N,) rotation angles in [0, pi] of column- or row-convention rotations.

    PyTorch3D's signature: ``cos_angle=True`` returns the cosine ``(trace(R) - 1) / 2`` instead, which
    has a finite gradient everywhere (the bundle-adjustment tutorial's loss uses it). A trace outside
    ``[-1 - eps, 3 + eps]`` is not a rotation and raises. ``cos_bound`` is accepted for PyTorch3D's
    calls but unused: the angle comes from ``so3_log_map``, whose gradient is already finite near 0.
    """
    trace = R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2]
    if ((trace < -1.0 - eps) | (trace > 3.0 + eps)).any():
        raise P3DLabValueError("so3_rotation_angle: a matrix's trace lies outside [-1, 3], so it is not a rotation")
    if cos_angle:
        return 0.5 * (trace - 1.0)
    return so3_log_map(R).norm(dim=-1)


def so3_relative_angle(
    R1: torch.Tensor, R2: torch.Tensor, cos_angle: bool = False, cos_bound: float = 1e-4, eps: float = 1e-4
) -> torch.Tensor:
    """(N,) angle of ``R1 @ R2^T``: the geodesic distance between two batches of rotations (its cosine
    with ``cos_angle=True``; the other arguments as in :func:`so3_rotation_angle`)."""
    return so3_rotation_angle(R1 @ R2.transpose(-1, -2), eps=eps, cos_angle=cos_angle, cos_bound=cos_bound)


def _se3_V(log_rot: torch.Tensor) -> torch.Tensor:
    """``V = I + ((1 - cos t)/t^2) [w]x + ((t - sin t)/t^3) [w]x^2`` (left Jacobian of SO(3))."""
    theta2 = (log_rot * log_rot).sum(-1)
    _, b = _rodrigues_factors(theta2)
    small = theta2 < 1e-2
    t = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    c = torch.where(
        small,
        1.0 / 6.0 - theta2 / 120.0 + theta2 * theta2 / 5040.0,
        (t - torch.sin(t)) / (t * t * t),
    )
    K = hat(log_rot)
    eye = torch.eye(3, dtype=log_rot.dtype, device=log_rot.device).expand(K.shape)
    return eye + b[..., None, None] * K + c[..., None, None] * (K @ K)


def se3_exp_map(log_transform: torch.Tensor) -> torch.Tensor:
    """(N, 6) ``[log_translation | log_rotation]`` -> (N, 4, 4) transforms in row layout.

    ``R = exp([w]x)``, ``t = V(w) @ log_translation``; the result is ``[[R^T, 0], [t, 1]]``.
    """
    if log_transform.ndim != 2 or log_transform.shape[1] != 6:
        raise P3DLabValueError(f"se3_exp_map: expected (N, 6), got {tuple(log_transform.shape)}")
    v, w = log_transform[:, :3], log_transform[:, 3:]
    R = so3_exp_map(w)
    t = (_se3_V(w) @ v[..., None])[..., 0]
    n = log_transform.shape[0]
    top = torch.cat([R.transpose(1, 2), log_transform.new_zeros(n, 3, 1)], 2)
    bottom = torch.cat([t, log_transform.new_ones(n, 1)], 1)[:, None, :]
    return torch.cat([top, bottom], 1)


def se3_log_map(transform: torch.Tensor) -> torch.Tensor:
    """(N, 4, 4) row-layout transforms -> (N, 6) ``[log_translation | log_rotation]``."""
    if transform.ndim != 3 or transform.shape[1:] != (4, 4):
        raise P3DLabValueError(f"se3_log_map: expected (N, 4, 4), got {tuple(transform.shape)}")
    last_col = transform[:, :3, 3].detach().abs().max() if transform.numel() else 0.0
    if float(last_col) > 1e-5:
        raise P3DLabValueError("se3_log_map: the last column must be (0, 0, 0, 1) (row layout)")
    R = transform[:, :3, :3].transpose(1, 2)
    w = so3_log_map(R)
    t = transform[:, 3, :3]
    v = torch.linalg.solve(_se3_V(w), t[..., None])[..., 0]
    return torch.cat([v, w], 1)
