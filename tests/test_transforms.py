import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from p3dlab.transforms import (
    Rotate,
    RotateAxisAngle,
    Scale,
    Transform3d,
    Translate,
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    euler_angles_to_matrix,
    from_column_matrix,
    hat,
    hat_inv,
    matrix_to_axis_angle,
    matrix_to_euler_angles,
    matrix_to_quaternion,
    matrix_to_rotation_6d,
    quaternion_apply,
    quaternion_invert,
    quaternion_multiply,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
    random_rotations,
    rotation_6d_to_matrix,
    se3_exp_map,
    se3_log_map,
    so3_exp_map,
    so3_log_map,
    so3_relative_angle,
    to_row_convention,
)

D = torch.float64
vec3 = st.lists(st.floats(-1.0, 1.0, allow_nan=False), min_size=3, max_size=3)


def _rotvec(v, angle):
    v = torch.tensor(v, dtype=D)
    n = v.norm()
    if n < 1e-3:
        v, n = torch.tensor([0.0, 0.0, 1.0], dtype=D), torch.tensor(1.0, dtype=D)
    return v / n * angle


# ---------------------------------------------------------------- rotations: properties
@settings(max_examples=200, deadline=None)
@given(vec3, st.floats(0.0, math.pi - 1e-3))
def test_exp_is_orthonormal_and_log_inverts_it(v, angle):
    w = _rotvec(v, angle)[None]
    R = so3_exp_map(w)
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3, dtype=D), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(1, dtype=D), atol=1e-12)
    assert torch.allclose(so3_log_map(R), w, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(vec3)
def test_log_at_pi_returns_a_valid_rotation_vector(v):
    w = _rotvec(v, math.pi)[None]
    R = so3_exp_map(w)
    back = so3_log_map(R)
    assert abs(back.norm().item() - math.pi) < 1e-7
    # +w and -w are the same rotation at pi; either is correct.
    assert torch.allclose(so3_exp_map(back), R, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(vec3, st.floats(0.0, math.pi - 1e-3))
def test_quaternion_and_matrix_round_trips(v, angle):
    w = _rotvec(v, angle)[None]
    q = axis_angle_to_quaternion(w)
    R = quaternion_to_matrix(q)
    assert torch.allclose(R, axis_angle_to_matrix(w), atol=1e-12)
    assert torch.allclose(matrix_to_quaternion(R), q, atol=1e-9)
    assert torch.allclose(quaternion_to_axis_angle(q), w, atol=1e-9)
    assert torch.allclose(rotation_6d_to_matrix(matrix_to_rotation_6d(R)), R, atol=1e-12)


def test_against_scipy():
    g = torch.Generator().manual_seed(3)
    R = random_rotations(64, dtype=D, generator=g)
    sc = Rotation.from_matrix(R.numpy())
    q_xyzw = sc.as_quat()
    q = torch.from_numpy(np.concatenate([q_xyzw[:, 3:], q_xyzw[:, :3]], 1))
    q = torch.where(q[:, :1] < 0, -q, q)
    assert torch.allclose(matrix_to_quaternion(R), q, atol=1e-10)
    assert torch.allclose(matrix_to_axis_angle(R), torch.from_numpy(sc.as_rotvec()), atol=1e-9)


@pytest.mark.parametrize(
    "conv", ["XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX", "XYX", "XZX", "YXY", "YZY", "ZXZ", "ZYZ", "xyz", "zyx", "zxz"]
)
def test_euler_against_scipy_and_round_trip(conv):
    rng = np.random.default_rng(0)
    angles = rng.uniform(-3.0, 3.0, (32, 3))
    if conv[0].upper() == conv[2].upper():
        angles[:, 1] = rng.uniform(0.1, 3.0, 32)
    else:
        angles[:, 1] = rng.uniform(-1.4, 1.4, 32)
    R = euler_angles_to_matrix(torch.from_numpy(angles), conv)
    assert np.allclose(R.numpy(), Rotation.from_euler(conv, angles).as_matrix(), atol=1e-12)
    back = matrix_to_euler_angles(R, conv)
    assert np.allclose(back.numpy(), angles, atol=1e-9)


@pytest.mark.parametrize("bad", ["XXY", "XY", "XyZ", "ABC"])
def test_euler_bad_convention(bad):
    with pytest.raises(ValueError):
        euler_angles_to_matrix(torch.zeros(3), bad)


def test_quaternion_algebra():
    g = torch.Generator().manual_seed(1)
    R = random_rotations(8, dtype=D, generator=g)
    q = matrix_to_quaternion(R)
    p = torch.randn(8, 3, dtype=D, generator=g)
    assert torch.allclose(quaternion_apply(q, p), (R @ p[..., None])[..., 0], atol=1e-12)
    q2 = quaternion_multiply(q, quaternion_invert(q))
    assert torch.allclose(q2, torch.tensor([1.0, 0, 0, 0], dtype=D).expand(8, 4), atol=1e-12)
    assert torch.allclose(quaternion_to_matrix(quaternion_multiply(q, q.flip(0))), R @ R.flip(0), atol=1e-12)


def test_hat_and_hat_inv():
    v = torch.randn(5, 3, dtype=D)
    w = torch.randn(5, 3, dtype=D)
    assert torch.allclose(hat(v) @ w[..., None], torch.cross(v, w, dim=1)[..., None])
    assert torch.allclose(hat_inv(hat(v)), v)
    with pytest.raises(ValueError, match="skew"):
        hat_inv(torch.eye(3, dtype=D)[None])


def test_row_convention_rotates_e_x_to_e_y():
    """docs/errata.md#e28 (d): so3_exp_map is column convention; Rotate needs its transpose."""
    w = torch.tensor([[0.0, 0.0, math.pi / 2]])
    R = so3_exp_map(w)
    ex = torch.tensor([[1.0, 0.0, 0.0]])
    assert torch.allclose(R[0] @ ex[0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    assert torch.allclose(Rotate(to_row_convention(R)).transform_points(ex), torch.tensor([[0.0, 1.0, 0.0]]), atol=1e-6)
    assert torch.allclose(Rotate(R).transform_points(ex), torch.tensor([[0.0, -1.0, 0.0]]), atol=1e-6)
    assert torch.allclose(RotateAxisAngle(90, "Z").transform_points(ex), torch.tensor([[0.0, 1.0, 0.0]]), atol=1e-6)


# ---------------------------------------------------------------- gradients
def _near(angle, gen):
    v = torch.randn(3, 3, dtype=D, generator=gen)
    return v / v.norm(dim=1, keepdim=True) * angle


@pytest.mark.parametrize("angle", [0.0, 1e-7, 1e-3, 1.0, math.pi - 1e-4])
def test_gradcheck_exp_log(angle):
    g = torch.Generator().manual_seed(0)
    w = _near(angle, g).requires_grad_(True)
    assert torch.autograd.gradcheck(so3_exp_map, (w,))
    if angle > 0:
        R = so3_exp_map(w.detach()).requires_grad_(True)
        assert torch.autograd.gradcheck(lambda m: so3_log_map(m), (R,))


def test_gradients_are_finite_at_identity_and_pi():
    for angle in (0.0, math.pi):
        w = torch.tensor([[angle, 0.0, 0.0]], dtype=D)
        R = so3_exp_map(w).requires_grad_(True)
        so3_log_map(R).sum().backward()
        assert torch.isfinite(R.grad).all()
        q = torch.tensor([[math.cos(angle / 2), math.sin(angle / 2), 0.0, 0.0]], dtype=D, requires_grad=True)
        quaternion_to_axis_angle(q).sum().backward()
        assert torch.isfinite(q.grad).all()


def test_gradcheck_conversions():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(4, 4, dtype=D, generator=g).requires_grad_(True)
    assert torch.autograd.gradcheck(quaternion_to_matrix, (q,))
    d6 = torch.randn(4, 6, dtype=D, generator=g).requires_grad_(True)
    assert torch.autograd.gradcheck(rotation_6d_to_matrix, (d6,))
    e = torch.rand(4, 3, dtype=D, generator=g).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: euler_angles_to_matrix(x, "ZYX"), (e,))
    R = random_rotations(4, dtype=D, generator=g).requires_grad_(True)
    assert torch.autograd.gradcheck(matrix_to_quaternion, (R,))
    log = torch.randn(3, 6, dtype=D, generator=g).requires_grad_(True)
    assert torch.autograd.gradcheck(se3_exp_map, (log,))
    T = torch.randn(2, 3, dtype=D, generator=g)
    # PyTorch3D casts to the dtype argument (float32 by default), so float64 is asked for explicitly
    M = Translate(T, dtype=D).compose(RotateAxisAngle(torch.tensor([30.0, 60.0]), "Y", dtype=D)).get_matrix()
    assert torch.autograd.gradcheck(se3_log_map, (M.requires_grad_(True),))


# ---------------------------------------------------------------- SE(3)
@settings(max_examples=100, deadline=None)
@given(vec3, vec3, st.floats(0.0, math.pi - 1e-2))
def test_se3_round_trip(t, v, angle):
    log = torch.cat([torch.tensor(t, dtype=D) * 3, _rotvec(v, angle)])[None]
    M = se3_exp_map(log)
    assert torch.allclose(M[:, :3, 3], torch.zeros(1, 3, dtype=D))
    assert torch.allclose(se3_log_map(M), log, atol=1e-8)


def test_se3_is_row_layout():
    log = torch.tensor([[1.0, 2.0, 3.0, 0.0, 0.0, math.pi / 2]], dtype=D)
    M = se3_exp_map(log)
    x = torch.tensor([[1.0, 0.0, 0.0]], dtype=D)
    moved = Transform3d(matrix=M).transform_points(x)
    R = so3_exp_map(log[:, 3:])
    assert torch.allclose(moved, (R[0] @ x[0]) + M[0, 3, :3])


# ---------------------------------------------------------------- Transform3d
def test_compose_order_and_inverse():
    p = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 1.0]])
    t = Translate(1.0, 2.0, 3.0).compose(RotateAxisAngle(90.0, "Z"), Scale(2.0))
    expected = torch.stack([-(p[:, 1] + 2), p[:, 0] + 1, p[:, 2] + 3], 1) * 2
    assert torch.allclose(t.transform_points(p), expected, atol=1e-5)
    assert torch.allclose(t.inverse().transform_points(t.transform_points(p)), p, atol=1e-5)
    assert torch.allclose(t.inverse(invert_composed=True).transform_points(expected), p, atol=1e-5)
    chain = Transform3d().translate(1.0, 2.0, 3.0).rotate_axis_angle(90.0, "Z").scale(2.0)
    assert torch.allclose(chain.get_matrix(), t.get_matrix())


