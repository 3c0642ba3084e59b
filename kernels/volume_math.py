"""Per-sample and per-ray math of the volume kernels: plain Python, compiled twice (kernels.md §8-9).

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
and ``∂val/∂u = Σ_c (c_u ? 1 : −1)(c_v ? β : 1 − β)(c_w ? γ : 1 − γ) V[c]`` (likewise v, w).

**Rays** are ``x(t) = o + t d`` in local coordinates, sampled at the lengths t_0 < … < t_{P-1}.

**Emission-absorption, PyTorch3D mode** (mode 0): a_i = val_density, ``T_i = Π_{j<i} (1 + ε - a_j)``,
``w_i = a_i T_i``, ``F = Σ w_i f_i``, ``O = 1 - Π (1 - a_i)``, ``Z = Σ w_i t_i``.

**Quadrature** (mode 1): σ_i = max(val_density, 0), ``δ_i = (t_{i+1} - t_i)|d_world|`` (last: the
previous interval, or 1e10), ``τ_i = σ_i δ_i``, ``T_{i+1} = T_i e^{-τ_i}``, ``w_i = T_i - T_{i+1}``,
``F = Σ w_i c_i``, ``O = 1 - T_P``, ``Z = Σ w_i t_i`` (the background term T_P c_bg is added by the
caller).

**Early ray termination**: a ray stops after the first sample at which the transmittance falls
below ``t_min`` (0 disables it). Later samples then contribute nothing and receive zero gradient:
the gradients are exact for the truncated sum, which differs from the full one by at most
``t_min`` times the remaining colour.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

EA = 0
QUADRATURE = 1
MAX_CUDA_SAMPLES = 512  # per-thread scratch of the CUDA EA backward
ALL_CORNERS = 255  # bit k set: corner k = (k & 1, (k >> 1) & 1, k >> 2) (x, y, z) is inside the grid


def _axis(x, n, align):
    """Unnormalise local coordinate x for an axis of n voxels: ``(i0, frac, du/dx, lo_ok, hi_ok)``;
    lo_ok/hi_ok tell whether the corners i0 and i0 + 1 are inside. Both are False when x is far
    outside or not finite."""
    if align:
        s = 0.5 * (n - 1)
        u = (x + 1.0) * s
    else:
        s = 0.5 * n
        u = ((x + 1.0) * n - 1.0) * 0.5
    if not (u > -1.0 and u < n):
        return 0, 0.0, s, False, False
    i0 = int(math.floor(u))
    return i0, u - i0, s, i0 >= 0, i0 + 1 < n


def _lerp8(v0, v1, v2, v3, v4, v5, v6, v7, a, b, g):
    """Trilinear blend of the corner values (corner k = (x, y, z) bits of k)."""
    return (1.0 - g) * ((1.0 - b) * ((1.0 - a) * v0 + a * v1) + b * ((1.0 - a) * v2 + a * v3)) + g * (
        (1.0 - b) * ((1.0 - a) * v4 + a * v5) + b * ((1.0 - a) * v6 + a * v7)
    )


def _lerp8_grad(v0, v1, v2, v3, v4, v5, v6, v7, a, b, g):
    """(∂val/∂u, ∂val/∂v, ∂val/∂w) of ``_lerp8``."""
    du = (1.0 - b) * (1.0 - g) * (v1 - v0) + b * (1.0 - g) * (v3 - v2) + (1.0 - b) * g * (v5 - v4) + b * g * (v7 - v6)
    dv = (1.0 - a) * (1.0 - g) * (v2 - v0) + a * (1.0 - g) * (v3 - v1) + (1.0 - a) * g * (v6 - v4) + a * g * (v7 - v5)
    dw = (1.0 - a) * (1.0 - b) * (v4 - v0) + a * (1.0 - b) * (v5 - v1) + (1.0 - a) * b * (v6 - v2) + a * b * (v7 - v3)
    return du, dv, dw


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


def build(jit, add, jit_inline=None):
    """Compile the device functions with ``jit``; ``add(buffer, index, value)`` is the scatter.

    ``jit_inline`` (default ``jit``) compiles the small per-sample helpers; the CPU build inlines
    them into the per-ray functions (``njit(inline="always")``), which makes the kernels 3x faster,
    while the per-ray functions stay separate to keep compilation time down."""
    jit_inline = jit_inline or jit
    axis = jit_inline(_axis)
    lerp8 = jit_inline(_lerp8)
    lerp8_grad = jit_inline(_lerp8_grad)
    delta = jit_inline(_delta)

    def cell(x, y, z, layout, align):
        """The grid cell of local point (x, y, z): ``(vox, mask, α, β, γ, su, sv, sw)`` with vox the
        voxel index (k H + j) W + i of corner 0, mask the in-bounds corners (0: no corner inside)
        and s the du/dx factors."""
        D = layout[0]
        H = layout[1]
        W = layout[2]
        i0, a, su, xl, xh = axis(x, W, align)
        j0, bb, sv, yl, yh = axis(y, H, align)
        k0, g, sw, zl, zh = axis(z, D, align)
        mask = 0
        if xl and xh and yl and yh and zl and zh:
            mask = ALL_CORNERS
        elif (xl or xh) and (yl or yh) and (zl or zh):
            for k in range(8):
                okx = xh if k & 1 else xl
                oky = yh if k & 2 else yl
                okz = zh if k & 4 else zl
                if okx and oky and okz:
                    mask |= 1 << k
        return (k0 * H + j0) * W + i0, mask, a, bb, g, su, sv, sw

    cell = jit_inline(cell)

    def channel_index(layout, b, vox, c):
        """Flat index of channel c of voxel vox of volume b."""
        return (b * layout[0] * layout[1] * layout[2] + vox) * layout[3] + c

    channel_index = jit_inline(channel_index)

    def corner_index(p, k, layout):
        sx = layout[3]
        sy = layout[2] * sx
        return p + (k & 1) * sx + ((k >> 1) & 1) * sy + (k >> 2) * layout[1] * sy

    corner_index = jit_inline(corner_index)

    def corners(grid, p, mask, layout):
        """The 8 corner values of one channel, corner 0 at flat index p (0 outside the grid)."""
        sx = layout[3]
        sy = layout[2] * sx
        sz = layout[1] * sy
        if mask == ALL_CORNERS:
            return (
                grid[p],
                grid[p + sx],
                grid[p + sy],
                grid[p + sy + sx],
                grid[p + sz],
                grid[p + sz + sx],
                grid[p + sz + sy],
                grid[p + sz + sy + sx],
            )
        v0 = grid[p] if mask & 1 else 0.0
        v1 = grid[p + sx] if mask & 2 else 0.0
        v2 = grid[p + sy] if mask & 4 else 0.0
        v3 = grid[p + sy + sx] if mask & 8 else 0.0
        v4 = grid[p + sz] if mask & 16 else 0.0
        v5 = grid[p + sz + sx] if mask & 32 else 0.0
        v6 = grid[p + sz + sy] if mask & 64 else 0.0
        v7 = grid[p + sz + sy + sx] if mask & 128 else 0.0
        return v0, v1, v2, v3, v4, v5, v6, v7

    corners = jit_inline(corners)

    def value(grid, p, mask, layout, a, b, g):
        v0, v1, v2, v3, v4, v5, v6, v7 = corners(grid, p, mask, layout)
        return lerp8(v0, v1, v2, v3, v4, v5, v6, v7, a, b, g)

    value = jit_inline(value)

    def value_grad(grid, p, mask, layout, a, b, g):
        v0, v1, v2, v3, v4, v5, v6, v7 = corners(grid, p, mask, layout)
        return lerp8_grad(v0, v1, v2, v3, v4, v5, v6, v7, a, b, g)

    value_grad = jit_inline(value_grad)

    def splat(buf, p, mask, layout, a, b, g, gval):
        """``buf[corner k] += ω_k gval`` for the in-bounds corners (corner 0 at flat index p)."""
        if mask == ALL_CORNERS:  # interior cell: no bounds tests, weights factored
            sx = layout[3]
            sy = layout[2] * sx
            sz = layout[1] * sy
            a1 = 1.0 - a
            gz0 = (1.0 - g) * gval
            gz1 = g * gval
            w00 = (1.0 - b) * gz0
            w10 = b * gz0
            w01 = (1.0 - b) * gz1
            w11 = b * gz1
            add(buf, p, a1 * w00)
            add(buf, p + sx, a * w00)
            add(buf, p + sy, a1 * w10)
            add(buf, p + sy + sx, a * w10)
            add(buf, p + sz, a1 * w01)
            add(buf, p + sz + sx, a * w01)
            add(buf, p + sz + sy, a1 * w11)
            add(buf, p + sz + sy + sx, a * w11)
            return
        for k in range(8):
            if mask & (1 << k):
                wx = a if k & 1 else 1.0 - a
                wy = b if k & 2 else 1.0 - b
                wz = g if k & 4 else 1.0 - g
                add(buf, corner_index(p, k, layout), wx * wy * wz * gval)

    splat = jit_inline(splat)

    def sample_point(grid, layout, b, x, y, z, align, out, m):
        """``out[m, c] = V_c(x, y, z)`` for the channels c < C of volume b (the standalone sampler)."""
        vox, mask, a, bb, g, su, sv, sw = cell(x, y, z, layout, align)
        for c in range(layout[5]):
            out[m, c] = value(grid, channel_index(layout, b, vox, c), mask, layout, a, bb, g) if mask else 0.0

    sample_point = jit(sample_point)

    def sample_point_backward(grid, layout, b, x, y, z, align, grad_out, m, buf):
        """Scatter ``grad_out[m]`` into ``buf``; return dL/d(x, y, z)."""
        vox, mask, a, bb, g, su, sv, sw = cell(x, y, z, layout, align)
        gx = 0.0
        gy = 0.0
        gz = 0.0
        if mask:
            for c in range(layout[5]):
                gc = grad_out[m, c]
                if gc != 0.0:
                    p = channel_index(layout, b, vox, c)
                    splat(buf, p, mask, layout, a, bb, g, gc)
                    du, dv, dw = value_grad(grid, p, mask, layout, a, bb, g)
                    gx += gc * du * su
                    gy += gc * dv * sv
                    gz += gc * dw * sw
        return gx, gy, gz

    sample_point_backward = jit(sample_point_backward)

    def ray_cell(rays, r, t, layout, align):
        return cell(
            rays[r, 0] + t * rays[r, 3], rays[r, 1] + t * rays[r, 4], rays[r, 2] + t * rays[r, 5], layout, align
        )

    ray_cell = jit_inline(ray_cell)

    def march_ray(grid, layout, b, rays, lengths, r, mode, eps, t_min, align, last_inf, out_f, out_o, out_z, n_used):
        """Forward pass of ray r through volume b: writes F (C,), O and Z, and the number of samples
        used. ``rays[r]`` = (o_x, o_y, o_z, d_x, d_y, d_z, |d_world|) with o, d in local coordinates."""
        P = lengths.shape[1]
        F0 = layout[4]
        C = layout[5]
        for c in range(C):
            out_f[r, c] = 0.0
        T = 1.0
        keep = 1.0  # Π (1 - a_i) for the EA opacity
        depth = 0.0
        used = 0
        for i in range(P):
            t = lengths[r, i]
            used = i + 1
            vox, mask, a, bb, g, su, sv, sw = ray_cell(rays, r, t, layout, align)
            p = channel_index(layout, b, vox, 0)
            val = value(grid, p, mask, layout, a, bb, g) if mask else 0.0
            if mode == EA:
                w = val * T
                T_next = T * (1.0 + eps - val)
                keep *= 1.0 - val
            else:
                sigma = val if val > 0.0 else 0.0
                dl, span = delta(lengths, r, i, P, rays[r, 6], last_inf)
                T_next = T * math.exp(-sigma * dl)
                w = T - T_next
            if mask and w != 0.0:
                for c in range(C):
                    out_f[r, c] += w * value(grid, p + F0 + c, mask, layout, a, bb, g)
            depth += w * t
            T = T_next
            if T < t_min:
                break
        out_o[r] = 1.0 - keep if mode == EA else 1.0 - T
        out_z[r] = depth
        n_used[r] = used

    march_ray = jit(march_ray)

    def sample_with_grads(grid, layout, b, rays, r, t, align, G_f, ray_grad):
        """At length t of ray r: the density val and h_f = f·G, and (when ``ray_grad``) their
        gradients with respect to the sample's local position. The features enter only through the
        G-weighted corner values ``e_k = Σ_c G_c f_c[corner k]``, so each corner is read once.

        Returns (p, mask, α, β, γ, val, fG, ∇val (3), ∇fG (3)) with p the flat index of the
        density of corner 0."""
        vox, mask, a, bb, g, su, sv, sw = ray_cell(rays, r, t, layout, align)
        p = channel_index(layout, b, vox, 0)
        if not mask:
            return p, mask, a, bb, g, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        F0 = layout[4]
        d0, d1, d2, d3, d4, d5, d6, d7 = corners(grid, p, mask, layout)
        val = lerp8(d0, d1, d2, d3, d4, d5, d6, d7, a, bb, g)
        e0 = e1 = e2 = e3 = e4 = e5 = e6 = e7 = 0.0
        for c in range(layout[5]):
            gc = G_f[r, c]
            if gc != 0.0:
                f0, f1, f2, f3, f4, f5, f6, f7 = corners(grid, p + F0 + c, mask, layout)
                e0 += gc * f0
                e1 += gc * f1
                e2 += gc * f2
                e3 += gc * f3
                e4 += gc * f4
                e5 += gc * f5
                e6 += gc * f6
                e7 += gc * f7
        fG = lerp8(e0, e1, e2, e3, e4, e5, e6, e7, a, bb, g)
        if not ray_grad:
            return p, mask, a, bb, g, val, fG, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        du, dv, dw = lerp8_grad(d0, d1, d2, d3, d4, d5, d6, d7, a, bb, g)
        eu, ev, ew = lerp8_grad(e0, e1, e2, e3, e4, e5, e6, e7, a, bb, g)
        return p, mask, a, bb, g, val, fG, du * su, dv * sv, dw * sw, eu * su, ev * sv, ew * sw

    sample_with_grads = jit_inline(sample_with_grads)

    def scatter_sample(layout, r, t, p, mask, a, bb, g, g_val, w, G_f, buf, grads, grad_rays):
        """``∂L/∂density[corners] += ω g_val``, ``∂L/∂f_c[corners] += ω w G_c`` (corner 0's density
        at flat index p), and (``grads`` = (∇val, ∇fG), zeros when ray gradients are off) the ray's
        origin/direction."""
        if not mask:
            return
        if g_val != 0.0:
            splat(buf, p, mask, layout, a, bb, g, g_val)
        if w != 0.0:
            F0 = layout[4]
            for c in range(layout[5]):
                gc = w * G_f[r, c]
                if gc != 0.0:
                    splat(buf, p + F0 + c, mask, layout, a, bb, g, gc)
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

    def march_ray_backward_quadrature(
        grid, layout, b, rays, lengths, r, align, last_inf, S_total, T_P, G_f, g_o, g_z, used, ray_grad, buf, grad_rays
    ):
        """Forward-order scan (kernels.md §9.2). With h_k = c_k·G + t_k g_Z and the prefix
        ``Π_k = Σ_{i≤k} w_i h_i``: ``∂L/∂τ_k = T_{k+1} h_k - (S - Π_k) + T_P g_O`` where
        ``S = F·G + Z g_Z``; ``∂L/∂σ_k = δ_k ∂L/∂τ_k`` and ``∂L/∂|d| += σ_k span_k ∂L/∂τ_k``;
        ``T_P = 1 - O`` comes from the forward pass."""
        P = lengths.shape[1]
        T = 1.0
        prefix = 0.0
        g_dnorm = 0.0
        for i in range(used):
            t = lengths[r, i]
            p, mask, a, bb, g, val, fG, g0, g1, g2, g3, g4, g5 = sample_with_grads(
                grid, layout, b, rays, r, t, align, G_f, ray_grad
            )
            sigma = val if val > 0.0 else 0.0
            dl, span = delta(lengths, r, i, P, rays[r, 6], last_inf)
            T_next = T * math.exp(-sigma * dl)
            w = T - T_next
            h = fG + t * g_z
            prefix += w * h
            g_tau = T_next * h - (S_total - prefix) + T_P * g_o
            g_val = dl * g_tau if val > 0.0 else 0.0
            g_dnorm += sigma * span * g_tau
            grads = (g0, g1, g2, g3, g4, g5)
            scatter_sample(layout, r, t, p, mask, a, bb, g, g_val, w, G_f, buf, grads, grad_rays)
            T = T_next
        grad_rays[r, 6] += g_dnorm

    march_ray_backward_quadrature = jit(march_ray_backward_quadrature)

    def march_ray_backward_ea(
        grid, layout, b, rays, lengths, r, align, eps, G_f, g_o, g_z, used, ray_grad, scratch, buf, grad_rays
    ):
        """Reverse scan (kernels.md §9.1) with h_k = f_k·G + t_k g_Z:
        ``R_{used-1} = 0``, ``R_{k-1} = a_k h_k + (1 + ε - a_k) R_k``,
        ``∂L/∂a_k = T_k (h_k - R_k) + g_O Π_{j<k}(1 - a_j) Π_{j>k}(1 - a_j)``, ``∂L/∂f_k = a_k T_k G``.
        ``scratch`` (2, ≥ used) holds T_k and the prefix products from a first, forward pass."""
        T = 1.0
        Q = 1.0
        for i in range(used):
            vox, mask, a, bb, g, su, sv, sw = ray_cell(rays, r, lengths[r, i], layout, align)
            val = value(grid, channel_index(layout, b, vox, 0), mask, layout, a, bb, g) if mask else 0.0
            scratch[0, i] = T
            scratch[1, i] = Q
            T *= 1.0 + eps - val
            Q *= 1.0 - val
        R = 0.0
        S = 1.0
        for k in range(used - 1, -1, -1):
            t = lengths[r, k]
            p, mask, a, bb, g, val, fG, g0, g1, g2, g3, g4, g5 = sample_with_grads(
                grid, layout, b, rays, r, t, align, G_f, ray_grad
            )
            T = scratch[0, k]
            h = fG + t * g_z
            g_a = T * (h - R) + g_o * scratch[1, k] * S
            grads = (g0, g1, g2, g3, g4, g5)
            scatter_sample(layout, r, t, p, mask, a, bb, g, g_a, val * T, G_f, buf, grads, grad_rays)
            R = val * h + (1.0 + eps - val) * R
            S *= 1.0 - val

    march_ray_backward_ea = jit(march_ray_backward_ea)

    def march_ray_backward(
        grid, layout, b, rays, lengths, r, mode, eps, align, last_inf, S_total, T_P, G_f, g_o, g_z, n_used,
        ray_grad, scratch, buf, grad_rays,
    ):  # fmt: skip
        """Backward of ray r in either mode; ``S_total``, ``T_P``, ``g_o``, ``g_z`` and ``n_used`` are
        the per-ray arrays, ``scratch`` (2, ≥ P) is only used by EA."""
        if mode == EA:
            march_ray_backward_ea(
                grid, layout, b, rays, lengths, r, align, eps, G_f, g_o[r], g_z[r], n_used[r], ray_grad, scratch,
                buf, grad_rays,
            )  # fmt: skip
        else:
            march_ray_backward_quadrature(
                grid, layout, b, rays, lengths, r, align, last_inf, S_total[r], T_P[r], G_f, g_o[r], g_z[r],
                n_used[r], ray_grad, buf, grad_rays,
            )  # fmt: skip

    march_ray_backward = jit(march_ray_backward)

    return SimpleNamespace(
        sample_point=sample_point,
        sample_point_backward=sample_point_backward,
        march_ray=march_ray,
        march_ray_backward=march_ray_backward,
    )
