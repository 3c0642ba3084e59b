"""A dense pure-torch mesh rasterizer: the same algorithm as the Numba kernels, for tests and lessons.

Every pixel is tested against every face of its mesh at once ((H*W) x F tensors), so it is slow
and memory-hungry, but short enough to read next to docs/kernels.md#per-pixel-test, exact in
float64, and differentiable by autograd (used to check the kernels' backward). No z-clipping or sibling rule.
"""

from __future__ import annotations

import torch

from p3dlab.ops.pixels import pixel_centres
from p3dlab.ops.rasterize_meshes import check_raster_settings


def _edge(px, py, ax, ay, bx, by):
    return (px - ax) * (by - ay) - (py - ay) * (bx - ax)


def _seg_dist2(px, py, ax, ay, bx, by):
    ex, ey = bx - ax, by - ay
    l2 = ex * ex + ey * ey
    safe = torch.where(l2 > 1e-8, l2, torch.ones_like(l2))
    t = (((px - ax) * ex + (py - ay) * ey) / safe).clamp(0.0, 1.0)
    qx, qy = ax + t * ex - px, ay + t * ey - py
    return torch.where(l2 > 1e-8, qx * qx + qy * qy, (bx - px) ** 2 + (by - py) ** 2)


def rasterize_meshes_reference(
    meshes,
    image_size=256,
    blur_radius: float = 0.0,
    faces_per_pixel: int = 1,
    perspective_correct: bool = False,
    clip_barycentric_coords: bool = False,
    cull_backfaces: bool = False,
):
    """Fragments ``(pix_to_face, zbuf, bary_coords, dists)`` of projected meshes (see
    ``rasterize_meshes``), computed densely in the dtype of the vertices."""
    H, W = check_raster_settings(image_size, blur_radius, faces_per_pixel, len(meshes))
    K = faces_per_pixel
    verts, faces = meshes.verts_packed(), meshes.faces_packed()
    dt, dev = verts.dtype, verts.device
    fv = verts[faces]  # (F, 3, 3)
    px_all, py_all = pixel_centres(H, W, dt, dev)
    px_all, py_all = px_all.reshape(-1, 1), py_all.reshape(-1, 1)  # (P, 1)
    outs = []
    firsts = meshes.mesh_to_faces_packed_first_idx().tolist()
    counts = meshes.num_faces_per_mesh().tolist()
    for first, count in zip(firsts, counts):
        # pixels in chunks, so that one chunk's (pixels x faces) tensors hold about 2M entries
        step = max(1, 2_000_000 // max(count, 1))
        args = (blur_radius, K, perspective_correct, clip_barycentric_coords, cull_backfaces)
        parts = [
            _chunk(fv[first : first + count], first, px_all[a : a + step], py_all[a : a + step], *args)
            for a in range(0, H * W, step)
        ]
        p2f, zb, bary, dd = (torch.cat([p[i] for p in parts], 0) for i in range(4))
        outs.append((p2f.view(H, W, K), zb.view(H, W, K), bary.view(H, W, K, 3), dd.view(H, W, K)))
    return tuple(torch.stack([o[i] for o in outs], 0) for i in range(4))


def _chunk(f, first, px, py, blur_radius, K, perspective_correct, clip_barycentric_coords, cull_backfaces):
    """Fragments of the pixel centres (px, py), each (P, 1), against the faces f (F, 3, 3) of one mesh."""
    x0, y0, z0 = (f[:, 0, c][None] for c in range(3))
    x1, y1, z1 = (f[:, 1, c][None] for c in range(3))
    x2, y2, z2 = (f[:, 2, c][None] for c in range(3))
    area = _edge(x0, y0, x1, y1, x2, y2)
    ok = area.abs() > 1e-8
    if cull_backfaces:
        ok = ok & (area >= 0)
    r = blur_radius**0.5
    ok = (
        ok & (px >= torch.minimum(torch.minimum(x0, x1), x2) - r) & (px <= torch.maximum(torch.maximum(x0, x1), x2) + r)
    )
    ok = (
        ok & (py >= torch.minimum(torch.minimum(y0, y1), y2) - r) & (py <= torch.maximum(torch.maximum(y0, y1), y2) + r)
    )
    ok = ok & (torch.minimum(torch.minimum(z0, z1), z2) >= 1e-8)
    a_hat = _edge(x2, y2, x0, y0, x1, y1) + 1e-8
    l0 = _edge(px, py, x1, y1, x2, y2) / a_hat
    l1 = _edge(px, py, x2, y2, x0, y0) / a_hat
    l2 = _edge(px, py, x0, y0, x1, y1) / a_hat
    if perspective_correct:
        t0, t1, t2 = l0 * z1 * z2, l1 * z0 * z2, l2 * z0 * z1
        den = t0 + t1 + t2
        ok = ok & (den > 1e-8)
        den = torch.where(den > 1e-8, den, torch.ones_like(den))
        l0, l1, l2 = t0 / den, t1 / den, t2 / den
    inside = (l0 > 0) & (l1 > 0) & (l2 > 0)
    if clip_barycentric_coords:
        m0, m1, m2 = l0.clamp(min=0), l1.clamp(min=0), l2.clamp(min=0)
        s = (m0 + m1 + m2).clamp(min=1e-5)
        l0, l1, l2 = m0 / s, m1 / s, m2 / s
    z = l0 * z0 + l1 * z1 + l2 * z2
    ok = ok & (z >= 0)
    d2 = torch.minimum(
        torch.minimum(_seg_dist2(px, py, x0, y0, x1, y1), _seg_dist2(px, py, x0, y0, x2, y2)),
        _seg_dist2(px, py, x1, y1, x2, y2),
    )
    ok = ok & (inside | (d2 < blur_radius))
    sd = torch.where(inside, -d2, d2)
    # K nearest by (z, face index): a stable sort on z keeps lower indices first among ties.
    key = torch.where(ok, z.detach(), torch.full_like(z, float("inf")))
    order = torch.sort(key, dim=1, stable=True).indices[:, :K]  # (P, K')
    kk = order.shape[1]

    def take(t, order=order):
        return torch.gather(t.expand(px.shape[0], -1), 1, order)

    valid = torch.gather(ok, 1, order)
    p2f = torch.where(valid, order + first, torch.full_like(order, -1))
    zb = torch.where(valid, take(z), torch.full_like(take(z), -1.0))
    bary = torch.stack([take(l0), take(l1), take(l2)], -1)
    bary = torch.where(valid[..., None], bary, torch.full_like(bary, -1.0))
    dd = torch.where(valid, take(sd), torch.full_like(take(sd), -1.0))
    if kk < K:  # fewer faces than K in this mesh
        pad = K - kk
        p2f = torch.cat([p2f, p2f.new_full((p2f.shape[0], pad), -1)], 1)
        zb = torch.cat([zb, zb.new_full((zb.shape[0], pad), -1.0)], 1)
        dd = torch.cat([dd, dd.new_full((dd.shape[0], pad), -1.0)], 1)
        bary = torch.cat([bary, bary.new_full((bary.shape[0], pad, 3), -1.0)], 1)
    return p2f, zb, bary, dd
