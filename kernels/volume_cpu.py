"""CPU kernels for volumes: the trilinear sampler and the fused sampler + ray marcher, forward and
backward (docs/kernels.md#volume-sampler, docs/kernels.md#ray-marchers): the core math of
``volume_math`` (and its flat grid layout) with the CPU's fast paths of ``volume_fast``.

Forward kernels run one ray (or one point) per iteration of a ``prange``: outputs are disjoint, no
synchronisation. Backward kernels scatter into the grid: every task owns its own gradient buffer
(``buffers`` (n_tasks, grid size), chosen by the caller to fit memory, zeroed by the task that
uses it and summed by ``unpack_channels_sum`` in a fixed order), so results are deterministic for a
given number of tasks. The ray-marching kernels take the rays in the order ``order`` gives (a
permutation of 0 … R - 1; the torch wrappers pass image rays 2 × 2 pixels at a time, ``_ray_order``,
and to the fused loss kernel in bands of 4 rows, ``_band_order``) and deal them to tasks in
contiguous blocks of it, which keeps neighbouring rays (and the voxels they share) in one task and
close together in time.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from p3dlab.kernels import activations
from p3dlab.kernels import volume_fast as vf
from p3dlab.kernels import volume_math as vm
from p3dlab.kernels.exp_neg import exp_neg
from p3dlab.kernels.parallel_jit import parallel_njit
from p3dlab.kernels.simd4 import add4, axpy4, prefetch_w

# Numba's cache checks the contents of the file that defines a kernel, not of the files it inlines
# code from: this line is the hash of volume_math.py, volume_fast.py, exp_neg.py, simd4.py and
# activations.py (concatenated; tests/test_kernel_cache.py enforces it), so cached kernels are rebuilt
# when they change.
MATH_SOURCE_SHA256 = "4a4aed5830a9a175"


@njit(cache=True, inline="always")
def _add(buf, index, v):
    buf[index] += v


# fastmath without nnan/ninf: the kernels rely on NaN comparisons being False for points that are not finite
_JIT = dict(cache=True, fastmath={"contract", "reassoc", "nsz", "arcp"}, error_model="numpy")


def _jit(fn):
    return njit(**_JIT)(fn)


def _jit_inline(fn):
    return njit(inline="always", **_JIT)(fn)


_core = vm.build(_jit, _add, _jit_inline)
_fast = vf.build(_core, _jit, _jit_inline, axpy4, add4, exp_neg, prefetch_w)
sample_point = _core.sample_point
sample_point_backward = _core.sample_point_backward
march_ray = _fast.march_ray
march_ray_backward = _fast.march_ray_backward
march_ray_mse = _fast.march_ray_mse
prefetch_ray = _fast.prefetch_ray
_act = activations.build(lambda fn: njit(inline="always", **_JIT)(fn))
_sigmoid = _act.sigmoid
_softplus = _act.softplus
_softplus_and_sigmoid = _act.softplus_and_sigmoid


@njit(cache=True)
def _volume_of(n, grid, layout):
    """Index of the volume used by batch element n: 0 when the grid holds a single volume."""
    return 0 if grid.size == layout[0] * layout[1] * layout[2] * layout[3] else n


_BLOCKS = 64  # work items per volume of the layout copies


@parallel_njit(**_JIT)
def pack_channels_last(src, V, C, dst, K, first):
    """Copy ``src``, a flat (V, C, D, H, W) grid, into channels ``first … first + C - 1`` of ``dst``,
    a flat (V, D, H, W, K) grid: ``dst[(v DHW + x) K + first + c] = src[(v C + c) DHW + x]``."""
    dhw = src.size // (V * C)
    for task in prange(V * _BLOCKS):
        v = task // _BLOCKS
        blk = task % _BLOCKS
        for x in range(dhw * blk // _BLOCKS, dhw * (blk + 1) // _BLOCKS):
            for c in range(C):
                dst[(v * dhw + x) * K + first + c] = src[(v * C + c) * dhw + x]


@parallel_njit(**_JIT)
def pack_rgb(density, rgb, dst, V):
    """``pack_channels_last`` of a density grid (V, 1, D, H, W) and an RGB grid (V, 3, D, H, W) into
    one density + RGB grid (V, D, H, W, 4) in a single pass that writes each voxel's 16 bytes at
    once (two separate copies would read and write every cache line of ``dst`` twice)."""
    dhw = density.size // V
    for task in prange(V * _BLOCKS):
        v = task // _BLOCKS
        blk = task % _BLOCKS
        for x in range(v * dhw + dhw * blk // _BLOCKS, v * dhw + dhw * (blk + 1) // _BLOCKS):
            dst[4 * x] = density[x]
            dst[4 * x + 1] = rgb[2 * v * dhw + x]
            dst[4 * x + 2] = rgb[2 * v * dhw + dhw + x]
            dst[4 * x + 3] = rgb[2 * v * dhw + 2 * dhw + x]


@parallel_njit(**_JIT)
def unpack_channels_sum(buffers, K, split, first, second, V):
    """The inverse of ``pack_channels_last``, summed over tasks in a fixed order, in one pass over
    ``buffers`` (n_tasks, V·DHW·K): channels 0 … split - 1 go to ``first`` (V, split, DHW) and
    channels split … K - 1 to ``second`` (V, K - split, DHW; empty when split = K)."""
    dhw = first.size // (V * split)
    rest = K - split
    for task in prange(V * _BLOCKS):
        v = task // _BLOCKS
        blk = task % _BLOCKS
        for x in range(dhw * blk // _BLOCKS, dhw * (blk + 1) // _BLOCKS):
            src = (v * dhw + x) * K
            for c in range(K):
                acc = buffers[0, src + c]
                for k in range(1, buffers.shape[0]):
                    acc += buffers[k, src + c]
                if c < split:
                    first[(v * split + c) * dhw + x] = acc
                else:
                    second[(v * rest + c - split) * dhw + x] = acc


@njit(inline="always", **_JIT)
def _sum_rgb_block(buffers, first, second, v, dhw, lo, hi, K, off):
    """Voxels lo … hi - 1 of ``unpack_rgb_sum`` (K = 4, off = 0) or ``unpack_rgb_work_sum`` (K = 8,
    off = 4): channels off … off + 3 of each task's (…, K) buffer summed in task order. The first
    pass writes the first two tasks' sum (the first task's buffer alone if there is one), each
    further task's buffer is added in a pass of its own over the block (whose outputs, 512 KB at
    128³, stay in cache between passes), so every pass is a simple loop the compiler vectorises.
    Two tasks (two threads) in one pass: 3.5-3.8 against 5.2-5.7 ms at 128³ (a first pass and an
    adding pass, measured). Inlined with K and off constants: 1.2x faster than with them as
    variables (measured)."""
    src = buffers[0]
    if buffers.shape[0] == 1:
        for x in range(lo, hi):
            first[x] = src[K * x + off]
            second[2 * v * dhw + x] = src[K * x + off + 1]
            second[2 * v * dhw + dhw + x] = src[K * x + off + 2]
            second[2 * v * dhw + 2 * dhw + x] = src[K * x + off + 3]
        return
    nxt = buffers[1]
    for x in range(lo, hi):
        first[x] = src[K * x + off] + nxt[K * x + off]
        second[2 * v * dhw + x] = src[K * x + off + 1] + nxt[K * x + off + 1]
        second[2 * v * dhw + dhw + x] = src[K * x + off + 2] + nxt[K * x + off + 2]
        second[2 * v * dhw + 2 * dhw + x] = src[K * x + off + 3] + nxt[K * x + off + 3]
    for k in range(2, buffers.shape[0]):
        src = buffers[k]
        for x in range(lo, hi):
            first[x] += src[K * x + off]
            second[2 * v * dhw + x] += src[K * x + off + 1]
            second[2 * v * dhw + dhw + x] += src[K * x + off + 2]
            second[2 * v * dhw + 2 * dhw + x] += src[K * x + off + 3]


@parallel_njit(**_JIT)
def unpack_rgb_sum(buffers, first, second, V):
    """``unpack_channels_sum`` for density + RGB grids (K = 4, split 1), 4x faster: the 4 channels of
    a voxel are read together (``_sum_rgb_block``). Same order of summation, so the same bits."""
    dhw = first.size // V
    for task in prange(V * _BLOCKS):
        v, blk = task // _BLOCKS, task % _BLOCKS
        _sum_rgb_block(
            buffers, first, second, v, dhw, v * dhw + dhw * blk // _BLOCKS, v * dhw + dhw * (blk + 1) // _BLOCKS, 4, 0
        )


@parallel_njit(**_JIT)
def pack_rgb_work(density, rgb, work, V):
    """Each task's row of ``work`` (n_tasks, V·DHW·8) gets a density (V, 1, D, H, W) and RGB (V, 3, D,
    H, W) grid interleaved with zeroed gradient accumulators, 8 channels a voxel: (σ, r, g, b, ∂σ,
    ∂r, ∂g, ∂b) (``march_volume_mse_cpu``)."""
    dhw = density.size // V
    n_tasks = work.shape[0]
    for item in prange(n_tasks * V * _BLOCKS):
        task = item // (V * _BLOCKS)
        v = item // _BLOCKS % V
        blk = item % _BLOCKS
        row = work[task]
        for x in range(v * dhw + dhw * blk // _BLOCKS, v * dhw + dhw * (blk + 1) // _BLOCKS):
            row[8 * x] = density[x]
            row[8 * x + 1] = rgb[2 * v * dhw + x]
            row[8 * x + 2] = rgb[2 * v * dhw + dhw + x]
            row[8 * x + 3] = rgb[2 * v * dhw + 2 * dhw + x]
            for c in range(4, 8):
                row[8 * x + c] = 0.0


_ACT_CHUNK = 512  # voxels whose activations pack_rgb_work_activated computes at a time


@parallel_njit(**_JIT)
def pack_rgb_work_activated(raw_density, raw_rgb, scale, work, sig_density, V):
    """``pack_rgb_work`` (float32) of the grids σ = scale · softplus(raw_density) and
    sigmoid(raw_rgb) (a ``VoxelRadianceField``'s parameters, (V, 1, D, H, W) and (V, 3, D, H, W)):
    the activations of ``_ACT_CHUNK`` voxels at a time into scratch, in loops the compiler
    vectorises (``activations``), then interleaved into every task's row. ``sig_density`` (V·DHW,)
    gets sigmoid(raw_density), the softplus's derivative, for ``unpack_rgb_work_sum_activated``."""
    dhw = raw_density.size // V
    n_tasks = work.shape[0]
    for item in prange(V * _BLOCKS):
        v = item // _BLOCKS
        blk = item % _BLOCKS
        lo = v * dhw + dhw * blk // _BLOCKS
        hi = v * dhw + dhw * (blk + 1) // _BLOCKS
        act = np.empty((4, _ACT_CHUNK), np.float32)
        for x0 in range(lo, hi, _ACT_CHUNK):
            n = min(_ACT_CHUNK, hi - x0)
            src = raw_density[x0 : x0 + n]  # views indexed from 0: the loops vectorise
            dst = act[0]
            sig = sig_density[x0 : x0 + n]
            for j in range(n):
                sp, sg = _softplus_and_sigmoid(src[j])
                dst[j] = scale * sp
                sig[j] = sg
            for c in range(3):
                src = raw_rgb[2 * v * dhw + c * dhw + x0 : 2 * v * dhw + c * dhw + x0 + n]
                dst = act[1 + c]
                for j in range(n):
                    dst[j] = _sigmoid(src[j])
            for task in range(n_tasks):
                row = work[task, 8 * x0 : 8 * (x0 + n)]
                for j in range(n):
                    for c in range(4):
                        row[8 * j + c] = act[c, j]
                        row[8 * j + 4 + c] = 0.0


@parallel_njit(**_JIT)
def unpack_rgb_work_sum_activated(work, sig_density, scale, first, second, V):
    """``unpack_rgb_work_sum`` of ``pack_rgb_work_activated``'s grids, then the chain rule into the
    raw parameters, block by block while the block is in cache: ``∂L/∂raw_density = ∂L/∂σ · scale
    · sigmoid(raw_density)`` (``sig_density``) and ``∂L/∂raw_rgb = ∂L/∂c · c (1 - c)`` with c the
    colour packed."""
    dhw = first.size // V
    n_tasks = work.shape[0]
    for item in prange(V * _BLOCKS):
        v, blk = item // _BLOCKS, item % _BLOCKS
        lo = v * dhw + dhw * blk // _BLOCKS
        hi = v * dhw + dhw * (blk + 1) // _BLOCKS
        grads = (first, second, v, dhw, lo, hi)
        if n_tasks <= 2:  # one pass: the colours sit in the lines the gradients are read from
            _chain_task_rows(work[0], work[n_tasks - 1], n_tasks == 2, sig_density, scale, grads)
        else:
            _sum_rgb_block(work, first, second, v, dhw, lo, hi, 8, 4)
            _chain_summed(work[0], sig_density, scale, grads)


@njit(inline="always", **_JIT)
def _chain_task_rows(src, nxt, two, sig_density, scale, grads):
    """Voxels lo … hi - 1 of ``unpack_rgb_work_sum_activated`` with 1 or 2 tasks: the gradient
    channels of the task row ``src`` (plus those of ``nxt`` when ``two``) through ``_chain_voxel``,
    the colours read from ``src``. ``grads`` = (first, second, v, dhw, lo, hi)."""
    for x in range(grads[4], grads[5]):
        g0 = src[8 * x + 4] + nxt[8 * x + 4] if two else src[8 * x + 4]
        g1 = src[8 * x + 5] + nxt[8 * x + 5] if two else src[8 * x + 5]
        g2 = src[8 * x + 6] + nxt[8 * x + 6] if two else src[8 * x + 6]
        g3 = src[8 * x + 7] + nxt[8 * x + 7] if two else src[8 * x + 7]
        _chain_voxel(grads, x, (g0, g1, g2, g3), src, sig_density, scale)


@njit(inline="always", **_JIT)
def _chain_summed(row, sig_density, scale, grads):
    """Voxels lo … hi - 1 of ``unpack_rgb_work_sum_activated`` with 3 or more tasks: ``first`` and
    ``second``, which hold the tasks' summed gradients, through ``_chain_voxel``, the colours read
    from the task row ``row``."""
    first, second, v, dhw, lo, hi = grads
    for x in range(lo, hi):
        g = (first[x], second[2 * v * dhw + x], second[2 * v * dhw + dhw + x], second[2 * v * dhw + 2 * dhw + x])
        _chain_voxel(grads, x, g, row, sig_density, scale)


@njit(**_JIT)  # LLVM inlines it; Numba's inline="always" here gave wrong gradients (5 tests failed)
def _chain_voxel(grads, x, g, colours, sig_density, scale):
    """Voxel x's gradients ``g`` = (∂L/∂σ, ∂L/∂c_1, ∂L/∂c_2, ∂L/∂c_3) times the activations'
    derivatives, into ``first`` and ``second`` (``grads``): scale · sigmoid(raw density) and c (1 -
    c), with the colours c read from the task row ``colours``."""
    first, second, v, dhw, lo, hi = grads
    c1 = colours[8 * x + 1]
    c2 = colours[8 * x + 2]
    c3 = colours[8 * x + 3]
    first[x] = g[0] * (scale * sig_density[x])
    second[2 * v * dhw + x] = g[1] * (c1 * (1.0 - c1))
    second[2 * v * dhw + dhw + x] = g[2] * (c2 * (1.0 - c2))
    second[2 * v * dhw + 2 * dhw + x] = g[3] * (c3 * (1.0 - c3))


@parallel_njit(**_JIT)
def unpack_rgb_work_sum(work, first, second, V):
    """The gradient channels 4 … 7 of ``work`` (``pack_rgb_work``) summed over tasks in task order,
    into ``first`` (V, 1, DHW) and ``second`` (V, 3, DHW) (``_sum_rgb_block``)."""
    dhw = first.size // V
    for task in prange(V * _BLOCKS):
        v, blk = task // _BLOCKS, task % _BLOCKS
        _sum_rgb_block(
            work, first, second, v, dhw, v * dhw + dhw * blk // _BLOCKS, v * dhw + dhw * (blk + 1) // _BLOCKS, 8, 4
        )


@parallel_njit(**_JIT)
def sample_volume_cpu(grid, layout, points, align, out):
    """``out[n, m, c] = V_c(points[n, m])``: channels-last grid (N or 1, D, H, W, C) with ``layout``
    (D, H, W, C, 0, C), local points (N, M, 3)."""
    N, M, _ = points.shape
    for t in prange(N * M):
        n = t // M
        m = t % M
        b = _volume_of(n, grid, layout)
        sample_point(grid, layout, b, points[n, m, 0], points[n, m, 1], points[n, m, 2], align, out[n], m)


@parallel_njit(**_JIT)
def sample_volume_backward_cpu(grid, layout, points, align, grad_out, buffers, grad_points):
    """Scatter ``grad_out`` (N, M, C) into ``buffers`` (n_tasks, grid.size; zeroed here) and write
    ``grad_points`` (N, M, 3)."""
    N, M, _ = points.shape
    total = N * M
    n_tasks = buffers.shape[0]
    for task in prange(n_tasks):
        buf = buffers[task]
        buf[:] = 0.0
        for t in range(total * task // n_tasks, total * (task + 1) // n_tasks):
            n = t // M
            m = t % M
            b = _volume_of(n, grid, layout)
            gx, gy, gz = sample_point_backward(
                grid, layout, b, points[n, m, 0], points[n, m, 1], points[n, m, 2], align, grad_out[n], m, buf
            )
            grad_points[n, m, 0] = gx
            grad_points[n, m, 1] = gy
            grad_points[n, m, 2] = gz


@njit(inline="always", **_JIT)
def _task_rays(order, task, n_tasks):
    """Task ``task``'s rays: its contiguous block of ``order``."""
    R = order.shape[0]
    return order[R * task // n_tasks : R * (task + 1) // n_tasks]


@parallel_njit(**_JIT)
def march_volume_cpu(
    grid, layout, ray_vol, rays, lengths, mode, eps, t_min, align, last_inf, out_f, out_o, out_z, n_used, samples,
    order, n_tasks=1,
):  # fmt: skip
    """Fused trilinear sampling + ray marching of R rays.

    ``grid``: flat channels-last (V, D, H, W, K) densities and features with ``layout`` (D, H, W,
    K, F0, C) (``volume_math``); ``ray_vol`` (R,) volume of each ray; ``rays`` (R, 7) local origin,
    local direction and world direction norm; ``lengths`` (R, P). Writes features ``out_f`` (R, C),
    opacity ``out_o`` (R,), expected depth ``out_z`` (R,), the number of samples marched ``n_used``
    (R,) (fewer than P after early termination) and, unless ``samples`` is empty, the density and
    features of every sample marched into ``samples`` (R, P, 1 + C) for the backward.

    Rays are marched in the order ``order`` (R,) gives, a permutation of 0 … R - 1 (not checked:
    out-of-range indices write out of bounds), dealt to ``n_tasks`` tasks (one per thread) in
    contiguous blocks of it. Each task allocates its own scratch for a ray's samples and
    attenuations (``march_rgb_phased``) and a chunk's cells (``chunk_cells``). Separate
    allocations, not rows of one array: rows that share a cache line at their ends, written by two
    threads, made the fit bench's kernels 1.8x slower (measured)."""
    R = rays.shape[0]
    P = lengths.shape[1]
    n_tasks = max(1, min(n_tasks, R))
    for task in prange(n_tasks):
        vals = np.empty((P, 4), grid.dtype)
        att = np.empty(P, np.float64)
        cell_base = np.empty(vf.CHUNK, np.int64)
        cell_w = np.empty(8 * vf.CHUNK, grid.dtype)
        for r in _task_rays(order, task, n_tasks):
            march_ray(
                grid, layout, ray_vol[r], rays, lengths, r, mode, eps, t_min, align, last_inf, out_f, out_o, out_z,
                n_used, samples, vals, att, cell_base, cell_w,
            )  # fmt: skip


@njit(inline="always", **_JIT)
def _ray_scratch(P, grid):
    """A task's scratch for the backward of a density + RGB ray of P samples: its samples ``vals``
    (P, 4, the grid's dtype), attenuations ``att`` (P,) and a slot of cells per chunk (``cell_base``
    (P rounded up to CHUNK,), ``cell_w`` 8 times that; ``volume_fast.chunk_cells``)."""
    n = max(P, 1)
    slots = n + (-n) % vf.CHUNK
    return (
        np.empty((n, 4), grid.dtype),
        np.empty(n, np.float64),
        np.empty(slots, np.int64),
        np.empty(8 * slots, grid.dtype),
    )


@parallel_njit(**_JIT)
def march_volume_backward_cpu(
    grid, layout, ray_vol, rays, lengths, mode, eps, align, last_inf, S_total, T_P, G_f, g_o, g_z, n_used,
    ray_grad, samples, buffers, grad_rays, order, prefetch=0,
):  # fmt: skip
    """Backward of ``march_volume_cpu``, rays in the order ``order`` gives (as there).

    Accumulates into ``buffers`` (n_tasks copies of the flat grid, zeroed here; the caller sums
    them) and into ``grad_rays`` (R, 7, zeroed). ``S_total`` (R,) = F·G + Z g_Z and ``T_P`` (R,) =
    1 - O feed the quadrature scan; ``G_f`` (R, C), ``g_o`` and ``g_z`` (R,) are the upstream
    gradients. ``ray_grad``: also accumulate the gradients of the rays' origins and directions
    (skipped, and left zero, when False). ``samples``: what the forward pass kept (R, P, 1 + C),
    read instead of the grid when ``ray_grad`` is False; empty to sample the grid again. Each task
    allocates its own scratch (see ``march_volume_cpu``).

    ``prefetch`` > 0: before each ray, a task prefetches the lines of its gradient buffer (and of
    the grid, unless the samples were kept) that its ray that many rays ahead will touch
    (``prefetch_ray``, as ``march_volume_mse_cpu``). The 128³ EA bench's backward kernel (128²
    rays, 150 samples; 15 alternating calls, 3 runs): 28.7-30.1 against 24.7-25.7 ms with 4 rays
    ahead, the same bits. The forward kernel gained nothing from it (12.1-12.8 against
    12.1-12.5 ms) and does not prefetch."""
    P = lengths.shape[1]
    n_tasks = buffers.shape[0]
    for task in prange(n_tasks):
        scratch = np.empty((max(P, 1), 2), np.float64)
        vals, att, cell_base, cell_w = _ray_scratch(P, grid)
        buf = buffers[task]
        buf[:] = 0.0
        mine = _task_rays(order, task, n_tasks)
        for k in range(mine.shape[0]):
            if prefetch > 0 and k + prefetch < mine.shape[0]:
                ahead = mine[k + prefetch]
                prefetch_ray(buf, layout, ray_vol[ahead], rays, lengths, ahead, align)
                if samples.shape[0] == 0:
                    prefetch_ray(grid, layout, ray_vol[ahead], rays, lengths, ahead, align)
            r = mine[k]
            march_ray_backward(
                grid, layout, ray_vol[r], rays, lengths, r, mode, eps, align, last_inf, S_total, T_P, G_f, g_o,
                g_z, n_used, ray_grad, samples, vals, scratch, att, buf, grad_rays, cell_base, cell_w,
            )  # fmt: skip


@parallel_njit(**_JIT)
def march_volume_mse_cpu(
    work, layout, ray_vol, rays, lengths, eps, align, last_inf, target_f, target_o, scale_f, scale_o, out_f, out_o,
    out_z, n_used, err, order, prefetch=0,
):  # fmt: skip
    """Quadrature render of R rays through a density + RGB grid and the gradient of the squared-error
    loss against ``target_f`` (R, 3) and ``target_o`` (R,) (float64) in one pass (``march_ray_mse``).

    ``work`` (n_tasks, V·DHW·8) holds a copy of the grid per task, each voxel's 4 values followed by
    its 4 gradient accumulators (``pack_rgb_work``; ``layout`` (D, H, W, 8, 1, 3)): a task scatters
    a sample's gradient into the cache lines it has just read the sample from (the fit bench's
    kernel: 15.4-16.2 against 16.3-17.4 ms with separate gradient buffers, measured). Writes
    ``out_f`` (R, 3), ``out_o``, ``out_z``, ``n_used`` (R,) as ``march_volume_cpu`` does (no early
    termination) and the per-ray squared errors ``err`` (R, 2), rays in the order ``order`` gives (as
    ``march_volume_cpu``); the caller sums the tasks' gradients (``unpack_rgb_work_sum``). Scratch
    per task as in ``march_volume_backward_cpu``.

    ``prefetch`` > 0: before each ray, a task prefetches the grid lines of its ray that many rays
    ahead (``prefetch_ray``; 0: none). Worth it only when a task's grid does not fit in the core's
    own caches (``_PREFETCH_MIN_BYTES`` in the torch wrapper)."""
    n_tasks = work.shape[0]
    for task in prange(n_tasks):
        _march_task_mse(
            work[task], layout, ray_vol, rays, lengths, eps, align, last_inf, target_f, target_o, scale_f, scale_o,
            out_f, out_o, out_z, n_used, err, _task_rays(order, task, n_tasks), prefetch,
        )  # fmt: skip


@njit(**_JIT)
def _march_task_mse(
    grid, layout, ray_vol, rays, lengths, eps, align, last_inf, target_f, target_o, scale_f, scale_o, out_f, out_o,
    out_z, n_used, err, mine, prefetch,
):  # fmt: skip
    """One task of ``march_volume_mse_cpu``: the rays ``mine`` through its grid copy ``grid``. A
    function of its own, outside the ``prange``, so that Numba inlines ``march_ray_mse`` into its
    loop: inlined into a ``prange`` body, it gave wrong gradients. Without the call per ray (two
    dozen arrays to pass, field by field), the fit bench's kernel took 8.6-9.5 instead of 9.8-11.4
    ms at 8³ and 11.1-11.4 instead of 12.3-12.5 ms at 64³ (20 alternating calls, either order
    first), the same bits."""
    vals, att, cell_base, cell_w = _ray_scratch(lengths.shape[1], grid)
    for k in range(mine.shape[0]):
        if prefetch > 0 and k + prefetch < mine.shape[0]:
            ahead = mine[k + prefetch]
            prefetch_ray(grid, layout, ray_vol[ahead], rays, lengths, ahead, align)
        r = mine[k]
        march_ray_mse(
            grid, layout, ray_vol[r], rays, lengths, r, eps, align, last_inf, target_f, target_o, scale_f, scale_o,
            out_f, out_o, out_z, n_used, err, vals, att, cell_base, cell_w,
        )  # fmt: skip
