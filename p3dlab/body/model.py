"""A SMPL-like parametric body: shape blend shapes, a joint regressor, Rodrigues forward kinematics
and linear blend skinning (the math: docs/body-models.md#the-body-function).

``BodyModel()(betas, body_pose, global_orient, transl)`` returns the posed vertices and joints of a
batch of bodies, differentiable in every argument.
"""

from __future__ import annotations

import functools
import os
from typing import List, NamedTuple, Optional, Union

import torch

from p3dlab.body.skeleton import JOINT_NAMES, NUM_BODY_JOINTS, NUM_JOINTS
from p3dlab.body.template import BodyModelData, build_body_model_data
from p3dlab.errors import P3DLabValueError
from p3dlab.io import save_obj
from p3dlab.ops.body_kinematics import linear_blend_skinning, pose_chain
from p3dlab.structures import Meshes


def rodrigues(axis_angle: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle vectors ``w = theta * k`` -> (..., 3, 3) rotation matrices (column
    convention, ``x' = R x``):

    ``R = I + (sin theta / theta) [w]x + ((1 - cos theta) / theta^2) [w]x^2``

    The two factors are evaluated as functions of ``theta^2``, with their Taylor series below
    ``theta^2 = 1e-6``, so R and its gradient are exact at ``w = 0`` (where ``|w|`` has no gradient)."""
    if axis_angle.shape[-1] != 3:
        raise P3DLabValueError(f"rodrigues: expected (..., 3) axis-angle vectors, got {tuple(axis_angle.shape)}")
    theta2 = (axis_angle * axis_angle).sum(-1)
    small = theta2 < 1e-6
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    sin_over = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    half = torch.sin(theta / 2) / theta
    one_minus_cos_over = torch.where(small, 0.5 - theta2 / 24.0, 2.0 * half * half)  # 2 sin^2(t/2) / t^2
    x, y, z = axis_angle.unbind(-1)
    o = torch.zeros_like(x)
    K = torch.stack((o, -z, y, z, o, -x, -y, x, o), -1).reshape(axis_angle.shape[:-1] + (3, 3))
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + sin_over[..., None, None] * K + one_minus_cos_over[..., None, None] * (K @ K)


@functools.lru_cache(maxsize=None)
def _depth_levels(parents: tuple) -> List[List[int]]:
    depth = []
    for p in parents:
        depth.append(0 if p < 0 else depth[p] + 1)
    return [[j for j, d in enumerate(depth) if d == level] for level in range(max(depth) + 1)]


def forward_kinematics(rotations: torch.Tensor, joints: torch.Tensor, parents):
    """World transforms of a kinematic tree.

    ``rotations`` (N, J, 3, 3) local rotations, ``joints`` (N, J, 3) rest-pose joint positions,
    ``parents`` (J,) with -1 for the root (every parent before its children).

    Joint j turns everything below it about its rest position: ``L_j x = R_j (x - J_j) + J_j``, and
    the transform that carries a rest-pose point attached to joint j is ``A_j = A_parent(j) L_j``
    (``A_root = L_root``). This is the usual ``G_j = G_parent [R_j | J_j - J_parent]`` followed by
    ``A_j = G_j [I | -J_j]``, written so that the rest pose gives ``A_j = I`` exactly (``J_j - I J_j``
    is exactly 0). Joints of one depth are composed together.

    Returns ``posed_joints`` (N, J, 3), ``A_j J_j``, and ``A`` (N, J, 4, 4)."""
    parents = tuple(parents)
    N, J = rotations.shape[:2]
    offset = joints - (rotations @ joints[..., None])[..., 0]  # J_j - R_j J_j
    bottom = torch.zeros(N, J, 1, 4, dtype=rotations.dtype, device=rotations.device)
    bottom[..., 3] = 1.0
    local = torch.cat([torch.cat([rotations, offset[..., None]], -1), bottom], -2)  # (N, J, 4, 4)
    order, pos = [], {}
    chain = None
    for level in _depth_levels(parents):
        if chain is None:
            new = local[:, level]
        else:
            parent_pos = [pos[parents[j]] for j in level]
            new = chain[:, parent_pos] @ local[:, level]
        for j in level:
            pos[j] = len(order)
            order.append(j)
        chain = new if chain is None else torch.cat([chain, new], 1)
    A = chain[:, [pos[j] for j in range(J)]]
    posed_joints = (A[..., :3, :3] @ joints[..., None])[..., 0] + A[..., :3, 3]
    return posed_joints, A


def _apply_to_batch(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``matrix @ x[n]`` for every n of a batch x (N, K, C): one matrix product (M, K) x (K, N C)
    rather than a batched product that copies ``matrix`` once per batch entry."""
    N, K, C = x.shape
    out = matrix @ x.permute(1, 0, 2).reshape(K, N * C)
    return out.reshape(-1, N, C).permute(1, 0, 2)


def _kernels_apply(*tensors) -> bool:
    """Whether the pose chain and skinning of ``p3dlab.ops.body_kinematics`` can stand in for the torch
    code: CPU tensors of float32/float64, and no gradient wanted for the model's own data (the
    kernels give gradients of the pose, the shape and the joints only, and first derivatives only)."""
    return all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) for t in tensors)


