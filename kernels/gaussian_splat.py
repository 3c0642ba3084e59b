"""Gaussian splatting: tile binning, front-to-back compositing and its backward
(docs/kernels.md#gaussian-splatting).

The projection of the 3D Gaussians to the screen (EWA Jacobian, low-pass dilation, conics, radii)
is ``gaussian_project.py``'s; these kernels take its output. Pixel (i, j) has its
centre at screen position (u, v) = (j, i) (column, row). Gaussian n on screen: mean (u_n, v_n),
conic (a_n, b_n, c_n) = the inverse of its 2D covariance ``[[a, b], [b, c]]``, opacity o_n, colour
c_n (3 channels). For a pixel, with ``d = (u_n - j, v_n - i)``:

    q_n     = a dx^2 + 2 b dx dy + c dy^2            (squared Mahalanobis distance)
    alpha_n = min(0.99, o_n exp(-q_n / 2))           only where q_n <= 9 (inside the 3-sigma ellipse)

A Gaussian with ``alpha_n < alpha_min`` is skipped. The pixel's list (the Gaussians of its 16 x 16
tile, in ascending depth, ties by index) is composited front to back,

    C = sum_k alpha_k T_k c_k,    T_k = prod_{m < k} (1 - alpha_m),

stopping before the first Gaussian k with ``T_k (1 - alpha_k) < T_min`` (early termination); the
outputs are C, the final transmittance T (the product over the Gaussians used) and ``last``, one past
the last list position used, which the backward starts from.

Backward (reverse traversal of the same list, T recovered as ``T_k = T_{k+1} / (1 - alpha_k)``), for
upstream gradients g = dL/dC and g_T = dL/dT:

    dL/dc_k     = alpha_k T_k g
    dL/dalpha_k = T_k (c_k . g) - (S_k + g_T T) / (1 - alpha_k),   S_k = sum_{m > k} alpha_m T_m (c_m . g)
    dalpha/do   = exp(-q/2),  dalpha/dq = -alpha/2                  (both 0 where the 0.99 clamp holds)
    dq/du = 2 (a dx + b dy),  dq/dv = 2 (b dx + c dy),  dq/da = dx^2,  dq/db = 2 dx dy,  dq/dc = dy^2

The per-Gaussian gradients go to one (N, 9) array: [du, dv, da, db, dc, do, dr, dg, db_colour].

``build(jit, add)`` compiles the per-pixel math, and the per-thread bodies of the CUDA kernels, with
``jit`` (``numba.njit`` here and in the tests, ``cuda.jit(device=True)`` in ``cuda_adapter``).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
from numba import njit, prange

from p3dlab.kernels.parallel_jit import parallel_njit

TILE = 16  # tiles are TILE x TILE pixels
ALPHA_MAX = 0.99  # no single Gaussian makes a pixel fully opaque (keeps 1 - alpha >= 0.01 in the backward)
CUTOFF = 9.0  # q <= 9: the 3-sigma ellipse
N_GRADS = 9  # du, dv, da, db, dc, do, dr, dg, db


def _add_serial(buffer, index, value):
    """The scatter of a serial run: ``buffer[index] += value``."""
    buffer[index] += value


def build(jit, add):
    """Compile the per-pixel forward and backward, and the per-thread bodies, with ``jit``; ``add`` is
    the scatter of the backward (``cuda.atomic.add`` on a GPU), already compiled for the same target."""

    def gaussian_alpha(n, px, py, means2d, conics, opacities):
        """(alpha, exp(-q/2), dx, dy) of Gaussian n at pixel centre (px, py); alpha = -1 outside the
        3-sigma ellipse. alpha is clamped to ALPHA_MAX."""
        dx = means2d[n, 0] - px
        dy = means2d[n, 1] - py
        q = conics[n, 0] * dx * dx + 2.0 * conics[n, 1] * dx * dy + conics[n, 2] * dy * dy
        if not q <= CUTOFF:
            return -1.0, 0.0, dx, dy
        g = math.exp(-0.5 * q)
        alpha = opacities[n] * g
        if alpha > ALPHA_MAX:
            alpha = ALPHA_MAX
        return alpha, g, dx, dy

    gaussian_alpha = jit(gaussian_alpha)

    def composite_pixel(
        i, j, start, end, ids, means2d, conics, opacities, colors, alpha_min, t_min, color_out, t_out, last_out
    ):
        """Front-to-back compositing of list positions [start, end) at pixel (i, j)."""
        px = float(j)
        py = float(i)
        T = 1.0
        r = 0.0
        g = 0.0
        b = 0.0
        last = start
        for k in range(start, end):
            n = ids[k]
            alpha, _, _, _ = gaussian_alpha(n, px, py, means2d, conics, opacities)
            if alpha < alpha_min:
                continue
            t_next = T * (1.0 - alpha)
            if t_next < t_min:
                break
            w = alpha * T
            r += w * colors[n, 0]
            g += w * colors[n, 1]
            b += w * colors[n, 2]
            T = t_next
            last = k + 1
        color_out[i, j, 0] = r
        color_out[i, j, 1] = g
        color_out[i, j, 2] = b
        t_out[i, j] = T
        last_out[i, j] = last

    composite_pixel = jit(composite_pixel)

    def backward_step(n, alpha, gauss, dx, dy, T, behind, gr, gg, gb, gt_end, conics, opacities, colors):
        """One step of the reverse traversal at a pixel, for Gaussian n with its ``alpha``, ``exp(-q/2)``
        and offset (dx, dy): ``T`` is the transmittance after n, ``behind`` = S_n, (gr, gg, gb) = dL/dC and
        ``gt_end`` = dL/dT times the pixel's final T. Returns (T before n, S before n, and n's nine gradient
        terms du, dv, da, db, dc, do, dr, dg, db)."""
        one_minus = 1.0 - alpha
        T = T / one_minus
        w = alpha * T
        cg = colors[n, 0] * gr + colors[n, 1] * gg + colors[n, 2] * gb
        d_alpha = T * cg - (behind + gt_end) / one_minus
        behind += w * cg
        d_o = 0.0
        d_q = 0.0
        if opacities[n] * gauss <= ALPHA_MAX:  # else clamped: alpha depends on neither o nor q
            d_o = gauss * d_alpha
            d_q = -0.5 * alpha * d_alpha
        a = conics[n, 0]
        b = conics[n, 1]
        c = conics[n, 2]
        return (
            T, behind, d_q * 2.0 * (a * dx + b * dy), d_q * 2.0 * (b * dx + c * dy), d_q * dx * dx,
            d_q * 2.0 * dx * dy, d_q * dy * dy, d_o, w * gr, w * gg, w * gb,
        )  # fmt: skip

    backward_step = jit(backward_step)

    def composite_pixel_backward(
        i, j, start, ids, means2d, conics, opacities, colors, alpha_min, t_final, last, grad_color, grad_t, grads
    ):
        """Reverse traversal of pixel (i, j)'s list, from ``last[i, j] - 1`` down to ``start``,
        adding each Gaussian's gradient into ``grads`` (N, 9) with ``add``."""
        px = float(j)
        py = float(i)
        T = t_final[i, j]
        gt_end = grad_t[i, j] * T
        gr = grad_color[i, j, 0]
        gg = grad_color[i, j, 1]
        gb = grad_color[i, j, 2]
        behind = 0.0  # S_k: sum over the Gaussians after k of alpha_m T_m (c_m . g)
        for k in range(last[i, j] - 1, start - 1, -1):
            n = ids[k]
            alpha, gauss, dx, dy = gaussian_alpha(n, px, py, means2d, conics, opacities)
            if alpha < alpha_min:
                continue
            T, behind, d0, d1, d2, d3, d4, d5, d6, d7, d8 = backward_step(
                n, alpha, gauss, dx, dy, T, behind, gr, gg, gb, gt_end, conics, opacities, colors
            )
            add(grads, (n, 0), d0)
            add(grads, (n, 1), d1)
            add(grads, (n, 2), d2)
            add(grads, (n, 3), d3)
            add(grads, (n, 4), d4)
            add(grads, (n, 5), d5)
            add(grads, (n, 6), d6)
            add(grads, (n, 7), d7)
            add(grads, (n, 8), d8)

    composite_pixel_backward = jit(composite_pixel_backward)

    def pixel_thread(t, W):
        """Thread t of an H x W image: its pixel (i, j) and the index of its tile."""
        i = t // W
        j = t % W
        tiles_x = (W + TILE - 1) // TILE
        return i, j, (i // TILE) * tiles_x + j // TILE

    pixel_thread = jit(pixel_thread)

    def composite_thread(
        t, tile_starts, ids, means2d, conics, opacities, colors, H, W, alpha_min, t_min, color_out, t_out, last_out
    ):
        """One CUDA thread per pixel: composite its tile's list."""
        if t >= H * W:
            return
        i, j, tile = pixel_thread(t, W)
        composite_pixel(
            i, j, tile_starts[tile], tile_starts[tile + 1], ids, means2d, conics, opacities, colors,
            alpha_min, t_min, color_out, t_out, last_out,
        )  # fmt: skip

    composite_thread = jit(composite_thread)

    def composite_backward_thread(
        t, tile_starts, ids, means2d, conics, opacities, colors, H, W, alpha_min, t_final, last, grad_color, grad_t,
        grads,
    ):  # fmt: skip
        """One CUDA thread per pixel: the reverse traversal, scattering with ``add`` (atomic)."""
        if t >= H * W:
            return
        i, j, tile = pixel_thread(t, W)
        composite_pixel_backward(
            i, j, tile_starts[tile], ids, means2d, conics, opacities, colors, alpha_min, t_final, last,
            grad_color, grad_t, grads,
        )  # fmt: skip

    composite_backward_thread = jit(composite_backward_thread)

    return SimpleNamespace(
        gaussian_alpha=gaussian_alpha,
        backward_step=backward_step,
        composite_pixel=composite_pixel,
        composite_pixel_backward=composite_pixel_backward,
        composite_thread=composite_thread,
        composite_backward_thread=composite_backward_thread,
    )


_add = njit(cache=True)(_add_serial)
_cpu = build(lambda fn: njit(cache=True)(fn), _add)
_composite_pixel = _cpu.composite_pixel
_composite_pixel_backward = _cpu.composite_pixel_backward
_gaussian_alpha = _cpu.gaussian_alpha
_backward_step = _cpu.backward_step


# ----------------------------------------------------------------------------- binning
@njit(cache=True)
def bin_gaussians_cpu(order, rects, n_tiles, tiles_x):
    """Tile lists: ``order`` holds the visible Gaussians in drawing order (ascending depth, ties by
    index); ``rects`` (N, 4) their inclusive tile ranges (ty0, ty1, tx0, tx1), inside the tile grid.
    Returns ``tile_starts`` (n_tiles + 1,) and ``ids``: tile t's Gaussians are
    ``ids[tile_starts[t]:tile_starts[t + 1]]``, in drawing order (a counting sort, stable)."""
    counts = np.zeros(n_tiles + 1, np.int64)
    for g in order:
        for ty in range(rects[g, 0], rects[g, 1] + 1):
            for tx in range(rects[g, 2], rects[g, 3] + 1):
                counts[ty * tiles_x + tx + 1] += 1
    tile_starts = np.cumsum(counts)
    fill = tile_starts[:-1].copy()
    ids = np.empty(tile_starts[-1], np.int64)
    for g in order:
        for ty in range(rects[g, 0], rects[g, 1] + 1):
            for tx in range(rects[g, 2], rects[g, 3] + 1):
                t = ty * tiles_x + tx
                ids[fill[t]] = g
                fill[t] += 1
    return tile_starts, ids


# ----------------------------------------------------------------------------- compositing, per pixel
@parallel_njit(cache=True)
def composite_per_pixel_cpu(
    tile_starts, ids, means2d, conics, opacities, colors, H, W, alpha_min, t_min, color_out, t_out, last_out
):
    """Forward, one pixel at a time over its whole tile list (the GPU's layout; the CPU's reference
    for ``composite_cpu``). Outputs: ``color_out`` (H, W, 3), ``t_out`` (H, W) final transmittance,
    ``last_out`` (H, W) one past the last list position used."""
    tiles_x = (W + TILE - 1) // TILE
    tiles_y = (H + TILE - 1) // TILE
    for tile in prange(tiles_x * tiles_y):
        i0 = (tile // tiles_x) * TILE
        j0 = (tile % tiles_x) * TILE
        start = tile_starts[tile]
        end = tile_starts[tile + 1]
        for i in range(i0, min(i0 + TILE, H)):
            for j in range(j0, min(j0 + TILE, W)):
                _composite_pixel(
                    i, j, start, end, ids, means2d, conics, opacities, colors, alpha_min, t_min, color_out, t_out,
                    last_out,
                )  # fmt: skip


@parallel_njit(cache=True)
def composite_backward_per_pixel_cpu(
    tile_starts, ids, means2d, conics, opacities, colors, H, W, alpha_min, t_final, last, grad_color, grad_t, grads,
    n_threads,
):  # fmt: skip
    """Backward, one pixel at a time (the reference for ``composite_backward_cpu``): ``grads`` (N, 9)
    += the per-Gaussian gradients. Tiles are split into ``n_threads`` contiguous runs, each adding
    into its own buffer, summed in a fixed order."""
    tiles_x = (W + TILE - 1) // TILE
    tiles_y = (H + TILE - 1) // TILE
    n_tiles = tiles_x * tiles_y
    n_tasks = max(min(n_threads, n_tiles), 1)
    buffers = np.zeros((n_tasks, grads.shape[0], N_GRADS), grads.dtype)
    for task in prange(n_tasks):
        buf = buffers[task]
        for tile in range(n_tiles * task // n_tasks, n_tiles * (task + 1) // n_tasks):
            i0 = (tile // tiles_x) * TILE
            j0 = (tile % tiles_x) * TILE
            start = tile_starts[tile]
            for i in range(i0, min(i0 + TILE, H)):
                for j in range(j0, min(j0 + TILE, W)):
                    _composite_pixel_backward(
                        i, j, start, ids, means2d, conics, opacities, colors, alpha_min, t_final, last,
                        grad_color, grad_t, buf,
                    )  # fmt: skip
    for task in range(n_tasks):
        grads += buffers[task]


# ----------------------------------------------------------------------------- compositing, per Gaussian
@njit(cache=True)
def _row_span(n, i, means2d, conics, j0, j1):
    """Columns [lo, hi] of row i, within [j0, j1], that may lie inside Gaussian n's 3-sigma ellipse:
    the roots of ``a dx^2 + 2 b dy dx + c dy^2 = 9`` in dx, widened by a pixel each side (the exact
    test ``q <= 9`` is made per pixel). Empty (lo > hi) where the row misses the ellipse."""
    a = conics[n, 0]
    b = conics[n, 1]
    dy = means2d[n, 1] - i
    disc = b * b * dy * dy - a * (conics[n, 2] * dy * dy - CUTOFF)
    if not disc >= 0.0:
        return 1, 0
    root = math.sqrt(disc)
    u = means2d[n, 0]
    lo = u - (-b * dy + root) / a - 1.0
    hi = u - (-b * dy - root) / a + 1.0
    if not (hi >= j0 and lo <= j1):
        return 1, 0
    return max(j0, int(math.floor(lo))), min(j1, int(math.ceil(hi)))


@njit(cache=True)
def _row_range(n, means2d, conics, i0, i1):
    """Rows [lo, hi] within [i0, i1] of Gaussian n's 3-sigma box: ``|dy| <= 3 sqrt(Sigma_yy)``,
    ``Sigma_yy = a / (a c - b^2)``, widened by a pixel."""
    a = conics[n, 0]
    det = a * conics[n, 2] - conics[n, 1] * conics[n, 1]
    ry = 3.0 * math.sqrt(a / det) + 1.0
    v = means2d[n, 1]
    if not (v + ry >= i0 and v - ry <= i1):
        return 1, 0
    return max(i0, int(math.floor(v - ry))), min(i1, int(math.ceil(v + ry)))


@parallel_njit(cache=True)
def composite_cpu(
    tile_starts, ids, means2d, conics, opacities, colors, H, W, alpha_min, t_min, color_out, t_out, last_out,
    n_threads,
):  # fmt: skip
    """Forward, as ``composite_per_pixel_cpu`` computes it, in another loop order: per tile, the
    Gaussians of its list in drawing order, each visiting only the pixels of its 3-sigma ellipse
    (``_row_range``, ``_row_span``), with every pixel's state (T, colour, last, stopped) kept in the
    tile's arrays; the tile ends when all its pixels have stopped. Every pixel sees the same
    operations in the same order as in the per-pixel loop, so the results are equal bit for bit.
    ``4 n_threads`` tasks take every ``4 n_threads``-th tile, so the busy tiles spread over them."""
    tiles_x = (W + TILE - 1) // TILE
    tiles_y = (H + TILE - 1) // TILE
    n_tiles = tiles_x * tiles_y
    n_tasks = max(min(4 * n_threads, n_tiles), 1)
    for task in prange(n_tasks):
        for tile in range(task, n_tiles, n_tasks):  # interleaved: the busy tiles spread over the tasks
            i0 = (tile // tiles_x) * TILE
            j0 = (tile % tiles_x) * TILE
            i1 = min(i0 + TILE, H) - 1
            j1 = min(j0 + TILE, W) - 1
            start = tile_starts[tile]
            T = np.ones((TILE, TILE), np.float64)  # float64 state, as the per-pixel loop's scalars
            rgb = np.zeros((TILE, TILE, 3), np.float64)
            last = np.full((TILE, TILE), start, np.int64)
            stopped = np.zeros((TILE, TILE), np.bool_)
            n_open = (i1 - i0 + 1) * (j1 - j0 + 1)
            for k in range(start, tile_starts[tile + 1]):
                n = ids[k]
                r0, r1 = _row_range(n, means2d, conics, i0, i1)
                for i in range(r0, r1 + 1):
                    c0, c1 = _row_span(n, i, means2d, conics, j0, j1)
                    for j in range(c0, c1 + 1):
                        y = i - i0
                        x = j - j0
                        if stopped[y, x]:
                            continue
                        alpha, _, _, _ = _gaussian_alpha(n, float(j), float(i), means2d, conics, opacities)
                        if alpha < alpha_min:
                            continue
                        t_next = T[y, x] * (1.0 - alpha)
                        if t_next < t_min:
                            stopped[y, x] = True
                            n_open -= 1
                            continue
                        w = alpha * T[y, x]
                        rgb[y, x, 0] += w * colors[n, 0]
                        rgb[y, x, 1] += w * colors[n, 1]
                        rgb[y, x, 2] += w * colors[n, 2]
                        T[y, x] = t_next
                        last[y, x] = k + 1
                if n_open == 0:
                    break
            for i in range(i0, i1 + 1):
                for j in range(j0, j1 + 1):
                    color_out[i, j, 0] = rgb[i - i0, j - j0, 0]
                    color_out[i, j, 1] = rgb[i - i0, j - j0, 1]
                    color_out[i, j, 2] = rgb[i - i0, j - j0, 2]
                    t_out[i, j] = T[i - i0, j - j0]
                    last_out[i, j] = last[i - i0, j - j0]


@parallel_njit(cache=True)
def composite_backward_cpu(
    tile_starts, ids, means2d, conics, opacities, colors, H, W, alpha_min, t_final, last, grad_color, grad_t, grads,
    n_threads,
):  # fmt: skip
    """Backward, as ``composite_backward_per_pixel_cpu`` computes it, in the per-Gaussian loop order of
    ``composite_cpu`` run backwards: per tile, its list from the last position any pixel used down to
    the first, each Gaussian visiting the pixels of its ellipse that used it (k < last), every pixel's
    (T, S) kept in the tile's arrays. A Gaussian's gradient terms are summed over the tile's pixels
    before they go to the task's buffer (``n_threads`` tasks taking every ``n_threads``-th tile, so the
    busy tiles spread over them; buffers summed in a fixed order: deterministic)."""
    tiles_x = (W + TILE - 1) // TILE
    tiles_y = (H + TILE - 1) // TILE
    n_tiles = tiles_x * tiles_y
    n_tasks = max(min(n_threads, n_tiles), 1)
    buffers = np.zeros((n_tasks, grads.shape[0], N_GRADS), grads.dtype)
    for task in prange(n_tasks):
        buf = buffers[task]
        T = np.empty((TILE, TILE), np.float64)
        behind = np.empty((TILE, TILE), np.float64)
        for tile in range(task, n_tiles, n_tasks):  # interleaved: the busy tiles spread over the tasks
            i0 = (tile // tiles_x) * TILE
            j0 = (tile % tiles_x) * TILE
            i1 = min(i0 + TILE, H) - 1
            j1 = min(j0 + TILE, W) - 1
            start = tile_starts[tile]
            end = start
            for i in range(i0, i1 + 1):
                for j in range(j0, j1 + 1):
                    T[i - i0, j - j0] = t_final[i, j]
                    behind[i - i0, j - j0] = 0.0
                    end = max(end, last[i, j])
            for k in range(end - 1, start - 1, -1):
                n = ids[k]
                s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = s8 = 0.0
                r0, r1 = _row_range(n, means2d, conics, i0, i1)
                for i in range(r0, r1 + 1):
                    c0, c1 = _row_span(n, i, means2d, conics, j0, j1)
                    for j in range(c0, c1 + 1):
                        if k >= last[i, j]:
                            continue
                        alpha, gauss, dx, dy = _gaussian_alpha(n, float(j), float(i), means2d, conics, opacities)
                        if alpha < alpha_min:
                            continue
                        y = i - i0
                        x = j - j0
                        t, b, d0, d1, d2, d3, d4, d5, d6, d7, d8 = _backward_step(
                            n, alpha, gauss, dx, dy, T[y, x], behind[y, x], grad_color[i, j, 0], grad_color[i, j, 1],
                            grad_color[i, j, 2], grad_t[i, j] * t_final[i, j], conics, opacities, colors,
                        )  # fmt: skip
                        T[y, x] = t
                        behind[y, x] = b
                        s0 += d0
                        s1 += d1
                        s2 += d2
                        s3 += d3
                        s4 += d4
                        s5 += d5
                        s6 += d6
                        s7 += d7
                        s8 += d8
                buf[n, 0] += s0
                buf[n, 1] += s1
                buf[n, 2] += s2
                buf[n, 3] += s3
                buf[n, 4] += s4
                buf[n, 5] += s5
                buf[n, 6] += s6
                buf[n, 7] += s7
                buf[n, 8] += s8
    for task in range(n_tasks):
        grads += buffers[task]
