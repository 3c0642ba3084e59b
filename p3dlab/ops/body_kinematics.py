"""A body model's pose chain and skinning as torch operations with hand-written backward passes
(the fast path of ``p3dlab.body.lbs``; docs/body-models.md#speed).

- ``pose_chain(full_pose, joints, parents)``: Rodrigues rotations and forward kinematics of a
  kinematic tree in the Numba kernels of ``p3dlab.kernels.body_kinematics`` (float64 inside),
  returning the affine maps ``A`` (N, J, 3, 4) and the posed joints (N, J, 3).
- ``linear_blend_skinning(v_shaped, A, weights)``: ``v_i = v_i + sum_j w_ij (A_j - [I | 0]) [v_i; 1]``
  (rest pose exact): the blend ``sum_j w_ij (A_j - [I | 0])`` is one matrix product (torch), the
  per-vertex map and its reverse one pass each (``skin_vertices_cpu`` and its backward).

``p3dlab.body.model`` keeps the same math in plain torch (``rodrigues``, ``forward_kinematics``):
that is the reference these are tested against, and the path for tensors off the CPU or when a
second derivative is wanted.
"""

from __future__ import annotations

import functools
from typing import Tuple

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from p3dlab.errors import P3DLabValueError

__all__ = ["linear_blend_skinning", "pose_chain"]


@functools.lru_cache(maxsize=None)
def _checked_parents(parents: tuple) -> np.ndarray:
    """The parent table as int64, checked once per tree: every parent before its child, -1 for roots."""
    for j, p in enumerate(parents):
        if not (-1 <= p < j):
            raise P3DLabValueError(
                f"pose_chain: parents[{j}] = {p}; every parent must come before its joint (-1 for a root)"
            )
    return np.asarray(parents, dtype=np.int64)


class _PoseChain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, full_pose, joints, parents):
        from p3dlab.kernels.body_kinematics import forward_kinematics_cpu

        pose64 = full_pose.detach().to(torch.float64).contiguous().numpy()
        joints64 = joints.detach().to(torch.float64).contiguous().numpy()
        A, posed = forward_kinematics_cpu(pose64, joints64, parents)
        ctx.kernel_inputs = (pose64, joints64, parents, A)
        dtype = full_pose.dtype
        return torch.from_numpy(A).to(dtype), torch.from_numpy(posed).to(dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_A, grad_posed):
        from p3dlab.kernels.body_kinematics import forward_kinematics_backward_cpu

        pose64, joints64, parents, A = ctx.kernel_inputs
        N, J = pose64.shape[:2]

        def as64(g, shape):
            if g is None:
                return np.zeros(shape)
            return g.detach().to(torch.float64).contiguous().numpy()

        grad_pose, grad_joints = forward_kinematics_backward_cpu(
            pose64, joints64, parents, A, as64(grad_A, (N, J, 3, 4)), as64(grad_posed, (N, J, 3))
        )
        dtype = grad_A.dtype if grad_A is not None else grad_posed.dtype
        return torch.from_numpy(grad_pose).to(dtype), torch.from_numpy(grad_joints).to(dtype), None


def pose_chain(full_pose: torch.Tensor, joints: torch.Tensor, parents) -> Tuple[torch.Tensor, torch.Tensor]:
    """World transforms of a kinematic tree from axis-angle rotations.

    ``full_pose`` (N, J, 3) axis-angle rotation of every joint, ``joints`` (N, J, 3) rest positions,
    ``parents`` (J,) ints, -1 for the root, every parent before its children. Joint j turns
    everything below it about its own rest position: ``A_j = A_parent [R_j | J_j - R_j J_j]`` with
    ``R_j = rodrigues(full_pose[:, j])``. Returns ``A`` (N, J, 3, 4) and the posed joints
    ``A_j J_j`` (N, J, 3), differentiable in ``full_pose`` and ``joints`` (first derivatives; CPU
    tensors of float32 or float64, computed in float64)."""
    parents = _checked_parents(tuple(int(p) for p in parents))
    if full_pose.ndim != 3 or full_pose.shape[2] != 3 or full_pose.shape[1] != parents.shape[0]:
        raise P3DLabValueError(
            f"pose_chain: full_pose must be (N, {parents.shape[0]}, 3), got {tuple(full_pose.shape)}"
        )
    if joints.shape != full_pose.shape:
        raise P3DLabValueError(f"pose_chain: joints must be {tuple(full_pose.shape)}, got {tuple(joints.shape)}")
    for name, t in (("full_pose", full_pose), ("joints", joints)):
        if t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64):
            raise P3DLabValueError(
                f"pose_chain: {name} must be a float32 or float64 CPU tensor, got {t.dtype} on {t.device}"
            )
        if not bool(torch.isfinite(t).all()):
            raise P3DLabValueError(f"pose_chain: {name} has NaN or infinite values")
    if joints.dtype != full_pose.dtype:
        raise P3DLabValueError(f"pose_chain: joints are {joints.dtype} but full_pose is {full_pose.dtype}")
    return _PoseChain.apply(full_pose, joints, parents)