def test_translation_in_last_row_and_column_matrix():
    t = Translate(1.0, 2.0, 3.0)
    assert t.get_matrix()[0, 3, :3].tolist() == [1.0, 2.0, 3.0]
    col = t.to_column_matrix()
    assert col[0, :3, 3].tolist() == [1.0, 2.0, 3.0]
    assert torch.allclose(from_column_matrix(col).get_matrix(), t.get_matrix())


def test_batched_transforms_and_broadcasting():
    t = Translate(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))
    pts = torch.zeros(2, 4, 3)
    out = t.transform_points(pts)
    assert torch.equal(out[1, :, 1], torch.ones(4))
    # a single transform broadcasts over a batch of point sets
    assert Scale(2.0).transform_points(torch.ones(3, 5, 3)).shape == (3, 5, 3)
    assert len(t.stack(t)) == 4
    assert torch.equal(t[1].get_matrix()[0], t.get_matrix()[1])
    with pytest.raises(ValueError, match="batch"):
        Translate(torch.zeros(2, 3)).compose(Translate(torch.zeros(3, 3))).get_matrix()


def test_transform_normals_uses_inverse_transpose():
    t = Scale(1.0, 2.0, 1.0)
    n = torch.tensor([[1.0, 1.0, 0.0]])
    out = t.transform_normals(n)
    tangent = t.transform_points(torch.tensor([[1.0, -1.0, 0.0]]))
    assert abs(float((out * tangent).sum())) < 1e-6


def test_transform_points_eps_keeps_sign():
    M = torch.eye(4)
    M[:, 3] = torch.tensor([0.0, 0.0, 1.0, 0.0])  # w = z
    M[3, 3] = 0.0
    t = Transform3d(matrix=M)
    out = t.transform_points(torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, -1e-9]]), eps=1e-4)
    assert torch.isfinite(out).all()
    assert out[0, 0] > 0 and out[1, 0] < 0


def test_gradients_flow_through_transform3d():
    R = random_rotations(1, dtype=D).requires_grad_(True)
    x = torch.randn(6, 3, dtype=D)
    assert torch.autograd.gradcheck(lambda r: Rotate(r, dtype=D, orthogonal_tol=1e9).transform_points(x), (R,))


def test_rotate_warns_on_non_orthonormal():
    with pytest.warns(UserWarning, match="orthonormal"):
        Rotate(torch.eye(3) * 2)


def test_relative_angle():
    R1 = so3_exp_map(torch.tensor([[0.0, 0.3, 0.0]], dtype=D))
    R2 = so3_exp_map(torch.tensor([[0.0, -0.2, 0.0]], dtype=D))
    assert torch.allclose(so3_relative_angle(R1, R2), torch.tensor([0.5], dtype=D))
