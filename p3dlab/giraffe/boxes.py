"""Box transforms: where each object of a compositional scene sits (docs/giraffe.md#box-transforms).

An object lives in its own box, the cube ``[-1, 1]³`` of object-local coordinates. Its box transform
places the box in the world: a rotation by the angle θ about the up axis (+Y), a translation t and a
per-axis scale s. With column vectors and ``R_y(θ)`` the usual rotation matrix,

    object -> world:   x = t + R_y(θ) (s ⊙ u)
    world -> object:   u = (R_y(θ)ᵀ (x - t)) ⊘ s

(⊙, ⊘: element-wise product and quotient). In p3dlab's row-vector convention ``R_y(θ) v`` is
``v @ R_y(θ)ᵀ``, so ``u = ((x - t) @ R_y(θ)) / s``. A field evaluated at ``u`` is then drawn rotated,
moved and scaled in the world: moving an object is a change of its transform, not of its network.
"""

from __future__ import annotations

import torch

from p3dlab.errors import P3DLabValueError


def rotation_y(angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) about +Y by ``angle`` (...) radians, for column vectors:
    ``[[cos θ, 0, sin θ], [0, 1, 0], [-sin θ, 0, cos θ]]``."""
    c, s = torch.cos(angle), torch.sin(angle)
    zero, one = torch.zeros_like(angle), torch.ones_like(angle)
    return torch.stack(
        [torch.stack([c, zero, s], -1), torch.stack([zero, one, zero], -1), torch.stack([-s, zero, c], -1)], -2
    )


def _check(points, angle, translation, scale, name):
    if points.shape[-1] != 3 or translation.shape[-1] != 3 or scale.shape[-1] != 3:
        raise P3DLabValueError(
            f"{name}: points, translation and scale must end with 3, got "
            f"{tuple(points.shape)}, {tuple(translation.shape)}, {tuple(scale.shape)}"
        )
    if angle.shape != translation.shape[:-1] or scale.shape != translation.shape:
        raise P3DLabValueError(
            f"{name}: angle {tuple(angle.shape)}, translation {tuple(translation.shape)} and scale "
            f"{tuple(scale.shape)} must describe the same boxes (angle (B,), translation and scale (B, 3))"
        )
    if bool((scale <= 0).any()) or not bool(torch.isfinite(scale).all()):
        raise P3DLabValueError(f"{name}: box scales must be finite and positive")


def world_to_object(
    points: torch.Tensor, angle: torch.Tensor, translation: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Object-local coordinates ``u = (R_y(θ)ᵀ (x - t)) ⊘ s`` of world points.

    Args:
        points: (B, ..., 3) world points, one batch entry per box.
        angle: (B,) rotations about +Y in radians; translation, scale: (B, 3).
    Returns (B, ..., 3); the box is ``|u|_∞ <= 1``."""
    _check(points, angle, translation, scale, "world_to_object")
    if points.shape[0] != angle.shape[0] or angle.dim() != 1:
        raise P3DLabValueError(f"world_to_object: points {tuple(points.shape)} need one box each, got {angle.shape}")
    extra = (1,) * (points.dim() - 2)
    R = rotation_y(angle).to(points.dtype)  # (B, 3, 3)
    t = translation.to(points.dtype).reshape(-1, *extra, 3)
    s = scale.to(points.dtype).reshape(-1, *extra, 3)
    flat = (points - t).reshape(points.shape[0], -1, 3)
    return (flat @ R).reshape(points.shape) / s


def object_to_world(
    points: torch.Tensor, angle: torch.Tensor, translation: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """World coordinates ``x = t + R_y(θ) (s ⊙ u)`` of object-local points (B, ..., 3): the inverse
    of :func:`world_to_object`."""
    _check(points, angle, translation, scale, "object_to_world")
    if points.shape[0] != angle.shape[0] or angle.dim() != 1:
        raise P3DLabValueError(f"object_to_world: points {tuple(points.shape)} need one box each, got {angle.shape}")
    extra = (1,) * (points.dim() - 2)
    R = rotation_y(angle).to(points.dtype)
    t = translation.to(points.dtype).reshape(-1, *extra, 3)
    s = scale.to(points.dtype).reshape(-1, *extra, 3)
    flat = (points * s).reshape(points.shape[0], -1, 3)
    return (flat @ R.transpose(-1, -2)).reshape(points.shape) + t
