"""The CPU's fast paths of the volume kernels: optimisations of the core in ``volume_math``, which
give the same results (tests/test_volume_fast_paths.py checks each against the core).
``build(core, jit, jit_inline, axpy4, add4, exp_neg, prefetch_w)`` compiles them on top of
``core = volume_math.build(...)``; only the CPU builds them (``volume_cpu``), the CUDA build runs the
core alone. What each optimisation does, and the core function it stands in for:

- **Density + RGB grids** (K = 4, F0 = 1, C = 3: the common case) read and scatter the 4 channels of
  a corner together: ``value4`` and ``splat4``, one 4-wide multiply-add per corner (``simd4``'s
  ``axpy4``, ``add4``) instead of 4 ``value``/``splat`` calls. The sum is taken corner by corner, in
  the grid's dtype (float32 grids: float32 weights and sums, like ``grid_sample``), where the core
  blends axis by axis in float64: the same formula, rounded differently.
- **Chunked cells** (``chunk_cells``): the cells of CHUNK samples of a ray in one branch-free loop
  that the compiler vectorises (8 samples per instruction); the bits of the core's interior
  ``grid_cell`` and ``corners8``. Samples whose cell is not interior compute it as the core does.
- **The ray's span** (``touching_span``): samples with no corner in the grid have value 0 and get
  no gradient, so they are not read (40 % of the EA bench's samples lie between camera and grid).
- **Phased quadrature** (``march_rgb_phased``, for the core's ``march_ray`` in mode 1): sample a
  chunk, then the attenuations e^{-σδ} of the whole chunk in one loop that vectorises
  (``attenuations`` with ``exp_neg``, a polynomial without a call, where the core calls libm's exp),
  then composite. ``march_rgb_sampled`` is EA's straight-line loop (no exponential to vectorise).
- **Backward from the ray's samples** (``march_ray_backward_rgb``, for the core's
  ``march_ray_backward`` without ray gradients): the samples (kept by the forward, or read first
  into scratch, with their cells) feed both scans, so each corner is read once; the scatter is
  ``splat4``.
- **Prefetch** (``prefetch_ray``): a hint that brings the cache lines of a ray a few rays ahead.
- **The fused MSE loss** (``march_ray_mse``, the fitting model's fast path): ``march_rgb_phased``,
  the loss's upstream gradients, and ``march_ray_backward_rgb``'s quadrature scan, in one pass over
  a grid whose voxels carry their own gradient accumulators.

``march_ray`` and ``march_ray_backward`` dispatch: density + RGB rays (without ray gradients, for
the backward) take a fast path, everything else the core.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from p3dlab.kernels.volume_math import EA, QUADRATURE

OUTSIDE = -2  # chunk_cells' mark of a sample with no corner in the grid
PREFETCH_STRIDE = 2  # prefetch_ray: every second sample of a ray
CHUNK = 16  # samples per chunk of chunk_cells and per phase of march_rgb_phased
NEAR_MARGIN = 1e-3  # voxels: touching_span's allowance for rounding against chunk_cells


def build(core, jit, jit_inline, axpy4, add4, exp_neg, prefetch_w):
    """Compile the fast paths with ``jit`` (per-ray functions) and ``jit_inline`` (helpers).
    ``axpy4(acc, w, a, q) = acc + w · a[q : q + 4]`` and ``add4(a, q, w, g)``: ``a[q : q + 4] += w · g``
    (4-tuples, the array's dtype); ``exp_neg(x) = e^{-x}`` without a call; ``prefetch_w(a, q)``: a
    hint that ``a[q]`` will be written soon."""
    exp_neg = jit_inline(exp_neg)
    # plain names: Numba resolves a closure's free variables when they are functions
    delta, grid_axes, layout_of, ray_of, ray_cell = (
        core.delta,
        core.grid_axes,
        core.layout_of,
        core.ray_of,
        core.ray_cell,
    )
    voxel_base, corners8, composite = core.voxel_base, core.corners8, core.composite
    ea_adjoint, quadrature_adjoint = core.ea_adjoint, core.quadrature_adjoint
    core_march_ray, core_march_ray_backward = core.march_ray, core.march_ray_backward

    def value4(grid, p, offsets, weights):
        """``value`` of the 4 channels p … p + 3 at once, in the grid's dtype, corner by corner."""
        offs, ws = corners8(offsets, weights)
        real = grid.dtype.type
        zero = real(0.0)
        acc = (zero, zero, zero, zero)
        for k in range(8):
            acc = axpy4(acc, real(ws[k]), grid, p + offs[k])
        return acc

    value4 = jit_inline(value4)

    def splat4(buf, p, offsets, weights, g0, g1, g2, g3):
        """``splat`` of channels p … p + 3 at once (the adjoint of ``value4``, the buffer's dtype)."""
        offs, ws = corners8(offsets, weights)
        real = buf.dtype.type
        g = (real(g0), real(g1), real(g2), real(g3))
        for k in range(8):
            add4(buf, p + offs[k], real(ws[k]), g)

    splat4 = jit_inline(splat4)

    def is_rgb(layout):
        """A density + 3 features grid (K = 4, F0 = 1): the layout ``value4`` and ``splat4`` read."""
        return layout[3] == 4 and layout[4] == 1

    is_rgb = jit_inline(is_rgb)

    def corner_offsets(layout):
        """Flat offsets of the 8 corners of a cell from its corner (0, 0, 0), in ``corners8``' order."""
        _, _, _, sx, sy, sz = grid_axes(layout)
        return (0, sx, sy, sy + sx, sz, sz + sx, sz + sy, sz + sy + sx)

    corner_offsets = jit_inline(corner_offsets)

    def chunk_cells(ray, lengths, r, i0, i1, layout, cell_base, cell_w, o):
        """The cells of samples i0 … i1 - 1 (at most CHUNK) of a ray, into the slot at ``o`` (0 for a
        single chunk's scratch, i0 for a whole ray's), for j = i - i0: ``cell_base[o + j]`` is the flat
        offset of corner (0, 0, 0) of an interior cell and ``cell_w[8 o + k · CHUNK + j]`` the weight
        ω_k of corner k (``corner_offsets``), in ``cell_w``'s dtype; -1 marks a cell partly outside
        the grid (the sample computes it itself), ``OUTSIDE`` one with no corner in it or a point that
        is not finite (value 0). The core's interior ``grid_cell`` and ``corners8``, bit for bit,
        without branches (points not interior move to 0 before the conversion to integers)."""
        g, _ = ray
        D, H, W, sx, sy, sz = grid_axes(layout)
        real = cell_w.dtype.type
        lr = lengths[r, i0:i1]  # indexed from 0: no wraparound test in the loop
        base = cell_base[o : o + CHUNK]
        weight = cell_w[8 * o : 8 * o + 8 * CHUNK]
        for j in range(lr.shape[0]):
            t = lr[j]
            u = g[0] + t * g[3]
            v = g[1] + t * g[4]
            w = g[2] + t * g[5]
            interior = (u >= 0.0) & (u < W - 1) & (v >= 0.0) & (v < H - 1) & (w >= 0.0) & (w < D - 1)
            touches = (u > -1.0) & (u < W) & (v > -1.0) & (v < H) & (w > -1.0) & (w < D)
            u = u if interior else 0.0
            v = v if interior else 0.0
            w = w if interior else 0.0
            i_u, i_v, i_w = int(u), int(v), int(w)
            a, b, c = u - i_u, v - i_v, w - i_w
            base[j] = i_u * sx + i_v * sy + i_w * sz if interior else (-1 if touches else OUTSIDE)
            wx0 = 1.0 - a
            w00, w10, w01, w11 = (1.0 - b) * (1.0 - c), b * (1.0 - c), (1.0 - b) * c, b * c
            weight[0 * CHUNK + j] = real(wx0 * w00)
            weight[1 * CHUNK + j] = real(a * w00)
            weight[2 * CHUNK + j] = real(wx0 * w10)
            weight[3 * CHUNK + j] = real(a * w10)
            weight[4 * CHUNK + j] = real(wx0 * w01)
            weight[5 * CHUNK + j] = real(a * w01)
            weight[6 * CHUNK + j] = real(wx0 * w11)
            weight[7 * CHUNK + j] = real(a * w11)

    chunk_cells = jit_inline(chunk_cells)

    def near_grid(g, t, box):
        """Whether the point at length t lies within NEAR_MARGIN voxels of ``chunk_cells``' "touches"
        region of a grid of ``box`` = (D, H, W)."""
        D, H, W = box
        lo = -1.0 - NEAR_MARGIN
        u = g[0] + t * g[3]
        v = g[1] + t * g[4]
        w = g[2] + t * g[5]
        return (u > lo) & (u < W + NEAR_MARGIN) & (v > lo) & (v < H + NEAR_MARGIN) & (w > lo) & (w < D + NEAR_MARGIN)

    near_grid = jit_inline(near_grid)

    def touching_span(ray, lengths, r, layout):
        """``(c0, i_end)``: no sample of ray r outside c0 … i_end - 1 has a corner in the grid (value 0,
        no gradient). i_end is one past the last sample near the grid (``near_grid``: the margin covers
        the rounding against ``chunk_cells``, whose test then finds it ``OUTSIDE``), c0 the first one
        rounded down to a multiple of CHUNK, so chunks keep their places; (0, 0) when none is near."""
        g, _ = ray
        box = grid_axes(layout)[:3]
        P = lengths.shape[1]
        lr = lengths[r]
        first = P
        for i in range(P):
            if near_grid(g, lr[i], box):
                first = i
                break
        if first == P:
            return 0, 0
        last = first
        for i in range(P - 1, first, -1):
            if near_grid(g, lr[i], box):
                last = i
                break
        return first // CHUNK * CHUNK, last + 1

    span_of = jit(touching_span)

    def corner_value4(grid, q, cell_w, o, j, corner):
        """``value4`` of sample j of the chunk whose interior cell ``chunk_cells`` put in the slot at o,
        corner (0, 0, 0) at flat index q."""
        real = grid.dtype.type
        zero = real(0.0)
        acc = (zero, zero, zero, zero)
        j = np.uint64(8 * o + j)  # unsigned indices: no wraparound test (3 instructions a load)
        for k in range(8):
            acc = axpy4(acc, cell_w[np.uint64(k * CHUNK) + j], grid, q + corner[k])
        return acc

    corner_value4 = jit_inline(corner_value4)

    def corner_splat4(buf, q, cell_w, o, j, corner, g0, g1, g2, g3):
        """``splat4`` of sample j of a chunk whose interior cell ``chunk_cells`` computed."""
        real = buf.dtype.type
        g = (real(g0), real(g1), real(g2), real(g3))
        j = np.uint64(8 * o + j)  # see corner_value4
        for k in range(8):
            add4(buf, q + corner[k], cell_w[np.uint64(k * CHUNK) + j], g)

    corner_splat4 = jit_inline(corner_splat4)

    def sample_value4(grid, p, ray, t, layout):
        """``value4`` of the sample at length t, computing its cell (0 outside the grid)."""
        offsets, weights, _, _, inside = ray_cell(ray, t, layout)
        zero = grid.dtype.type(0.0)
        acc = (zero, zero, zero, zero)
        if inside:
            acc = value4(grid, p, offsets, weights)
        return acc

    sample_value4 = jit(sample_value4)

    def sample_splat4(buf, p, ray, t, layout, g0, g1, g2, g3):
        """``splat4`` of the sample at length t, computing its cell."""
        offsets, weights, _, _, inside = ray_cell(ray, t, layout)
        if inside:
            splat4(buf, p, offsets, weights, g0, g1, g2, g3)

    sample_splat4 = jit(sample_splat4)

    def cell_of(cell_base, o, j):
        """``cell_base[o + j]`` (``chunk_cells``): an interior cell's corner (0, 0, 0), -1 or OUTSIDE.
        The per-sample loops branch on it themselves and the inlined helpers that take arrays are
        straight-line: an inlined helper with arrays that branches keeps Numba's reference counting
        in the loop (the kernels took 1.3-1.6x longer)."""
        return cell_base[np.uint64(o + j)]

    cell_of = jit_inline(cell_of)

    def accumulate(F_0, F_1, F_2, depth, w, f0, f1, f2, t):
        """A sample's share of a density + RGB ray's outputs: ``F += w f``, ``Z += w t``."""
        return F_0 + w * f0, F_1 + w * f1, F_2 + w * f2, depth + w * t

    accumulate = jit_inline(accumulate)

    def finish_ray(outs, r, mode, T, keep, depth, used, F):
        """Write ray r's 3 features ``F``, opacity, depth and samples used."""
        out_f, out_o, out_z, n_used, _ = outs
        out_f[r, 0] = F[0]
        out_f[r, 1] = F[1]
        out_f[r, 2] = F[2]
        out_o[r] = 1.0 - keep if mode == EA else 1.0 - T
        out_z[r] = depth
        n_used[r] = used

    finish_ray = jit_inline(finish_ray)

    def sample_ray_rgb(grid, layout, p, ray, lengths, r, i0, i1, vals, cell_base, cell_w, whole):
        """``vals[i] = (a_i, f_i)`` of samples i0 … i1 - 1, CHUNK at a time (``chunk_cells``, then
        ``corner_value4``). ``whole``: keep each chunk's cells in its own slot (at its first sample),
        for a backward to reuse; otherwise slot 0 serves each chunk in turn. Compiled once, not
        inlined, so that a forward and a backward that samples again get the same bits."""
        corner = corner_offsets(layout)
        zero = grid.dtype.type(0.0)
        for c0 in range(i0, i1, CHUNK):
            c1 = min(c0 + CHUNK, i1)
            o = c0 if whole else 0
            chunk_cells(ray, lengths, r, c0, c1, layout, cell_base, cell_w, o)
            for i in range(c0, c1):
                q = cell_of(cell_base, o, i - c0)
                if q >= 0:
                    v0, v1, v2, v3 = corner_value4(grid, p + q, cell_w, o, i - c0, corner)
                elif q == OUTSIDE:
                    v0 = v1 = v2 = v3 = zero
                else:
                    v0, v1, v2, v3 = sample_value4(grid, p, ray, lengths[r, i], layout)
                vals[i, 0] = v0
                vals[i, 1] = v1
                vals[i, 2] = v2
                vals[i, 3] = v3

    sample_ray_rgb = jit(sample_ray_rgb)

    def attenuations(vals, lengths, r, i0, i1, dnorm, last_inf, att):
        """``att[i] = e^{-σ_i δ_i}`` for samples i0 … i1 - 1: σ δ first (δ of the samples followed by
        another in a loop without ``delta``'s branches, unsigned indices), then the exponentials in a
        loop of their own, which vectorises (``exp_neg`` has no call)."""
        P = lengths.shape[1]
        lr = lengths[r]
        inner = max(min(i1, P - 1) - i0, 0)  # the samples followed by another: δ = (t_{i+1} - t_i) |d|
        for j in range(inner):
            u = np.uint64(i0 + j)  # unsigned indices: no wraparound tests (see corner_value4)
            a = vals[u, 0]
            att[u] = (a if a > 0.0 else 0.0) * ((lr[u + np.uint64(1)] - lr[u]) * dnorm)
        for i in range(i0 + inner, i1):  # the ray's last sample
            a = vals[i, 0]
            att[i] = (a if a > 0.0 else 0.0) * delta(lengths, r, i, P, dnorm, last_inf)[0]
        chunk = att[i0:i1]  # indexed from 0: Numba's wraparound test on att[i] would stop the vectoriser
        for j in range(chunk.shape[0]):
            chunk[j] = exp_neg(chunk[j])

    attenuations = jit_inline(attenuations)

    def march_rgb_phased(grid, layout, p, ray, lengths, r, settings, outs, vals, att, cell_base, cell_w, whole, span):
        """The core's quadrature ``march_ray`` for a density + RGB ray, in phases of CHUNK samples
        (the whole span when ``t_min`` = 0): sample the phase into ``vals`` (the kept samples, or
        scratch), its attenuations (``attenuations``), then composite. Early termination stops inside
        a phase (at most CHUNK - 1 samples read in vain). Only the samples in ``span`` are read;
        ``vals`` gets zeros for the others (value 0: T, F and Z stay, e^0 = 1 exactly). ``whole``: keep
        every chunk's cells (``sample_ray_rgb``) for a backward that follows."""
        _, eps, t_min, last_inf, dnorm = settings
        P = lengths.shape[1]
        c0, i_end = span
        zero = vals.dtype.type(0.0)
        for i in range(c0):
            vals[i, 0] = vals[i, 1] = vals[i, 2] = vals[i, 3] = zero
        for i in range(i_end, P):
            vals[i, 0] = vals[i, 1] = vals[i, 2] = vals[i, 3] = zero
        F_0 = F_1 = F_2 = 0.0
        T = 1.0
        depth = 0.0
        used = P  # unless the ray terminates in its span
        phase = CHUNK if t_min > 0.0 else max(P, 1)
        for i0 in range(c0, i_end, phase):
            i1 = min(i0 + phase, i_end)
            sample_ray_rgb(grid, layout, p, ray, lengths, r, i0, i1, vals, cell_base, cell_w, whole)
            attenuations(vals, lengths, r, i0, i1, dnorm, last_inf, att)
            ur = np.uint64(r)
            for i in range(i0, i1):
                u = np.uint64(i)  # see attenuations
                w, T, _ = composite(QUADRATURE, vals[u, 0], T, 1.0, att[u], eps)
                F_0, F_1, F_2, depth = accumulate(
                    F_0, F_1, F_2, depth, w, vals[u, 1], vals[u, 2], vals[u, 3], lengths[ur, u]
                )
                if T < t_min:
                    used = i + 1
                    break
            if T < t_min:
                break
        finish_ray(outs, r, QUADRATURE, T, 1.0, depth, used, (F_0, F_1, F_2))

    # the fused loss takes a copy inlined by Numba: a call per ray with a dozen arrays to pass, field
    # by field, cost its kernel 8-18 %; march_ray keeps the call (inlined there, Numba wrote zeros for
    # kept samples: ``samples[r] if ... else vals``)
    march_rgb_phased_inlined = jit_inline(march_rgb_phased)
    march_rgb_phased = jit(march_rgb_phased)

    def march_rgb_sampled(grid, layout, p, ray, lengths, r, settings, outs, cell_base, cell_w):
        """The core's EA ``march_ray`` for a density + RGB ray, compositing each sample as it is read
        (EA has no exponential to vectorise), cells a chunk at a time. Only the samples in the ray's
        span are read: those before it only multiply T by 1 + ε, as in the core; after it, T is no
        longer read."""
        _, eps, t_min, _, _ = settings
        samples = outs[4]
        store = samples.shape[0] > 0
        P = lengths.shape[1]
        corner = corner_offsets(layout)
        zero = grid.dtype.type(0.0)
        F_0 = F_1 = F_2 = 0.0
        T = keep = 1.0
        depth = 0.0
        c0, i_end = span_of(ray, lengths, r, layout)
        for i in range(c0):
            T *= 1.0 + eps - zero
            if store:
                samples[r, i, 0] = samples[r, i, 1] = samples[r, i, 2] = samples[r, i, 3] = zero
        if store:
            for i in range(i_end, P):
                samples[r, i, 0] = samples[r, i, 1] = samples[r, i, 2] = samples[r, i, 3] = zero
        used = P  # unless the ray terminates in its span
        for i0 in range(c0, i_end, CHUNK):
            i1 = min(i0 + CHUNK, i_end)
            chunk_cells(ray, lengths, r, i0, i1, layout, cell_base, cell_w, 0)
            for i in range(i0, i1):
                t = lengths[r, i]
                q = cell_of(cell_base, 0, i - i0)
                if q >= 0:
                    a, f0, f1, f2 = corner_value4(grid, p + q, cell_w, 0, i - i0, corner)
                elif q == OUTSIDE:
                    a = f0 = f1 = f2 = zero
                else:
                    a, f0, f1, f2 = sample_value4(grid, p, ray, t, layout)
                w, T, keep = composite(EA, a, T, keep, 1.0, eps)
                F_0, F_1, F_2, depth = accumulate(F_0, F_1, F_2, depth, w, f0, f1, f2, t)
                if store:
                    samples[r, i, 0] = a
                    samples[r, i, 1] = f0
                    samples[r, i, 2] = f1
                    samples[r, i, 3] = f2
                if T < t_min:
                    used = i + 1
                    break
            if T < t_min:
                break
        finish_ray(outs, r, EA, T, keep, depth, used, (F_0, F_1, F_2))

    march_rgb_sampled = jit(march_rgb_sampled)

    def march_ray(
        grid, layout_array, b, rays, lengths, r, mode, eps, t_min, align, last_inf, out_f, out_o, out_z, n_used,
        samples, vals, att, cell_base, cell_w,
    ):  # fmt: skip
        """The core's ``march_ray``, with the fast paths of density + RGB rays. Scratch: ``vals``
        (≥ P, 4, the grid's dtype) and ``att`` (≥ P,) for ``march_rgb_phased``, ``cell_base`` (CHUNK,)
        and ``cell_w`` (8 · CHUNK, the grid's dtype) for ``chunk_cells``."""
        layout = layout_of(layout_array)
        if not is_rgb(layout):
            core_march_ray(
                grid, layout_array, b, rays, lengths, r, mode, eps, t_min, align, last_inf, out_f, out_o, out_z,
                n_used, samples,
            )  # fmt: skip
            return
        ray = ray_of(rays, r, layout, align)
        p = voxel_base(layout, b)
        settings = (mode, eps, t_min, last_inf, rays[r, 6])
        outs = (out_f, out_o, out_z, n_used, samples)
        if mode == QUADRATURE:
            rows = samples[r] if samples.shape[0] > 0 else vals
            span = span_of(ray, lengths, r, layout)
            march_rgb_phased(
                grid, layout, p, ray, lengths, r, settings, outs, rows, att, cell_base, cell_w, False, span
            )  # fmt: skip
        else:
            march_rgb_sampled(grid, layout, p, ray, lengths, r, settings, outs, cell_base, cell_w)

    march_ray = jit_inline(march_ray)  # a dispatch: inlined into the kernel's loop over rays

    def backward_ea_rgb(
        layout, p, ray, lengths, r, eps, G, g_o, g_z, used, vals, scratch, buf, cell_base, cell_w, cells_ready, span
    ):  # fmt: skip
        """The core's ``backward_ea`` of a density + RGB ray without ray gradients, from its samples
        ``vals``: the scan of T and Q, then the reverse scan a chunk at a time, last first
        (``chunk_cells`` unless ``cells_ready``), scattering with ``corner_splat4``. Only the samples
        in ``span`` scatter: after it, R = 0 and S stay; before it, T only gains factors 1 + ε."""
        G0, G1, G2 = G
        corner = corner_offsets(layout)
        ur = np.uint64(r)
        c0, i_end = span
        end = min(used, i_end)
        T = Q = 1.0
        zero = vals.dtype.type(0.0)
        for _ in range(min(c0, end)):  # the samples before the span (not read: value 0)
            T *= 1.0 + eps - zero
        for i in range(c0, end):
            scratch[i, 0] = T
            scratch[i, 1] = Q
            T *= 1.0 + eps - vals[i, 0]
            Q *= 1.0 - vals[i, 0]
        R = 0.0
        S = 1.0
        for i0 in range((end - 1) // CHUNK * CHUNK, c0 - 1, -CHUNK):  # chunks, last first (none if end ≤ c0)
            i1 = min(i0 + CHUNK, end)
            if not cells_ready:
                chunk_cells(ray, lengths, r, i0, i1, layout, cell_base, cell_w, i0)
            for k in range(i1 - 1, i0 - 1, -1):
                u = np.uint64(k)  # unsigned indices: no wraparound tests (see corner_value4)
                t = lengths[ur, u]
                a = vals[u, 0]
                h = G0 * vals[u, 1] + G1 * vals[u, 2] + G2 * vals[u, 3] + t * g_z
                T = scratch[u, 0]
                g_a, R, S = ea_adjoint(T, scratch[u, 1], S, R, a, h, g_o, eps)
                w = a * T
                q = cell_of(cell_base, i0, k - i0)
                if q >= 0:
                    corner_splat4(buf, p + q, cell_w, i0, k - i0, corner, g_a, w * G0, w * G1, w * G2)
                elif q != OUTSIDE:
                    sample_splat4(buf, p, ray, t, layout, g_a, w * G0, w * G1, w * G2)

    backward_ea_rgb = jit_inline(backward_ea_rgb)

    def backward_quadrature_rgb(
        layout, p, ray, lengths, r, last_inf, dnorm, S_total, T_P, G, g_o, g_z, used, vals, att, buf, cell_base, cell_w,
        cells_ready, att_ready, span,
    ):  # fmt: skip
        """The core's ``backward_quadrature`` of a density + RGB ray without ray gradients, from its
        samples ``vals``, a chunk at a time (see ``backward_ea_rgb``); the attenuations first, into
        ``att``, unless ``att_ready`` (the ray's forward just left them there). Only the samples in
        ``span``: the others change neither T nor the prefix."""
        P = lengths.shape[1]
        G0, G1, G2 = G
        corner = corner_offsets(layout)
        ur = np.uint64(r)
        c0, i_end = span
        end = min(used, i_end)
        if not att_ready:
            attenuations(vals, lengths, r, c0, end, dnorm, last_inf, att)
        T = 1.0
        prefix = 0.0
        for i0 in range(c0, end, CHUNK):
            i1 = min(i0 + CHUNK, end)
            if not cells_ready:
                chunk_cells(ray, lengths, r, i0, i1, layout, cell_base, cell_w, i0)
            for i in range(i0, i1):
                u = np.uint64(i)  # unsigned indices: no wraparound tests (see corner_value4)
                t = lengths[ur, u]
                dl, span = delta(lengths, r, i, P, dnorm, last_inf)
                h = G0 * vals[u, 1] + G1 * vals[u, 2] + G2 * vals[u, 3] + t * g_z
                T, w, prefix, g_a, _ = quadrature_adjoint(T, vals[u, 0], att[u], dl, span, h, prefix, S_total, T_P, g_o)
                q = cell_of(cell_base, i0, i - i0)
                if q >= 0:
                    corner_splat4(buf, p + q, cell_w, i0, i - i0, corner, g_a, w * G0, w * G1, w * G2)
                elif q != OUTSIDE:
                    sample_splat4(buf, p, ray, t, layout, g_a, w * G0, w * G1, w * G2)

    backward_quadrature_rgb = jit_inline(backward_quadrature_rgb)

    def march_ray_backward_rgb(
        grid, layout, b, rays, lengths, r, mode, eps, align, last_inf, S_total, T_P, G_f, g_o, g_z, n_used, vals,
        sample_first, scratch, att, buf, cell_base, cell_w,
    ):  # fmt: skip
        """Backward of a density + RGB ray without ray gradients from its samples ``vals`` (P, 4):
        what the forward kept, or (``sample_first``) what ``sample_ray_rgb`` reads first, keeping the
        cells of each chunk in its slot of ``cell_base``/``cell_w`` for the reverse scan."""
        ray = ray_of(rays, r, layout, align)
        p = voxel_base(layout, b)
        span = span_of(ray, lengths, r, layout)
        if sample_first:  # the samples the backward reads: the ray's span
            end = min(n_used[r], span[1])
            sample_ray_rgb(grid, layout, p, ray, lengths, r, span[0], end, vals, cell_base, cell_w, True)
        G = (G_f[r, 0], G_f[r, 1], G_f[r, 2])
        if mode == EA:
            backward_ea_rgb(
                layout, p, ray, lengths, r, eps, G, g_o[r], g_z[r], n_used[r], vals, scratch, buf, cell_base, cell_w,
                sample_first, span,
            )  # fmt: skip
        else:
            backward_quadrature_rgb(
                layout, p, ray, lengths, r, last_inf, rays[r, 6], S_total[r], T_P[r], G, g_o[r], g_z[r], n_used[r],
                vals, att, buf, cell_base, cell_w, sample_first, False, span,
            )  # fmt: skip

    march_ray_backward_rgb = jit(march_ray_backward_rgb)

    def march_ray_backward(
        grid, layout_array, b, rays, lengths, r, mode, eps, align, last_inf, S_total, T_P, G_f, g_o, g_z, n_used,
        ray_grad, samples, vals, scratch, att, buf, grad_rays, cell_base, cell_w,
    ):  # fmt: skip
        """The core's ``march_ray_backward``, with the fast path of density + RGB rays without ray
        gradients. Scratch: ``scratch`` (≥ P, 2; EA's T and Q), ``vals`` (≥ P, 4, the grid's dtype),
        ``att`` (≥ P,), ``cell_base`` (≥ P rounded up to CHUNK,) and ``cell_w`` (8 times that, the
        grid's dtype)."""
        layout = layout_of(layout_array)
        if not is_rgb(layout) or ray_grad:
            core_march_ray_backward(
                grid, layout_array, b, rays, lengths, r, mode, eps, align, last_inf, S_total, T_P, G_f, g_o, g_z,
                n_used, ray_grad, samples, scratch, buf, grad_rays,
            )  # fmt: skip
        elif samples.shape[0] > 0:
            march_ray_backward_rgb(
                grid, layout, b, rays, lengths, r, mode, eps, align, last_inf, S_total, T_P, G_f, g_o, g_z, n_used,
                samples[r], False, scratch, att, buf, cell_base, cell_w,
            )  # fmt: skip
        else:
            march_ray_backward_rgb(
                grid, layout, b, rays, lengths, r, mode, eps, align, last_inf, S_total, T_P, G_f, g_o, g_z, n_used,
                vals, True, scratch, att, buf, cell_base, cell_w,
            )  # fmt: skip

    march_ray_backward = jit_inline(march_ray_backward)  # a dispatch, as march_ray

    def march_ray_mse(
        grid, layout_array, b, rays, lengths, r, eps, align, last_inf, target_f, target_o, scale_f, scale_o,
        out_f, out_o, out_z, n_used, err, vals, att, cell_base, cell_w,
    ):  # fmt: skip
        """Forward and backward of a density + RGB ray for the quadrature marcher and the loss
        ``scale_f / 2 · Σ_r |F_r - F*_r|² + scale_o / 2 · Σ_r (O_r - O*_r)²``: ``march_rgb_phased`` (no
        early termination), then the upstream gradients from the outputs as written (``out_f``'s
        dtype): ``G = scale_f (F - F*)``, ``g_O = scale_o (O - O*)``, ``g_Z = 0``, then
        ``backward_quadrature_rgb`` from the samples, attenuations and cells still in scratch. ``grid``
        has K = 8 channels, each voxel's 4 values followed by their 4 gradient accumulators, so the
        scatter writes the cache lines the forward has just read. ``err[r]`` = (|F - F*|², (O - O*)²)."""
        layout = layout_of(layout_array)
        ray = ray_of(rays, r, layout, align)
        p = voxel_base(layout, b)
        dnorm = rays[r, 6]
        settings = (QUADRATURE, eps, 0.0, last_inf, dnorm)
        outs = (out_f, out_o, out_z, n_used, vals)
        span = span_of(ray, lengths, r, layout)
        march_rgb_phased_inlined(
            grid, layout, p, ray, lengths, r, settings, outs, vals, att, cell_base, cell_w, True, span
        )
        d0 = float(out_f[r, 0]) - target_f[r, 0]
        d1 = float(out_f[r, 1]) - target_f[r, 1]
        d2 = float(out_f[r, 2]) - target_f[r, 2]
        d_o = float(out_o[r]) - target_o[r]
        err[r, 0] = d0 * d0 + d1 * d1 + d2 * d2
        err[r, 1] = d_o * d_o
        G = (scale_f * d0, scale_f * d1, scale_f * d2)
        S_total = float(out_f[r, 0]) * G[0] + float(out_f[r, 1]) * G[1] + float(out_f[r, 2]) * G[2]
        T_P = 1.0 - float(out_o[r])
        backward_quadrature_rgb(
            layout, p + 4, ray, lengths, r, last_inf, dnorm, S_total, T_P, G, scale_o * d_o, 0.0, n_used[r], vals,
            att, grid, cell_base, cell_w, True, True, span,
        )  # fmt: skip

    march_ray_mse = jit_inline(march_ray_mse)  # into volume_cpu's _march_task_mse, outside any prange

    def prefetch_ray(grid, layout_array, b, rays, lengths, r, align):
        """Prefetch (``prefetch_w``) the lines of ``grid`` (or a gradient buffer of its layout) at the
        corners (0, 0, 0), (0, 1, 0), (0, 0, 1) and (0, 1, 1) of the interior cells of every
        ``PREFETCH_STRIDE``-th sample of ray r, marched a few rays later; corners (1, ·, ·) share the
        line or sit on the next, which the CPU's adjacent-line prefetcher brings. A hint: the cell need
        not match ``chunk_cells`` bit for bit."""
        layout = layout_of(layout_array)
        g, _ = ray_of(rays, r, layout, align)
        D, H, W, sx, sy, sz = grid_axes(layout)
        p = voxel_base(layout, b)
        ur = np.uint64(r)
        for i in range(0, lengths.shape[1], PREFETCH_STRIDE):
            t = lengths[ur, np.uint64(i)]
            u = g[0] + t * g[3]
            v = g[1] + t * g[4]
            w = g[2] + t * g[5]
            if (u >= 0.0) & (u < W - 1) & (v >= 0.0) & (v < H - 1) & (w >= 0.0) & (w < D - 1):
                q = p + int(u) * sx + int(v) * sy + int(w) * sz
                prefetch_w(grid, q)
                prefetch_w(grid, q + sy)
                prefetch_w(grid, q + sz)
                prefetch_w(grid, q + sy + sz)

    prefetch_ray = jit(prefetch_ray)

    return SimpleNamespace(
        march_ray=march_ray,
        march_ray_backward=march_ray_backward,
        march_ray_mse=march_ray_mse,
        prefetch_ray=prefetch_ray,
    )
