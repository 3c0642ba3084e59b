"""Area-weighted random sampling of points on mesh surfaces (docs/kernels.md#sampling-points-on-meshes)."""

from __future__ import annotations

from typing import Optional

import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.checks import check_count, check_index_range, check_kernel_dtype
from p3dlab.ops.gather import gather_rows
from p3dlab.runtime import memory_budget

#: Bytes per sample and mesh: the face drawn and its copy, its 3 vertex indices (int64), r1, r2, the
#: 4 weights, the 3 vertices gathered, their weighted sums and the samples (float values).
_INDEX_BYTES, _FLOATS = 8 + 8 + 3 * 8, 2 + 4 + 9 + 9 + 3


def _check_samples_fit(n_meshes: int, num_samples: int, item: int) -> None:
    need = n_meshes * num_samples * (_INDEX_BYTES + _FLOATS * item)
    what = f"{n_meshes} x num_samples={num_samples:,} samples ({_INDEX_BYTES + _FLOATS * item} bytes each)"
    memory_budget.check_fits("sample_points_from_meshes", need, what, "num_samples")


def _check_areas(areas: torch.Tensor, dtype) -> None:
    """Every face area finite: a face too large for the vertices' dtype has an infinite (or NaN)
    area, and no face can be drawn in proportion to it."""
    bad = ~torch.isfinite(areas)
    if bool(bad.any()):
        j = int(bad.nonzero()[0, 0])
        raise P3DLabValueError(
            f"sample_points_from_meshes: packed face {j} of meshes has area {float(areas[j])}: its vertices are too "
            f"far apart for {dtype}; scale the meshes down (or use float64)"
        )


def sample_points_from_meshes(
    meshes,
    num_samples: int = 10000,
    return_normals: bool = False,
    return_textures: bool = False,
    generator: Optional[torch.Generator] = None,
):
    """Draw ``num_samples`` points uniformly over the surface of every mesh in the batch.

    Faces are drawn with probability proportional to their area (with replacement); inside a face
    ``p = (1 - sqrt(r1)) v0 + sqrt(r1)(1 - r2) v1 + sqrt(r1) r2 v2`` with r1, r2 ~ U[0, 1), which is
    uniform over the triangle. Differentiable with respect to the vertices (the face choice and
    r1, r2 are constants).

    Returns:
        samples (N, num_samples, 3), plus normals (N, num_samples, 3) (the sampled faces' normals)
        and/or textures (N, num_samples, C) when requested, in that order.

    ``num_samples`` is an int >= 1 (PyTorch3D's ``torch.multinomial`` refuses 0 too); vertices are
    float32 or float64 (float16/bfloat16 refused: call ``.float()``); every face index must be within
    the packed vertices (faces changed after the ``Meshes`` was built included) and every face area
    finite. Samples that cannot fit in the memory this process can still take are refused before
    anything is allocated (``P3DLabMemoryError`` naming ``num_samples``).
    """
    op = "sample_points_from_meshes"
    num_samples = check_count(num_samples, "num_samples", op)
    if meshes.isempty():
        raise P3DLabValueError("sample_points_from_meshes: the meshes are empty")
    if not meshes.valid.all():
        raise P3DLabValueError("sample_points_from_meshes: every mesh needs at least one face")
    if return_textures and meshes.textures is None:
        raise P3DLabValueError("sample_points_from_meshes: return_textures needs meshes with textures")
    verts, faces = meshes.verts_packed(), meshes.faces_packed()
    check_kernel_dtype(verts, "the vertices of meshes", op, "build the Meshes from verts.float()")
    check_index_range(
        faces, 0, verts.shape[0], "meshes.faces_packed()", op, "vertex", f"{verts.shape[0]} packed vertices"
    )
    n_meshes = len(meshes)
    _check_samples_fit(n_meshes, num_samples, verts.element_size())
    areas = meshes.faces_areas_packed().detach()
    _check_areas(areas, verts.dtype)
    first = meshes.mesh_to_faces_packed_first_idx().tolist()
    counts = meshes.num_faces_per_mesh().tolist()
    face_idx = []
    for i in range(n_meshes):
        a = areas[first[i] : first[i] + counts[i]]
        if float(a.sum()) <= 0:
            raise P3DLabValueError(f"sample_points_from_meshes: mesh {i} has zero surface area")
        face_idx.append(first[i] + torch.multinomial(a, num_samples, replacement=True, generator=generator))
    face_idx = torch.stack(face_idx, 0).to(verts.device)  # (N, S)
    r1 = torch.rand((n_meshes, num_samples, 1), generator=generator, dtype=verts.dtype).to(verts.device)
    r2 = torch.rand((n_meshes, num_samples, 1), generator=generator, dtype=verts.dtype).to(verts.device)
    s1 = r1.sqrt()
    w0, w1, w2 = 1.0 - s1, s1 * (1.0 - r2), s1 * r2
    f = faces[face_idx]  # (N, S, 3)
    corners = gather_rows(verts, f)  # (N, S, 3 corners, 3)
    samples = w0 * corners[..., 0, :] + w1 * corners[..., 1, :] + w2 * corners[..., 2, :]
    out = [samples]
    if return_normals:
        out.append(gather_rows(meshes.faces_normals_packed(), face_idx))
    if return_textures:
        feats = _texture_at(meshes, face_idx, torch.cat([w0, w1, w2], -1))
        out.append(feats)
    return out[0] if len(out) == 1 else tuple(out)


def _texture_at(meshes, face_idx: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
    """Sample the meshes' textures at the given packed faces and barycentrics via a fake fragment."""

    class _Frag:
        pass

    frag = _Frag()
    frag.pix_to_face = face_idx[:, :, None, None]  # (N, S, 1, 1) = (N, H, W, K)
    frag.bary_coords = bary[:, :, None, None, :]
    return meshes.sample_textures(frag)[:, :, 0, 0, :]
