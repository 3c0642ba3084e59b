"""Mesh operations from Mesh R-CNN and friends (PyTorch3D names): subdivision, cubify,
vert_align and GraphConv (conventions §15)."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from p3dlab.errors import P3DLabValueError


def subdivide_faces(verts: torch.Tensor, faces: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """1-to-4 split of one mesh: a new vertex at every edge midpoint, winding preserved.

    Returns (new verts, new faces, edges (E, 2)): new vertex ``V + e`` is the midpoint of edge e.
    """
    a, b, c = faces.unbind(1)
    edges = torch.stack([torch.stack([a, b], 1), torch.stack([b, c], 1), torch.stack([c, a], 1)], 0)
    e_sorted, _ = edges.reshape(-1, 2).sort(dim=1)
    uniq, inv = torch.unique(e_sorted, dim=0, return_inverse=True)
    mids = verts.shape[0] + inv.view(3, -1)  # (3, F): ab, bc, ca
    ab, bc, ca = mids.unbind(0)
    new_verts = torch.cat([verts, 0.5 * (verts[uniq[:, 0]] + verts[uniq[:, 1]])], 0)
    new_faces = torch.cat([torch.stack(t, 1) for t in ((a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca))], 0)
    return new_verts, new_faces, uniq


class SubdivideMeshes(torch.nn.Module):
    """Split every face into four; per-vertex features (and ``TexturesVertex``) are averaged at the
    new edge-midpoint vertices. ``forward(meshes, feats=None)`` returns the new meshes, plus the new
    packed features when ``feats`` (sum V, D) is given."""

    def __init__(self, meshes=None):
        super().__init__()
        self.meshes = meshes

    def forward(self, meshes=None, feats=None):
        from p3dlab.structures import Meshes, TexturesVertex

        meshes = meshes if meshes is not None else self.meshes
        if meshes is None:
            raise P3DLabValueError("SubdivideMeshes needs meshes")
        verts, faces, new_feats, tex = [], [], [], []
        first = meshes.mesh_to_verts_packed_first_idx().tolist()
        has_tex = meshes.textures is not None and hasattr(meshes.textures, "verts_features_list")
        if meshes.textures is not None and not has_tex:
            raise P3DLabValueError("SubdivideMeshes interpolates TexturesVertex only")
        for i, (v, f) in enumerate(zip(meshes.verts_list(), meshes.faces_list())):
            nv, nf, edges = subdivide_faces(v, f)
            verts.append(nv)
            faces.append(nf)
            if feats is not None:
                x = feats[first[i] : first[i] + v.shape[0]]
                new_feats.append(torch.cat([x, 0.5 * (x[edges[:, 0]] + x[edges[:, 1]])], 0))
            if has_tex:
                t = meshes.textures.verts_features_list()[i]
                tex.append(torch.cat([t, 0.5 * (t[edges[:, 0]] + t[edges[:, 1]])], 0))
        out = Meshes(verts, faces, TexturesVertex(tex) if has_tex else None)
        return (out, torch.cat(new_feats, 0)) if feats is not None else out


# Corner offsets (dz, dy, dx) of the quad on each side of a unit cell, counter-clockwise seen from
# outside; sides are given as (axis in (z, y, x) order, sign).
def _quad(axis: int, sign: int):
    u, v = (axis + 1) % 3, (axis + 2) % 3
    corners = []
    for cu, cv in ((0, 0), (1, 0), (1, 1), (0, 1)):
        c = [0, 0, 0]
        c[axis], c[u], c[v] = (1 if sign > 0 else 0), cu, cv
        corners.append(c)
    # (u, v, axis) in (z, y, x) index order is a left-handed frame once mapped to (x, y, z), so the
    # counter-clockwise order around +axis in index space flips; orient for outward normals in xyz
    return corners if sign < 0 else corners[::-1]


_SIDES = [(axis, sign) for axis in range(3) for sign in (-1, 1)]


def cubify(voxels: torch.Tensor, thresh: float, align: str = "topleft"):
    """Voxel grids (N, D, H, W) -> ``Meshes`` of the boundary of the cells with value > ``thresh``.

    Only faces between an occupied and an empty (or outside) cell are kept; shared corners are
    merged; faces are wound outward. Vertex (x, y, z) comes from the corner indices (w, h, d):
    ``align="topleft"`` maps corner k of a side with S cells to ``2k/(S-1) - 1``, ``"corner"`` to
    ``2k/S - 1`` (the grid spans exactly [-1, 1]), ``"center"`` to ``2(k - 1/2)/(S-1) - 1`` (cell
    centres on the align_corners grid). One voxel gives 8 vertices / 12 faces, two adjacent 12 / 20.
    """
    from p3dlab.structures import Meshes

    if voxels.ndim != 4:
        raise P3DLabValueError(f"cubify: voxels must be (N, D, H, W), got {tuple(voxels.shape)}")
    if align not in ("topleft", "corner", "center"):
        raise P3DLabValueError(f"cubify: unknown align {align!r}")
    N, D, H, W = voxels.shape
    occ = voxels > thresh
    pad = F.pad(occ[:, None].float(), (1, 1, 1, 1, 1, 1))[:, 0] > 0.5  # (N, D+2, H+2, W+2)
    verts_list, faces_list = [], []
    sizes = torch.tensor([D, H, W], dtype=torch.float32, device=voxels.device)
    for n in range(N):
        cells = occ[n].nonzero()  # (M, 3) in (d, h, w)
        quads = []
        for axis, sign in _SIDES:
            step = torch.zeros(3, dtype=torch.long, device=voxels.device)
            step[axis] = sign
            nb = cells + step + 1
            empty = ~pad[n, nb[:, 0], nb[:, 1], nb[:, 2]]
            base = cells[empty]
            offs = torch.tensor(_quad(axis, sign), device=voxels.device)  # (4, 3)
            quads.append(base[:, None, :] + offs[None])  # (Q, 4, 3) corner indices
        q = torch.cat(quads, 0) if quads else torch.zeros(0, 4, 3, dtype=torch.long)
        corner_id = (q[..., 0] * (H + 1) + q[..., 1]) * (W + 1) + q[..., 2]
        uniq, inv = torch.unique(corner_id.reshape(-1), return_inverse=True)
        inv = inv.view(-1, 4)
        faces = (
            torch.cat([inv[:, [0, 1, 2]], inv[:, [0, 2, 3]]], 0) if len(inv) else torch.zeros(0, 3, dtype=torch.long)
        )
        d = uniq // ((H + 1) * (W + 1))
        h = (uniq // (W + 1)) % (H + 1)
        w = uniq % (W + 1)
        k = torch.stack([w, h, d], 1).float()  # (x, y, z) from (w, h, d)
        s = sizes.flip(0)  # cells along x, y, z
        if align == "topleft":
            xyz = 2 * k / (s - 1).clamp(min=1) - 1
        elif align == "corner":
            xyz = 2 * k / s - 1
        else:
            xyz = 2 * (k - 0.5) / (s - 1).clamp(min=1) - 1
        verts_list.append(xyz.to(voxels.dtype if voxels.is_floating_point() else torch.float32))
        faces_list.append(faces)
    return Meshes(verts_list, faces_list)


def vert_align(
    feats,
    verts,
    return_packed: bool = False,
    interp_mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = True,
):
    """Sample image features at each vertex's (x, y) read in ``grid_sample`` convention
    ((-1, -1) = top-left of the feature map): (N, V, C), or packed (sum V, C).

    ``feats`` is an (N, C, H, W) tensor or a list of them (concatenated along C); ``verts`` an
    (N, V, 3) tensor, ``Meshes`` or ``Pointclouds``.
    """
    if hasattr(verts, "verts_padded"):
        padded, packed_idx = verts.verts_padded(), verts.verts_padded_to_packed_idx()
    elif hasattr(verts, "points_padded"):
        padded, packed_idx = verts.points_padded(), verts.padded_to_packed_idx()
    elif torch.is_tensor(verts) and verts.ndim == 3:
        padded, packed_idx = verts, None
    else:
        raise P3DLabValueError("vert_align: verts must be (N, V, 3), Meshes or Pointclouds")
    maps = feats if isinstance(feats, (list, tuple)) else [feats]
    grid = padded[:, :, None, :2]  # (N, V, 1, 2)
    out = []
    for fm in maps:
        if fm.ndim != 4 or fm.shape[0] != padded.shape[0]:
            raise P3DLabValueError("vert_align: feature maps must be (N, C, H, W) with the vertices' N")
        s = F.grid_sample(
            fm, grid.to(fm.dtype), mode=interp_mode, padding_mode=padding_mode, align_corners=align_corners
        )
        out.append(s[..., 0].transpose(1, 2))  # (N, V, C)
    res = torch.cat(out, 2)
    if return_packed:
        if packed_idx is None:
            return res.reshape(-1, res.shape[-1])
        return res.reshape(-1, res.shape[-1])[packed_idx]
    return res


class GraphConv(torch.nn.Module):
    """``y_i = W0 x_i + sum_{j in N(i)} W1 x_j`` over the (undirected unless ``directed``) edges;
    weights ~ N(0, 0.01^2) and zero biases (``init="normal"``) or PyTorch's default (``"zero"`` sets
    both weights to 0)."""

    def __init__(self, input_dim: int, output_dim: int, init: str = "normal", directed: bool = False):
        super().__init__()
        self.input_dim, self.output_dim, self.directed = input_dim, output_dim, directed
        self.w0 = torch.nn.Linear(input_dim, output_dim)
        self.w1 = torch.nn.Linear(input_dim, output_dim)
        if init == "normal":
            for lin in (self.w0, self.w1):
                torch.nn.init.normal_(lin.weight, mean=0.0, std=0.01)
                lin.bias.data.zero_()
        elif init == "zero":
            for lin in (self.w0, self.w1):
                lin.weight.data.zero_()
                lin.bias.data.zero_()
        else:
            raise P3DLabValueError(f"GraphConv: unknown init {init!r}")

    def forward(self, verts: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        if verts.ndim != 2 or verts.shape[1] != self.input_dim:
            raise P3DLabValueError(f"GraphConv: verts must be (V, {self.input_dim}), got {tuple(verts.shape)}")
        if edges.numel() and (int(edges.min()) < 0 or int(edges.max()) >= verts.shape[0]):
            raise P3DLabValueError("GraphConv: edge indices out of range")
        out = self.w0(verts)
        msg = self.w1(verts)
        agg = torch.zeros_like(out).index_add(0, edges[:, 0], msg[edges[:, 1]])
        if not self.directed:
            agg = agg.index_add(0, edges[:, 1], msg[edges[:, 0]])
        return out + agg
