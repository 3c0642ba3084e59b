"""Conversions between rotation representations.

**Convention.** Every matrix returned or accepted here is a *column-convention* rotation matrix,
as in every textbook, SciPy's ``Rotation.as_matrix()`` and PyTorch3D's functions of the same names:
``R @ x`` rotates the column vector x by +theta (right-hand rule). p3dlab's ``Rotate``, its cameras
and ``X @ R`` use *row* vectors, for which the same rotation is ``R.T``: convert with
:func:`to_row_convention` / :func:`to_column_convention` (both are a transpose of the last two
dimensions). Mixing the two silently rotates by -theta (docs/errata.md#e14,
docs/errata.md#e28).

Quaternions are real-first: ``(w, x, y, z)``; unit quaternions q and -q are the same rotation,
:func:`standardize_quaternion` picks ``w >= 0``. Axis-angle vectors are ``theta * axis``.
All functions accept arbitrary leading batch dimensions and are differentiable, including at the
identity (angle 0) and at angle pi.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from p3dlab.errors import P3DLabValueError

_AXES = "XYZ"


# ----------------------------------------------------------------------------- row / column
def to_row_convention(matrix: torch.Tensor) -> torch.Tensor:
    """Column-convention rotation (``R @ x``) -> row-convention (``x @ R``): the transpose."""
    return matrix.transpose(-1, -2)


def to_column_convention(matrix: torch.Tensor) -> torch.Tensor:
    """Row-convention rotation (``x @ R``, p3dlab cameras/``Rotate``) -> column convention."""
    return matrix.transpose(-1, -2)


# ----------------------------------------------------------------------------- quaternions
def quaternion_to_matrix(quaternions: torch.Tensor) -> torch.Tensor:
    """(..., 4) real-first quaternions (any non-zero norm) -> (..., 3, 3) column-convention matrices."""
    w, x, y, z = torch.unbind(quaternions, -1)
    two_s = 2.0 / (quaternions * quaternions).sum(-1)
    m = torch.stack(
        (
            1 - two_s * (y * y + z * z),
            two_s * (x * y - z * w),
            two_s * (x * z + y * w),
            two_s * (x * y + z * w),
            1 - two_s * (x * x + z * z),
            two_s * (y * z - x * w),
            two_s * (x * z - y * w),
            two_s * (y * z + x * w),
            1 - two_s * (x * x + y * y),
        ),
        -1,
    )
    return m.reshape(quaternions.shape[:-1] + (3, 3))


def _sqrt_nonneg(x: torch.Tensor) -> torch.Tensor:
    """sqrt(max(x, 0)) with a zero (not infinite) gradient where x <= 0."""
    pos = x > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))), torch.zeros_like(x))


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) column-convention rotations -> (..., 4) unit quaternions with w >= 0.

    Each of the four components can be read off the diagonal: ``4 w^2 = 1 + m00 + m11 + m22``,
    ``4 x^2 = 1 + m00 - m11 - m22`` and so on; the largest one is taken from the diagonal and the
    other three from the off-diagonal sums/differences divided by it, which is well conditioned
    for every rotation (including angle pi, where w = 0).
    """
    if matrix.shape[-2:] != (3, 3):
        raise P3DLabValueError(f"matrix_to_quaternion: expected (..., 3, 3), got {tuple(matrix.shape)}")
    m = matrix
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    q_abs = _sqrt_nonneg(
        torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    )  # 2|w|, 2|x|, 2|y|, 2|z|
    # Candidate k is 4 * q_k * q, from which q follows by dividing by 2 * (2|q_k|).
    cands = torch.stack(
        [
            torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], -1),
            torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], -1),
            torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], -1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], -1),
        ],
        -2,
    )
    cands = cands / (2.0 * q_abs[..., None].clamp(min=0.1))
    best = q_abs.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    return standardize_quaternion(F.normalize(q, dim=-1))


def standardize_quaternion(quaternions: torch.Tensor) -> torch.Tensor:
    """Flip q to -q where w < 0, so every rotation has one representative."""
    return torch.where(quaternions[..., :1] < 0, -quaternions, quaternions)


def quaternion_raw_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a * b (not normalised)."""
    aw, ax, ay, az = torch.unbind(a, -1)
    bw, bx, by, bz = torch.unbind(b, -1)
    return torch.stack(
        (
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ),
        -1,
    )


def quaternion_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Composition of rotations: the rotation b followed by a, standardised (w >= 0)."""
    return standardize_quaternion(quaternion_raw_multiply(a, b))


def quaternion_invert(quaternion: torch.Tensor) -> torch.Tensor:
    """Conjugate (the inverse of a unit quaternion)."""
    return quaternion * quaternion.new_tensor([1.0, -1.0, -1.0, -1.0])


