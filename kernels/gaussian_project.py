"""Gaussian splatting: the projection of 3D Gaussians to the screen and their view-dependent colours,
forward and backward (docs/kernels.md#gaussian-splatting).

One Gaussian per loop iteration (CPU) or per thread (CUDA). Gaussian n has a mean X (world) and a
covariance Sigma (3 x 3, used as given: the gradient is the one of the full matrix). The camera is
two row-vector 4 x 4 matrices: ``M`` (world to NDC, a projective map) and ``V`` (world to view). With
``s = min(H, W)``:

    depth = [X, 1] V_{:,2}                               (view-space z)
    h     = [X, 1] M,   w = h_3 where depth > near_plane, else 1 (a culled Gaussian)
    x_ndc = h_0 / w,    y_ndc = h_1 / w
    u     = (W - 1 - s x_ndc) / 2,  v = (H - 1 - s y_ndc) / 2              (pixel centres)
    J_km  = -(s / 2) (M_mk w - h_k M_m3) / w^2           (k = 0, 1; m = 0, 1, 2: d(u, v)/dX, EWA)
    P     = J Sigma J^T,   Sigma_2D = P + low_pass I = [[a, b], [b', c]]   (b = P_01, b' = P_10)
    conic = (c, -b, a) / D,   D = a c - b^2 where the Gaussian is kept, else 1
    radius = ceil(3 sqrt(lambda_max)),  lambda_max = m + sqrt(max(m^2 - det, 0)),  m = (a + c) / 2

A Gaussian is culled (radius 0) when depth <= near_plane, when |x_ndc| > 1.3 W / s or |y_ndc| >
1.3 H / s, when det = a c - b^2 is not a finite positive number, or when its box [u - r, u + r] x
[v - r, v + r] misses the image; the radius is clamped to 4 max(H, W). This is exactly what
``p3dlab.ops.gaussian_splat.project_gaussians_torch`` computes, and the culled Gaussians get the same
outputs (and gradients) there as here.

Backward, for upstream gradients g_u, g_v, (g_A, g_B, g_C) of the conic, g_depth and G2 (2 x 2) of
Sigma_2D:

    dL/dD = -(g_A A + g_B B + g_C C) / D                 ((A, B, C) the conic; only where D = det)
    G     = [[g_a, g_b], [g_b', g_c]],  g_a = G2_00 + g_C / D + c dL/dD,  g_b = G2_01 - g_B / D - 2 b dL/dD,
            g_b' = G2_10,  g_c = G2_11 + g_A / D + a dL/dD
    dL/dSigma = J^T G J                                  (3 x 3, not symmetrised)
    dL/dJ     = G J Sigma^T + G^T J Sigma                (2 x 3)
    dL/dh_k   = (s / 2) sum_m dL/dJ_km M_m3 / w^2 - (s / 2) g_{u,v}_k / w            (k = 0, 1)
    dL/dw     = -(s / 2) sum_km dL/dJ_km (2 h_k M_m3 / w^3 - M_mk / w^2) + (s / 2) (g_u h_0 + g_v h_1) / w^2
    dL/dh_3   = dL/dw where depth > near_plane, else 0
    dL/dX_m   = sum_k dL/dh_k M_mk + g_depth V_m2

Colours, from spherical-harmonic coefficients sh_n (K, 3) and a direction d = (x, y, z) (unit, from
the camera to the Gaussian; used as given), with the first ``n_basis`` = (degree + 1)^2 basis functions
Y_k (real SH, the signs of 3DGS, listed in ``sh_basis`` with their partial derivatives):

    colour_n = max(0.5 + sum_{k < n_basis} Y_k(d) sh_nk, 0)                (per channel)
    dL/dsh_nk = Y_k(d) g,   dL/dd = sum_k (sh_nk . g) grad Y_k(d)            (g = 0 where clamped)

Every Gaussian writes only its own rows of the outputs, so neither target needs atomics.

``build(jit)`` compiles the per-Gaussian math and the per-thread bodies with ``jit`` (``numba.njit``
here and in the tests, ``cuda.jit(device=True)`` in ``cuda_adapter``). Arguments are trusted: the
operation (``p3dlab.ops.gaussian_splat``) checks shapes, dtypes and finite values first.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

from numba import njit, prange

from p3dlab.kernels.parallel_jit import parallel_njit
from p3dlab.kernels.sh_constants import FRUSTUM_MARGIN, SH_C0, SH_C1, SH_C2, SH_C3

# Numba's cache checks the contents of the file that defines a kernel, not of the files whose
# constants it compiles in: this line is the hash of sh_constants.py (tests/test_kernel_cache.py
# enforces it), so cached kernels are rebuilt when the constants change.
MATH_SOURCE_SHA256 = "02ef3dd12eb541f2"


def build(jit):
    """Compile the per-Gaussian forward and backward, and the per-thread bodies, with ``jit``."""

    def homogeneous(n, means, M, k):
        """h_k = [X_n, 1] M_{:,k}: column k of the row-vector map applied to Gaussian n's mean."""
        return means[n, 0] * M[0, k] + means[n, 1] * M[1, k] + means[n, 2] * M[2, k] + M[3, k]

    homogeneous = jit(homogeneous)

    def jacobian_row(k, h_k, w, M, scale):
        """Row k of J = d(u, v)/dX: -(s / 2) (M_{:3,k} w - h_k M_{:3,3}) / w^2."""
        f = -0.5 * scale / (w * w)
        return (f * (M[0, k] * w - h_k * M[0, 3]), f * (M[1, k] * w - h_k * M[1, 3]), f * (M[2, k] * w - h_k * M[2, 3]))

    jacobian_row = jit(jacobian_row)

    def sandwich(p, n, covs, q):
        """p^T Sigma_n q for 3-vectors p, q (tuples)."""
        total = 0.0
        for i in range(3):
            row = covs[n, i, 0] * q[0] + covs[n, i, 1] * q[1] + covs[n, i, 2] * q[2]
            total += p[i] * row
        return total

    sandwich = jit(sandwich)

    def screen_terms(n, means, covs, M, V, H, W, low_pass, near_plane):
        """The forward's intermediate values for Gaussian n: (depth, h_0, h_1, w, in_front, kept, J_0,
        J_1, a, b, b', c, D); ``kept`` is False for a culled Gaussian (radius not yet considered)."""
        scale = float(min(H, W))
        depth = means[n, 0] * V[0, 2] + means[n, 1] * V[1, 2] + means[n, 2] * V[2, 2] + V[3, 2]
        h0 = homogeneous(n, means, M, 0)
        h1 = homogeneous(n, means, M, 1)
        in_front = depth > near_plane
        w = homogeneous(n, means, M, 3) if in_front else 1.0
        x_ndc = h0 / w
        y_ndc = h1 / w
        kept = in_front and abs(x_ndc) <= FRUSTUM_MARGIN * W / scale and abs(y_ndc) <= FRUSTUM_MARGIN * H / scale
        J0 = jacobian_row(0, h0, w, M, scale)
        J1 = jacobian_row(1, h1, w, M, scale)
        a = sandwich(J0, n, covs, J0) + low_pass
        b = sandwich(J0, n, covs, J1)
        b10 = sandwich(J1, n, covs, J0)
        c = sandwich(J1, n, covs, J1) + low_pass
        det = a * c - b * b
        kept = kept and det > 0.0 and math.isfinite(det)
        D = det if kept else 1.0
        return depth, h0, h1, w, in_front, kept, J0, J1, a, b, b10, c, D

    screen_terms = jit(screen_terms)

    def footprint_radius(u, v, a, c, D, kept, H, W):
        """ceil(3 sqrt(lambda_max)) of the 2D covariance, 0 where culled or the box misses the image,
        at most 4 max(H, W)."""
        if not kept:
            return 0
        mid = 0.5 * (a + c)
        lam = mid + math.sqrt(max(mid * mid - D, 0.0))
        radius = 3.0 * math.sqrt(max(lam, 0.0))
        limit = 4.0 * max(H, W)
        if not math.isfinite(radius):
            return 0
        if radius <= limit:  # beyond the limit the box covers the image whether rounded up or not
            radius = float(math.ceil(radius))
        if not radius > 0.0:
            return 0
        if not (u + radius >= 0.0 and u - radius <= W - 1.0 and v + radius >= 0.0 and v - radius <= H - 1.0):
            return 0
        return int(min(radius, limit))

    footprint_radius = jit(footprint_radius)

    def project_gaussian(n, means, covs, M, V, H, W, low_pass, near_plane, means2d, conics, depths, cov2d, radii):
        """Gaussian n's screen-space mean, conic, depth, dilated 2D covariance and radius."""
        depth, h0, h1, w, _, kept, _, _, a, b, b10, c, D = screen_terms(
            n, means, covs, M, V, H, W, low_pass, near_plane
        )
        scale = float(min(H, W))
        u = (W - 1.0 - scale * (h0 / w)) * 0.5
        v = (H - 1.0 - scale * (h1 / w)) * 0.5
        means2d[n, 0] = u
        means2d[n, 1] = v
        conics[n, 0] = c / D
        conics[n, 1] = -b / D
        conics[n, 2] = a / D
        depths[n] = depth
        cov2d[n, 0, 0] = a
        cov2d[n, 0, 1] = b
        cov2d[n, 1, 0] = b10
        cov2d[n, 1, 1] = c
        radii[n] = footprint_radius(u, v, a, c, D, kept, H, W)

    project_gaussian = jit(project_gaussian)

    def project_gaussian_backward(
        n, means, covs, M, V, H, W, low_pass, near_plane, grad_means2d, grad_conics, grad_depths, grad_cov2d,
        grad_means, grad_covs,
    ):  # fmt: skip
        """Gaussian n's dL/dX (into ``grad_means[n]``) and dL/dSigma (into ``grad_covs[n]``), from the
        upstream gradients of its outputs (the formulas of the module's docstring)."""
        _, h0, h1, w, in_front, kept, J0, J1, a, b, _, c, D = screen_terms(
            n, means, covs, M, V, H, W, low_pass, near_plane
        )
        scale = float(min(H, W))
        gA = grad_conics[n, 0]
        gB = grad_conics[n, 1]
        gC = grad_conics[n, 2]
        g00 = grad_cov2d[n, 0, 0] + gC / D
        g01 = grad_cov2d[n, 0, 1] - gB / D
        g10 = grad_cov2d[n, 1, 0]
        g11 = grad_cov2d[n, 1, 1] + gA / D
        if kept:  # D = a c - b^2
            dD = -(gA * c + gB * -b + gC * a) / (D * D)
            g00 += dD * c
            g01 -= 2.0 * dD * b
            g11 += dD * a
        # dL/dSigma = J^T G J: (P_0m J_0n + P_1m J_1n), P_lm = sum_k G_kl J_km
        for m in range(3):
            p0 = g00 * J0[m] + g10 * J1[m]
            p1 = g01 * J0[m] + g11 * J1[m]
            for k in range(3):
                grad_covs[n, m, k] = p0 * J0[k] + p1 * J1[k]
        # dL/dJ = G J Sigma^T + G^T J Sigma, row by row, then through J's dependence on h_0, h_1 and w
        d_h0 = 0.0
        d_h1 = 0.0
        d_w = 0.0
        inv_w2 = 1.0 / (w * w)
        for m in range(3):
            sigma_j0 = covs[n, m, 0] * J0[0] + covs[n, m, 1] * J0[1] + covs[n, m, 2] * J0[2]  # (Sigma J_0^T)_m
            sigma_j1 = covs[n, m, 0] * J1[0] + covs[n, m, 1] * J1[1] + covs[n, m, 2] * J1[2]
            j0_sigma = J0[0] * covs[n, 0, m] + J0[1] * covs[n, 1, m] + J0[2] * covs[n, 2, m]  # (J_0 Sigma)_m
            j1_sigma = J1[0] * covs[n, 0, m] + J1[1] * covs[n, 1, m] + J1[2] * covs[n, 2, m]
            gJ0 = g00 * sigma_j0 + g01 * sigma_j1 + g00 * j0_sigma + g10 * j1_sigma
            gJ1 = g10 * sigma_j0 + g11 * sigma_j1 + g01 * j0_sigma + g11 * j1_sigma
            d_h0 += 0.5 * scale * gJ0 * M[m, 3] * inv_w2
            d_h1 += 0.5 * scale * gJ1 * M[m, 3] * inv_w2
            d_w -= 0.5 * scale * (gJ0 * (2.0 * h0 * M[m, 3] / w - M[m, 0]) + gJ1 * (2.0 * h1 * M[m, 3] / w - M[m, 1]))
        d_w *= inv_w2
        # the mean: x_ndc = h_0 / w, u = (W - 1 - s x_ndc) / 2
        g_x = -0.5 * scale * grad_means2d[n, 0]
        g_y = -0.5 * scale * grad_means2d[n, 1]
        d_h0 += g_x / w
        d_h1 += g_y / w
        d_w -= (g_x * h0 + g_y * h1) * inv_w2
        d_h3 = d_w if in_front else 0.0
        g_depth = grad_depths[n]
        for m in range(3):
            grad_means[n, m] = d_h0 * M[m, 0] + d_h1 * M[m, 1] + d_h3 * M[m, 3] + g_depth * V[m, 2]

    project_gaussian_backward = jit(project_gaussian_backward)

    def project_thread(t, means, covs, M, V, H, W, low_pass, near_plane, means2d, conics, depths, cov2d, radii):
        """One CUDA thread per Gaussian."""
        if t >= means.shape[0]:
            return
        project_gaussian(t, means, covs, M, V, H, W, low_pass, near_plane, means2d, conics, depths, cov2d, radii)

    project_thread = jit(project_thread)

    def project_backward_thread(
        t, means, covs, M, V, H, W, low_pass, near_plane, grad_means2d, grad_conics, grad_depths, grad_cov2d,
        grad_means, grad_covs,
    ):  # fmt: skip
        """One CUDA thread per Gaussian."""
        if t >= means.shape[0]:
            return
        project_gaussian_backward(
            t, means, covs, M, V, H, W, low_pass, near_plane, grad_means2d, grad_conics, grad_depths, grad_cov2d,
            grad_means, grad_covs,
        )  # fmt: skip

    project_backward_thread = jit(project_backward_thread)

    def sh_basis(k, x, y, z):
        """(Y_k, dY_k/dx, dY_k/dy, dY_k/dz) of the k-th real SH basis function at direction (x, y, z)."""
        xx = x * x
        yy = y * y
        zz = z * z
        if k == 0:
            return SH_C0, 0.0, 0.0, 0.0
        if k == 1:
            return -SH_C1 * y, 0.0, -SH_C1, 0.0
        if k == 2:
            return SH_C1 * z, 0.0, 0.0, SH_C1
        if k == 3:
            return -SH_C1 * x, -SH_C1, 0.0, 0.0
        if k == 4:
            f = SH_C2[0]
            return f * x * y, f * y, f * x, 0.0
        if k == 5:
            f = SH_C2[1]
            return f * y * z, 0.0, f * z, f * y
        if k == 6:
            f = SH_C2[2]
            return f * (2.0 * zz - xx - yy), -2.0 * f * x, -2.0 * f * y, 4.0 * f * z
        if k == 7:
            f = SH_C2[3]
            return f * x * z, f * z, 0.0, f * x
        if k == 8:
            f = SH_C2[4]
            return f * (xx - yy), 2.0 * f * x, -2.0 * f * y, 0.0
        if k == 9:
            f = SH_C3[0]
            return f * y * (3.0 * xx - yy), 6.0 * f * x * y, 3.0 * f * (xx - yy), 0.0
        if k == 10:
            f = SH_C3[1]
            return f * x * y * z, f * y * z, f * x * z, f * x * y
        if k == 11:
            f = SH_C3[2]
            return f * y * (4.0 * zz - xx - yy), -2.0 * f * x * y, f * (4.0 * zz - xx - 3.0 * yy), 8.0 * f * y * z
        if k == 12:
            f = SH_C3[3]
            return (
                f * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
                -6.0 * f * x * z,
                -6.0 * f * y * z,
                3.0 * f * (2.0 * zz - xx - yy),
            )
        if k == 13:
            f = SH_C3[4]
            return f * x * (4.0 * zz - xx - yy), f * (4.0 * zz - 3.0 * xx - yy), -2.0 * f * x * y, 8.0 * f * x * z
        if k == 14:
            f = SH_C3[5]
            return f * z * (xx - yy), 2.0 * f * x * z, -2.0 * f * y * z, f * (xx - yy)
        f = SH_C3[6]
        return f * x * (xx - 3.0 * yy), 3.0 * f * (xx - yy), -6.0 * f * x * y, 0.0

    sh_basis = jit(sh_basis)

    def sh_sum(n, sh, directions, n_basis):
        """The colour before the clamp, ``0.5 + sum_{k < n_basis} Y_k(d_n) sh_nk``, per channel."""
        x = directions[n, 0]
        y = directions[n, 1]
        z = directions[n, 2]
        r = 0.5
        g = 0.5
        b = 0.5
        for k in range(n_basis):
            Y, _, _, _ = sh_basis(k, x, y, z)
            r += Y * sh[n, k, 0]
            g += Y * sh[n, k, 1]
            b += Y * sh[n, k, 2]
        return r, g, b

    sh_sum = jit(sh_sum)

    def sh_color(n, sh, directions, n_basis, colors):
        """colour_n = max(0.5 + sum_{k < n_basis} Y_k(d_n) sh_nk, 0), per channel."""
        r, g, b = sh_sum(n, sh, directions, n_basis)
        colors[n, 0] = max(r, 0.0)
        colors[n, 1] = max(g, 0.0)
        colors[n, 2] = max(b, 0.0)

    sh_color = jit(sh_color)

    def sh_color_backward(n, sh, directions, n_basis, grad_colors, grad_sh, grad_directions):
        """dL/dsh_nk = Y_k(d_n) g_n and dL/dd_n = sum_k (sh_nk . g_n) grad Y_k(d_n), with g_n the
        colour's gradient where 0.5 + sum_k Y_k sh_nk >= 0 (else 0: the clamp). Rows k >= n_basis of
        ``grad_sh[n]`` are set to zero."""
        x = directions[n, 0]
        y = directions[n, 1]
        z = directions[n, 2]
        r, g, b = sh_sum(n, sh, directions, n_basis)
        gr = grad_colors[n, 0] if r >= 0.0 else 0.0
        gg = grad_colors[n, 1] if g >= 0.0 else 0.0
        gb = grad_colors[n, 2] if b >= 0.0 else 0.0
        dx = 0.0
        dy = 0.0
        dz = 0.0
        for k in range(sh.shape[1]):
            if k >= n_basis:
                grad_sh[n, k, 0] = 0.0
                grad_sh[n, k, 1] = 0.0
                grad_sh[n, k, 2] = 0.0
                continue
            Y, Yx, Yy, Yz = sh_basis(k, x, y, z)
            grad_sh[n, k, 0] = Y * gr
            grad_sh[n, k, 1] = Y * gg
            grad_sh[n, k, 2] = Y * gb
            weight = sh[n, k, 0] * gr + sh[n, k, 1] * gg + sh[n, k, 2] * gb
            dx += weight * Yx
            dy += weight * Yy
            dz += weight * Yz
        grad_directions[n, 0] = dx
        grad_directions[n, 1] = dy
        grad_directions[n, 2] = dz

    sh_color_backward = jit(sh_color_backward)

    def sh_color_thread(t, sh, directions, n_basis, colors):
        """One CUDA thread per Gaussian."""
        if t >= sh.shape[0]:
            return
        sh_color(t, sh, directions, n_basis, colors)

    sh_color_thread = jit(sh_color_thread)

    def sh_color_backward_thread(t, sh, directions, n_basis, grad_colors, grad_sh, grad_directions):
        """One CUDA thread per Gaussian."""
        if t >= sh.shape[0]:
            return
        sh_color_backward(t, sh, directions, n_basis, grad_colors, grad_sh, grad_directions)

    sh_color_backward_thread = jit(sh_color_backward_thread)

    return SimpleNamespace(
        sh_basis=sh_basis,
        sh_sum=sh_sum,
        sh_color=sh_color,
        sh_color_backward=sh_color_backward,
        sh_color_thread=sh_color_thread,
        sh_color_backward_thread=sh_color_backward_thread,
        screen_terms=screen_terms,
        project_gaussian=project_gaussian,
        project_gaussian_backward=project_gaussian_backward,
        project_thread=project_thread,
        project_backward_thread=project_backward_thread,
    )


