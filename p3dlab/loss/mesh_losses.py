"""Mesh regularisers (docs/conventions.md#losses-and-sampling): edge length, normal consistency,
Laplacian smoothing.

Each loss is computed per mesh and averaged over the meshes of the batch. An empty batch (no
mesh, or no vertex at all) returns 0 with ``requires_grad`` following the vertices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.checks import check_index_range
from p3dlab.ops.gather import gather_rows


def _per_mesh_mean(values: torch.Tensor, owner: torch.Tensor, n_meshes: int) -> torch.Tensor:
    """Mean of ``values`` per mesh (meshes without any value count as 0), then mean over meshes."""
    sums = torch.zeros(n_meshes, dtype=values.dtype, device=values.device).index_add(0, owner, values)
    counts = torch.bincount(owner, minlength=n_meshes).clamp(min=1).to(values.dtype)
    return (sums / counts).mean()


def _check_faces(meshes, op: str) -> None:
    """The packed faces index the packed vertices: a ``Meshes`` checks that when it is built, but its
    faces can be changed in place afterwards (one min/max reduction)."""
    n_verts = meshes.verts_packed().shape[0]
    faces = meshes.faces_packed()
    check_index_range(faces, 0, n_verts, "meshes.faces_packed()", op, "vertex", f"{n_verts} packed vertices")


def _zero(meshes) -> torch.Tensor:
    v = meshes.verts_packed()
    return v.sum() * 0.0


def mesh_edge_loss(meshes, target_length: float = 0.0) -> torch.Tensor:
    """``mean over edges of (|v_i - v_j| - target_length)^2`` per mesh, then the mean over meshes.

    With ``target_length = 0`` this is the mean *squared* edge length (not a sum of lengths:
    docs/errata.md#e31).
    """
    if meshes.isempty():
        return _zero(meshes)
    _check_faces(meshes, "mesh_edge_loss")
    v = meshes.verts_packed()
    e = meshes.edges_packed()
    lengths = (gather_rows(v, e[:, 0]) - gather_rows(v, e[:, 1])).norm(dim=1)
    return _per_mesh_mean((lengths - target_length) ** 2, meshes.edges_packed_to_mesh_idx(), len(meshes))


def mesh_normal_consistency(meshes) -> torch.Tensor:
    """For every pair of faces sharing an edge (every pair at non-manifold edges),
    ``1 - cos(n_a, n_b)`` with both normals oriented consistently across the edge
    (``n_a = e x (a - v0)``, ``n_b = -e x (b - v0)`` for edge e = v1 - v0 and opposite vertices
    a, b). Mean per mesh, then over meshes: 0 for coplanar neighbours, 2 for folded ones."""
    if meshes.isempty():
        return _zero(meshes)
    _check_faces(meshes, "mesh_normal_consistency")
    v = meshes.verts_packed()
    faces = meshes.faces_packed()
    f2e = meshes.faces_packed_to_edges_packed()  # (F, 3): edge opposite vertex k
    edges = meshes.edges_packed()
    edge_of = f2e.reshape(-1)
    opposite = faces.reshape(-1)
    order = torch.argsort(edge_of, stable=True)
    edge_of, opposite = edge_of[order], opposite[order]
    counts = torch.bincount(edge_of, minlength=edges.shape[0])
    pairs_a, pairs_b, pair_edge = [], [], []
    for d in range(1, int(counts.max()) if counts.numel() else 1):
        same = edge_of[:-d] == edge_of[d:]
        pairs_a.append(opposite[:-d][same])
        pairs_b.append(opposite[d:][same])
        pair_edge.append(edge_of[:-d][same])
    if not pairs_a or sum(p.numel() for p in pairs_a) == 0:
        return _zero(meshes)
    a, b, e = torch.cat(pairs_a), torch.cat(pairs_b), torch.cat(pair_edge)
    v0, v1 = gather_rows(v, edges[e, 0]), gather_rows(v, edges[e, 1])
    edge = v1 - v0
    n_a = torch.cross(edge, gather_rows(v, a) - v0, dim=1)
    n_b = -torch.cross(edge, gather_rows(v, b) - v0, dim=1)
    loss = 1.0 - F.cosine_similarity(n_a, n_b, dim=1, eps=1e-6)
    owner = meshes.verts_packed_to_mesh_idx()[edges[e, 0]]
    return _per_mesh_mean(loss, owner, len(meshes))


def cot_laplacian_weights(verts: torch.Tensor, faces: torch.Tensor):
    """Sparse symmetric (V, V) matrix of ``w_ij = cot(alpha_ij) + cot(beta_ij)`` (the angles
    opposite edge ij) and the (V,) summed area of the faces around each vertex."""
    V = verts.shape[0]
    a, b, c = gather_rows(verts, faces).unbind(1)
    cross = torch.cross(b - a, c - a, dim=1)
    area2 = cross.norm(dim=1).clamp(min=1e-12)  # twice the face area

    def cot(p, q, r):  # cotangent of the angle at p in triangle (p, q, r)
        return ((q - p) * (r - p)).sum(1) / area2

    cot_a, cot_b, cot_c = cot(a, b, c), cot(b, c, a), cot(c, a, b)
    rows = torch.cat([faces[:, 1], faces[:, 2], faces[:, 0]])
    cols = torch.cat([faces[:, 2], faces[:, 0], faces[:, 1]])
    vals = torch.cat([cot_a, cot_b, cot_c])  # the angle at a is opposite edge (b, c), ...
    idx = torch.stack([torch.cat([rows, cols]), torch.cat([cols, rows])])
    W = torch.sparse_coo_tensor(idx, torch.cat([vals, vals]), (V, V), check_invariants=True).coalesce()
    vertex_area = torch.zeros(V, dtype=verts.dtype, device=verts.device)
    for k in range(3):
        vertex_area = vertex_area.index_add(0, faces[:, k], area2 / 2)
    return W, vertex_area


def mesh_laplacian_smoothing(meshes, method: str = "uniform") -> torch.Tensor:
    """Mean over vertices of ``|delta_i|`` (not squared, docs/errata.md#e30) per mesh, then over meshes.

    * ``uniform``: ``delta_i = mean of the neighbours - v_i`` (zero iff v_i is at its neighbours'
      centroid, not merely when the neighbourhood is planar);
    * ``cot``: ``delta_i = sum_j w_ij v_j / sum_j w_ij - v_i`` with cotangent weights (zero on any
      planar patch);
    * ``cotcurv``: ``delta_i = sum_j w_ij (v_j - v_i) / (4 A_i)`` (mean-curvature normal).

    The weights are treated as constants (no gradient flows through them).
    """
    if method not in ("uniform", "cot", "cotcurv"):
        raise P3DLabValueError(f"mesh_laplacian_smoothing: unknown method {method!r}")
    if meshes.isempty():
        return _zero(meshes)
    _check_faces(meshes, "mesh_laplacian_smoothing")
    verts = meshes.verts_packed()
    faces = meshes.faces_packed()
    if method == "uniform":
        L = meshes.laplacian_packed().detach()
        delta = torch.sparse.mm(L, verts)
    else:
        with torch.no_grad():
            W, area = cot_laplacian_weights(verts.detach(), faces)
            row_sum = torch.sparse.sum(W, dim=1).to_dense()
        Wv = torch.sparse.mm(W, verts)
        if method == "cot":
            norm = torch.where(row_sum.abs() > 0, 1.0 / row_sum, torch.zeros_like(row_sum))
            delta = Wv * norm[:, None] - verts
        else:
            inv = torch.where(area > 0, 0.25 / area, torch.zeros_like(area))
            delta = (Wv - row_sum[:, None] * verts) * inv[:, None]
    return _per_mesh_mean(delta.norm(dim=1), meshes.verts_packed_to_mesh_idx(), len(meshes))
