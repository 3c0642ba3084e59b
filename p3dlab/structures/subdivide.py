"""``SubdivideMeshes``: every face of a ``Meshes`` batch split into four (PyTorch3D's
``pytorch3d.ops.SubdivideMeshes``).

The tensor-level split of one mesh is ``p3dlab.ops.subdivide_faces``; this module applies it to a
batch and rebuilds ``Meshes`` (and their ``TexturesVertex``), so it lives with the structures.
``p3dlab.ops.SubdivideMeshes`` is the same class under PyTorch3D's name (see ``p3dlab/ops/__init__.py``).
"""

from __future__ import annotations

import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.mesh_ops import subdivide_faces
from p3dlab.structures.meshes import Meshes
from p3dlab.structures.textures import TexturesVertex


class SubdivideMeshes(torch.nn.Module):
    """Split every face into four; per-vertex features (and ``TexturesVertex``) are averaged at the
    new edge-midpoint vertices. ``forward(meshes, feats=None)`` returns the new meshes, plus the new
    packed features when ``feats`` (sum V, D) is given."""

    def __init__(self, meshes=None):
        super().__init__()
        self.meshes = meshes

    def forward(self, meshes=None, feats=None):
        meshes = meshes if meshes is not None else self.meshes
        if meshes is None:
            raise P3DLabValueError("SubdivideMeshes needs meshes")
        verts, faces, new_feats, tex = [], [], [], []
        first = meshes.mesh_to_verts_packed_first_idx().tolist()
        has_tex = isinstance(meshes.textures, TexturesVertex)
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