_cpu = build(lambda fn: njit(cache=True)(fn))
_project_gaussian = _cpu.project_gaussian
_project_gaussian_backward = _cpu.project_gaussian_backward


@parallel_njit(cache=True)
def project_gaussians_cpu(means, covs, M, V, H, W, low_pass, near_plane, means2d, conics, depths, cov2d, radii):
    """Forward for all N Gaussians: ``means`` (N, 3), ``covs`` (N, 3, 3), ``M``, ``V`` (4, 4) of the
    same float dtype; outputs ``means2d`` (N, 2), ``conics`` (N, 3), ``depths`` (N,), ``cov2d``
    (N, 2, 2) and ``radii`` (N,) int64, written in full."""
    for n in prange(means.shape[0]):
        _project_gaussian(n, means, covs, M, V, H, W, low_pass, near_plane, means2d, conics, depths, cov2d, radii)


@parallel_njit(cache=True)
def project_gaussians_backward_cpu(
    means, covs, M, V, H, W, low_pass, near_plane, grad_means2d, grad_conics, grad_depths, grad_cov2d,
    grad_means, grad_covs,
):  # fmt: skip
    """Backward for all N Gaussians: ``grad_means`` (N, 3) and ``grad_covs`` (N, 3, 3) written in full
    from the upstream gradients of the forward's four float outputs."""
    for n in prange(means.shape[0]):
        _project_gaussian_backward(
            n, means, covs, M, V, H, W, low_pass, near_plane, grad_means2d, grad_conics, grad_depths, grad_cov2d,
            grad_means, grad_covs,
        )  # fmt: skip


# ----------------------------------------------------------------------------- colours
_sh_color = _cpu.sh_color
_sh_color_backward = _cpu.sh_color_backward


@parallel_njit(cache=True)
def sh_colors_cpu(sh, directions, n_basis, colors):
    """Colours (N, 3) from ``sh`` (N, K, 3) with its first ``n_basis`` <= K coefficients and unit
    ``directions`` (N, 3)."""
    for n in prange(sh.shape[0]):
        _sh_color(n, sh, directions, n_basis, colors)


@parallel_njit(cache=True)
def sh_colors_backward_cpu(sh, directions, n_basis, grad_colors, grad_sh, grad_directions):
    """``grad_sh`` (N, K, 3) and ``grad_directions`` (N, 3), written in full, from ``grad_colors``."""
    for n in prange(sh.shape[0]):
        _sh_color_backward(n, sh, directions, n_basis, grad_colors, grad_sh, grad_directions)
