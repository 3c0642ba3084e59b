"""Random projected scenes shared by the rasterizer tests."""

import torch

from p3dlab.structures import Meshes


def random_projected_meshes(n_meshes=2, n_faces=(6, 9), seed=0, dtype=torch.float64, z_range=(1.0, 3.0), xy=1.2):
    """Meshes whose vertices are already (x_ndc, y_ndc, Z_view): independent random triangles."""
    g = torch.Generator().manual_seed(seed)
    verts, faces = [], []
    for i in range(n_meshes):
        nf = n_faces[i % len(n_faces)]
        xy_ = (torch.rand(nf * 3, 2, generator=g, dtype=torch.float64) * 2 - 1) * xy
        z = torch.rand(nf * 3, 1, generator=g, dtype=torch.float64) * (z_range[1] - z_range[0]) + z_range[0]
        verts.append(torch.cat([xy_, z], 1).to(dtype))
        faces.append(torch.arange(nf * 3).view(nf, 3))
    return Meshes(verts, faces)