def _pose_and_skin(full_pose, joints, v_shaped, weights, parents, use_kernels):
    if use_kernels:
        A, posed_joints = pose_chain(full_pose, joints, parents)
        return linear_blend_skinning(v_shaped, A, weights), posed_joints
    posed_joints, A = forward_kinematics(rodrigues(full_pose), joints, parents)
    N, J = A.shape[:2]
    eye = torch.eye(3, 4, dtype=A.dtype, device=A.device)
    T = _apply_to_batch(weights, (A[:, :, :3] - eye).reshape(N, J, 12)).reshape(N, -1, 3, 4)  # blended [R - I | t]
    verts = v_shaped + (T[..., :3] * v_shaped[:, :, None, :]).sum(-1) + T[..., 3]
    return verts, posed_joints


def lbs(betas, full_pose, v_template, shapedirs, J_regressor, weights, parents, joint_blend=None, use_kernels=None):
    """The body function: shape, regress joints, pose, skin.

    ``v_shaped = T + S beta`` (T: ``v_template`` (V, 3), S: ``shapedirs`` (V, 3, B)),
    ``J = J_regressor v_shaped``, ``R_j = rodrigues(theta_j)`` for ``full_pose`` (N, J, 3),
    ``A = forward_kinematics(R, J)`` and ``v_i = sum_j w_ij A_j [v_shaped_i; 1]``, evaluated as
    ``v_shaped_i + sum_j w_ij (A_j - I) [v_shaped_i; 1]`` so that the rest pose returns the shaped
    template exactly (the weights sum to 1 only up to rounding).

    ``joint_blend``: optional ``(J_regressor T, J_regressor S)`` precomputed; then
    ``J = J_regressor T + (J_regressor S) beta``, the same joints without a product over all vertices.
    ``use_kernels``: None picks the Numba pose chain and hand-written skinning backward of
    ``p3dlab.ops.body_kinematics`` for CPU tensors whose model data need no gradient; False keeps
    this plain torch code (the reference; also what gives second derivatives).
    Returns the posed vertices (N, V, 3) and joints (N, J, 3)."""
    N, V = betas.shape[0], v_template.shape[0]
    data = (v_template, shapedirs, J_regressor, weights) + tuple(joint_blend or ())
    if use_kernels is None:
        use_kernels = _kernels_apply(betas, full_pose, *data) and not any(t.requires_grad for t in data)
    v_shaped = v_template + (betas @ shapedirs.reshape(V * 3, -1).T).reshape(N, V, 3)
    if joint_blend is None:
        joints = _apply_to_batch(J_regressor, v_shaped)
    else:
        joint_template, joint_shapedirs = joint_blend
        J = joint_template.shape[0]
        joints = joint_template + (betas @ joint_shapedirs.reshape(J * 3, -1).T).reshape(N, J, 3)
    return _pose_and_skin(full_pose, joints, v_shaped, weights, parents, use_kernels)


class BodyOutput(NamedTuple):
    """A batch of posed bodies: ``vertices`` (N, V, 3), ``joints`` (N, J, 3), ``faces`` (F, 3)."""

    vertices: torch.Tensor
    joints: torch.Tensor
    faces: torch.Tensor

    def to_meshes(self, textures=None) -> Meshes:
        """The bodies as a ``Meshes`` batch."""
        n = self.vertices.shape[0]
        return Meshes(verts=list(self.vertices), faces=[self.faces] * n, textures=textures)

    def save_obj(self, path: Union[str, os.PathLike], index: int = 0) -> None:
        """Write body ``index`` of the batch as an OBJ file."""
        if not (0 <= index < self.vertices.shape[0]):
            raise P3DLabValueError(
                f"BodyOutput.save_obj: index {index} out of range for {self.vertices.shape[0]} bodies"
            )
        save_obj(path, self.vertices[index].detach(), self.faces)


@functools.lru_cache(maxsize=4)
def body_model_data(num_betas: int = 8) -> BodyModelData:
    """The procedural body's data, built once per process (about a second) and cached: treat its
    tensors as read-only (``BodyModel`` copies them)."""
    return build_body_model_data(num_betas=num_betas)