def quaternion_apply(quaternion: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    """Rotate (..., 3) points by (..., 4) unit quaternions: ``q p q*``."""
    if point.shape[-1] != 3:
        raise P3DLabValueError(f"quaternion_apply: points must have 3 components, got {point.shape[-1]}")
    p = torch.cat([point.new_zeros(point.shape[:-1] + (1,)), point], -1)
    out = quaternion_raw_multiply(quaternion_raw_multiply(quaternion, p), quaternion_invert(quaternion))
    return out[..., 1:]


def random_quaternions(n: int, dtype=None, device=None, generator=None) -> torch.Tensor:
    """(n, 4) unit quaternions uniformly distributed over rotations, w >= 0."""
    q = torch.randn((n, 4), dtype=dtype, device=device, generator=generator)
    return standardize_quaternion(F.normalize(q, dim=-1))


def random_rotations(n: int, dtype=None, device=None, generator=None) -> torch.Tensor:
    """(n, 3, 3) uniformly distributed rotation matrices."""
    return quaternion_to_matrix(random_quaternions(n, dtype, device, generator))


def random_rotation(dtype=None, device=None, generator=None) -> torch.Tensor:
    """One uniformly distributed (3, 3) rotation matrix."""
    return random_rotations(1, dtype, device, generator)[0]


# ----------------------------------------------------------------------------- axis-angle
def _rodrigues_factors(theta2: torch.Tensor):
    """``sin(t)/t`` and ``(1 - cos t)/t^2`` as functions of ``t^2``, exact and smooth at 0.

    ``(1 - cos t)/t^2 = 2 sin^2(t/2)/t^2`` avoids the cancellation of ``1 - cos t`` in float32.
    """
    small = theta2 < 1e-6
    t = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(t) / t)
    half = torch.sin(t / 2) / t
    b = torch.where(small, 0.5 - theta2 / 24.0, 2.0 * half * half)
    return a, b


