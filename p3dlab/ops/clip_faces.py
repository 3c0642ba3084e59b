"""Z-clipping of projected faces at the plane Z_view = c (docs/kernels.md#z-clipping), in torch.

A face with all vertices in front (Z >= c) is kept; all behind is dropped; one behind leaves a
quadrilateral, split into two triangles that are each other's "sibling"; two behind leave one
smaller triangle. A new vertex on edge (a, b), a in front, uses ``w = (Z_a - c)/(Z_a - Z_b)``, has
Z = c and ``xy = ((1 - w) xy_a Z_a + w xy_b Z_b)/c`` (perspective: unproject, interpolate,
reproject) or ``(1 - w) xy_a + w xy_b`` (orthographic). Each sub-face vertex records its
barycentric weights with respect to the original face, so that ``bary_orig = bary_sub @ W_sub``.
Sub-faces keep the original winding and the original face order; both clip weights stay
differentiable.
"""

from __future__ import annotations

from typing import Optional

import torch


def _edge_point(fv, xyh, a, b, c, perspective):
    """Point where edge a -> b (a in front, b behind) crosses Z = c, and its weight w on b.
    ``xyh`` holds (x Z, y Z) per vertex: the perspective interpolation happens before division."""
    za, zb = fv[:, a, 2], fv[:, b, 2]
    w = (za - c) / (za - zb)
    if perspective:
        xy = ((1 - w)[:, None] * xyh[:, a] + w[:, None] * xyh[:, b]) / c
    else:
        xy = (1 - w)[:, None] * fv[:, a, :2] + w[:, None] * fv[:, b, :2]
    return torch.cat([xy, torch.full_like(w[:, None], c)], 1), w


def clip_faces_at_z(
    face_verts: torch.Tensor,
    face_first: torch.Tensor,
    face_count: torch.Tensor,
    c: float,
    perspective: bool,
    keep: Optional[torch.Tensor] = None,
    face_xy_homogeneous: Optional[torch.Tensor] = None,
):
    """Clip (F, 3, 3) projected faces at Z = c.

    Returns ``(face_verts', face_first', face_count', orig_index, bary_map, sibling)``: the new
    faces (F', 3, 3), per-mesh ranges, the original index of every new face, (F', 3, 3) weights of
    each new vertex with respect to its original face, and the sibling of each new face (-1 if none).
    ``keep`` optionally removes faces first (frustum culling). ``face_xy_homogeneous`` (F, 3, 2)
    gives (x Z, y Z) per face vertex; by default it is computed as xy * Z.
    """
    F = face_verts.shape[0]
    dev = face_verts.device
    n_meshes = face_first.shape[0]
    mesh_of_face = torch.repeat_interleave(torch.arange(n_meshes, device=dev), face_count)
    behind = face_verts[..., 2].detach() < c  # (F, 3)
    n_behind = behind.sum(1)
    alive = n_behind < 3
    if keep is not None:
        alive &= keep
    n_sub = torch.where(n_behind == 1, 2, 1) * alive  # sub-faces per original face
    eye = torch.eye(3, dtype=face_verts.dtype, device=dev)
    idx3 = torch.arange(3, device=dev)

    # Rotate every face so that the special vertex comes where the recipes below expect it:
    # one behind -> behind vertex last; two behind -> front vertex first.
    k_behind = behind.float().argmax(1)
    k_front = (~behind).float().argmax(1)
    start = torch.where(n_behind == 1, (k_behind + 1) % 3, k_front)
    order = (start[:, None] + idx3[None]) % 3  # (F, 3)
    fv = torch.gather(face_verts, 1, order[..., None].expand(F, 3, 3))
    if face_xy_homogeneous is None:
        face_xy_homogeneous = face_verts[..., :2] * face_verts[..., 2:3]
    xyh = torch.gather(face_xy_homogeneous, 1, order[..., None].expand(F, 3, 2))
    onehot = eye[order]  # (F, 3, 3): weights of the rotated vertices w.r.t. the original ones

    sub_verts, sub_maps, sub_orig, sub_slot = [], [], [], []
    ar = torch.arange(F, device=dev)

    whole = alive & (n_behind == 0)
    sub_verts.append(face_verts[whole])
    sub_maps.append(eye.expand(int(whole.sum()), 3, 3))
    sub_orig.append(ar[whole])
    sub_slot.append(torch.zeros(int(whole.sum()), dtype=torch.int64, device=dev))

    one = alive & (n_behind == 1)
    if bool(one.any()):
        f1, m1, h1 = fv[one], onehot[one], xyh[one]
        p, wp = _edge_point(f1, h1, 1, 2, c, perspective)  # on b -> c
        q, wq = _edge_point(f1, h1, 0, 2, c, perspective)  # on a -> c
        mp = (1 - wp)[:, None] * m1[:, 1] + wp[:, None] * m1[:, 2]
        mq = (1 - wq)[:, None] * m1[:, 0] + wq[:, None] * m1[:, 2]
        sub_verts += [torch.stack([f1[:, 0], f1[:, 1], p], 1), torch.stack([f1[:, 0], p, q], 1)]
        sub_maps += [torch.stack([m1[:, 0], m1[:, 1], mp], 1), torch.stack([m1[:, 0], mp, mq], 1)]
        sub_orig += [ar[one], ar[one]]
        sub_slot += [torch.zeros_like(ar[one]), torch.ones_like(ar[one])]

    two = alive & (n_behind == 2)
    if bool(two.any()):
        f2, m2, h2 = fv[two], onehot[two], xyh[two]
        p, wp = _edge_point(f2, h2, 0, 1, c, perspective)
        q, wq = _edge_point(f2, h2, 0, 2, c, perspective)
        mp = (1 - wp)[:, None] * m2[:, 0] + wp[:, None] * m2[:, 1]
        mq = (1 - wq)[:, None] * m2[:, 0] + wq[:, None] * m2[:, 2]
        sub_verts.append(torch.stack([f2[:, 0], p, q], 1))
        sub_maps.append(torch.stack([m2[:, 0], mp, mq], 1))
        sub_orig.append(ar[two])
        sub_slot.append(torch.zeros_like(ar[two]))

    verts = torch.cat(sub_verts, 0)
    maps = torch.cat(sub_maps, 0)
    orig = torch.cat(sub_orig, 0)
    slot = torch.cat(sub_slot, 0)
    # Restore the original face order (sub-face 0 before 1) so ties still favour lower indices.
    perm = torch.argsort(orig * 2 + slot)
    verts, maps, orig, slot = verts[perm], maps[perm], orig[perm], slot[perm]
    new_count = torch.bincount(mesh_of_face[orig], minlength=n_meshes)
    new_first = torch.cumsum(new_count, 0) - new_count
    sibling = torch.full_like(orig, -1)
    pair = n_sub[orig] == 2
    pos = torch.arange(orig.shape[0], device=dev)
    sibling[pair] = torch.where(slot[pair] == 0, pos[pair] + 1, pos[pair] - 1)
    return verts, new_first, new_count, orig, maps, sibling
