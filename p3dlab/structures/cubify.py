"""``cubify``: the boundary of occupied voxels as ``Meshes`` (PyTorch3D's ``pytorch3d.ops.cubify``).

It lives with the structures because it builds ``Meshes``; ``p3dlab.ops.cubify`` is the same function
under PyTorch3D's name (see ``p3dlab/ops/__init__.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from p3dlab.errors import P3DLabValueError
from p3dlab.structures.meshes import Meshes


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


def cubify(voxels: torch.Tensor, thresh: float, align: str = "topleft") -> Meshes:
    """Voxel grids (N, D, H, W) -> ``Meshes`` of the boundary of the cells with value > ``thresh``.

    Only faces between an occupied and an empty (or outside) cell are kept; shared corners are
    merged; faces are wound outward. Vertex (x, y, z) comes from the corner indices (w, h, d):
    ``align="topleft"`` maps corner k of a side with S cells to ``2k/(S-1) - 1``, ``"corner"`` to
    ``2k/S - 1`` (the grid spans exactly [-1, 1]), ``"center"`` to ``2(k - 1/2)/(S-1) - 1`` (cell
    centres on the align_corners grid). One voxel gives 8 vertices / 12 faces, two adjacent 12 / 20.
    """
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
