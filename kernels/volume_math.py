"""The math of the volume kernels: trilinear sampling, and emission-absorption and quadrature ray
marching, forward and backward (docs/kernels.md#volume-sampler, docs/kernels.md#ray-marchers).
Plain Python, compiled twice: ``build(jit, add)`` with ``numba.njit`` (``volume_cpu``, which adds
the CPU's fast paths of ``volume_fast``) and with ``numba.cuda.jit(device=True)`` (``gpu_threads``,
one ray or point per thread). ``add(buffer, index, v)`` is the scatter of the backward passes: ``+=``
into a per-task buffer on the CPU, an atomic add on CUDA.

**Trilinear sampling** at local (x, y, z) (x ↔ W, y ↔ H, z ↔ D):

    u = (x + 1)(W - 1)/2   (align_corners)      u = ((x + 1) W - 1)/2   (otherwise)
    i0 = floor(u), α = u - i0   (likewise v, j0, β with H and w, k0, γ with D)
    val = Σ_{c ∈ {0,1}³} ω_c V[k0 + c_w, j0 + c_v, i0 + c_u],
    ω_c = (c_u ? α : 1 - α)(c_v ? β : 1 - β)(c_w ? γ : 1 - γ),

with corners outside the grid contributing 0 (``padding_mode="zeros"``). Backward: ``∂L/∂V[c] += ω_c g``
and ``∂val/∂u = Σ_c (∂ω_c/∂u) V[c]`` (likewise v, w).

**Rays** are ``x(t) = o + t d`` in local coordinates, sampled at the lengths t_0 < … < t_{P-1}; the
map to grid coordinates is affine, so sample t sits at ``(u_0, v_0, w_0) + t (du/dt, dv/dt, dw/dt)``.
Each sample has a density a_i (channel F0) and features f_i (channels F0 + 1 … F0 + C).

**Emission-absorption, PyTorch3D mode** (mode 0): ``T_i = Π_{j<i} (1 + ε - a_j)``, ``w_i = a_i T_i``,
``F = Σ w_i f_i``, ``O = 1 - Π (1 - a_i)``, ``Z = Σ w_i t_i``. Backward, with ``h_k = f_k·G + t_k g_Z``
(G, g_O, g_Z the upstream gradients of F, O, Z): ``R_{P-1} = 0``, ``R_{k-1} = a_k h_k + (1 + ε - a_k)
R_k``, ``∂L/∂a_k = T_k (h_k - R_k) + g_O Π_{j≠k} (1 - a_j)``, ``∂L/∂f_k = w_k G``.

**Quadrature** (mode 1): ``σ_i = max(a_i, 0)``, ``δ_i = (t_{i+1} - t_i)|d_world|`` (last: the previous
interval, or 1e10), ``T_{i+1} = T_i e^{-σ_i δ_i}``, ``w_i = T_i - T_{i+1}``, ``F = Σ w_i f_i``,
``O = 1 - T_P``, ``Z = Σ w_i t_i`` (the caller adds the background T_P c_bg). Backward, with the prefix
``Π_k = Σ_{i≤k} w_i h_i`` and ``S = F·G + Z g_Z``: ``∂L/∂τ_k = T_{k+1} h_k - (S - Π_k) + T_P g_O``,
``∂L/∂σ_k = δ_k ∂L/∂τ_k``, ``∂L/∂|d| = Σ σ_k span_k ∂L/∂τ_k``, ``∂L/∂f_k = w_k G``.

**Early ray termination**: a ray stops after the first sample at which T falls below ``t_min``
(0 disables it); later samples contribute nothing and get no gradient (exact for the truncated sum).

**Ray gradients**: a sample's position gradient ``∇a_k`` (and ``∇(f_k·G)``) gives the ray's origin
``∂L/∂o += ∂L/∂a_k ∇a_k + w_k ∇(f_k·G)`` and direction ``∂L/∂d += t_k`` times the same.

**Kept samples**: given ``samples`` (R, P, 1 + C), the forward writes (a_i, f_i) of every sample it
marches and a backward without ray gradients reads them instead of the grid (it recomputes only the
cell, for the scatter).

**Layout.** Grids are flat channels-last (V, D, H, W, K) arrays with ``layout = (D, H, W, K, F0,
C)``: channel c of voxel (k, j, i) of volume b is ``grid[(((b D + k) H + j) W + i) K + c]``. The
sampler reads channels 0 … C - 1. ``cell`` returns per axis the two corners' flat offsets, weights
(1 - α, α) and the weights' derivatives (-1, 1); a corner outside the grid gets weight 0 and the
offset of one inside, so every sample reads 8 valid addresses.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

EA = 0
QUADRATURE = 1
MAX_CUDA_SAMPLES = 512  # per-thread scratch of the CUDA EA backward


def _unnormalise(x, n, align):
    """Grid coordinate u of local coordinate x on an axis of n voxels, and du/dx."""
    if align:
        s = 0.5 * (n - 1)
        return (x + 1.0) * s, s
    return ((x + 1.0) * n - 1.0) * 0.5, 0.5 * n


def _axis(u, n, stride):
    """The two corners of grid coordinate u on an axis of n voxels: ``(offset_lo, offset_hi, w_lo,
    w_hi, dw_lo, dw_hi, inside)`` with offset = index · stride, w the weights and dw = ∂w/∂u. A corner
    outside the axis gets weight 0 and the offset of one inside; ``inside`` is False (both weights 0)
    when u is beyond both corners or not finite."""
    if not (u > -1.0 and u < n):
        return 0, 0, 0.0, 0.0, 0.0, 0.0, False
    i0 = int(u) if u >= 0.0 else -1  # floor(u) for u > -1
    a = u - i0
    lo = i0 >= 0
    hi = i0 + 1 < n
    i_lo = i0 if lo else i0 + 1
    i_hi = i0 + 1 if hi else i0
    dlo, dhi = (-1.0 if lo else 0.0), (1.0 if hi else 0.0)
    return i_lo * stride, i_hi * stride, 1.0 - a if lo else 0.0, a if hi else 0.0, dlo, dhi, True


def _delta(lengths, r, i, P, dnorm, last_inf):
    """``(δ_i, span_i)`` with δ_i = span_i · |d| (span 0 for an infinite last step: no |d| in it)."""
    if i + 1 < P:
        span = lengths[r, i + 1] - lengths[r, i]
    elif last_inf:
        return 1e10, 0.0
    elif P > 1:
        span = lengths[r, P - 1] - lengths[r, P - 2]
    else:
        span = 1.0
    return span * dnorm, span


def build(jit, add, jit_inline=None):
    """Compile the functions with ``jit``; ``add(buffer, index, value)`` is the scatter. ``jit_inline``
    (default ``jit``) compiles the small per-sample helpers: the CPU build inlines them into the
    per-ray functions (``njit(inline="always")``, 3x faster kernels), while the per-ray functions
    stay separate to keep compilation time down. Returns the public functions (``sample_point``,
    ``sample_point_backward``, ``march_ray``, ``march_ray_backward``) and the helpers
    ``volume_fast`` builds on."""
    jit_inline = jit_inline or jit
    unnormalise = jit_inline(_unnormalise)
    axis = jit_inline(_axis)
    delta = jit_inline(_delta)

    def attenuation(val, dl):
        """e^{-σ δ} with σ = max(val, 0) (NaN counts as 0); 1 without the exponential where σ = 0."""
        sigma = val if val > 0.0 else 0.0
        return math.exp(-(sigma * dl)) if sigma > 0.0 else 1.0

    attenuation = jit_inline(attenuation)

    def grid_axes(layout):
        """``(D, H, W, sx, sy, sz)``: the grid's size and the flat strides of its x, y and z axes."""
        sx = layout[3]
        sy = layout[2] * sx
        return layout[0], layout[1], layout[2], sx, sy, layout[1] * sy

    grid_axes = jit_inline(grid_axes)

    def grid_cell(u, v, w, scales, layout):
        """The cell of grid point (u, v, w): ``(offsets, weights, dweights, scales, inside)``, offsets
        (x_lo, x_hi, y_lo, y_hi, z_lo, z_hi) into the flat grid, their weights and ∂weight/∂(u, v, w),
        ``scales`` = (du/dx, dv/dy, dw/dz) passed through; ``inside`` False: no corner in the grid."""
        D, H, W, sx, sy, sz = grid_axes(layout)
        if u >= 0.0 and u < W - 1 and v >= 0.0 and v < H - 1 and w >= 0.0 and w < D - 1:
            i0, j0, k0 = int(u), int(v), int(w)  # interior cell: all 8 corners inside, floor = truncation
            a, b, g = u - i0, v - j0, w - k0
            offsets = (i0 * sx, i0 * sx + sx, j0 * sy, j0 * sy + sy, k0 * sz, k0 * sz + sz)
            return offsets, (1.0 - a, a, 1.0 - b, b, 1.0 - g, g), (-1.0, 1.0, -1.0, 1.0, -1.0, 1.0), scales, True
        x0, x1, wx0, wx1, dx0, dx1, okx = axis(u, W, sx)
        y0, y1, wy0, wy1, dy0, dy1, oky = axis(v, H, sy)
        z0, z1, wz0, wz1, dz0, dz1, okz = axis(w, D, sz)
        offsets = (x0, x1, y0, y1, z0, z1)
        return offsets, (wx0, wx1, wy0, wy1, wz0, wz1), (dx0, dx1, dy0, dy1, dz0, dz1), scales, okx and oky and okz

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
        """The 8 corner values V[c] of the channel whose voxel (0, 0, 0) is at flat index p; corner
        k is c = (c_u, c_v, c_w) = (k & 1, (k >> 1) & 1, k >> 2)."""
        x0, x1, y0, y1, z0, z1 = offsets
        return (
            grid[p + z0 + y0 + x0], grid[p + z0 + y0 + x1], grid[p + z0 + y1 + x0], grid[p + z0 + y1 + x1],
            grid[p + z1 + y0 + x0], grid[p + z1 + y0 + x1], grid[p + z1 + y1 + x0], grid[p + z1 + y1 + x1],
        )  # fmt: skip

    corners = jit_inline(corners)

    def blend(v, weights):
        """Σ_c ω_c V[c] for the 8 corner values v, factored axis by axis."""
        wx0, wx1, wy0, wy1, wz0, wz1 = weights
        return wz0 * (wy0 * (wx0 * v[0] + wx1 * v[1]) + wy1 * (wx0 * v[2] + wx1 * v[3])) + wz1 * (
            wy0 * (wx0 * v[4] + wx1 * v[5]) + wy1 * (wx0 * v[6] + wx1 * v[7])
        )

    blend = jit_inline(blend)

    def blend_grad(v, weights, dweights):
        """(∂/∂u, ∂/∂v, ∂/∂w) of ``blend``: one axis' weights replaced by their derivatives."""
        wx0, wx1, wy0, wy1, wz0, wz1 = weights
        dx0, dx1, dy0, dy1, dz0, dz1 = dweights
        return (
            blend(v, (dx0, dx1, wy0, wy1, wz0, wz1)),
            blend(v, (wx0, wx1, dy0, dy1, wz0, wz1)),
            blend(v, (wx0, wx1, wy0, wy1, dz0, dz1)),
        )

    blend_grad = jit_inline(blend_grad)

    def value(grid, p, offsets, weights):
        """Trilinear value of the channel whose voxel (0, 0, 0) is at flat index p."""
        return blend(corners(grid, p, offsets), weights)

    value = jit_inline(value)

    def corners8(offsets, weights):
        """The flat offsets and weights ω_c of the 8 corners of a cell, in ``corners``' order."""
        x0, x1, y0, y1, z0, z1 = offsets
        wx0, wx1, wy0, wy1, wz0, wz1 = weights
        w00, w10, w01, w11 = wy0 * wz0, wy1 * wz0, wy0 * wz1, wy1 * wz1
        offs = (z0 + y0 + x0, z0 + y0 + x1, z0 + y1 + x0, z0 + y1 + x1, z1 + y0 + x0, z1 + y0 + x1, z1 + y1 + x0,
                z1 + y1 + x1)  # fmt: skip
        return offs, (wx0 * w00, wx1 * w00, wx0 * w10, wx1 * w10, wx0 * w01, wx1 * w01, wx0 * w11, wx1 * w11)

    corners8 = jit_inline(corners8)

    def splat(buf, p, offsets, weights, g):
        """``∂L/∂V[c] += ω_c g`` (the adjoint of ``value``)."""
        offs, ws = corners8(offsets, weights)
        for k in range(8):
            add(buf, p + offs[k], ws[k] * g)

    splat = jit_inline(splat)

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
        gx = gy = gz = 0.0
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

    def layout_of(layout):
        """The layout array as a tuple (kept in registers: the scatter's stores might alias arrays)."""
        return layout[0], layout[1], layout[2], layout[3], layout[4], layout[5]

    layout_of = jit_inline(layout_of)

    def ray_of(rays, r, layout, align):
        """Ray r in grid coordinates: ``((u_0, v_0, w_0, du/dt, dv/dt, dw/dt), (du/dx, dv/dy, dw/dz))``."""
        u0, su = unnormalise(rays[r, 0], layout[2], align)
        v0, sv = unnormalise(rays[r, 1], layout[1], align)
        w0, sw = unnormalise(rays[r, 2], layout[0], align)
        return (u0, v0, w0, rays[r, 3] * su, rays[r, 4] * sv, rays[r, 5] * sw), (su, sv, sw)

    ray_of = jit_inline(ray_of)

    def ray_cell(ray, t, layout):
        """``grid_cell`` of the sample at length t of a ray given by ``ray_of``."""
        g, scales = ray
        return grid_cell(g[0] + t * g[3], g[1] + t * g[4], g[2] + t * g[5], scales, layout)

    ray_cell = jit_inline(ray_cell)

    def composite(mode, a, T, keep, e, eps):
        """One sample: ``(w_i, T_{i+1}, keep · (1 - a_i))``; ``keep`` = Π (1 - a_j) is EA's opacity
        product (passed through by quadrature), ``e`` quadrature's e^{-σ_i δ_i} (unused by EA)."""
        if mode == EA:
            return a * T, T * (1.0 + eps - a), keep * (1.0 - a)
        T_next = T * e
        return T - T_next, T_next, keep

    composite = jit_inline(composite)

    def march_ray(
        grid, layout_array, b, rays, lengths, r, mode, eps, t_min, align, last_inf, out_f, out_o, out_z, n_used, samples
    ):  # fmt: skip
        """Forward pass of ray r through volume b: F (C,), O, Z and the number of samples used.
        ``rays[r]`` = (o_x, o_y, o_z, d_x, d_y, d_z, |d_world|), o and d local; ``samples``: see the
        module docstring (empty: keep none)."""
        layout = layout_of(layout_array)
        ray = ray_of(rays, r, layout, align)
        p = voxel_base(layout, b)
        P, F0, C = lengths.shape[1], layout[4], layout[5]
        store = samples.shape[0] > 0
        for c in range(C):
            out_f[r, c] = 0.0
        T = keep = 1.0
        depth = 0.0
        used = P
        for i in range(P):
            t = lengths[r, i]
            offsets, weights, dweights, scales, inside = ray_cell(ray, t, layout)
            a = value(grid, p, offsets, weights) if inside else 0.0
            e = attenuation(a, delta(lengths, r, i, P, rays[r, 6], last_inf)[0]) if mode == QUADRATURE else 1.0
            w, T, keep = composite(mode, a, T, keep, e, eps)
            if inside and (w != 0.0 or store):  # F += w f (no read where w = 0)
                for c in range(C):
                    f = value(grid, p + F0 + c, offsets, weights)
                    out_f[r, c] += w * f
                    if store:
                        samples[r, i, 1 + c] = f
            elif store:
                for c in range(C):
                    samples[r, i, 1 + c] = 0.0
            if store:
                samples[r, i, 0] = a
            depth += w * t
            if T < t_min:
                used = i + 1
                break
        out_o[r] = 1.0 - keep if mode == EA else 1.0 - T
        out_z[r] = depth
        n_used[r] = used

    march_ray = jit(march_ray)

    def sample_with_grads(grid, layout, p, ray, r, t, G_f, ray_grad):
        """The sample at length t of ray r: ``(offsets, weights, inside, a, f·G, ∇a (3), ∇(f·G) (3))``,
        the gradients by local position (zeros unless ``ray_grad``); ∇(f·G) is the gradient of the
        trilinear blend of the G-weighted corner values ``e_c = Σ_j G_j f_j[c]``."""
        offsets, weights, dweights, scales, inside = ray_cell(ray, t, layout)
        if not inside:
            return offsets, weights, inside, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        F0 = layout[4]
        dens = corners(grid, p, offsets)
        a = blend(dens, weights)
        fG = 0.0
        for c in range(layout[5]):
            fG += G_f[r, c] * value(grid, p + F0 + c, offsets, weights)
        if not ray_grad:
            return offsets, weights, inside, a, fG, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        e0 = e1 = e2 = e3 = e4 = e5 = e6 = e7 = 0.0
        for c in range(layout[5]):
            gc = G_f[r, c]
            f0, f1, f2, f3, f4, f5, f6, f7 = corners(grid, p + F0 + c, offsets)
            e0, e1, e2, e3 = e0 + gc * f0, e1 + gc * f1, e2 + gc * f2, e3 + gc * f3
            e4, e5, e6, e7 = e4 + gc * f4, e5 + gc * f5, e6 + gc * f6, e7 + gc * f7
        su, sv, sw = scales
        du, dv, dw = blend_grad(dens, weights, dweights)
        eu, ev, ew = blend_grad((e0, e1, e2, e3, e4, e5, e6, e7), weights, dweights)
        return offsets, weights, inside, a, fG, du * su, dv * sv, dw * sw, eu * su, ev * sv, ew * sw

    sample_with_grads = jit_inline(sample_with_grads)

    def stored_sample(samples, ray, r, k, t, layout, G_f):
        """Sample k of ray r as the forward kept it: ``(offsets, weights, inside, a, f·G)``."""
        offsets, weights, dweights, scales, inside = ray_cell(ray, t, layout)
        fG = 0.0
        for c in range(layout[5]):
            fG += G_f[r, c] * samples[r, k, 1 + c]
        return offsets, weights, inside, samples[r, k, 0], fG

    stored_sample = jit_inline(stored_sample)

    def scatter_sample(layout, p, r, t, offsets, weights, g_a, w, G_f, buf, grads, grad_rays):
        """``∂L/∂a[c] += ω_c g_a``, ``∂L/∂f_j[c] += ω_c w G_j`` and (``grads`` = (∇a, ∇(f·G)), zeros
        without ray gradients) the ray's origin and direction."""
        if g_a != 0.0:
            splat(buf, p, offsets, weights, g_a)
        for c in range(layout[5] if w != 0.0 else 0):
            gc = w * G_f[r, c]
            if gc != 0.0:
                splat(buf, p + layout[4] + c, offsets, weights, gc)
        gx = g_a * grads[0] + w * grads[3]
        gy = g_a * grads[1] + w * grads[4]
        gz = g_a * grads[2] + w * grads[5]
        if gx != 0.0 or gy != 0.0 or gz != 0.0:
            grad_rays[r, 0] += gx
            grad_rays[r, 1] += gy
            grad_rays[r, 2] += gz
            grad_rays[r, 3] += t * gx
            grad_rays[r, 4] += t * gy
            grad_rays[r, 5] += t * gz

    scatter_sample = jit_inline(scatter_sample)

    def ea_adjoint(T_k, Q_k, S, R, a, h, g_o, eps):
        """One step of the EA reverse scan: ``(∂L/∂a_k, R_{k-1}, S (1 - a_k))``, with ``Q_k S`` =
        Π_{j≠k} (1 - a_j) (Q_k = Π_{j<k}, S = Π_{j>k})."""
        g_a = T_k * (h - R) + g_o * Q_k * S
        return g_a, a * h + (1.0 + eps - a) * R, S * (1.0 - a)

    ea_adjoint = jit_inline(ea_adjoint)

    def quadrature_adjoint(T, a, e, dl, span, h, prefix, S_total, T_P, g_o):
        """One step of the quadrature scan with e = e^{-σ_k δ_k}: ``(T_{k+1}, w_k, Π_k, ∂L/∂a_k,
        ∂L/∂|d| term)``."""
        T_next = T * e
        w = T - T_next
        prefix += w * h
        g_tau = T_next * h - (S_total - prefix) + T_P * g_o
        g_a = dl * g_tau if a > 0.0 else 0.0
        return T_next, w, prefix, g_a, (a if a > 0.0 else 0.0) * span * g_tau

    quadrature_adjoint = jit_inline(quadrature_adjoint)

    def backward_quadrature(
        grid, layout, b, rays, lengths, r, align, last_inf, S_total, T_P, G_f, g_o, g_z, used, ray_grad, samples,
        buf, grad_rays,
    ):  # fmt: skip
        """The quadrature backward of ray r: one scan in forward order (``quadrature_adjoint``)."""
        P = lengths.shape[1]
        ray = ray_of(rays, r, layout, align)
        p = voxel_base(layout, b)
        stored = samples.shape[0] > 0 and not ray_grad
        T = 1.0
        prefix = g_dnorm = 0.0
        grads = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        for i in range(used):
            t = lengths[r, i]
            if stored:
                offsets, weights, inside, a, fG = stored_sample(samples, ray, r, i, t, layout, G_f)
            else:
                offsets, weights, inside, a, fG, g0, g1, g2, g3, g4, g5 = sample_with_grads(
                    grid, layout, p, ray, r, t, G_f, ray_grad
                )
                grads = (g0, g1, g2, g3, g4, g5)
            dl, span = delta(lengths, r, i, P, rays[r, 6], last_inf)
            e = attenuation(a, dl)
            T, w, prefix, g_a, g_d = quadrature_adjoint(T, a, e, dl, span, fG + t * g_z, prefix, S_total, T_P, g_o)
            g_dnorm += g_d
            if inside:
                scatter_sample(layout, p, r, t, offsets, weights, g_a, w, G_f, buf, grads, grad_rays)
        if ray_grad:
            grad_rays[r, 6] += g_dnorm

    backward_quadrature = jit(backward_quadrature)

    def backward_ea(
        grid, layout, b, rays, lengths, r, align, eps, G_f, g_o, g_z, used, ray_grad, samples, scratch, buf, grad_rays
    ):  # fmt: skip
        """The EA backward of ray r: a forward scan keeps T_k and Q_k = Π_{j<k} (1 - a_j) in
        ``scratch`` (≥ used, ≥ 2), then the reverse scan (``ea_adjoint``) reads each sample again."""
        ray = ray_of(rays, r, layout, align)
        p = voxel_base(layout, b)
        stored = samples.shape[0] > 0 and not ray_grad
        T = Q = 1.0
        for i in range(used):
            if stored:
                a = samples[r, i, 0]
            else:
                offsets, weights, dweights, scales, inside = ray_cell(ray, lengths[r, i], layout)
                a = value(grid, p, offsets, weights) if inside else 0.0
            scratch[i, 0] = T
            scratch[i, 1] = Q
            T *= 1.0 + eps - a
            Q *= 1.0 - a
        R = 0.0
        S = 1.0
        grads = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        for k in range(used - 1, -1, -1):
            t = lengths[r, k]
            if stored:
                offsets, weights, inside, a, fG = stored_sample(samples, ray, r, k, t, layout, G_f)
            else:
                offsets, weights, inside, a, fG, g0, g1, g2, g3, g4, g5 = sample_with_grads(
                    grid, layout, p, ray, r, t, G_f, ray_grad
                )
                grads = (g0, g1, g2, g3, g4, g5)
            T = scratch[k, 0]
            g_a, R, S = ea_adjoint(T, scratch[k, 1], S, R, a, fG + t * g_z, g_o, eps)
            if inside:
                scatter_sample(layout, p, r, t, offsets, weights, g_a, a * T, G_f, buf, grads, grad_rays)

    backward_ea = jit(backward_ea)

    def march_ray_backward(
        grid, layout_array, b, rays, lengths, r, mode, eps, align, last_inf, S_total, T_P, G_f, g_o, g_z, n_used,
        ray_grad, samples, scratch, buf, grad_rays,
    ):  # fmt: skip
        """Backward of ray r: scatter into ``buf`` and (``ray_grad``) accumulate ``grad_rays`` (R, 7:
        origin, direction, |d|). ``S_total`` = F·G + Z g_Z, ``T_P`` = 1 - O, the upstream ``G_f``,
        ``g_o``, ``g_z`` and ``n_used`` are per-ray arrays; ``scratch`` (≥ P, ≥ 2) is EA's."""
        layout = layout_of(layout_array)
        if mode == EA:
            backward_ea(
                grid, layout, b, rays, lengths, r, align, eps, G_f, g_o[r], g_z[r], n_used[r], ray_grad, samples,
                scratch, buf, grad_rays,
            )  # fmt: skip
        else:
            backward_quadrature(
                grid, layout, b, rays, lengths, r, align, last_inf, S_total[r], T_P[r], G_f, g_o[r], g_z[r],
                n_used[r], ray_grad, samples, buf, grad_rays,
            )  # fmt: skip

    march_ray_backward = jit_inline(march_ray_backward)  # a dispatch: inlined into the kernel's loop

    return SimpleNamespace(
        sample_point=sample_point,
        sample_point_backward=sample_point_backward,
        march_ray=march_ray,
        march_ray_backward=march_ray_backward,
        # the helpers the CPU's fast paths (volume_fast) are written with
        delta=delta,
        grid_axes=grid_axes,
        layout_of=layout_of,
        ray_of=ray_of,
        ray_cell=ray_cell,
        voxel_base=voxel_base,
        corners8=corners8,
        composite=composite,
        ea_adjoint=ea_adjoint,
        quadrature_adjoint=quadrature_adjoint,
    )
