"""Forward kinematics of a kinematic tree with Rodrigues rotations, and its reverse (CPU): the fast
path of ``p3dlab.body``'s pose chain (``p3dlab.ops.body_kinematics``).

The math, per body and joint j (parents before children, ``parent(root) = -1``), with the pose
``w_j`` (axis-angle, ``theta = |w_j|``) and the rest joint ``J_j``:

    R_j = I + a(s) K_j + b(s) K_j^2,   s = theta^2,  K_j = [w_j]x,
          a(s) = sin(theta) / theta,    b(s) = (1 - cos(theta)) / theta^2
    A_j = A_p L_j,   L_j = [R_j | J_j - R_j J_j],   A_root = L_root     (3 x 4 affine maps)
    posed_j = A_j J_j  (= A_p J_j: a joint turns about its own position)

Reverse, with the incoming gradients G_j of A_j (3 x 4: rotation part G^R, translation g^t) and
gposed_j, joints from the leaves up (a joint's G_j is complete once its children are done):

    posed_j = A_p J_j:          G^R_p += gposed_j J_j^T, g^t_p += gposed_j, gJ_j += R^A_p^T gposed_j
    A^R_j = A^R_p R_j:          G^R_p += G^R_j R_j^T,    gR_j = A^R_p^T G^R_j
    A^t_j = A^R_p o_j + A^t_p,  o_j = J_j - R_j J_j:
                                G^R_p += g^t_j o_j^T,    g^t_p += g^t_j,
                                go = A^R_p^T g^t_j,      gJ_j += go - R_j^T go,  gR_j -= go J_j^T

(the root's parent is the identity and receives nothing), then through Rodrigues, with
``<X, Y> = sum X * Y`` and ``E_k = d K / d w_k``:

    gw_k = 2 w_k (a'(s) <gR, K> + b'(s) <gR, K^2>) + a(s) <gR, E_k> + b(s) <gR K^T + K^T gR, E_k>

``a, b, a', b'`` come from their Taylor series below ``s = 1e-4`` (where the closed forms cancel),
so R and its gradient are exact at ``w = 0``, and the rest pose gives ``A_j = [I | 0]`` exactly.

Everything is float64. The tree is sequential and tiny (about 20 joints), so one plain loop per
body; no parallel launch, no CUDA build (other devices keep the torch path of ``p3dlab.body``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_TAYLOR_BELOW = 1e-4  # s = theta^2 below which a, b and their derivatives use their series


@njit(cache=True)
def rodrigues_factors(s):
    """``a(s) = sin(t)/t``, ``b(s) = (1 - cos t)/t^2`` and their derivatives in ``s = t^2``."""
    if s < _TAYLOR_BELOW:
        a = 1.0 - s / 6.0 + s * s / 120.0
        b = 0.5 - s / 24.0 + s * s / 720.0
        da = -1.0 / 6.0 + s / 60.0 - s * s / 1680.0
        db = -1.0 / 24.0 + s / 360.0 - s * s / 13440.0
        return a, b, da, db
    t = math.sqrt(s)
    sin_t = math.sin(t)
    cos_t = math.cos(t)
    a = sin_t / t
    half_sin = math.sin(0.5 * t)
    b = 2.0 * half_sin * half_sin / s  # (1 - cos t) / t^2 without the cancellation of 1 - cos t
    da = (t * cos_t - sin_t) / (2.0 * s * t)
    db = (t * sin_t - 4.0 * half_sin * half_sin) / (2.0 * s * s)
    return a, b, da, db


@njit(cache=True)
def skew(w, K):
    """``K = [w]x``: ``K v = w x v``."""
    K[0, 0] = 0.0
    K[0, 1] = -w[2]
    K[0, 2] = w[1]
    K[1, 0] = w[2]
    K[1, 1] = 0.0
    K[1, 2] = -w[0]
    K[2, 0] = -w[1]
    K[2, 1] = w[0]
    K[2, 2] = 0.0


@njit(cache=True)
def rodrigues(w, R, K, K2):
    """``R = I + a K + b K^2`` for the axis-angle vector w; fills K and K2 = K @ K too."""
    skew(w, K)
    for r in range(3):
        for c in range(3):
            K2[r, c] = K[r, 0] * K[0, c] + K[r, 1] * K[1, c] + K[r, 2] * K[2, c]
    a, b, _, _ = rodrigues_factors(w[0] * w[0] + w[1] * w[1] + w[2] * w[2])
    for r in range(3):
        for c in range(3):
            R[r, c] = (1.0 if r == c else 0.0) + a * K[r, c] + b * K2[r, c]


@njit(cache=True)
def rodrigues_backward(w, K, K2, gR, gw):
    """``gw = (dR/dw)^T gR`` (the formula in the module's docstring)."""
    a, b, da, db = rodrigues_factors(w[0] * w[0] + w[1] * w[1] + w[2] * w[2])
    along_k = 0.0
    along_k2 = 0.0
    for r in range(3):
        for c in range(3):
            along_k += gR[r, c] * K[r, c]
            along_k2 += gR[r, c] * K2[r, c]
    M = np.empty((3, 3))  # gR K^T + K^T gR
    for r in range(3):
        for c in range(3):
            M[r, c] = 0.0
            for k in range(3):
                M[r, c] += gR[r, k] * K[c, k] + K[k, r] * gR[k, c]
    # <X, E_k>: E_x has (2,1) = 1, (1,2) = -1; E_y (0,2) = 1, (2,0) = -1; E_z (1,0) = 1, (0,1) = -1
    gw[0] = 2.0 * w[0] * (da * along_k + db * along_k2) + a * (gR[2, 1] - gR[1, 2]) + b * (M[2, 1] - M[1, 2])
    gw[1] = 2.0 * w[1] * (da * along_k + db * along_k2) + a * (gR[0, 2] - gR[2, 0]) + b * (M[0, 2] - M[2, 0])
    gw[2] = 2.0 * w[2] * (da * along_k + db * along_k2) + a * (gR[1, 0] - gR[0, 1]) + b * (M[1, 0] - M[0, 1])


@njit(cache=True)
def forward_kinematics_cpu(pose, joints, parents):
    """pose (N, J, 3) axis-angle, joints (N, J, 3) rest positions, parents (J,) int64 with
    ``parents[j] < j`` (-1 for roots). Returns A (N, J, 3, 4) and posed joints (N, J, 3)."""
    N, J = pose.shape[0], pose.shape[1]
    A = np.zeros((N, J, 3, 4))
    posed = np.zeros((N, J, 3))
    R = np.empty((3, 3))
    K = np.empty((3, 3))
    K2 = np.empty((3, 3))
    offset = np.empty(3)
    for n in range(N):
        for j in range(J):
            rodrigues(pose[n, j], R, K, K2)
            Jj = joints[n, j]
            for r in range(3):
                offset[r] = Jj[r] - (R[r, 0] * Jj[0] + R[r, 1] * Jj[1] + R[r, 2] * Jj[2])  # o_j = J_j - R_j J_j
            p = parents[j]
            if p < 0:  # A_root = [R | o], posed = J
                for r in range(3):
                    for c in range(3):
                        A[n, j, r, c] = R[r, c]
                    A[n, j, r, 3] = offset[r]
                    posed[n, j, r] = Jj[r]
                continue
            for r in range(3):  # A_j = A_p [R_j | o_j], posed_j = A_p J_j
                Ap0, Ap1, Ap2, Apt = A[n, p, r, 0], A[n, p, r, 1], A[n, p, r, 2], A[n, p, r, 3]
                for c in range(3):
                    A[n, j, r, c] = Ap0 * R[0, c] + Ap1 * R[1, c] + Ap2 * R[2, c]
                A[n, j, r, 3] = Ap0 * offset[0] + Ap1 * offset[1] + Ap2 * offset[2] + Apt
                posed[n, j, r] = Ap0 * Jj[0] + Ap1 * Jj[1] + Ap2 * Jj[2] + Apt
    return A, posed


@njit(cache=True)
def forward_kinematics_backward_cpu(pose, joints, parents, A, grad_A, grad_posed):
    """The reverse of ``forward_kinematics_cpu`` (module docstring): gradients of the pose and the
    rest joints from those of A (N, J, 3, 4) and of the posed joints (N, J, 3)."""
    N, J = pose.shape[0], pose.shape[1]
    grad_pose = np.zeros((N, J, 3))
    grad_joints = np.zeros((N, J, 3))
    G = np.empty((J, 3, 4))  # the complete gradient of each A_j, accumulated from its children
    R = np.empty((3, 3))
    K = np.empty((3, 3))
    K2 = np.empty((3, 3))
    gR = np.empty((3, 3))
    go = np.empty(3)
    offset = np.empty(3)
    for n in range(N):
        G[:, :, :] = grad_A[n]
        for j in range(J - 1, -1, -1):
            rodrigues(pose[n, j], R, K, K2)
            p = parents[j]
            Jj = joints[n, j]
            for r in range(3):
                offset[r] = Jj[r] - (R[r, 0] * Jj[0] + R[r, 1] * Jj[1] + R[r, 2] * Jj[2])
            if p < 0:  # the parent is the identity
                for r in range(3):
                    grad_joints[n, j, r] += grad_posed[n, j, r]
                    go[r] = G[j, r, 3]
                    for c in range(3):
                        gR[r, c] = G[j, r, c]
            else:
                for r in range(3):
                    for c in range(3):
                        # G^R_p += gposed_j J_j^T + G^R_j R_j^T + g^t_j o_j^T
                        G[p, r, c] += (
                            grad_posed[n, j, r] * Jj[c]
                            + G[j, r, 0] * R[c, 0]
                            + G[j, r, 1] * R[c, 1]
                            + G[j, r, 2] * R[c, 2]
                            + G[j, r, 3] * offset[c]
                        )
                    G[p, r, 3] += grad_posed[n, j, r] + G[j, r, 3]
                for r in range(3):
                    # gJ_j += A^R_p^T gposed_j;  go = A^R_p^T g^t_j;  gR_j = A^R_p^T G^R_j
                    gj = 0.0
                    g = 0.0
                    for k in range(3):
                        gj += A[n, p, k, r] * grad_posed[n, j, k]
                        g += A[n, p, k, r] * G[j, k, 3]
                    grad_joints[n, j, r] += gj
                    go[r] = g
                    for c in range(3):
                        gR[r, c] = A[n, p, 0, r] * G[j, 0, c] + A[n, p, 1, r] * G[j, 1, c] + A[n, p, 2, r] * G[j, 2, c]
            for r in range(3):
                # gJ_j += go - R_j^T go;  gR_j -= go J_j^T
                grad_joints[n, j, r] += go[r] - (R[0, r] * go[0] + R[1, r] * go[1] + R[2, r] * go[2])
                for c in range(3):
                    gR[r, c] -= go[r] * Jj[c]
            rodrigues_backward(pose[n, j], K, K2, gR, grad_pose[n, j])
    return grad_pose, grad_joints


@njit(cache=True)
def skin_vertices_cpu(v_shaped, blend, out):
    """``out_i = v_i + T_i [v_i; 1]`` for v_shaped (N, V, 3) and the blended maps ``T_i = sum_j w_ij
    (A_j - [I | 0])`` (N, V, 3, 4) (linear blend skinning, written so the rest pose is exact)."""
    for n in range(v_shaped.shape[0]):
        for i in range(v_shaped.shape[1]):
            x, y, z = v_shaped[n, i, 0], v_shaped[n, i, 1], v_shaped[n, i, 2]
            for r in range(3):
                T = blend[n, i, r]
                out[n, i, r] = v_shaped[n, i, r] + T[0] * x + T[1] * y + T[2] * z + T[3]


@njit(cache=True)
def skin_vertices_backward_cpu(v_shaped, blend, grad_out, grad_v, grad_blend):
    """The reverse of ``skin_vertices_cpu``: ``grad_v_i = g_i + T_i[:, :3]^T g_i`` and
    ``grad_T_i = g_i [v_i; 1]^T`` (N, V, 3, 4)."""
    for n in range(v_shaped.shape[0]):
        for i in range(v_shaped.shape[1]):
            g0, g1, g2 = grad_out[n, i, 0], grad_out[n, i, 1], grad_out[n, i, 2]
            for c in range(3):
                grad_v[n, i, c] = (
                    grad_out[n, i, c] + blend[n, i, 0, c] * g0 + blend[n, i, 1, c] * g1 + blend[n, i, 2, c] * g2
                )
            for r in range(3):
                g = grad_out[n, i, r]
                for c in range(3):
                    grad_blend[n, i, r, c] = g * v_shaped[n, i, c]
                grad_blend[n, i, r, 3] = g
