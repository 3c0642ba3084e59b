"""Per-pixel, per-face math of the mesh rasterizer: plain Python, compiled twice.

Nothing here is decorated. ``build(jit)`` compiles every function with the given decorator and
returns them in a namespace: ``numba.njit`` for the CPU kernels (``mesh_raster_cpu``) and
``numba.cuda.jit(device=True)`` for the CUDA kernels (``cuda_adapter``), so the CPU and GPU
rasterizers share one source of truth (docs/kernels.md#per-pixel-test).

Notation: pixel centre p = (px, py) in NDC; projected vertices (x_i, y_i) with view depth Z_i.
Edge function ``E(p; a, b) = (p_x - a_x)(b_y - a_y) - (p_y - a_y)(b_x - a_x)``.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

# Candidate status codes returned by ``candidate``.
SKIP = 0
KEEP = 1


def _edge(px, py, ax, ay, bx, by):
    """E(p; a, b): twice the signed area of triangle (a, b, p)."""
    return (px - ax) * (by - ay) - (py - ay) * (bx - ax)


def _edge_dist2(px, py, ax, ay, bx, by):
    """Squared distance from p to segment ab: ``t = clamp((p - a).(b - a) / |b - a|^2, 0, 1)``,
    ``q = a + t (b - a)``, ``|q - p|^2``; a degenerate edge (|b - a|^2 <= 1e-8) gives |p - b|^2."""
    ex = bx - ax
    ey = by - ay
    l2 = ex * ex + ey * ey
    if l2 <= 1e-8:
        dx = bx - px
        dy = by - py
        return dx * dx + dy * dy
    t = ((px - ax) * ex + (py - ay) * ey) / l2
    t = min(max(t, 0.0), 1.0)
    qx = ax + t * ex - px
    qy = ay + t * ey - py
    return qx * qx + qy * qy


def _pixel_ndc(i, n, s):
    """NDC centre of pixel i along an axis with n pixels, s = min(H, W): ``(n - 2i - 1)/s``
    (+X left, +Y up: column 0 is at the left edge = largest x)."""
    return (n - 2.0 * i - 1.0) / s


def build(jit):
    """Compile the rasterizer's device functions with ``jit`` and return them in a namespace."""
    edge = jit(_edge)
    edge_dist2 = jit(_edge_dist2)
    pixel_ndc = jit(_pixel_ndc)

    def face_setup(fv, f, blur, cull):
        """The per-face part of ``candidate`` (steps 1-2 without the pixel): face f's vertices, the
        bounds of its box grown by r = sqrt(blur), and a_hat. Returns (drawn, x0, y0, z0, x1, y1, z1,
        x2, y2, z2, x_lo, x_hi, y_lo, y_hi, a_hat); drawn is False for a face no pixel keeps
        (back-facing when culling, degenerate, or touching or behind the camera)."""
        x0, y0, z0 = fv[f, 0, 0], fv[f, 0, 1], fv[f, 0, 2]
        x1, y1, z1 = fv[f, 1, 0], fv[f, 1, 1], fv[f, 1, 2]
        x2, y2, z2 = fv[f, 2, 0], fv[f, 2, 1], fv[f, 2, 2]
        # 1. orientation / degenerate faces
        area = edge(x0, y0, x1, y1, x2, y2)
        r = blur**0.5
        drawn = not ((cull and area < 0.0) or abs(area) <= 1e-8)
        # 2. faces touching or behind the camera
        if min(z0, z1, z2) < 1e-8:
            drawn = False
        x_lo, x_hi = min(x0, x1, x2) - r, max(x0, x1, x2) + r
        y_lo, y_hi = min(y0, y1, y2) - r, max(y0, y1, y2) + r
        a_hat = edge(x2, y2, x0, y0, x1, y1) + 1e-8
        return drawn, x0, y0, z0, x1, y1, z1, x2, y2, z2, x_lo, x_hi, y_lo, y_hi, a_hat

    face_setup = jit(face_setup)

    def pixel_test(px, py, x0, y0, z0, x1, y1, z1, x2, y2, z2, x_lo, x_hi, y_lo, y_hi, a_hat, blur, persp, clip, z_far):
        """The per-pixel part of ``candidate`` (steps 2-9) for a drawn face given by ``face_setup``.
        ``z_far``: a depth the caller would not keep (the last of a full K-list; inf for any depth)."""
        # 2. grown bounding box
        if px < x_lo or px > x_hi or py < y_lo or py > y_hi:
            return SKIP, 0.0, 0.0, 0.0, 0.0, 0.0
        # 3. screen-space barycentrics lambda_i = E(p; v_j, v_k) / (E(v2; v0, v1) + 1e-8)
        l0 = edge(px, py, x1, y1, x2, y2) / a_hat
        l1 = edge(px, py, x2, y2, x0, y0) / a_hat
        l2 = edge(px, py, x0, y0, x1, y1) / a_hat
        # without a blur band only inside pixels are kept (step 9: d2 >= 0 = blur), and the inside
        # test of step 5 fails wherever some lambda_i <= 0: lambda'_i has lambda_i's sign (Z_i > 0)
        if blur <= 0.0 and not (l0 > 0.0 and l1 > 0.0 and l2 > 0.0):
            return SKIP, 0.0, 0.0, 0.0, 0.0, 0.0
        # 4. perspective correction lambda'_i = (lambda_i / Z_i) / sum_k (lambda_k / Z_k)
        if persp:
            t0 = l0 * z1 * z2
            t1 = l1 * z0 * z2
            t2 = l2 * z0 * z1
            den = t0 + t1 + t2
            if den <= 1e-8:  # the pixel's ray meets the face's plane behind the camera
                return SKIP, 0.0, 0.0, 0.0, 0.0, 0.0
            l0, l1, l2 = t0 / den, t1 / den, t2 / den
        # 5. strict inside test on the corrected, unclipped barycentrics
        inside = l0 > 0.0 and l1 > 0.0 and l2 > 0.0
        # 6. clip to the triangle: m_i = max(lambda'_i, 0) / max(sum m, 1e-5)
        if clip:
            m0, m1, m2 = max(l0, 0.0), max(l1, 0.0), max(l2, 0.0)
            s = max(m0 + m1 + m2, 1e-5)
            l0, l1, l2 = m0 / s, m1 / s, m2 / s
        # 7. interpolated view depth
        z = l0 * z0 + l1 * z1 + l2 * z2
        if z < 0.0 or z >= z_far:
            return SKIP, 0.0, 0.0, 0.0, 0.0, 0.0
        # 8. squared distance to the boundary, edges (v0,v1), (v0,v2), (v1,v2)
        d2 = min(
            edge_dist2(px, py, x0, y0, x1, y1),
            edge_dist2(px, py, x0, y0, x2, y2),
            edge_dist2(px, py, x1, y1, x2, y2),
        )
        # 9. keep if inside or within the blur band; distances are negative inside
        if not inside and d2 >= blur:
            return SKIP, 0.0, 0.0, 0.0, 0.0, 0.0
        sd = -d2 if inside else d2
        return KEEP, z, sd, l0, l1, l2

    pixel_test = jit(pixel_test)

    def candidate(fv, f, px, py, blur, persp, clip, cull):
        """Test face f at pixel centre (px, py) (docs/kernels.md#per-pixel-test, steps 1-9):
        ``face_setup`` then ``pixel_test``. ``fv`` is the (F, 3, 3) array of (x_ndc, y_ndc, Z_view)
        per face vertex. Returns (status, z, signed_dist2, b0, b1, b2)."""
        drawn, x0, y0, z0, x1, y1, z1, x2, y2, z2, x_lo, x_hi, y_lo, y_hi, a_hat = face_setup(fv, f, blur, cull)
        if not drawn:
            return SKIP, 0.0, 0.0, 0.0, 0.0, 0.0
        return pixel_test(
            px, py, x0, y0, z0, x1, y1, z1, x2, y2, z2, x_lo, x_hi, y_lo, y_hi, a_hat, blur, persp, clip, math.inf
        )

    candidate = jit(candidate)

    def write_slot(p2f, zbuf, bary, dists, n, i, j, k, f, z, sd, b0, b1, b2):
        """Slot k of pixel (n, i, j) := face f with depth z, signed distance sd, barycentrics b."""
        p2f[n, i, j, k] = f
        zbuf[n, i, j, k] = z
        dists[n, i, j, k] = sd
        bary[n, i, j, k, 0] = b0
        bary[n, i, j, k, 1] = b1
        bary[n, i, j, k, 2] = b2

    write_slot = jit(write_slot)

    def insert(p2f, zbuf, bary, dists, n, i, j, count, K, f, sibling, z, sd, b0, b1, b2):
        """Insert (z, f) into pixel (n, i, j)'s list of ``count`` entries sorted by (z, f).

        Faces arrive in increasing index order, so an equal z (compared as stored, in the output's
        precision) keeps the earlier (lower) face first.
        If the z-clip sibling of f is already listed, the entry with the smaller |distance| is kept
        in place instead. Returns the new count.
        """
        if sibling >= 0:
            for k in range(count):
                if p2f[n, i, j, k] == sibling:
                    if abs(sd) < abs(dists[n, i, j, k]):
                        write_slot(p2f, zbuf, bary, dists, n, i, j, k, f, z, sd, b0, b1, b2)
                    return count
        # ties are judged on the depth as stored (rounded to the output's precision), so that equal
        # stored depths keep the lower face first: store z in the slot it may take, read it back
        if count < K:
            zbuf[n, i, j, count] = z
            z = zbuf[n, i, j, count]
        else:
            last = zbuf[n, i, j, K - 1]
            zbuf[n, i, j, K - 1] = z
            z = zbuf[n, i, j, K - 1]
            zbuf[n, i, j, K - 1] = last
            if z >= last:
                return count
        pos = count if count < K else K - 1
        while pos > 0 and zbuf[n, i, j, pos - 1] > z:  # shift later entries down one slot
            p2f[n, i, j, pos] = p2f[n, i, j, pos - 1]
            zbuf[n, i, j, pos] = zbuf[n, i, j, pos - 1]
            dists[n, i, j, pos] = dists[n, i, j, pos - 1]
            bary[n, i, j, pos, 0] = bary[n, i, j, pos - 1, 0]
            bary[n, i, j, pos, 1] = bary[n, i, j, pos - 1, 1]
            bary[n, i, j, pos, 2] = bary[n, i, j, pos - 1, 2]
            pos -= 1
        write_slot(p2f, zbuf, bary, dists, n, i, j, pos, f, z, sd, b0, b1, b2)
        return count + 1 if count < K else K

    insert = jit(insert)

    def rasterize_pixel(fv, sibling, first, count_f, n, i, j, H, W, K, blur, persp, clip, cull, p2f, zbuf, bary, dists):
        """The naive per-pixel loop: every face of mesh n, in index order (GPU layout)."""
        s = float(min(H, W))
        px = pixel_ndc(j, W, s)
        py = pixel_ndc(i, H, s)
        count = 0
        for f in range(first, first + count_f):
            status, z, sd, b0, b1, b2 = candidate(fv, f, px, py, blur, persp, clip, cull)
            if status == KEEP:
                count = insert(p2f, zbuf, bary, dists, n, i, j, count, K, f, sibling[f], z, sd, b0, b1, b2)
        return count

    rasterize_pixel = jit(rasterize_pixel)

    def slot_backward(fv, f, px, py, blur, persp, clip, gz, gb0, gb1, gb2, gd):
        """Gradient of one fragment slot with respect to its face's 9 vertex values
        (docs/kernels.md#mesh-rasterization-backward). Upstream: gz = dL/dzbuf, (gb0, gb1, gb2) = dL/dbary,
        gd = dL/ddists.

        The forward quantities are recomputed exactly as in ``candidate``; the inside test, the
        K selection and the nearest edge are piecewise constant. Returns
        (gx0, gy0, gz0, gx1, gy1, gz1, gx2, gy2, gz2).
        """
        x0, y0, z0 = fv[f, 0, 0], fv[f, 0, 1], fv[f, 0, 2]
        x1, y1, z1 = fv[f, 1, 0], fv[f, 1, 1], fv[f, 1, 2]
        x2, y2, z2 = fv[f, 2, 0], fv[f, 2, 1], fv[f, 2, 2]
        gx0 = gy0 = gZ0 = gx1 = gy1 = gZ1 = gx2 = gy2 = gZ2 = 0.0
        a_hat = edge(x2, y2, x0, y0, x1, y1) + 1e-8
        e0 = edge(px, py, x1, y1, x2, y2)
        e1 = edge(px, py, x2, y2, x0, y0)
        e2 = edge(px, py, x0, y0, x1, y1)
        l0, l1, l2 = e0 / a_hat, e1 / a_hat, e2 / a_hat
        # forward: perspective correction
        lp0, lp1, lp2 = l0, l1, l2
        t0 = t1 = t2 = den = 1.0
        if persp:
            t0, t1, t2 = l0 * z1 * z2, l1 * z0 * z2, l2 * z0 * z1
            den = t0 + t1 + t2
            lp0, lp1, lp2 = t0 / den, t1 / den, t2 / den
        inside = lp0 > 0.0 and lp1 > 0.0 and lp2 > 0.0
        # forward: clipping
        m0, m1, m2 = max(lp0, 0.0), max(lp1, 0.0), max(lp2, 0.0)
        s_raw = m0 + m1 + m2
        s_hat = max(s_raw, 1e-5)
        lc0, lc1, lc2 = lp0, lp1, lp2
        if clip:
            lc0, lc1, lc2 = m0 / s_hat, m1 / s_hat, m2 / s_hat

        # 1. distance to the nearest edge (first minimum among (v0,v1), (v0,v2), (v1,v2))
        if gd != 0.0:
            g = -gd if inside else gd
            best = 0
            dmin = edge_dist2(px, py, x0, y0, x1, y1)
            d = edge_dist2(px, py, x0, y0, x2, y2)
            if d < dmin:
                best, dmin = 1, d
            d = edge_dist2(px, py, x1, y1, x2, y2)
            if d < dmin:
                best = 2
            if best == 0:
                ax, ay, bx, by = x0, y0, x1, y1
            elif best == 1:
                ax, ay, bx, by = x0, y0, x2, y2
            else:
                ax, ay, bx, by = x1, y1, x2, y2
            ex, ey = bx - ax, by - ay
            l2e = ex * ex + ey * ey
            if l2e <= 1e-8:
                ga_x = ga_y = 0.0
                gb_x, gb_y = 2.0 * (bx - px) * g, 2.0 * (by - py) * g
            else:
                t = min(max(((px - ax) * ex + (py - ay) * ey) / l2e, 0.0), 1.0)
                qx, qy = ax + t * ex - px, ay + t * ey - py
                ga_x, ga_y = 2.0 * qx * (1.0 - t) * g, 2.0 * qy * (1.0 - t) * g
                gb_x, gb_y = 2.0 * qx * t * g, 2.0 * qy * t * g
            if best == 0:
                gx0, gy0, gx1, gy1 = gx0 + ga_x, gy0 + ga_y, gx1 + gb_x, gy1 + gb_y
            elif best == 1:
                gx0, gy0, gx2, gy2 = gx0 + ga_x, gy0 + ga_y, gx2 + gb_x, gy2 + gb_y
            else:
                gx1, gy1, gx2, gy2 = gx1 + ga_x, gy1 + ga_y, gx2 + gb_x, gy2 + gb_y

        # steps 2-5 carry the barycentrics' and depth's gradients: none (a silhouette loss), no terms
        if gz == 0.0 and gb0 == 0.0 and gb1 == 0.0 and gb2 == 0.0:
            return gx0, gy0, gZ0, gx1, gy1, gZ1, gx2, gy2, gZ2
        # 2. bary upstream, including zbuf = sum_i bary_i Z_i
        g0, g1, g2 = gb0 + gz * z0, gb1 + gz * z1, gb2 + gz * z2
        gZ0, gZ1, gZ2 = gZ0 + gz * lc0, gZ1 + gz * lc1, gZ2 + gz * lc2
        # 3. clip backward: lc_i = m_i / s_hat
        if clip:
            corr = (g0 * m0 + g1 * m1 + g2 * m2) / (s_hat * s_hat) if s_raw >= 1e-5 else 0.0
            g0 = (g0 / s_hat - corr) if lp0 >= 0.0 else 0.0
            g1 = (g1 / s_hat - corr) if lp1 >= 0.0 else 0.0
            g2 = (g2 / s_hat - corr) if lp2 >= 0.0 else 0.0
        # 4. perspective backward: lp_i = top_i / D, top_i = l_i * prod_{j != i} Z_j
        if persp:
            gD = -(t0 * g0 + t1 * g1 + t2 * g2) / (den * den)
            gt0, gt1, gt2 = gD + g0 / den, gD + g1 / den, gD + g2 / den
            gZ0 += gt1 * l1 * z2 + gt2 * l2 * z1
            gZ1 += gt0 * l0 * z2 + gt2 * l2 * z0
            gZ2 += gt0 * l0 * z1 + gt1 * l1 * z0
            g0, g1, g2 = gt0 * z1 * z2, gt1 * z0 * z2, gt2 * z0 * z1
        # 5. barycentrics l_i = e_i / a_hat, edge-function partials
        ge0, ge1, ge2 = g0 / a_hat, g1 / a_hat, g2 / a_hat
        ga = -(g0 * e0 + g1 * e1 + g2 * e2) / (a_hat * a_hat)
        # e0 = E(p; v1, v2)
        gx1 += ge0 * (py - y2)
        gy1 += ge0 * (x2 - px)
        gx2 += ge0 * (y1 - py)
        gy2 += ge0 * (px - x1)
        # e1 = E(p; v2, v0)
        gx2 += ge1 * (py - y0)
        gy2 += ge1 * (x0 - px)
        gx0 += ge1 * (y2 - py)
        gy0 += ge1 * (px - x2)
        # e2 = E(p; v0, v1)
        gx0 += ge2 * (py - y1)
        gy0 += ge2 * (x1 - px)
        gx1 += ge2 * (y0 - py)
        gy1 += ge2 * (px - x0)
        # a_hat = E(v2; v0, v1): v2 plays p, v0 plays a, v1 plays b
        gx2 += ga * (y1 - y0)
        gy2 += ga * (x0 - x1)
        gx0 += ga * (y2 - y1)
        gy0 += ga * (x1 - x2)
        gx1 += ga * (y0 - y2)
        gy1 += ga * (x2 - x0)
        return gx0, gy0, gZ0, gx1, gy1, gZ1, gx2, gy2, gZ2

    slot_backward = jit(slot_backward)
    return SimpleNamespace(
        slot_backward=slot_backward,
        edge=edge,
        edge_dist2=edge_dist2,
        pixel_ndc=pixel_ndc,
        write_slot=write_slot,
        face_setup=face_setup,
        pixel_test=pixel_test,
        candidate=candidate,
        insert=insert,
        rasterize_pixel=rasterize_pixel,
    )
