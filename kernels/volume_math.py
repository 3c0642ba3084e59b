"""Per-sample and per-ray math of the volume kernels: plain Python, compiled twice
(docs/kernels.md#volume-sampler, docs/kernels.md#ray-marchers).

``build(jit, add)`` compiles these functions with ``jit`` (``numba.njit`` for the CPU kernels in
``volume_cpu``, ``numba.cuda.jit(device=True)`` for ``cuda_adapter``); ``add(buffer, index, v)`` is
the scatter of the backward passes: a plain ``+=`` into a per-task buffer on the CPU, an atomic add
on CUDA.

**Layout.** Grids are channels-last: a flat view of a (V, D, H, W, K) array with ``layout = (D, H,
W, K, F0, C)``. Channel c of voxel (k, j, i) of volume b is ``grid[((b D + k) H + j) W + i) K + c]``,
so the K channels of a voxel share a cache line and the corners i and i + 1 sit next to each other.
The fused marcher reads the density from channel 0 and the C features from channels F0 … F0 + C - 1
(F0 = 0, C = 1 when a volume has no features); the sampler reads channels 0 … C - 1. The torch
wrappers pack (V, C, D, H, W) tensors into this layout once per call (a parallel copy) and unpack
the gradients: one pass over memory each way, against four times as many cache lines per sample.

**Trilinear sampling** at local (x, y, z) (x ↔ W, y ↔ H, z ↔ D):

    u = (x + 1)(W - 1)/2   (align_corners)      u = ((x + 1) W - 1)/2   (otherwise)
    i0 = floor(u), α = u - i0   (likewise v, j0, β with H and w, k0, γ with D)
    val = Σ_{c ∈ {0,1}³} ω_c V[k0 + c_w, j0 + c_v, i0 + c_u],
    ω_c = (c_u ? α : 1 - α)(c_v ? β : 1 - β)(c_w ? γ : 1 - γ),

with corners outside the grid contributing 0 (``padding_mode="zeros"``). Backward: ``∂L/∂V[c] += ω_c g``
and ``∂val/∂u = Σ_c (∂ω_c/∂u) V[c]`` (likewise v, w).

**Cells.** ``cell`` returns, per axis, the offsets of the two corners, their weights (1 - α, α) and
the weights' derivatives (-1, 1). A corner outside the grid gets weight 0, derivative 0 and the
offset of a corner inside, so every sample reads and writes 8 valid addresses with one code path;
interior cells (nearly all of them) take a short path without the border tests.

**Density + RGB grids** (K = 4, the common case) read and scatter the four channels of each corner
together (``value4``, ``splat4``): 8 corner addresses per sample instead of 8 per channel, one
4-wide multiply-add each (``simd4`` on the CPU), in the grid's dtype (float32 grids: float32
trilinear weights and sums, like ``grid_sample``; positions and compositing stay float64). They
also get their own straight-line per-ray functions (``march_rgb_sampled``, ``march_rgb_phased``,
``march_ray_backward_rgb`` without ray gradients): the general functions' other paths cost
registers even when unused. On the CPU, their cells are computed a chunk of samples at a time in
one vectorised loop (``chunk_cells``).

**Rays** are ``x(t) = o + t d`` in local coordinates, sampled at the lengths t_0 < … < t_{P-1}; the
map to grid coordinates is affine, so each ray is converted once (``ray_of``) and sample t sits at
``(u_0, v_0, w_0) + t (du/dt, dv/dt, dw/dt)``.

**Emission-absorption, PyTorch3D mode** (mode 0): a_i = val_density, ``T_i = Π_{j<i} (1 + ε - a_j)``,
``w_i = a_i T_i``, ``F = Σ w_i f_i``, ``O = 1 - Π (1 - a_i)``, ``Z = Σ w_i t_i``.

**Quadrature** (mode 1): σ_i = max(val_density, 0), ``δ_i = (t_{i+1} - t_i)|d_world|`` (last: the
previous interval, or 1e10), ``τ_i = σ_i δ_i``, ``T_{i+1} = T_i e^{-τ_i}``, ``w_i = T_i - T_{i+1}``,
``F = Σ w_i c_i``, ``O = 1 - T_P``, ``Z = Σ w_i t_i`` (the background term T_P c_bg is added by the
caller). On the CPU, density + RGB rays compute the attenuations e^{-τ_i} of 16 samples at a time
in a vectorised loop (``exp_neg``, ``march_rgb_phased``), forward and backward.

**Early ray termination**: a ray stops after the first sample at which the transmittance falls
below ``t_min`` (0 disables it). Later samples then contribute nothing and receive zero gradient:
the gradients are exact for the truncated sum, which differs from the full one by at most
``t_min`` times the remaining colour.

**Kept samples.** Given a ``samples`` array (R, P, 1 + C), the forward pass writes the density and
features of every sample it marches, and a backward without ray gradients reads them instead of the
8 corners of each channel: it computes only the cell again, for the scatter.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

EA = 0
QUADRATURE = 1
MAX_CUDA_SAMPLES = 512  # per-thread scratch of the CUDA EA backward
SCRATCH_WIDTH = 16  # per-sample values the CPU EA backward keeps between its two passes
OUTSIDE = -2  # chunk_cells' mark of a sample with no corner in the grid
PREFETCH_STRIDE = 2  # prefetch_ray: every second sample of a ray
CHUNK = 16  # samples per phase of the CPU's density + RGB marcher (march_rgb_phased)
NEAR_MARGIN = 1e-3  # voxels: touching_span's allowance for rounding against chunk_cells


def _unnormalise(x, n, align):
    """Grid coordinate u of local coordinate x on an axis of n voxels, and du/dx."""
    if align:
        s = 0.5 * (n - 1)
        return (x + 1.0) * s, s
    return ((x + 1.0) * n - 1.0) * 0.5, 0.5 * n


def _axis(u, n, stride):
    """The two corners of grid coordinate u on an axis of n voxels: ``(offset_lo, offset_hi, w_lo,
    w_hi, dw_lo, dw_hi, inside)`` with offset = index · stride, w the trilinear weights and dw = ∂w/∂u.
    A corner outside the axis gets weight 0 and the offset of one inside; ``inside`` is False (and
    both weights 0) when u is beyond both corners or not finite."""
    if not (u > -1.0 and u < n):
        return 0, 0, 0.0, 0.0, 0.0, 0.0, False
    i0 = int(u) if u >= 0.0 else -1  # floor(u) for u > -1
    a = u - i0
    lo = i0 >= 0
    hi = i0 + 1 < n
    i_lo = i0 if lo else i0 + 1
    i_hi = i0 + 1 if hi else i0
    return (
        i_lo * stride,
        i_hi * stride,
        1.0 - a if lo else 0.0,
        a if hi else 0.0,
        -1.0 if lo else 0.0,
        1.0 if hi else 0.0,
        True,
    )


def _delta(lengths, r, i, P, dnorm, last_inf):
    """Step length δ_i of sample i and the length it scales (``δ_i = span · |d|``; span 0 for an
    infinite last step, which does not depend on |d|)."""
    if i + 1 < P:
        span = lengths[r, i + 1] - lengths[r, i]
    elif last_inf:
        return 1e10, 0.0
    elif P > 1:
        span = lengths[r, P - 1] - lengths[r, P - 2]
    else:
        span = 1.0
    return span * dnorm, span


def _no_prefetch(a, q):
    """``prefetch_w`` of builds without one."""
    return


def axpy4_scalar(acc, w, a, q):
    """``acc + w · a[q : q + 4]`` for a 4-tuple ``acc`` (the scalar form of ``simd4.axpy4``)."""
    return (acc[0] + w * a[q], acc[1] + w * a[q + 1], acc[2] + w * a[q + 2], acc[3] + w * a[q + 3])


def _add4_with(add):
    """``a[q : q + 4] += w · g`` with the scatter ``add`` (the scalar form of ``simd4.add4``)."""

    def add4_scalar(a, q, w, g):
        add(a, q, w * g[0])
        add(a, q + 1, w * g[1])
        add(a, q + 2, w * g[2])
        add(a, q + 3, w * g[3])

    return add4_scalar


def _exp_neg_libm(x):
    """e^{-x} through libm (the default ``exp_neg`` of ``build``)."""
    return math.exp(-x)


def build(jit, add, jit_inline=None, keep_samples=True, axpy4=None, add4=None, exp_neg=None, prefetch_w=None):
    """Compile the device functions with ``jit``; ``add(buffer, index, value)`` is the scatter.

    ``axpy4(acc, w, a, q) = acc + w · a[q : q + 4]`` and ``add4(a, q, w, g)``, ``a[q : q + 4] +=
    w · g`` (4-tuples, in the array's dtype) are the 4-channel reads and scatters of density + RGB
    grids: the CPU build passes ``simd4``'s vector instructions; by default they are the scalar
    ``axpy4_scalar`` and ``add4_scalar`` (with ``add``, so atomic on CUDA).

    ``exp_neg(x) = e^{-x}`` (default ``math.exp(-x)``): the CPU build passes ``exp_neg.exp_neg``,
    which has no call, so that a loop of attenuations vectorises.

    ``prefetch_w(a, q)``: a hint that the cache line of ``a[q]`` will be written soon
    (``prefetch_ray``); the CPU build passes ``simd4.prefetch_w``, by default it does nothing.

    ``keep_samples``: per-ray arrays fit in memory (the CPU; fixed at build time so that each build
    compiles only its own strategy):
    - when the forward pass kept no samples (or ray gradients need the corners), the backward keeps
      every sample of a ray between its two passes (scratch (P, SCRATCH_WIDTH) in the general EA
      backward, (P, 4) values for density + RGB grids); without it (CUDA, where per-thread memory is
      scarce; scratch (P, 2)) the reverse pass samples again;
    - density + RGB grids are marched in phases (``march_rgb_phased``): sample a chunk of the ray,
      then the quadrature attenuations ``e^{-σ δ}`` of the whole chunk in one vectorised loop
      (``attenuations``, into ``att`` (P,)), then composite; without it, sample by sample;
    - the cells of density + RGB samples, forward and backward, are computed a chunk at a time in
      one vectorised loop (``chunk_cells``, into ``cell_base`` and ``cell_w``: one chunk's slot
      (CHUNK,) and (8 · CHUNK,) in the forward, a slot per chunk of the ray in the backward, which
      then computes them once for both of its passes); without it, each sample computes its own.

    ``jit_inline`` (default ``jit``) compiles the small per-sample helpers; the CPU build inlines
    them into the per-ray functions (``njit(inline="always")``), which makes the kernels 3x faster,
    while the per-ray functions stay separate to keep compilation time down."""
    jit_inline = jit_inline or jit
    axpy4 = axpy4 or jit_inline(axpy4_scalar)
    add4 = add4 or jit_inline(_add4_with(add))
    exp_neg = jit_inline(exp_neg or _exp_neg_libm)
    prefetch_w = prefetch_w or jit_inline(_no_prefetch)
    unnormalise = jit_inline(_unnormalise)
    axis = jit_inline(_axis)
    delta = jit_inline(_delta)

    def attenuation(val, dl):
        """Quadrature's e^{-σ δ} of a sample of density val (σ = max(val, 0); NaN counts as 0),
        without the exponential where σ = 0 (empty space, samples outside the grid): e^0 = 1
        exactly, so the result is the same."""
        sigma = val if val > 0.0 else 0.0
        return exp_neg(sigma * dl) if sigma > 0.0 else 1.0

    attenuation = jit_inline(attenuation)

    def grid_axes(layout):
        """``(D, H, W, sx, sy, sz)``: the grid's size and the flat strides of its x, y and z axes."""
        sx = layout[3]
        sy = layout[2] * sx
        return layout[0], layout[1], layout[2], sx, sy, layout[1] * sy

    grid_axes = jit_inline(grid_axes)

    def grid_cell(u, v, w, scales, layout):
        """The trilinear cell of grid point (u, v, w): ``(offsets, weights, dweights, scales, inside)``
        with offsets (x_lo, x_hi, y_lo, y_hi, z_lo, z_hi) in elements of the flat grid, the matching
        weights and their derivatives by grid coordinate, and ``scales`` (du/dx, dv/dy, dw/dz) passed
        through. ``inside`` is False when no corner is in the grid (the sample is 0)."""
        D, H, W, sx, sy, sz = grid_axes(layout)
        if u >= 0.0 and u < W - 1 and v >= 0.0 and v < H - 1 and w >= 0.0 and w < D - 1:
            i0 = int(u)  # interior cell: all 8 corners inside, floor = truncation
            j0 = int(v)
            k0 = int(w)
            a = u - i0
            b = v - j0
            g = w - k0
            offsets = (i0 * sx, i0 * sx + sx, j0 * sy, j0 * sy + sy, k0 * sz, k0 * sz + sz)
            return offsets, (1.0 - a, a, 1.0 - b, b, 1.0 - g, g), (-1.0, 1.0, -1.0, 1.0, -1.0, 1.0), scales, True
        x0, x1, wx0, wx1, dx0, dx1, okx = axis(u, W, sx)
        y0, y1, wy0, wy1, dy0, dy1, oky = axis(v, H, sy)
        z0, z1, wz0, wz1, dz0, dz1, okz = axis(w, D, sz)
        return (
            (x0, x1, y0, y1, z0, z1),
            (wx0, wx1, wy0, wy1, wz0, wz1),
            (dx0, dx1, dy0, dy1, dz0, dz1),
            scales,
            okx and oky and okz,
        )

    grid_cell = jit_inline(grid_cell)

    def cell(x, y, z, layout, align):
        """``grid_cell`` of local point (x, y, z)."""
        u, su = unnormalise(x, layout[2], align)
        v, sv = unnormalise(y, layout[1], align)
        w, sw = unnormalise(z, layout[0], align)
        return grid_cell(u, v, w, (su, sv, sw), layout)

    cell = jit_inline(cell)

    def voxel_base(layout, b):
        """Flat index of channel 0 of voxel (0, 0, 0) of volume b."""
        return b * layout[0] * layout[1] * layout[2] * layout[3]

    voxel_base = jit_inline(voxel_base)

    def corners(grid, p, offsets):
        """The 8 corner values of the channel whose voxel (0, 0, 0) is at flat index p; corner k is
        (x, y, z) = (k & 1, (k >> 1) & 1, k >> 2)."""
        x0, x1, y0, y1, z0, z1 = offsets
        return (
            grid[p + z0 + y0 + x0],
            grid[p + z0 + y0 + x1],
            grid[p + z0 + y1 + x0],
            grid[p + z0 + y1 + x1],
            grid[p + z1 + y0 + x0],
            grid[p + z1 + y0 + x1],
            grid[p + z1 + y1 + x0],
            grid[p + z1 + y1 + x1],
        )

    corners = jit_inline(corners)

    def blend(v0, v1, v2, v3, v4, v5, v6, v7, wx0, wx1, wy0, wy1, wz0, wz1):
        """Σ_k ω_k v_k with ω_k = wx · wy · wz of corner k."""
        return wz0 * (wy0 * (wx0 * v0 + wx1 * v1) + wy1 * (wx0 * v2 + wx1 * v3)) + wz1 * (
            wy0 * (wx0 * v4 + wx1 * v5) + wy1 * (wx0 * v6 + wx1 * v7)
        )

    blend = jit_inline(blend)

    def blend_grad(vals, weights, dweights):
        """(∂/∂u, ∂/∂v, ∂/∂w) of ``blend``: the same sums with one axis' weights replaced by their
        derivatives."""
        v0, v1, v2, v3, v4, v5, v6, v7 = vals
        wx0, wx1, wy0, wy1, wz0, wz1 = weights
        dx0, dx1, dy0, dy1, dz0, dz1 = dweights
        return (
            blend(v0, v1, v2, v3, v4, v5, v6, v7, dx0, dx1, wy0, wy1, wz0, wz1),
            blend(v0, v1, v2, v3, v4, v5, v6, v7, wx0, wx1, dy0, dy1, wz0, wz1),
            blend(v0, v1, v2, v3, v4, v5, v6, v7, wx0, wx1, wy0, wy1, dz0, dz1),
        )

    blend_grad = jit_inline(blend_grad)

    def value(grid, p, offsets, weights):
        """Trilinear value of the channel whose voxel (0, 0, 0) is at flat index p."""
        v0, v1, v2, v3, v4, v5, v6, v7 = corners(grid, p, offsets)
        wx0, wx1, wy0, wy1, wz0, wz1 = weights
        return blend(v0, v1, v2, v3, v4, v5, v6, v7, wx0, wx1, wy0, wy1, wz0, wz1)

    value = jit_inline(value)

    def corners8(offsets, weights):
        """The flat offsets and trilinear weights ω of the 8 corners of a cell, corner k = (x, y, z) =
        (k & 1, (k >> 1) & 1, k >> 2)."""
        x0, x1, y0, y1, z0, z1 = offsets
        wx0, wx1, wy0, wy1, wz0, wz1 = weights
        w00 = wy0 * wz0
        w10 = wy1 * wz0
        w01 = wy0 * wz1
        w11 = wy1 * wz1
        return (
            (
                z0 + y0 + x0,
                z0 + y0 + x1,
                z0 + y1 + x0,
                z0 + y1 + x1,
                z1 + y0 + x0,
                z1 + y0 + x1,
                z1 + y1 + x0,
                z1 + y1 + x1,
            ),
            (wx0 * w00, wx1 * w00, wx0 * w10, wx1 * w10, wx0 * w01, wx1 * w01, wx0 * w11, wx1 * w11),
        )

    corners8 = jit_inline(corners8)

    def splat(buf, p, offsets, weights, gval):
        """``buf[corner k] += ω_k gval`` (the adjoint of ``value``)."""
        offs, ws = corners8(offsets, weights)
        for k in range(8):
            add(buf, p + offs[k], ws[k] * gval)

    splat = jit_inline(splat)

    def value4(grid, p, offsets, weights):
        """``value`` of the 4 channels p … p + 3 at once (a density + RGB grid, K = 4), computed in
        the grid's dtype: each corner's channels share 16 bytes, so the 8 corners are read once
        each, with one 4-wide multiply-add (``axpy4``)."""
        offs, ws = corners8(offsets, weights)
        real = grid.dtype.type
        zero = real(0.0)
        acc = (zero, zero, zero, zero)
        for k in range(8):
            acc = axpy4(acc, real(ws[k]), grid, p + offs[k])
        return acc

    value4 = jit_inline(value4)

    def splat4(buf, p, offsets, weights, g0, g1, g2, g3):
        """``splat`` of channels p … p + 3 at once (the adjoint of ``value4``, in the buffer's
        dtype): one 4-wide scatter per corner (``add4``)."""
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

    def sample_point(grid, layout, b, x, y, z, align, out, m):
        """``out[m, c] = V_c(x, y, z)`` for the channels c < C of volume b (the standalone sampler)."""
        offsets, weights, dweights, scales, inside = cell(x, y, z, layout, align)
        p = voxel_base(layout, b)
        for c in range(layout[5]):
            out[m, c] = value(grid, p + c, offsets, weights) if inside else 0.0

    sample_point = jit(sample_point)

    def sample_point_backward(grid, layout, b, x, y, z, align, grad_out, m, buf):
        """Scatter ``grad_out[m]`` into ``buf``; return dL/d(x, y, z)."""
        offsets, weights, dweights, scales, inside = cell(x, y, z, layout, align)
        p = voxel_base(layout, b)
        gx = 0.0
        gy = 0.0
        gz = 0.0
        if inside:
            for c in range(layout[5]):
                gc = grad_out[m, c]
                if gc != 0.0:
                    splat(buf, p + c, offsets, weights, gc)
                    du, dv, dw = blend_grad(corners(grid, p + c, offsets), weights, dweights)
                    gx += gc * du * scales[0]
                    gy += gc * dv * scales[1]
                    gz += gc * dw * scales[2]
        return gx, gy, gz

    sample_point_backward = jit(sample_point_backward)

    def ray_of(rays, r, layout, align):
        """Ray r in grid coordinates, ``((u_0, v_0, w_0, du/dt, dv/dt, dw/dt), (du/dx, dv/dy,
        dw/dz))``: the map from local to grid coordinates is affine, so sample t is at
        (u_0, v_0, w_0) + t (du/dt, dv/dt, dw/dt). Computed once per ray and kept in registers (the
        compiler cannot keep array elements across the stores of the scatter, which might alias
        them)."""
        u0, su = unnormalise(rays[r, 0], layout[2], align)
        v0, sv = unnormalise(rays[r, 1], layout[1], align)
        w0, sw = unnormalise(rays[r, 2], layout[0], align)
        return (u0, v0, w0, rays[r, 3] * su, rays[r, 4] * sv, rays[r, 5] * sw), (su, sv, sw)

    ray_of = jit_inline(ray_of)

    def layout_of(layout):
        """The layout array as a tuple, for the same reason as ``ray_of``."""
        return layout[0], layout[1], layout[2], layout[3], layout[4], layout[5]

    layout_of = jit_inline(layout_of)

    def ray_cell(ray, t, layout):
        """``grid_cell`` of sample t of a ray given by ``ray_of``."""
        g, scales = ray
        return grid_cell(g[0] + t * g[3], g[1] + t * g[4], g[2] + t * g[5], scales, layout)

    ray_cell = jit_inline(ray_cell)

    def corner_offsets(layout):
        """Flat offsets of the 8 corners of a cell from its corner (0, 0, 0), corner k = (x, y, z) =
        (k & 1, (k >> 1) & 1, k >> 2) as in ``corners8``."""
        _, _, _, sx, sy, sz = grid_axes(layout)
        return (0, sx, sy, sy + sx, sz, sz + sx, sz + sy, sz + sy + sx)

    corner_offsets = jit_inline(corner_offsets)

    def chunk_cells(ray, lengths, r, i0, i1, layout, cell_base, cell_w, o):
        """The cells of samples i0 … i1 - 1 (at most CHUNK) of a ray given by ``ray_of``, into the
        slot at ``o`` (0 for a single chunk's scratch, i0 for a whole ray's), for j = i - i0:
        - an interior cell (all 8 corners in the grid): ``cell_base[o + j]`` is the flat offset of
          corner (0, 0, 0) and ``cell_w[8 o + k · CHUNK + j]`` the trilinear weight ω_k of corner k
          (``corner_offsets``), in ``cell_w``'s dtype;
        - a cell with corners both in and out of the grid: ``cell_base[o + j] = -1``; the sample
          computes it itself (``sample_value4``, ``sample_splat4``);
        - no corner in the grid, or a point that is not finite: ``cell_base[o + j] = OUTSIDE``,
          value 0.

        The arithmetic of ``grid_cell``'s interior case and ``corners8``, bit for bit, in one loop
        without branches (points that are not interior are moved to 0 before the conversion to
        integers), so the compiler computes 8 samples per vector instruction (the CPU build)."""
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
            i_u = int(u)
            i_v = int(v)
            i_w = int(w)
            a = u - i_u
            b = v - i_v
            c = w - i_w
            base[j] = i_u * sx + i_v * sy + i_w * sz if interior else (-1 if touches else -2)
            wx0 = 1.0 - a
            w00 = (1.0 - b) * (1.0 - c)
            w10 = b * (1.0 - c)
            w01 = (1.0 - b) * c
            w11 = b * c
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
        """Whether the point at length t of a ray (``ray_of``'s first part) lies within
        ``NEAR_MARGIN`` voxels of ``chunk_cells``' "touches" region of a grid of ``box`` = (D, H,
        W)."""
        D, H, W = box
        lo = -1.0 - NEAR_MARGIN
        u = g[0] + t * g[3]
        v = g[1] + t * g[4]
        w = g[2] + t * g[5]
        return (u > lo) & (u < W + NEAR_MARGIN) & (v > lo) & (v < H + NEAR_MARGIN) & (w > lo) & (w < D + NEAR_MARGIN)

    near_grid = jit_inline(near_grid)

    def touching_span(ray, lengths, r, layout):
        """``(c0, i_end)`` for a density + RGB ray given by ``ray_of``: no sample of ray r outside
        c0 … i_end - 1 has a corner in the grid, so its value is 0 and it gets no gradient, and the
        per-ray loops skip it (the bench's EA render: 40 % of the samples of its 128² rays lie
        between the camera and the grid). i_end is one past the last sample whose point lies within
        ``NEAR_MARGIN`` voxels of ``chunk_cells``' "touches" region, c0 the first such sample
        rounded down to a multiple of CHUNK, so chunks keep their places; (0, 0) when no sample is
        near. The margin covers the rounding between this scalar test and the vectorised one: a
        sample between them is sampled as before, and comes out ``OUTSIDE``. Scanning stops at the
        first sample near the grid from either end: 2 tests for a ray clipped to the grid's box."""
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

    def whole_ray(ray, lengths, r, layout):
        """``touching_span`` of builds that march every sample (CUDA)."""
        return 0, lengths.shape[1]

    span_of = jit(touching_span if keep_samples else whole_ray)

    def corner_value4(grid, q, cell_w, o, j, corner):
        """``value4`` of sample j of a chunk whose interior cell ``chunk_cells`` computed into the
        slot at o, with corner (0, 0, 0) at flat index q (``corner`` = ``corner_offsets``)."""
        real = grid.dtype.type
        zero = real(0.0)
        acc = (zero, zero, zero, zero)
        j = np.uint64(8 * o + j)  # unsigned indices: no wraparound test (3 instructions a load)
        for k in range(8):
            acc = axpy4(acc, cell_w[np.uint64(k * CHUNK) + j], grid, q + corner[k])
        return acc

    corner_value4 = jit_inline(corner_value4)

    def corner_splat4(buf, q, cell_w, o, j, corner, g0, g1, g2, g3):
        """``splat4`` of sample j of a chunk whose interior cell ``chunk_cells`` computed into the
        slot at o."""
        real = buf.dtype.type
        g = (real(g0), real(g1), real(g2), real(g3))
        j = np.uint64(8 * o + j)  # see corner_value4
        for k in range(8):
            add4(buf, q + corner[k], cell_w[np.uint64(k * CHUNK) + j], g)

    corner_splat4 = jit_inline(corner_splat4)

    def sample_value4(grid, p, ray, t, layout):
        """``value4`` of sample t of a ray, computing its cell (0 outside the grid)."""
        offsets, weights, _, _, inside = ray_cell(ray, t, layout)
        real = grid.dtype.type
        zero = real(0.0)
        acc = (zero, zero, zero, zero)
        if inside:
            acc = value4(grid, p, offsets, weights)
        return acc

    sample_value4 = jit(sample_value4)

    def sample_splat4(buf, p, ray, t, layout, g0, g1, g2, g3):
        """``splat4`` of sample t of a ray, computing its cell."""
        offsets, weights, _, _, inside = ray_cell(ray, t, layout)
        if inside:
            splat4(buf, p, offsets, weights, g0, g1, g2, g3)

    sample_splat4 = jit(sample_splat4)

    def cell_index(cell_base, o, j):
        """``cell_base[o + j]``: corner (0, 0, 0) of the interior cell of sample j of the chunk in
        the slot at o, or -1, or ``OUTSIDE`` (``chunk_cells``)."""
        return cell_base[np.uint64(o + j)]

    def no_cells(ray, lengths, r, i0, i1, layout, cell_base, cell_w, o):
        """``chunk_cells`` of builds without per-ray scratch (CUDA)."""
        return

    def no_cell_index(cell_base, o, j):
        """``cell_index`` of builds without per-ray scratch (CUDA): every sample computes its cell."""
        return -1

    # density + RGB rays find their cells through these (chosen when building): a chunk at a time on
    # the CPU, where the chunk's cells vectorise, and only the samples whose cell is not interior
    # compute it themselves (``sample_value4``, ``sample_splat4``); on CUDA, every sample. The
    # per-sample loops branch on ``cell_of`` themselves and the inlined helpers that take arrays are
    # straight-line: when an inlined helper with arrays branches, Numba's reference counting of its
    # arguments stays in the loop (calls per sample; the kernels took 1.3-1.6x longer, measured).
    prepare_cells = chunk_cells if keep_samples else jit_inline(no_cells)
    cell_of = jit_inline(cell_index if keep_samples else no_cell_index)

    def composite(mode, val, T, keep, e, eps):
        """A sample of either marcher: ``(w_i, T_{i+1}, keep · (1 - a_i))``; ``keep`` = Π (1 - a_j)
        is the EA opacity's product (passed through by quadrature), ``e`` quadrature's attenuation
        e^{-σ_i δ_i} (unused by EA)."""
        if mode == EA:
            return val * T, T * (1.0 + eps - val), keep * (1.0 - val)
        T_next = T * e
        return T - T_next, T_next, keep

    composite = jit_inline(composite)

    def accumulate(F_0, F_1, F_2, depth, w, f0, f1, f2, t):
        """A sample's share of a density + RGB ray's outputs: ``F += w f``, ``Z += w t``."""
        return F_0 + w * f0, F_1 + w * f1, F_2 + w * f2, depth + w * t

    accumulate = jit_inline(accumulate)

    def finish_ray(outs, r, mode, T, keep, depth, used, F, rgb):
        """Write ray r's opacity, depth and samples used, and (``rgb``) its 3 features ``F``."""
        out_f, out_o, out_z, n_used, _ = outs
        if rgb:
            out_f[r, 0] = F[0]
            out_f[r, 1] = F[1]
            out_f[r, 2] = F[2]
        out_o[r] = 1.0 - keep if mode == EA else 1.0 - T
        out_z[r] = depth
        n_used[r] = used

    finish_ray = jit_inline(finish_ray)

    def march_ray_any(grid, layout, p, ray, lengths, r, settings, outs):
        """The per-ray forward loop, sample by sample, for any channel layout: one channel at a time
        (density + RGB grids take ``march_rgb_cpu`` / ``march_rgb_sampled``)."""
        mode, eps, t_min, last_inf, dnorm = settings
        out_f, _, _, _, samples = outs
        P = lengths.shape[1]
        F0 = layout[4]
        C = layout[5]
        store = samples.shape[0] > 0
        for c in range(C):
            out_f[r, c] = 0.0
        T = 1.0
        keep = 1.0
        depth = 0.0
        used = 0
        for i in range(P):
            t = lengths[r, i]
            used = i + 1
            offsets, weights, dweights, scales, inside = ray_cell(ray, t, layout)
            val = value(grid, p, offsets, weights) if inside else 0.0
            e = 1.0
            if mode == QUADRATURE:
                e = attenuation(val, delta(lengths, r, i, P, dnorm, last_inf)[0])
            w, T_next, keep = composite(mode, val, T, keep, e, eps)
            if inside and (w != 0.0 or store):
                for c in range(C):
                    f = value(grid, p + F0 + c, offsets, weights)
                    out_f[r, c] += w * f
                    if store:
                        samples[r, i, 1 + c] = f
            elif store:
                for c in range(C):
                    samples[r, i, 1 + c] = 0.0
            if store:
                samples[r, i, 0] = val
            depth += w * t
            T = T_next
            if T < t_min:
                break
        finish_ray(outs, r, mode, T, keep, depth, used, (0.0, 0.0, 0.0), False)

    march_ray_any = jit(march_ray_any)

    def sample_ray_rgb(grid, layout, p, ray, lengths, r, i0, i1, vals, cell_base, cell_w, whole):
        """``vals[i] = (density, f_0, f_1, f_2)`` of samples i0 … i1 - 1 of a ray through a density +
        RGB grid (what the forward pass keeps with ``samples``), CHUNK at a time (``prepare_cells``,
        then ``corner_value4``). ``whole``: keep every chunk's cells, each in its slot (at the
        chunk's first sample; ``cell_base`` ≥ i1 rounded up to CHUNK), for a backward to reuse;
        otherwise the slot at 0 serves each chunk in turn. Compiled once, not inlined: the forward
        and a backward that samples again must get the same bits (inlined copies may contract and
        reassociate differently), and a call per chunk costs nothing measurable."""
        corner = corner_offsets(layout)
        zero = grid.dtype.type(0.0)
        for c0 in range(i0, i1, CHUNK):
            c1 = min(c0 + CHUNK, i1)
            o = c0 if whole else 0
            prepare_cells(ray, lengths, r, c0, c1, layout, cell_base, cell_w, o)
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
        """``att[i] = e^{-σ_i δ_i}`` for samples i0 … i1 - 1 of densities ``vals[i, 0]``: σ δ first,
        then the exponentials in a loop of their own, which the compiler vectorises when ``exp_neg``
        has no call (the CPU build). The samples followed by another take δ_i = (t_{i+1} - t_i) |d|
        in a loop of their own with unsigned indices, without ``delta``'s branches and Numba's
        wraparound tests: the fit bench's fused kernel (64³, 16384 rays × 64 samples) took 3 % less
        time (medians of 30 alternating calls, 2 runs), 8 % in a quieter run."""
        P = lengths.shape[1]
        lr = lengths[r]
        inner = max(min(i1, P - 1) - i0, 0)  # the samples followed by another: δ = (t_{i+1} - t_i) |d|
        for j in range(inner):
            u = np.uint64(i0 + j)  # unsigned indices: no wraparound tests (see corner_value4)
            val = vals[u, 0]
            att[u] = (val if val > 0.0 else 0.0) * ((lr[u + np.uint64(1)] - lr[u]) * dnorm)
        for i in range(i0 + inner, i1):  # the ray's last sample
            val = vals[i, 0]
            att[i] = (val if val > 0.0 else 0.0) * delta(lengths, r, i, P, dnorm, last_inf)[0]
        chunk = att[i0:i1]  # indexed from 0: Numba's wraparound test on att[i] would stop the vectoriser
        for j in range(chunk.shape[0]):
            chunk[j] = exp_neg(chunk[j])

    attenuations = jit_inline(attenuations)

    def march_rgb_phased(grid, layout, p, ray, lengths, r, settings, outs, vals, att, cell_base, cell_w, whole, span):
        """The forward loop of a density + RGB ray for quadrature (only, the CPU) in phases, CHUNK
        samples at a time (the whole ray when ``t_min`` = 0: no early termination): sample the chunk
        into ``vals`` (the kept samples, or scratch), compute its attenuations (``attenuations``: the
        exponentials vectorise), then composite. Early termination stops inside a chunk, so at most
        CHUNK - 1 samples are read in vain. Session 7 measured the fit bench's forward (64³, 16384
        rays × 64 samples) at 10.8 instead of 14.2 ms sample by sample; EA, which has no
        exponential, is faster without phases (``march_rgb_sampled``). ``whole``: keep the cells of
        every chunk in its slot (``sample_ray_rgb``), for a backward that follows. Only the samples
        in ``span`` (``span_of``) are read: the others have value 0, which leaves T, F and Z as
        they are (e^0 = 1 exactly); ``vals`` gets zeros for them.

        The fused loss kernel (``march_ray_mse``) takes a copy inlined by Numba
        (``march_rgb_phased_inlined``): one call per ray with a dozen arrays to pass (Numba passes
        each field of each array: hundreds of moves) cost the fit bench's kernel 8-18 %: 8.9-9.0
        against 9.7-10.8 ms at 8³, 10.9-12.3 against 11.8-14.4 ms at 64³ (25 alternating calls,
        either order first), the same bits. ``march_rgb_cpu`` keeps the call: inlined there, Numba
        wrote zeros for kept samples (``samples[r] if ... else vals``; a test caught it)."""
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
        phase = CHUNK if t_min > 0.0 else max(P, 1)  # without early termination, the whole span at once
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
        finish_ray(outs, r, QUADRATURE, T, 1.0, depth, used, (F_0, F_1, F_2), True)

    march_rgb_phased_inlined = jit_inline(march_rgb_phased)
    march_rgb_phased = jit(march_rgb_phased)

    def march_rgb_sampled(grid, layout, p, ray, lengths, r, settings, outs, cell_base, cell_w):
        """The forward loop of a density + RGB ray, either marcher, reading the 4 channels of each
        corner at once and compositing each sample as soon as it is read, with the cells computed a
        chunk at a time (``prepare_cells``; on CUDA each sample computes its own). The CPU's EA
        (which has no exponential to vectorise: compositing overlaps the reads of the next sample)
        and CUDA's both marchers. Only the samples in the ray's ``span_of`` are read: the others
        have value 0 and change nothing but EA's T, by its factor 1 + ε (before the span: its
        sequential product, as when they were marched; after it, T is no longer read, and neither
        marcher terminates there)."""
        mode, eps, t_min, last_inf, dnorm = settings
        samples = outs[4]
        store = samples.shape[0] > 0
        P = lengths.shape[1]
        corner = corner_offsets(layout)
        zero = grid.dtype.type(0.0)
        F_0 = F_1 = F_2 = 0.0
        T = 1.0
        keep = 1.0
        depth = 0.0
        c0, i_end = span_of(ray, lengths, r, layout)
        for i in range(c0):
            if mode == EA:
                T *= 1.0 + eps - zero
            if store:
                samples[r, i, 0] = samples[r, i, 1] = samples[r, i, 2] = samples[r, i, 3] = zero
        if store:
            for i in range(i_end, P):
                samples[r, i, 0] = samples[r, i, 1] = samples[r, i, 2] = samples[r, i, 3] = zero
        used = P  # unless the ray terminates in its span
        for i0 in range(c0, i_end, CHUNK):
            i1 = min(i0 + CHUNK, i_end)
            prepare_cells(ray, lengths, r, i0, i1, layout, cell_base, cell_w, 0)
            for i in range(i0, i1):
                t = lengths[r, i]
                q = cell_of(cell_base, 0, i - i0)
                if q >= 0:
                    val, f0, f1, f2 = corner_value4(grid, p + q, cell_w, 0, i - i0, corner)
                elif q == OUTSIDE:
                    val = f0 = f1 = f2 = zero
                else:
                    val, f0, f1, f2 = sample_value4(grid, p, ray, t, layout)
                e = 1.0
                if mode == QUADRATURE:
                    e = attenuation(val, delta(lengths, r, i, P, dnorm, last_inf)[0])
                w, T, keep = composite(mode, val, T, keep, e, eps)
                F_0, F_1, F_2, depth = accumulate(F_0, F_1, F_2, depth, w, f0, f1, f2, t)
                if store:
                    samples[r, i, 0] = val
                    samples[r, i, 1] = f0
                    samples[r, i, 2] = f1
                    samples[r, i, 3] = f2
                if T < t_min:
                    used = i + 1
                    break
            if T < t_min:
                break
        finish_ray(outs, r, mode, T, keep, depth, used, (F_0, F_1, F_2), True)

    march_rgb_sampled = jit(march_rgb_sampled)

    def march_rgb_cpu(grid, layout, p, ray, lengths, r, settings, outs, vals, att, cell_base, cell_w):
        """A density + RGB ray on the CPU: quadrature in phases (into the kept samples, or the
        scratch ``vals``), EA compositing each sample as it is read (``march_rgb_sampled``)."""
        samples = outs[4]
        if settings[0] == QUADRATURE:
            rows = samples[r] if samples.shape[0] > 0 else vals
            span = span_of(ray, lengths, r, layout)
            march_rgb_phased(
                grid, layout, p, ray, lengths, r, settings, outs, rows, att, cell_base, cell_w, False, span
            )  # fmt: skip
        else:
            march_rgb_sampled(grid, layout, p, ray, lengths, r, settings, outs, cell_base, cell_w)

    def march_rgb_sample_by_sample(grid, layout, p, ray, lengths, r, settings, outs, vals, att, cell_base, cell_w):
        """A density + RGB ray without per-ray scratch (CUDA): sample by sample."""
        march_rgb_sampled(grid, layout, p, ray, lengths, r, settings, outs, cell_base, cell_w)

    # chosen when building, so that CUDA compiles no code that needs the CPU's scratch arrays
    march_rgb = jit_inline(march_rgb_cpu if keep_samples else march_rgb_sample_by_sample)

    def march_ray(
        grid, layout_array, b, rays, lengths, r, mode, eps, t_min, align, last_inf, out_f, out_o, out_z, n_used,
        samples, vals, att, cell_base, cell_w,
    ):  # fmt: skip
        """Forward pass of ray r through volume b: writes F (C,), O and Z, and the number of samples
        used. ``rays[r]`` = (o_x, o_y, o_z, d_x, d_y, d_z, |d_world|) with o, d in local coordinates.
        ``samples`` (R, P, 1 + C), unless it is empty: keeps (density, f_0 … f_{C-1}) of every sample
        marched, for the backward (``stored_sample``). Early termination: the ray stops after the
        first sample whose transmittance falls below ``t_min``. ``vals`` (≥ P, 4, the grid's dtype)
        and ``att`` (≥ P,) are the scratch of ``march_rgb_phased``, ``cell_base`` (CHUNK,) and
        ``cell_w`` (8 · CHUNK, the grid's dtype) that of ``chunk_cells`` (builds with
        ``keep_samples``)."""
        layout = layout_of(layout_array)
        ray = ray_of(rays, r, layout, align)
        p = voxel_base(layout, b)
        settings = (mode, eps, t_min, last_inf, rays[r, 6])
        outs = (out_f, out_o, out_z, n_used, samples)
        if is_rgb(layout):
            march_rgb(grid, layout, p, ray, lengths, r, settings, outs, vals, att, cell_base, cell_w)
        else:
            march_ray_any(grid, layout, p, ray, lengths, r, settings, outs)

    march_ray = jit_inline(march_ray)  # a dispatch: inlined into the kernel's loop over rays

    def sample_with_grads(grid, layout, p, ray, r, t, G_f, ray_grad):
        """At length t of ray r (volume whose voxel (0, 0, 0) is at p): the density val and
        h_f = f·G, and (when ``ray_grad``) their gradients with respect to the sample's local
        position, for which the features enter through the G-weighted corner values
        ``e_k = Σ_c G_c f_c[corner k]``.

        Returns (offsets, weights, inside, val, fG, ∇val (3), ∇fG (3))."""
        offsets, weights, dweights, scales, inside = ray_cell(ray, t, layout)
        if not inside:
            return offsets, weights, inside, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        if not ray_grad and is_rgb(layout):
            val, f0, f1, f2 = value4(grid, p, offsets, weights)
            fG = G_f[r, 0] * f0 + G_f[r, 1] * f1 + G_f[r, 2] * f2
            return offsets, weights, inside, val, fG, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        F0 = layout[4]
        wx0, wx1, wy0, wy1, wz0, wz1 = weights
        dens = corners(grid, p, offsets)
        d0, d1, d2, d3, d4, d5, d6, d7 = dens
        val = blend(d0, d1, d2, d3, d4, d5, d6, d7, wx0, wx1, wy0, wy1, wz0, wz1)
        fG = 0.0
        for c in range(layout[5]):
            fG += G_f[r, c] * value(grid, p + F0 + c, offsets, weights)
        if not ray_grad:
            return offsets, weights, inside, val, fG, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        # position gradients: of the density, and of f·G through the G-weighted corner values
        e0 = e1 = e2 = e3 = e4 = e5 = e6 = e7 = 0.0
        for c in range(layout[5]):
            gc = G_f[r, c]
            f0, f1, f2, f3, f4, f5, f6, f7 = corners(grid, p + F0 + c, offsets)
            e0 += gc * f0
            e1 += gc * f1
            e2 += gc * f2
            e3 += gc * f3
            e4 += gc * f4
            e5 += gc * f5
            e6 += gc * f6
            e7 += gc * f7
        su, sv, sw = scales
        du, dv, dw = blend_grad(dens, weights, dweights)
        eu, ev, ew = blend_grad((e0, e1, e2, e3, e4, e5, e6, e7), weights, dweights)
        return offsets, weights, inside, val, fG, du * su, dv * sv, dw * sw, eu * su, ev * sv, ew * sw

    sample_with_grads = jit_inline(sample_with_grads)

    def stored_sample(samples, ray, r, k, t, layout, G_f):
        """Sample k of ray r as the forward pass kept it: ``(offsets, weights, inside, val, fG)``
        with fG = f·G; only the cell is computed again, no corner is read."""
        offsets, weights, dweights, scales, inside = ray_cell(ray, t, layout)
        fG = 0.0
        for c in range(layout[5]):
            fG += G_f[r, c] * samples[r, k, 1 + c]
        return offsets, weights, inside, samples[r, k, 0], fG

    stored_sample = jit_inline(stored_sample)

    def scatter_sample(layout, p, r, t, offsets, weights, g_val, w, G_f, buf, grads, grad_rays):
        """``∂L/∂density[corners] += ω g_val``, ``∂L/∂f_c[corners] += ω w G_c`` (volume's voxel
        (0, 0, 0) at flat index p), and (``grads`` = (∇val, ∇fG), zeros when ray gradients are off)
        the ray's origin/direction."""
        if is_rgb(layout):
            splat4(buf, p, offsets, weights, g_val, w * G_f[r, 0], w * G_f[r, 1], w * G_f[r, 2])
        elif g_val != 0.0:
            splat(buf, p, offsets, weights, g_val)
        if w != 0.0 and not is_rgb(layout):
            F0 = layout[4]
            for c in range(layout[5]):
                gc = w * G_f[r, c]
                if gc != 0.0:
                    splat(buf, p + F0 + c, offsets, weights, gc)
        gx = g_val * grads[0] + w * grads[3]
        gy = g_val * grads[1] + w * grads[4]
        gz = g_val * grads[2] + w * grads[5]
        if gx != 0.0 or gy != 0.0 or gz != 0.0:
            grad_rays[r, 0] += gx
            grad_rays[r, 1] += gy
            grad_rays[r, 2] += gz
            grad_rays[r, 3] += t * gx
            grad_rays[r, 4] += t * gy
            grad_rays[r, 5] += t * gz

    scatter_sample = jit_inline(scatter_sample)

    def ea_adjoint(T_k, Q_k, S, R, val, h, g_o, eps):
        """One step of the EA reverse scan (``march_ray_backward_ea``): ``(∂L/∂a_k, R_{k-1}, S')``
        with ``S' = S (1 - a_k)``."""
        g_a = T_k * (h - R) + g_o * Q_k * S
        return g_a, val * h + (1.0 + eps - val) * R, S * (1.0 - val)

    ea_adjoint = jit_inline(ea_adjoint)

    def quadrature_adjoint(T, val, e, dl, span, h, prefix, S_total, T_P, g_o):
        """One step of the quadrature scan (``march_ray_backward_quadrature``) with the sample's
        attenuation ``e`` = e^{-σ_k δ_k}: ``(T_{k+1}, w_k, Π_k, ∂L/∂val_k, ∂L/∂|d| term)``."""
        sigma = val if val > 0.0 else 0.0
        T_next = T * e
        w = T - T_next
        prefix += w * h
        g_tau = T_next * h - (S_total - prefix) + T_P * g_o
        g_val = dl * g_tau if val > 0.0 else 0.0
        return T_next, w, prefix, g_val, sigma * span * g_tau

    quadrature_adjoint = jit_inline(quadrature_adjoint)

    def march_ray_backward_quadrature(
        grid, layout, b, rays, lengths, r, align, last_inf, S_total, T_P, G_f, g_o, g_z, used, ray_grad, samples,
        buf, grad_rays,
    ):  # fmt: skip
        """Forward-order scan (docs/kernels.md#quadrature). With h_k = c_k·G + t_k g_Z and the prefix
        ``Π_k = Σ_{i≤k} w_i h_i``: ``∂L/∂τ_k = T_{k+1} h_k - (S - Π_k) + T_P g_O`` where
        ``S = F·G + Z g_Z``; ``∂L/∂σ_k = δ_k ∂L/∂τ_k`` and ``∂L/∂|d| += σ_k span_k ∂L/∂τ_k``;
        ``T_P = 1 - O`` comes from the forward pass. The samples come from ``samples`` when the
        forward kept them and no ray gradient is asked for; otherwise they are read again."""
        P = lengths.shape[1]
        ray = ray_of(rays, r, layout, align)
        dnorm = rays[r, 6]
        p = voxel_base(layout, b)
        stored = samples.shape[0] > 0 and not ray_grad
        T = 1.0
        prefix = 0.0
        g_dnorm = 0.0
        for i in range(used):
            t = lengths[r, i]
            if stored:
                offsets, weights, inside, val, fG = stored_sample(samples, ray, r, i, t, layout, G_f)
                g0 = g1 = g2 = g3 = g4 = g5 = 0.0
            else:
                offsets, weights, inside, val, fG, g0, g1, g2, g3, g4, g5 = sample_with_grads(
                    grid, layout, p, ray, r, t, G_f, ray_grad
                )
            dl, span = delta(lengths, r, i, P, dnorm, last_inf)
            h = fG + t * g_z
            e = attenuation(val, dl)
            T_next, w, prefix, g_val, g_d = quadrature_adjoint(T, val, e, dl, span, h, prefix, S_total, T_P, g_o)
            g_dnorm += g_d
            if inside:
                grads = (g0, g1, g2, g3, g4, g5)
                scatter_sample(layout, p, r, t, offsets, weights, g_val, w, G_f, buf, grads, grad_rays)
            T = T_next
        grad_rays[r, 6] += g_dnorm

    march_ray_backward_quadrature = jit(march_ray_backward_quadrature)

    def keep_sample(scratch, cells, i, val, h, offsets, weights, inside, grads, ray_grad):
        """Record sample i for the reverse pass: a_i, h_i, the cell and (``ray_grad``) the position
        gradients (columns 0-1 of ``scratch`` hold T_i and Π_{j<i}(1 - a_j))."""
        scratch[i, 2] = val
        scratch[i, 3] = h
        for j in range(6):
            scratch[i, 4 + j] = weights[j]
            cells[i, j] = offsets[j]
        cells[i, 6] = 1 if inside else 0
        if ray_grad:
            for j in range(6):
                scratch[i, 10 + j] = grads[j]

    keep_sample = jit_inline(keep_sample)

    def kept_sample(scratch, cells, k, ray_grad):
        """``(offsets, weights, inside, a_k, h_k, grads)`` as recorded by ``keep_sample``."""
        offsets = (cells[k, 0], cells[k, 1], cells[k, 2], cells[k, 3], cells[k, 4], cells[k, 5])
        weights = (scratch[k, 4], scratch[k, 5], scratch[k, 6], scratch[k, 7], scratch[k, 8], scratch[k, 9])
        grads = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        if ray_grad:
            grads = (scratch[k, 10], scratch[k, 11], scratch[k, 12], scratch[k, 13], scratch[k, 14], scratch[k, 15])
        return offsets, weights, cells[k, 6] != 0, scratch[k, 2], scratch[k, 3], grads

    kept_sample = jit_inline(kept_sample)

    def march_ray_backward_ea(
        grid, layout, b, rays, lengths, r, align, eps, G_f, g_o, g_z, used, ray_grad, samples, scratch, cells, buf,
        grad_rays,
    ):  # fmt: skip
        """Reverse scan (docs/kernels.md#emission-absorption) with h_k = f_k·G + t_k g_Z:
        ``R_{used-1} = 0``, ``R_{k-1} = a_k h_k + (1 + ε - a_k) R_k``,
        ``∂L/∂a_k = T_k (h_k - R_k) + g_O Π_{j<k}(1 - a_j) Π_{j>k}(1 - a_j)``, ``∂L/∂f_k = a_k T_k G``.

        A first, forward pass stores T_k and Π_{j<k}(1 - a_j) in ``scratch`` (≥ used, ≥ 2). The
        samples come from the forward pass's ``samples`` when it kept them and no ray gradient is
        asked for. Otherwise, with ``keep_samples`` (the CPU build), the first pass reads every sample
        and keeps it (``keep_sample``; scratch SCRATCH_WIDTH wide, ``cells`` (≥ used, 7)) so the
        reverse pass only scatters; without it (CUDA) the reverse pass samples again."""
        ray = ray_of(rays, r, layout, align)
        p = voxel_base(layout, b)
        stored = samples.shape[0] > 0 and not ray_grad
        T = 1.0
        Q = 1.0
        for i in range(used):
            t = lengths[r, i]
            if stored:
                val = samples[r, i, 0]
            elif keep_samples:  # a build constant: each build compiles one of the two strategies
                offsets, weights, inside, val, fG, g0, g1, g2, g3, g4, g5 = sample_with_grads(
                    grid, layout, p, ray, r, t, G_f, ray_grad
                )
                grads = (g0, g1, g2, g3, g4, g5)
                keep_sample(scratch, cells, i, val, fG + t * g_z, offsets, weights, inside, grads, ray_grad)
            else:
                offsets, weights, dweights, scales, inside = ray_cell(ray, t, layout)
                val = value(grid, p, offsets, weights) if inside else 0.0
            scratch[i, 0] = T
            scratch[i, 1] = Q
            T *= 1.0 + eps - val
            Q *= 1.0 - val
        R = 0.0
        S = 1.0
        for k in range(used - 1, -1, -1):
            t = lengths[r, k]
            if stored:
                offsets, weights, inside, val, fG = stored_sample(samples, ray, r, k, t, layout, G_f)
                h = fG + t * g_z
                grads = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
            elif keep_samples:
                offsets, weights, inside, val, h, grads = kept_sample(scratch, cells, k, ray_grad)
            else:
                offsets, weights, inside, val, fG, g0, g1, g2, g3, g4, g5 = sample_with_grads(
                    grid, layout, p, ray, r, t, G_f, ray_grad
                )
                h = fG + t * g_z
                grads = (g0, g1, g2, g3, g4, g5)
            T = scratch[k, 0]
            g_a, R, S = ea_adjoint(T, scratch[k, 1], S, R, val, h, g_o, eps)
            if inside:
                scatter_sample(layout, p, r, t, offsets, weights, g_a, val * T, G_f, buf, grads, grad_rays)

    march_ray_backward_ea = jit(march_ray_backward_ea)

    def backward_ea_rgb(
        layout, p, ray, lengths, r, eps, G, g_o, g_z, used, vals, scratch, buf, cell_base, cell_w, cells_ready, span
    ):  # fmt: skip
        """``march_ray_backward_ea`` for a density + RGB grid without ray gradients, from the ray's
        samples ``vals`` (``sample_ray_rgb``): a scan over the densities, then the reverse scan a
        chunk at a time (last first; ``prepare_cells`` unless ``cells_ready``: ``sample_ray_rgb``
        kept them, each chunk in its slot), scattering the 4 channels of each corner at once
        (``corner_splat4``). Straight-line code for the common case: 1.2x faster than the
        general function (measured), whose other paths cost registers here. Only the samples in
        ``span`` (``span_of``) scatter: the others have value 0, so the samples after it leave R = 0
        and S as they are, and those before it only multiply T by 1 + ε."""
        G0, G1, G2 = G
        corner = corner_offsets(layout)
        ur = np.uint64(r)
        c0, i_end = span
        end = min(used, i_end)
        T = 1.0
        Q = 1.0
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
                prepare_cells(ray, lengths, r, i0, i1, layout, cell_base, cell_w, i0)
            for k in range(i1 - 1, i0 - 1, -1):
                u = np.uint64(k)  # unsigned indices: no wraparound tests (see corner_value4)
                t = lengths[ur, u]
                val = vals[u, 0]
                h = G0 * vals[u, 1] + G1 * vals[u, 2] + G2 * vals[u, 3] + t * g_z
                T = scratch[u, 0]
                g_a, R, S = ea_adjoint(T, scratch[u, 1], S, R, val, h, g_o, eps)
                w = val * T
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
        """``march_ray_backward_quadrature`` for a density + RGB grid without ray gradients, from the
        ray's samples ``vals``, a chunk at a time (see ``backward_ea_rgb``, also for ``cells_ready``);
        builds with ``keep_samples`` compute the attenuations first, into ``att`` (≥ used,), unless
        ``att_ready`` (the ray's forward just left them there). Only the samples in ``span``
        (``span_of``): the others have value 0 and change neither T nor the prefix."""
        P = lengths.shape[1]
        G0, G1, G2 = G
        corner = corner_offsets(layout)
        ur = np.uint64(r)
        c0, i_end = span
        end = min(used, i_end)
        if keep_samples and not att_ready:  # keep_samples: a build constant (the CPU)
            attenuations(vals, lengths, r, c0, end, dnorm, last_inf, att)
        T = 1.0
        prefix = 0.0
        for i0 in range(c0, end, CHUNK):
            i1 = min(i0 + CHUNK, end)
            if not cells_ready:
                prepare_cells(ray, lengths, r, i0, i1, layout, cell_base, cell_w, i0)
            for i in range(i0, i1):
                u = np.uint64(i)  # unsigned indices: no wraparound tests (see corner_value4)
                t = lengths[ur, u]
                dl, span = delta(lengths, r, i, P, dnorm, last_inf)
                h = G0 * vals[u, 1] + G1 * vals[u, 2] + G2 * vals[u, 3] + t * g_z
                e = att[u] if keep_samples else attenuation(vals[u, 0], dl)
                T, w, prefix, g_val, g_d = quadrature_adjoint(T, vals[u, 0], e, dl, span, h, prefix, S_total, T_P, g_o)
                q = cell_of(cell_base, i0, i - i0)
                if q >= 0:
                    corner_splat4(buf, p + q, cell_w, i0, i - i0, corner, g_val, w * G0, w * G1, w * G2)
                elif q != OUTSIDE:
                    sample_splat4(buf, p, ray, t, layout, g_val, w * G0, w * G1, w * G2)

    backward_quadrature_rgb = jit_inline(backward_quadrature_rgb)

    def march_ray_backward_rgb(
        grid, layout, b, rays, lengths, r, mode, eps, align, last_inf, S_total, T_P, G_f, g_o, g_z, n_used, vals,
        sample_first, scratch, att, buf, cell_base, cell_w,
    ):  # fmt: skip
        """Backward of ray r through a density + RGB grid without ray gradients, from its samples
        ``vals`` (P, 4): what the forward kept, or (``sample_first``) what ``sample_ray_rgb`` reads
        into ``vals`` first. ``att`` (≥ P,): scratch for the quadrature attenuations; ``cell_base``
        and ``cell_w``: a slot per chunk of the ray for ``chunk_cells`` (≥ P rounded up to CHUNK,
        and 8 times that): sampling first keeps the cells there and the reverse scan reuses them."""
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
        ray_grad, samples, vals, scratch, cells, att, buf, grad_rays, cell_base, cell_w,
    ):  # fmt: skip
        """Backward of ray r in either mode; ``S_total``, ``T_P``, ``g_o``, ``g_z`` and ``n_used`` are
        the per-ray arrays; ``samples`` is what the forward pass kept (or empty); ``scratch`` (≥ P, 2
        or SCRATCH_WIDTH) and ``cells`` (≥ P, 7) are only used by EA; ``vals`` (≥ P, 4, the grid's
        dtype) holds a ray's samples, ``att`` (≥ P,) its attenuations and ``cell_base`` (≥ P rounded
        up to CHUNK,) and ``cell_w`` (8 times that, the grid's dtype) the cells of a ray's chunks for
        the density + RGB path of the CPU build.

        Density + RGB grids without ray gradients (the common case) take ``march_ray_backward_rgb``;
        everything else the general ``march_ray_backward_ea`` / ``_quadrature``."""
        layout = layout_of(layout_array)
        rgb = is_rgb(layout) and not ray_grad
        if rgb and samples.shape[0] > 0:
            march_ray_backward_rgb(
                grid, layout, b, rays, lengths, r, mode, eps, align, last_inf, S_total, T_P, G_f, g_o, g_z, n_used,
                samples[r], False, scratch, att, buf, cell_base, cell_w,
            )  # fmt: skip
        elif rgb and keep_samples:  # a build constant: the CPU, which has room for a ray's samples
            march_ray_backward_rgb(
                grid, layout, b, rays, lengths, r, mode, eps, align, last_inf, S_total, T_P, G_f, g_o, g_z, n_used,
                vals, True, scratch, att, buf, cell_base, cell_w,
            )  # fmt: skip
        elif mode == EA:
            march_ray_backward_ea(
                grid, layout, b, rays, lengths, r, align, eps, G_f, g_o[r], g_z[r], n_used[r], ray_grad, samples,
                scratch, cells, buf, grad_rays,
            )  # fmt: skip
        else:
            march_ray_backward_quadrature(
                grid, layout, b, rays, lengths, r, align, last_inf, S_total[r], T_P[r], G_f, g_o[r], g_z[r],
                n_used[r], ray_grad, samples, buf, grad_rays,
            )  # fmt: skip

    march_ray_backward = jit_inline(march_ray_backward)  # a dispatch, as march_ray

    def march_ray_mse(
        grid, layout_array, b, rays, lengths, r, eps, align, last_inf, target_f, target_o, scale_f, scale_o,
        out_f, out_o, out_z, n_used, err, vals, att, cell_base, cell_w,
    ):  # fmt: skip
        """Forward and backward of ray r through a density + RGB grid for the quadrature marcher and
        the loss ``scale_f / 2 · Σ_r |F_r - F*_r|² + scale_o / 2 · Σ_r (O_r - O*_r)²`` (the mean
        squared errors of the image and the opacity with ``scale`` = 2 / their element counts).

        The forward is ``march_rgb_phased`` (no early termination) into the scratch ``vals`` and
        ``att``, keeping the cells of the ray's chunks in their slots (``cell_base`` ≥ P rounded up
        to CHUNK, ``cell_w`` 8 times that). The ray's upstream gradients follow from its outputs
        (as written, in ``out_f``'s dtype): ``G = scale_f (F - F*)``, ``g_O = scale_o (O - O*)``,
        ``g_Z = 0``; then ``backward_quadrature_rgb`` scatters its gradients from the samples,
        attenuations and cells still in scratch into the grid's own gradient channels: ``grid`` has
        K = 8 channels, each voxel's 4 values followed by their 4 gradient accumulators, so the
        scatter writes the cache lines the forward has just read. One pass over the ray's voxels
        instead of a forward, the kept samples and a backward. ``err[r]`` = (|F - F*|², (O - O*)²)."""
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
        """Prefetch (``prefetch_w``) the lines of ``grid`` (a grid, or a gradient buffer of the
        same layout) at the corners (0, 0, 0), (0, 1, 0), (0, 0, 1) and (0, 1, 1) of the interior
        cells of every ``PREFETCH_STRIDE``-th sample of ray r: the ray, marched a few rays later
        (``march_volume_mse_cpu``, ``march_volume_backward_cpu``), then finds most of its lines in
        cache instead of waiting for memory. Corners (1, ·, ·) share their line or sit on the next
        one, which the CPU's adjacent-line prefetcher brings; samples between the ones prefetched
        share most of their lines with them. The cell is ``chunk_cells``' interior case without
        the weights: a hint, so it need not match bit for bit."""
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
        sample_point=sample_point,
        sample_point_backward=sample_point_backward,
        march_ray=march_ray,
        march_ray_backward=march_ray_backward,
        march_ray_mse=march_ray_mse,
        prefetch_ray=prefetch_ray,
    )