def hat(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) skew matrix ``[v]x`` with ``[v]x @ w = v x w``."""
    if v.shape[-1] != 3:
        raise P3DLabValueError(f"hat: expected (..., 3), got {tuple(v.shape)}")
    x, y, z = torch.unbind(v, -1)
    o = torch.zeros_like(x)
    return torch.stack((o, -z, y, z, o, -x, -y, x, o), -1).reshape(v.shape[:-1] + (3, 3))


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues: ``R = I + (sin t / t) [w]x + ((1 - cos t)/t^2) [w]x^2`` (column convention)."""
    if axis_angle.shape[-1] != 3:
        raise P3DLabValueError(f"axis_angle_to_matrix: expected (..., 3), got {tuple(axis_angle.shape)}")
    theta2 = (axis_angle * axis_angle).sum(-1)
    a, b = _rodrigues_factors(theta2)
    K = hat(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand(K.shape)
    return eye + a[..., None, None] * K + b[..., None, None] * (K @ K)


def quaternion_to_axis_angle(quaternions: torch.Tensor) -> torch.Tensor:
    """(..., 4) unit quaternions -> (..., 3) axis-angle with angle in [0, pi].

    ``angle = 2 atan2(|v|, w)`` and ``axis_angle = v * angle / |v|`` after choosing w >= 0; the
    factor ``angle/|v|`` is replaced by its series ``2/w - 2|v|^2/(3 w^3)`` near |v| = 0.
    """
    q = standardize_quaternion(quaternions)
    w, v = q[..., 0], q[..., 1:]
    n2 = (v * v).sum(-1)
    small = n2 < 1e-8
    n = torch.sqrt(torch.where(small, torch.ones_like(n2), n2))
    w_s = torch.where(small, w, torch.ones_like(w))  # keeps the unused branch finite (no NaN gradients)
    factor = torch.where(small, 2.0 / w_s - 2.0 * n2 / (3.0 * w_s**3), 2.0 * torch.atan2(n, w) / n)
    return v * factor[..., None]


def axis_angle_to_quaternion(axis_angle: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 4) unit quaternion ``(cos(t/2), sin(t/2) axis)``."""
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)
    small = theta2 < 1e-6
    t = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    s = torch.where(small, 0.5 - theta2 / 48.0, torch.sin(t / 2) / t)
    w = torch.where(small, 1.0 - theta2 / 8.0, torch.cos(t / 2))
    return torch.cat([w, axis_angle * s], -1)


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) column-convention rotations -> (..., 3) axis-angle, angle in [0, pi].

    Goes through the quaternion, which stays well conditioned near pi (unlike the textbook
    ``theta/(2 sin theta) (R - R^T)``).
    """
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


# ----------------------------------------------------------------------------- Euler angles
def _axis_rotation(axis: str, angle: torch.Tensor) -> torch.Tensor:
    """Column-convention rotation by ``angle`` about one coordinate axis ("X", "Y" or "Z")."""
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    rows = {
        "X": (one, zero, zero, zero, c, -s, zero, s, c),
        "Y": (c, zero, s, zero, one, zero, -s, zero, c),
        "Z": (c, -s, zero, s, c, zero, zero, zero, one),
    }[axis]
    return torch.stack(rows, -1).reshape(angle.shape + (3, 3))


def _parse_convention(convention: str):
    """Return (intrinsic axes, reversed?) for a 3-letter convention.

    Upper case ("XYZ") is intrinsic: ``R = R_X(a0) @ R_Y(a1) @ R_Z(a2)`` (PyTorch3D, SciPy "XYZ").
    Lower case ("xyz") is extrinsic (rotations about the fixed axes, first x): it equals the
    intrinsic sequence "ZYX" with the angles reversed (SciPy "xyz").
    """
    if not isinstance(convention, str) or len(convention) != 3:
        raise P3DLabValueError(f"Euler convention must be 3 letters, got {convention!r}")
    if convention.isupper():
        axes, extrinsic = convention, False
    elif convention.islower():
        axes, extrinsic = convention.upper()[::-1], True
    else:
        raise P3DLabValueError(f"Euler convention {convention!r} mixes upper (intrinsic) and lower (extrinsic) case")
    if any(a not in _AXES for a in axes):
        raise P3DLabValueError(f"Euler convention {convention!r} may only use the letters X, Y, Z")
    if axes[0] == axes[1] or axes[1] == axes[2]:
        raise P3DLabValueError(f"Euler convention {convention!r}: consecutive axes must differ")
    return axes, extrinsic


def euler_angles_to_matrix(euler_angles: torch.Tensor, convention: str) -> torch.Tensor:
    """(..., 3) angles in radians -> (..., 3, 3) column-convention rotation.

    ``"XYZ"`` (intrinsic) gives ``R_X(a0) R_Y(a1) R_Z(a2)``; ``"xyz"`` (extrinsic) gives
    ``R_Z(a2) R_Y(a1) R_X(a0)``. Proper Euler conventions such as "ZXZ" are supported.
    """
    if euler_angles.shape[-1] != 3:
        raise P3DLabValueError(f"euler_angles_to_matrix: expected (..., 3), got {tuple(euler_angles.shape)}")
    axes, extrinsic = _parse_convention(convention)
    angles = euler_angles.flip(-1) if extrinsic else euler_angles
    mats = [_axis_rotation(a, angles[..., i]) for i, a in enumerate(axes)]
    return mats[0] @ mats[1] @ mats[2]


def matrix_to_euler_angles(matrix: torch.Tensor, convention: str) -> torch.Tensor:
    """Inverse of :func:`euler_angles_to_matrix`; the middle angle is in [-pi/2, pi/2]
    (Tait-Bryan) or [0, pi] (proper Euler); the others in (-pi, pi].

    For ``M = R_i(a) R_j(b) R_k(c)`` with s the sign of the permutation (i, j, third axis):
    Tait-Bryan (i != k): ``b = asin(s M[i,k])``, ``a = atan2(-s M[j,k], M[k,k])``,
    ``c = atan2(-s M[i,j], M[i,i])``; proper Euler (i == k, m the unused axis):
    ``b = acos(M[i,i])``, ``a = atan2(M[j,i], -s M[m,i])``, ``c = atan2(M[i,j], s M[i,m])``.
    At gimbal lock (cos b = 0 or sin b = 0) a and c are not unique; one valid pair is returned.
    """
    if matrix.shape[-2:] != (3, 3):
        raise P3DLabValueError(f"matrix_to_euler_angles: expected (..., 3, 3), got {tuple(matrix.shape)}")
    axes, extrinsic = _parse_convention(convention)
    i, j, k = (_AXES.index(a) for a in axes)
    M = matrix
    if i != k:
        s = 1.0 if (i, j, k) in ((0, 1, 2), (1, 2, 0), (2, 0, 1)) else -1.0
        b = torch.asin((s * M[..., i, k]).clamp(-1.0, 1.0))
        a = torch.atan2(-s * M[..., j, k], M[..., k, k])
        c = torch.atan2(-s * M[..., i, j], M[..., i, i])
    else:
        m = 3 - i - j
        s = 1.0 if (i, j, m) in ((0, 1, 2), (1, 2, 0), (2, 0, 1)) else -1.0
        b = torch.acos(M[..., i, i].clamp(-1.0, 1.0))
        a = torch.atan2(M[..., j, i], -s * M[..., m, i])
        c = torch.atan2(M[..., i, j], s * M[..., i, m])
    out = torch.stack([a, b, c], -1)
    return out.flip(-1) if extrinsic else out


# ----------------------------------------------------------------------------- 6D
def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """Zhou et al.'s continuous 6D representation -> rotation: Gram-Schmidt on two 3-vectors.

    ``b1 = nrm(a1)``, ``b2 = nrm(a2 - (b1.a2) b1)``, ``b3 = b1 x b2``; the rows of R are b1, b2, b3.
    """
    if d6.shape[-1] != 6:
        raise P3DLabValueError(f"rotation_6d_to_matrix: expected (..., 6), got {tuple(d6.shape)}")
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), -2)


def matrix_to_rotation_6d(matrix: torch.Tensor) -> torch.Tensor:
    """The first two rows of R, flattened to (..., 6)."""
    return matrix[..., :2, :].reshape(matrix.shape[:-2] + (6,))