class BodyModel(torch.nn.Module):
    """A procedural SMPL-like body (docs/body-models.md).

    ``BodyModel(num_betas=8, dtype=torch.float32)`` holds the template ``v_template`` (V, 3),
    ``faces`` (F, 3), ``shapedirs`` (V, 3, B), ``J_regressor`` (J, V), skinning ``weights`` (V, J)
    and ``parents`` (J,) as buffers. Calling it with ``betas`` (N, B), ``body_pose`` (N, 63) or
    (N, 21, 3) axis-angle rotations of the joints after the pelvis, ``global_orient`` (N, 3) and
    ``transl`` (N, 3) (each optional; zeros by default; N = 1 when all are left out) returns a
    ``BodyOutput``. ``data`` replaces the built-in body (e.g. a reduced one for tests)."""

    joint_names = JOINT_NAMES

    def __init__(self, num_betas: int = 8, dtype: torch.dtype = torch.float32, data: Optional[BodyModelData] = None):
        super().__init__()
        if dtype not in (torch.float32, torch.float64):
            raise P3DLabValueError(f"BodyModel: dtype must be float32 or float64, got {dtype}")
        if data is None:
            data = body_model_data(num_betas)
        self.num_betas = data.shapedirs.shape[-1]
        self.register_buffer("v_template", data.v_template.to(dtype).clone())
        self.register_buffer("faces", data.faces.long().clone())
        self.register_buffer("shapedirs", data.shapedirs.to(dtype).clone())
        self.register_buffer("J_regressor", data.J_regressor.to(dtype).clone())
        self.register_buffer("weights", data.weights.to(dtype).clone())
        self.register_buffer("parents", data.parents.long())
        self._parent_tuple = tuple(int(p) for p in data.parents.tolist())
        # the joints of a shape without its vertices: J(beta) = J_regressor T + (J_regressor S) beta
        self.register_buffer("J_template", self.J_regressor @ self.v_template)
        self.register_buffer("J_shapedirs", torch.einsum("jv,vcb->jcb", self.J_regressor, self.shapedirs))

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    def _batch(self, name, value, width, n):
        if value is None:
            return None
        value = torch.as_tensor(value, dtype=self.v_template.dtype, device=self.v_template.device)
        if value.ndim == 1:
            value = value[None]
        if value.ndim == 3 and name == "body_pose":
            value = value.reshape(value.shape[0], -1)
        if value.ndim != 2 or value.shape[1] != width or (n is not None and value.shape[0] != n):
            raise P3DLabValueError(
                f"BodyModel: {name} must be ({'N' if n is None else n}, {width}), got {tuple(value.shape)}"
            )
        if not torch.isfinite(value).all():
            raise P3DLabValueError(f"BodyModel: {name} has NaN or infinite values")
        return value

    def _arguments(self, betas, body_pose, global_orient, transl):
        """Validated (N, ...) tensors of the model's dtype; zeros for the arguments left out."""
        given = [v for v in (betas, body_pose, global_orient, transl) if v is not None]
        n = None
        args = {}
        for name, value, width in (
            ("betas", betas, self.num_betas),
            ("body_pose", body_pose, NUM_BODY_JOINTS * 3),
            ("global_orient", global_orient, 3),
            ("transl", transl, 3),
        ):
            args[name] = self._batch(name, value, width, n)
            if args[name] is not None:
                n = args[name].shape[0]
        n = n if given else 1
        dt, dev = self.v_template.dtype, self.v_template.device

        def zeros(width):
            return torch.zeros(n, width, dtype=dt, device=dev)

        betas = args["betas"] if args["betas"] is not None else zeros(self.num_betas)
        body_pose = args["body_pose"] if args["body_pose"] is not None else zeros(NUM_BODY_JOINTS * 3)
        global_orient = args["global_orient"] if args["global_orient"] is not None else zeros(3)
        full_pose = torch.cat([global_orient, body_pose], 1).reshape(n, NUM_JOINTS, 3)
        return betas, full_pose, args["transl"]

    def forward(self, betas=None, body_pose=None, global_orient=None, transl=None) -> BodyOutput:
        betas, full_pose, transl = self._arguments(betas, body_pose, global_orient, transl)
        verts, joints = lbs(
            betas,
            full_pose,
            self.v_template,
            self.shapedirs,
            self.J_regressor,
            self.weights,
            self._parent_tuple,
            joint_blend=(self.J_template, self.J_shapedirs),
        )
        if transl is not None:
            verts = verts + transl[:, None]
            joints = joints + transl[:, None]
        return BodyOutput(verts, joints, self.faces)

    def posed_joints(self, betas=None, body_pose=None, global_orient=None, transl=None) -> torch.Tensor:
        """(N, J, 3) the posed joints alone (what SMPLify fits): the same joints as ``forward`` without
        computing a single vertex, ``J(beta) = J_regressor T + (J_regressor S) beta`` then forward
        kinematics."""
        betas, full_pose, transl = self._arguments(betas, body_pose, global_orient, transl)
        J = self.J_template.shape[0]
        joints = self.J_template + (betas @ self.J_shapedirs.reshape(J * 3, -1).T).reshape(-1, J, 3)
        if _kernels_apply(joints) and not any(t.requires_grad for t in (self.J_template, self.J_shapedirs)):
            _, posed = pose_chain(full_pose, joints, self._parent_tuple)
        else:
            posed, _ = forward_kinematics(rodrigues(full_pose), joints, self._parent_tuple)
        return posed if transl is None else posed + transl[:, None]

    def rest_joints(self, betas=None) -> torch.Tensor:
        """(N, J, 3) the joints of the rest pose, ``J_regressor (T + S beta)``."""
        return self(betas=betas).joints
