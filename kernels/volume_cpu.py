"""CPU kernels for volumes: the trilinear sampler and the fused sampler + ray marcher, forward and
backward (kernels.md §8-9; the math is in ``volume_math``).

Forward kernels run one ray (or one point) per iteration of a ``prange``: outputs are disjoint, no
synchronisation. Backward kernels scatter into the grids: every task owns its own gradient buffer
(``n_tasks`` copies of the grid, chosen by the caller to fit memory) and the buffers are summed in a
fixed order, so results are deterministic for a given ``n_tasks``. Rays are dealt to tasks
round-robin (ray r to task r mod n_tasks) so that empty regions of the image do not unbalance them.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from p3dlab.kernels import volume_math as vm


@njit(cache=True)
def _add(grid, b, c, k, j, i, v):
    grid[b, c, k, j, i] += v


_dev = vm.build(lambda fn: njit(cache=True)(fn), _add)
sample_point = _dev.sample_point
sample_point_backward = _dev.sample_point_backward
march_ray = _dev.march_ray
march_ray_backward_ea = _dev.march_ray_backward_ea
march_ray_backward_quadrature = _dev.march_ray_backward_quadrature
EA = vm.EA
QUADRATURE = vm.QUADRATURE


@njit(cache=True, parallel=True)
def sample_volume_cpu(grid, points, align, out):
    """``out[n, m, c] = V_c(points[n, m])`` for grid (N or 1, C, D, H, W) and local points (N, M, 3)."""
    N, M, _ = points.shape
    one = grid.shape[0] == 1
    for t in prange(N * M):
        n = t // M
        m = t % M
        sample_point(grid, 0 if one else n, points[n, m, 0], points[n, m, 1], points[n, m, 2], align, out[n], m)


@njit(cache=True, parallel=True)
def sample_volume_backward_cpu(grid, points, align, grad_out, buffers, grad_points):
    """Scatter ``grad_out`` (N, M, C) into ``buffers`` (n_tasks, *grid.shape; zeroed, one per task,
    summed by the caller) and write ``grad_points`` (N, M, 3)."""
    N, M, _ = points.shape
    one = grid.shape[0] == 1
    total = N * M
    n_tasks = buffers.shape[0]
    for task in prange(n_tasks):
        buf = buffers[task]
        for t in range(task, total, n_tasks):
            n = t // M
            m = t % M
            gx, gy, gz = sample_point_backward(
                grid, 0 if one else n, points[n, m, 0], points[n, m, 1], points[n, m, 2], align, grad_out[n], m, buf
            )
            grad_points[n, m, 0] = gx
            grad_points[n, m, 1] = gy
            grad_points[n, m, 2] = gz


@njit(cache=True, parallel=True)
def march_volume_cpu(
    dens, feats, ray_vol, rays, lengths, mode, eps, t_min, align, last_inf, out_f, out_o, out_z, n_used
):
    """Fused trilinear sampling + ray marching of R rays.

    dens (V, 1, D, H, W), feats (V, C, D, H, W); ``ray_vol`` (R,) volume of each ray; ``rays`` (R, 7)
    local origin, local direction and world direction norm; ``lengths`` (R, P). Writes features
    ``out_f`` (R, C), opacity ``out_o`` (R,), expected depth ``out_z`` (R,) and the number of samples
    marched ``n_used`` (R,) (fewer than P after early termination)."""
    for r in prange(rays.shape[0]):
        march_ray(
            dens, feats, ray_vol[r], rays, lengths, r, mode, eps, t_min, align, last_inf, out_f, out_o, out_z, n_used
        )


@njit(cache=True, parallel=True)
def march_volume_backward_cpu(
    dens,
    feats,
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
    dbuf,
    fbuf,
    grad_rays,
):
    """Backward of ``march_volume_cpu``.

    Accumulates into ``dbuf``/``fbuf`` (n_tasks copies of the grids' shapes, zeroed; the caller sums
    them) and into ``grad_rays`` (R, 7, zeroed). ``S_total`` (R,) = F·G + Z g_Z and ``T_P`` (R,) =
    1 - O feed the quadrature scan; ``G_f`` (R, C), ``g_o`` and ``g_z`` (R,) are the upstream
    gradients."""
    R = rays.shape[0]
    P = lengths.shape[1]
    n_tasks = dbuf.shape[0]
    scratch = np.empty((n_tasks, 2, max(P, 1)), np.float64)
    for task in prange(n_tasks):
        for r in range(task, R, n_tasks):
            if mode == EA:
                march_ray_backward_ea(
                    dens,
                    feats,
                    ray_vol[r],
                    rays,
                    lengths,
                    r,
                    align,
                    eps,
                    G_f,
                    g_o[r],
                    g_z[r],
                    n_used[r],
                    scratch[task],
                    dbuf[task],
                    fbuf[task],
                    grad_rays,
                )
            else:
                march_ray_backward_quadrature(
                    dens,
                    feats,
                    ray_vol[r],
                    rays,
                    lengths,
                    r,
                    align,
                    last_inf,
                    S_total[r],
                    T_P[r],
                    G_f,
                    g_o[r],
                    g_z[r],
                    n_used[r],
                    dbuf[task],
                    fbuf[task],
                    grad_rays,
                )