class _LinearBlendSkinning(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v_shaped, A, weights):
        from p3dlab.kernels.body_kinematics import skin_vertices_cpu

        N, V, _ = v_shaped.shape
        J = A.shape[1]
        eye = torch.eye(3, 4, dtype=A.dtype, device=A.device)
        # T_i = sum_j w_ij (A_j - [I | 0]): one (V, J) x (J, N * 12) product
        blend = weights @ (A - eye).reshape(N, J, 12).permute(1, 0, 2).reshape(J, N * 12)
        blend = blend.reshape(V, N, 3, 4).permute(1, 0, 2, 3).contiguous()  # (N, V, 3, 4)
        v_shaped = v_shaped.contiguous()
        verts = torch.empty_like(v_shaped)
        skin_vertices_cpu(v_shaped.detach().numpy(), blend.detach().numpy(), verts.numpy())
        ctx.save_for_backward(v_shaped, blend, weights)
        return verts

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_verts):
        from p3dlab.kernels.body_kinematics import skin_vertices_backward_cpu

        v_shaped, blend, weights = ctx.saved_tensors
        N, V, _ = v_shaped.shape
        J = weights.shape[1]
        grad_v = torch.empty_like(v_shaped)
        grad_blend = torch.empty_like(blend)
        skin_vertices_backward_cpu(
            v_shaped.numpy(), blend.numpy(), grad_verts.contiguous().numpy(), grad_v.numpy(), grad_blend.numpy()
        )
        # d T_i / d A_j = w_ij: summed over the vertices, W^T grad_T
        grad_A = weights.T @ grad_blend.permute(1, 0, 2, 3).reshape(V, N * 12)
        return grad_v, grad_A.reshape(J, N, 3, 4).permute(1, 0, 2, 3), None


def linear_blend_skinning(v_shaped: torch.Tensor, A: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``v_i = v_i + sum_j w_ij (A_j - [I | 0]) [v_i; 1]`` for ``v_shaped`` (N, V, 3), ``A`` (N, J, 3, 4)
    and ``weights`` (V, J) (no gradient to the weights). The form keeps the rest pose (every
    ``A_j = [I | 0]``) exactly ``v_shaped`` whatever the rounding of the weights' sums."""
    if v_shaped.ndim != 3 or v_shaped.shape[2] != 3:
        raise P3DLabValueError(f"linear_blend_skinning: v_shaped must be (N, V, 3), got {tuple(v_shaped.shape)}")
    N, V, _ = v_shaped.shape
    if weights.ndim != 2 or weights.shape[0] != V:
        raise P3DLabValueError(f"linear_blend_skinning: weights must be ({V}, J), got {tuple(weights.shape)}")
    if tuple(A.shape) != (N, weights.shape[1], 3, 4):
        raise P3DLabValueError(
            f"linear_blend_skinning: A must be ({N}, {weights.shape[1]}, 3, 4), got {tuple(A.shape)}"
        )
    for name, t in (("v_shaped", v_shaped), ("A", A), ("weights", weights)):
        if t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64):
            raise P3DLabValueError(
                f"linear_blend_skinning: {name} must be a float32 or float64 CPU tensor, got {t.dtype} on {t.device}"
            )
    if A.dtype != v_shaped.dtype:
        raise P3DLabValueError(f"linear_blend_skinning: A is {A.dtype} but v_shaped is {v_shaped.dtype}")
    if weights.requires_grad:
        raise P3DLabValueError("linear_blend_skinning: the weights take no gradient here; use p3dlab.body.lbs")
    return _LinearBlendSkinning.apply(v_shaped, A, weights.to(v_shaped.dtype))
