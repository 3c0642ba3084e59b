"""Per-sample and per-ray math of the volume kernels: plain Python, compiled twice (kernels.md §8-9).

``build(jit, add)`` compiles these functions with ``jit`` (``numba.njit`` for the CPU kernels in
``volume_cpu``, ``numba.cuda.jit(device=True)`` for ``cuda_adapter``); ``add(array, b, c, k, j, i, v)``
is the scatter used by the backward passes: a plain ``+=`` into a per-task buffer on the CPU, an
atomic add on CUDA.

**Trilinear sampling** of a grid V (N, C, D, H, W) at local (x, y, z) (x ↔ W, y ↔ H, z ↔ D):

    u = (x + 1)(W - 1)/2   (align_corners)      u = ((x + 1) W - 1)/2   (otherwise)
    i0 = floor(u), α = u - i0   (likewise v, j0, β with H and w, k0, γ with D)
    val = Σ_{c ∈ {0,1}³} ω_c V[k0 + c_w, j0 + c_v, i0 + c_u],
    ω_c = (c_u ? α : 1 - α)(c_v ? β : 1 - β)(c_w ? γ : 1 - γ),

with corners outside the grid contributing 0 (``padding_mode="zeros"``).

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


def _axis(x, n, align):
    """Unnormalise local coordinate x for an axis of n voxels: ``(i0, frac, du/dx, inside)``.

    ``inside`` is False when no corner can be in the grid (u <= -1 or u >= n, or x not finite)."""
    if align:
        s = 0.5 * (n - 1)
        u = (x + 1.0) * s
    else:
        s = 0.5 * n
        u = ((x + 1.0) * n - 1.0) * 0.5
    if not (u > -1.0 and u < n):
        return 0, 0.0, s, False
    i0 = int(math.floor(u))
    return i0, u - i0, s, True


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


def build(jit, add):
    """Compile the device functions with ``jit``; ``add`` is the (compiled) scatter-add."""
    axis = jit(_axis)
    delta = jit(_delta)

    def corners(grid, x, y, z, align):
        """Corner indices and fractions of local point (x, y, z) in ``grid``'s (D, H, W)."""
        D = grid.shape[2]
        H = grid.shape[3]
        W = grid.shape[4]
        i0, fa, su, ok_u = axis(x, W, align)
        j0, fb, sv, ok_v = axis(y, H, align)
        k0, fg, sw, ok_w = axis(z, D, align)
        return i0, j0, k0, fa, fb, fg, su, sv, sw, ok_u and ok_v and ok_w

    corners = jit(corners)

    def trilerp(grid, b, c, i0, j0, k0, fa, fb, fg):
        """``Σ_c ω_c V[b, c, corner]`` over in-bounds corners."""
        D = grid.shape[2]
        H = grid.shape[3]
        W = grid.shape[4]
        val = 0.0
        for dz in range(2):
            k = k0 + dz
            if k < 0 or k >= D:
                continue
            wz = fg if dz == 1 else 1.0 - fg
            for dy in range(2):
                j = j0 + dy
                if j < 0 or j >= H:
                    continue
                wy = fb if dy == 1 else 1.0 - fb
                for dx in range(2):
                    i = i0 + dx
                    if i < 0 or i >= W:
                        continue
                    wx = fa if dx == 1 else 1.0 - fa
                    val += wz * wy * wx * grid[b, c, k, j, i]
        return val

    trilerp = jit(trilerp)

    def trilerp_backward(grid, grad_grid, b, c, i0, j0, k0, fa, fb, fg, g):
        """Scatter ``ω_c g`` into ``grad_grid`` and return ``g ∂val/∂(u, v, w)``."""
        D = grid.shape[2]
        H = grid.shape[3]
        W = grid.shape[4]
        gu = 0.0
        gv = 0.0
        gw = 0.0
        for dz in range(2):
            k = k0 + dz
            if k < 0 or k >= D:
                continue
            wz = fg if dz == 1 else 1.0 - fg
            sz = 1.0 if dz == 1 else -1.0
            for dy in range(2):
                j = j0 + dy
                if j < 0 or j >= H:
                    continue
                wy = fb if dy == 1 else 1.0 - fb
                sy = 1.0 if dy == 1 else -1.0
                for dx in range(2):
                    i = i0 + dx
                    if i < 0 or i >= W:
                        continue
                    wx = fa if dx == 1 else 1.0 - fa
                    sx = 1.0 if dx == 1 else -1.0
                    v = grid[b, c, k, j, i] * g
                    add(grad_grid, b, c, k, j, i, wz * wy * wx * g)
                    gu += sx * wy * wz * v
                    gv += sy * wx * wz * v
                    gw += sz * wx * wy * v
        return gu, gv, gw

    trilerp_backward = jit(trilerp_backward)

    def sample_point(grid, b, x, y, z, align, out, m):
        """``out[m, c] = V_c(x, y, z)`` for every channel c (the standalone sampler)."""
        i0, j0, k0, fa, fb, fg, su, sv, sw, ok = corners(grid, x, y, z, align)
        for c in range(grid.shape[1]):
            out[m, c] = trilerp(grid, b, c, i0, j0, k0, fa, fb, fg) if ok else 0.0

    sample_point = jit(sample_point)

    def sample_point_backward(grid, b, x, y, z, align, grad_out, m, grad_grid):
        """Scatter ``grad_out[m]`` into ``grad_grid``; return dL/d(x, y, z)."""
        i0, j0, k0, fa, fb, fg, su, sv, sw, ok = corners(grid, x, y, z, align)
        gx = 0.0
        gy = 0.0
        gz = 0.0
        if ok:
            for c in range(grid.shape[1]):
                gu, gv, gw = trilerp_backward(grid, grad_grid, b, c, i0, j0, k0, fa, fb, fg, grad_out[m, c])
                gx += gu * su
                gy += gv * sv
                gz += gw * sw
        return gx, gy, gz

    sample_point_backward = jit(sample_point_backward)

    def march_ray(dens, feats, b, rays, lengths, r, mode, eps, t_min, align, last_inf, out_f, out_o, out_z, n_used):
        """Forward pass of ray r: writes F (C,), O and Z, and the number of samples used.

        ``rays[r]`` = (o_x, o_y, o_z, d_x, d_y, d_z, |d_world|) with o, d in local coordinates."""
        P = lengths.shape[1]
        C = feats.shape[1]
        for c in range(C):
            out_f[r, c] = 0.0
        T = 1.0
        keep = 1.0  # Π (1 - a_i) for the EA opacity
        depth = 0.0
        used = 0
        for i in range(P):
            t = lengths[r, i]
            used = i + 1
            i0, j0, k0, fa, fb, fg, su, sv, sw, ok = corners(
                dens, rays[r, 0] + t * rays[r, 3], rays[r, 1] + t * rays[r, 4], rays[r, 2] + t * rays[r, 5], align
            )
            val = trilerp(dens, b, 0, i0, j0, k0, fa, fb, fg) if ok else 0.0
            if mode == EA:
                w = val * T
                T_next = T * (1.0 + eps - val)
                keep *= 1.0 - val
            else:
                sigma = val if val > 0.0 else 0.0
                dl, span = delta(lengths, r, i, P, rays[r, 6], last_inf)
                T_next = T * math.exp(-sigma * dl)
                w = T - T_next
            if ok and w != 0.0:
                for c in range(C):
                    out_f[r, c] += w * trilerp(feats, b, c, i0, j0, k0, fa, fb, fg)
            depth += w * t
            T = T_next
            if T < t_min:
                break
        out_o[r] = 1.0 - keep if mode == EA else 1.0 - T
        out_z[r] = depth
        n_used[r] = used

    march_ray = jit(march_ray)

    def _sample_backward(dens, feats, b, rays, r, t, align, g_val, G_f, w, grad_dens, grad_feats, grad_rays):
        """Chain one sample's dL/dval (density) and dL/df = w G into the grids and the ray."""
        x = rays[r, 0] + t * rays[r, 3]
        y = rays[r, 1] + t * rays[r, 4]
        z = rays[r, 2] + t * rays[r, 5]
        i0, j0, k0, fa, fb, fg, su, sv, sw, ok = corners(dens, x, y, z, align)
        if not ok:
            return
        gu = 0.0
        gv = 0.0
        gw = 0.0
        if g_val != 0.0:
            gu, gv, gw = trilerp_backward(dens, grad_dens, b, 0, i0, j0, k0, fa, fb, fg, g_val)
        if w != 0.0:
            for c in range(feats.shape[1]):
                if G_f[r, c] != 0.0:
                    cu, cv, cw = trilerp_backward(feats, grad_feats, b, c, i0, j0, k0, fa, fb, fg, w * G_f[r, c])
                    gu += cu
                    gv += cv
                    gw += cw
        gx = gu * su
        gy = gv * sv
        gz = gw * sw
        grad_rays[r, 0] += gx
        grad_rays[r, 1] += gy
        grad_rays[r, 2] += gz
        grad_rays[r, 3] += t * gx
        grad_rays[r, 4] += t * gy
        grad_rays[r, 5] += t * gz

    _sample_backward = jit(_sample_backward)

    def _density(dens, b, rays, r, t, align):
        """val_density at length t of ray r."""
        i0, j0, k0, fa, fb, fg, su, sv, sw, ok = corners(
            dens, rays[r, 0] + t * rays[r, 3], rays[r, 1] + t * rays[r, 4], rays[r, 2] + t * rays[r, 5], align
        )
        return trilerp(dens, b, 0, i0, j0, k0, fa, fb, fg) if ok else 0.0

    _density = jit(_density)

    def _sample_values(dens, feats, b, rays, r, t, align, G_f):
        """(val_density, f·G) at length t of ray r."""
        i0, j0, k0, fa, fb, fg, su, sv, sw, ok = corners(
            dens, rays[r, 0] + t * rays[r, 3], rays[r, 1] + t * rays[r, 4], rays[r, 2] + t * rays[r, 5], align
        )
        if not ok:
            return 0.0, 0.0
        val = trilerp(dens, b, 0, i0, j0, k0, fa, fb, fg)
        fG = 0.0
        for c in range(feats.shape[1]):
            if G_f[r, c] != 0.0:
                fG += G_f[r, c] * trilerp(feats, b, c, i0, j0, k0, fa, fb, fg)
        return val, fG

    _sample_values = jit(_sample_values)

    def march_ray_backward_quadrature(
        dens,
        feats,
        b,
        rays,
        lengths,
        r,
        align,
        last_inf,
        S_total,
        T_P,
        G_f,
        g_o,
        g_z,
        used,
        grad_dens,
        grad_feats,
        grad_rays,
    ):
        """Forward-order scan (kernels.md §9.2). With h_k = c_k·G + t_k g_Z and the prefix
        ``Π_k = Σ_{i≤k} w_i h_i``: ``∂L/∂τ_k = T_{k+1} h_k - (S - Π_k) + T_P g_O`` where
        ``S = F_total·G + Z g_Z`` (F_total includes the background); ``∂L/∂σ_k = δ_k ∂L/∂τ_k`` and
        ``∂L/∂|d| += σ_k span_k ∂L/∂τ_k``; ``T_P = 1 - O`` comes from the forward pass."""
        P = lengths.shape[1]
        T = 1.0
        prefix = 0.0
        g_dnorm = 0.0
        for i in range(used):
            t = lengths[r, i]
            val, fG = _sample_values(dens, feats, b, rays, r, t, align, G_f)
            sigma = val if val > 0.0 else 0.0
            dl, span = delta(lengths, r, i, P, rays[r, 6], last_inf)
            T_next = T * math.exp(-sigma * dl)
            w = T - T_next
            h = fG + t * g_z
            prefix += w * h
            g_tau = T_next * h - (S_total - prefix) + T_P * g_o
            g_val = dl * g_tau if val > 0.0 else 0.0
            g_dnorm += sigma * span * g_tau
            _sample_backward(dens, feats, b, rays, r, t, align, g_val, G_f, w, grad_dens, grad_feats, grad_rays)
            T = T_next
        grad_rays[r, 6] += g_dnorm

    march_ray_backward_quadrature = jit(march_ray_backward_quadrature)

    def march_ray_backward_ea(
        dens, feats, b, rays, lengths, r, align, eps, G_f, g_o, g_z, used, scratch, grad_dens, grad_feats, grad_rays
    ):
        """Reverse scan (kernels.md §9.1) with h_k = f_k·G + t_k g_Z:
        ``R_{used-1} = 0``, ``R_{k-1} = a_k h_k + (1 + ε - a_k) R_k``,
        ``∂L/∂a_k = T_k (h_k - R_k) + g_O Π_{j<k}(1 - a_j) Π_{j>k}(1 - a_j)``, ``∂L/∂f_k = a_k T_k G``.
        ``scratch`` (2, ≥ used) holds T_k and the prefix products from a first, forward pass."""
        T = 1.0
        Q = 1.0
        for i in range(used):
            val = _density(dens, b, rays, r, lengths[r, i], align)
            scratch[0, i] = T
            scratch[1, i] = Q
            T *= 1.0 + eps - val
            Q *= 1.0 - val
        R = 0.0
        S = 1.0
        for k in range(used - 1, -1, -1):
            t = lengths[r, k]
            val, fG = _sample_values(dens, feats, b, rays, r, t, align, G_f)
            T = scratch[0, k]
            h = fG + t * g_z
            g_a = T * (h - R) + g_o * scratch[1, k] * S
            _sample_backward(dens, feats, b, rays, r, t, align, g_a, G_f, val * T, grad_dens, grad_feats, grad_rays)
            R = val * h + (1.0 + eps - val) * R
            S *= 1.0 - val

    march_ray_backward_ea = jit(march_ray_backward_ea)

    return SimpleNamespace(
        corners=corners,
        trilerp=trilerp,
        sample_point=sample_point,
        sample_point_backward=sample_point_backward,
        march_ray=march_ray,
        march_ray_backward_quadrature=march_ray_backward_quadrature,
        march_ray_backward_ea=march_ray_backward_ea,
    )
