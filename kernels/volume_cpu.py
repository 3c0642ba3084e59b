"""CPU kernels for volumes: the trilinear sampler and the fused sampler + ray marcher, forward and
backward (kernels.md §8-9; the math and the flat grid layout are in ``volume_math``).

Forward kernels run one ray (or one point) per iteration of a ``prange``: outputs are disjoint, no
synchronisation. Backward kernels scatter into the grid: every task owns its own gradient buffer
(``buffers`` (n_tasks, grid size), chosen by the caller to fit memory and summed by it in a fixed
order), so results are deterministic for a given number of tasks. Rays are dealt to tasks in
contiguous blocks, which keeps neighbouring rays (and the voxels they share) in one cache.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from p3dlab.kernels import volume_math as vm


@njit(cache=True, inline="always")
def _add(buf, index, v):
    buf[index] += v


# fastmath without nnan/ninf: the kernels rely on NaN comparisons being False for points that are not finite
_JIT = dict(cache=True, fastmath={"contract", "reassoc", "nsz", "arcp"}, error_model="numpy")
_dev = vm.build(lambda fn: njit(**_JIT)(fn), _add, lambda fn: njit(inline="always", **_JIT)(fn))
sample_point = _dev.sample_point
sample_point_backward = _dev.sample_point_backward
march_ray = _dev.march_ray
march_ray_backward = _dev.march_ray_backward


@njit(cache=True)
def _volume_of(n, flat, shape):
    """Index of the volume used by batch element n: 0 when the grid holds a single volume."""
    return 0 if flat.size == shape[0] * shape[1] * shape[2] * shape[3] else n


@njit(parallel=True, **_JIT)
def sample_volume_cpu(flat, shape, points, align, out):
    """``out[n, m, c] = V_c(points[n, m])``: flat (N or 1, C, D, H, W) grid with ``shape`` (D, H, W, C),
    local points (N, M, 3)."""
    N, M, _ = points.shape
    for t in prange(N * M):
        n = t // M
        m = t % M
        b = _volume_of(n, flat, shape)
        sample_point(flat, shape, b, points[n, m, 0], points[n, m, 1], points[n, m, 2], align, out[n], m)


@njit(parallel=True, **_JIT)
def sample_volume_backward_cpu(flat, shape, points, align, grad_out, buffers, grad_points):
    """Scatter ``grad_out`` (N, M, C) into ``buffers`` (n_tasks, flat.size; zeroed) and write
    ``grad_points`` (N, M, 3)."""
    N, M, _ = points.shape
    total = N * M
    n_tasks = buffers.shape[0]
    for task in prange(n_tasks):
        buf = buffers[task]
        for t in range(total * task // n_tasks, total * (task + 1) // n_tasks):
            n = t // M
            m = t % M
            b = _volume_of(n, flat, shape)
            gx, gy, gz = sample_point_backward(
                flat, shape, b, points[n, m, 0], points[n, m, 1], points[n, m, 2], align, grad_out[n], m, buf
            )
            grad_points[n, m, 0] = gx
            grad_points[n, m, 1] = gy
            grad_points[n, m, 2] = gz


@njit(parallel=True, **_JIT)
def march_volume_cpu(
    dens, feats, shape, ray_vol, rays, lengths, mode, eps, t_min, align, last_inf, out_f, out_o, out_z, n_used
):
    """Fused trilinear sampling + ray marching of R rays.

    ``dens``/``feats``: flat (V, 1, D, H, W) densities and (V, C, D, H, W) features (the same array
    when the densities are the features), ``shape`` = (D, H, W, C); ``ray_vol`` (R,) volume of each
    ray; ``rays`` (R, 7) local origin, local direction and world direction norm; ``lengths`` (R, P).
    Writes features ``out_f`` (R, C), opacity ``out_o`` (R,), expected depth ``out_z`` (R,) and the
    number of samples marched ``n_used`` (R,) (fewer than P after early termination)."""
    for r in prange(rays.shape[0]):
        march_ray(
            dens,
            feats,
            shape,
            ray_vol[r],
            rays,
            lengths,
            r,
            mode,
            eps,
            t_min,
            align,
            last_inf,
            out_f,
            out_o,
            out_z,
            n_used,
        )


@njit(parallel=True, **_JIT)
def march_volume_backward_cpu(
    dens,
    feats,
    shape,
    ray_vol,
    rays,
    lengths,
    mode,
    eps,
    align,
    last_inf,
    S_total,
    T_P,
    G_f,
    g_o,
    g_z,
    n_used,
    ray_grad,
    dbuf,
    fbuf,
    grad_rays,
):
    """Backward of ``march_volume_cpu``.

    Accumulates into ``dbuf``/``fbuf`` (n_tasks copies of the flat grids, zeroed; the caller sums
    them; the same array when the densities are the features) and into ``grad_rays`` (R, 7, zeroed).
    ``S_total`` (R,) = F·G + Z g_Z and ``T_P`` (R,) = 1 - O feed the quadrature scan; ``G_f`` (R, C),
    ``g_o`` and ``g_z`` (R,) are the upstream gradients. ``ray_grad``: also accumulate the
    gradients of the rays' origins and directions (skipped, and left zero, when False)."""
    R = rays.shape[0]
    P = lengths.shape[1]
    n_tasks = dbuf.shape[0]
    scratch = np.empty((n_tasks, 2, max(P, 1)), np.float64)
    for task in prange(n_tasks):
        db = dbuf[task]
        fb = fbuf[task]
        for r in range(R * task // n_tasks, R * (task + 1) // n_tasks):
            march_ray_backward(
                dens, feats, shape, ray_vol[r], rays, lengths, r, mode, eps, align, last_inf, S_total, T_P, G_f, g_o,
                g_z, n_used, ray_grad, scratch[task], db, fb, grad_rays,
            )  # fmt: skip
