"""Tensor-level mesh operations from Mesh R-CNN and friends (PyTorch3D names): face subdivision,
vert_align and GraphConv. ``cubify`` and ``SubdivideMeshes`` build ``Meshes`` and live in
``p3dlab.structures`` (``p3dlab.ops`` gives them their PyTorch3D path lazily);
docs/conventions.md#losses-and-sampling."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.gather import gather_rows


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


# ``SubdivideMeshes`` and ``cubify`` build ``Meshes``, a structure one layer above ops, so they live in
# p3dlab.structures (subdivide.py, cubify.py); ``p3dlab.ops`` still answers to both PyTorch3D names.


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
        agg = torch.zeros_like(out).index_add(0, edges[:, 0], gather_rows(msg, edges[:, 1]))
        if not self.directed:
            agg = agg.index_add(0, edges[:, 1], gather_rows(msg, edges[:, 0]))
        return out + agg
