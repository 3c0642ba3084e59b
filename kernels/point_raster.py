"""Point rasterizer (docs/kernels.md#point-rasterization): for each pixel the K nearest points whose disk covers it.

Point p with view depth Z_p >= 0 covers pixel centre q iff ``d^2 = (x_p - q_x)^2 + (y_p - q_y)^2 < r_p^2``
(strict); the K smallest Z are kept, ties by lower point index. Backward per valid slot:
``dL/dx_p += 2 (x_p - q_x) g_d``, ``dL/dy_p += 2 (y_p - q_y) g_d``, ``dL/dZ_p += g_z``.

``build(jit)`` compiles the per-pixel math for the CPU kernels below and for the CUDA adapter.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from numba import njit, prange

from p3dlab.kernels.mesh_raster_cpu import _pixel_range
from p3dlab.kernels.mesh_raster_math import _pixel_ndc
from p3dlab.kernels.parallel_jit import parallel_njit


def build(jit):
    pixel_ndc = jit(_pixel_ndc)

    def insert(idx, zbuf, dists, n, i, j, count, K, p, z, d2):
        """Insert point p at depth z into pixel (n, i, j)'s list sorted by (z, index)."""
        if count == K and z >= zbuf[n, i, j, K - 1]:
            return count
        pos = count if count < K else K - 1
        while pos > 0 and zbuf[n, i, j, pos - 1] > z:
            idx[n, i, j, pos] = idx[n, i, j, pos - 1]
            zbuf[n, i, j, pos] = zbuf[n, i, j, pos - 1]
            dists[n, i, j, pos] = dists[n, i, j, pos - 1]
            pos -= 1
        idx[n, i, j, pos] = p
        zbuf[n, i, j, pos] = z
        dists[n, i, j, pos] = d2
        return count + 1 if count < K else K

    insert = jit(insert)

    def rasterize_pixel(pts, radius, first, count_p, n, i, j, H, W, K, idx, zbuf, dists):
        """The naive per-pixel loop over every point of cloud n (GPU layout)."""
        s = float(min(H, W))
        qx = pixel_ndc(j, W, s)
        qy = pixel_ndc(i, H, s)
        count = 0
        for p in range(first, first + count_p):
            z = pts[p, 2]
            if not z >= 0.0:
                continue
            dx = pts[p, 0] - qx
            dy = pts[p, 1] - qy
            d2 = dx * dx + dy * dy
            r = radius[p]
            if d2 < r * r:
                count = insert(idx, zbuf, dists, n, i, j, count, K, p, z, d2)
        return count

    rasterize_pixel = jit(rasterize_pixel)
    return SimpleNamespace(pixel_ndc=pixel_ndc, insert=insert, rasterize_pixel=rasterize_pixel)


_dev = build(lambda fn: njit(cache=True)(fn))
_insert = _dev.insert
_pixel = _dev.pixel_ndc
_rasterize_pixel = _dev.rasterize_pixel
BAND = 8


@parallel_njit(cache=True)
def rasterize_points_cpu(pts, radius, first_idx, counts, H, W, K, idx, zbuf, dists):
    """pts (P, 3) = (x_ndc, y_ndc, Z_view); radius (P,); outputs (N, H, W, K) pre-filled with -1."""
    N = first_idx.shape[0]
    P = pts.shape[0]
    s = float(min(H, W))
    boxes = np.empty((P, 4), np.int64)
    for p in prange(P):
        r = radius[p]
        if not pts[p, 2] >= 0.0:
            boxes[p, 0], boxes[p, 1], boxes[p, 2], boxes[p, 3] = 1, 0, 1, 0
            continue
        boxes[p, 0], boxes[p, 1] = _pixel_range(pts[p, 1] - r, pts[p, 1] + r, H, s)
        boxes[p, 2], boxes[p, 3] = _pixel_range(pts[p, 0] - r, pts[p, 0] + r, W, s)
    n_bands = (H + BAND - 1) // BAND
    for task in prange(N * n_bands):
        n = task // n_bands
        i0 = (task % n_bands) * BAND
        i1 = min(i0 + BAND, H) - 1
        count = np.zeros((BAND, W), np.int64)
        for p in range(first_idx[n], first_idx[n] + counts[n]):
            r2 = radius[p] * radius[p]
            for i in range(max(boxes[p, 0], i0), min(boxes[p, 1], i1) + 1):
                dy = pts[p, 1] - _pixel(i, H, s)
                for j in range(boxes[p, 2], boxes[p, 3] + 1):
                    dx = pts[p, 0] - _pixel(j, W, s)
                    d2 = dx * dx + dy * dy
                    if d2 < r2:
                        c = count[i - i0, j]
                        count[i - i0, j] = _insert(idx, zbuf, dists, n, i, j, c, K, p, pts[p, 2], d2)


@parallel_njit(cache=True)
def rasterize_points_cpu_naive(pts, radius, first_idx, counts, H, W, K, idx, zbuf, dists):
    """One task per pixel looping over all points of its cloud (the GPU layout), for tests."""
    N = first_idx.shape[0]
    for t in prange(N * H * W):
        n = t // (H * W)
        _rasterize_pixel(pts, radius, first_idx[n], counts[n], n, (t // W) % H, t % W, H, W, K, idx, zbuf, dists)


@parallel_njit(cache=True)
def rasterize_points_backward_cpu(pts, idx, grad_zbuf, grad_dists, H, W, grad_pts, n_threads):
    """dL/dpts (P, 3); per-task buffers summed in a fixed order (no races, deterministic)."""
    N, _, _, K = idx.shape
    P = pts.shape[0]
    s = float(min(H, W))
    n_tasks = max(min(n_threads, N * H), 1)
    rows = N * H
    buffers = np.zeros((n_tasks, P, 3), grad_pts.dtype)
    for task in prange(n_tasks):
        for r in range(rows * task // n_tasks, rows * (task + 1) // n_tasks):
            n, i = r // H, r % H
            qy = _pixel(i, H, s)
            for j in range(W):
                qx = _pixel(j, W, s)
                for k in range(K):
                    p = idx[n, i, j, k]
                    if p < 0:
                        continue
                    gd = grad_dists[n, i, j, k] if grad_dists.size else 0.0
                    buffers[task, p, 0] += 2.0 * (pts[p, 0] - qx) * gd
                    buffers[task, p, 1] += 2.0 * (pts[p, 1] - qy) * gd
                    if grad_zbuf.size:
                        buffers[task, p, 2] += grad_zbuf[n, i, j, k]
    for task in range(n_tasks):
        grad_pts += buffers[task]
