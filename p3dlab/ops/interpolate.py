"""Barycentric interpolation of per-face-vertex attributes at rasterized pixels."""

from __future__ import annotations

import torch

from p3dlab.errors import P3DLabValueError


def interpolate_face_attributes(
    pix_to_face: torch.Tensor, barycentric_coords: torch.Tensor, face_attributes: torch.Tensor
) -> torch.Tensor:
    """``out[n, y, x, k] = sum_i bary[n, y, x, k, i] * face_attributes[pix_to_face[n, y, x, k], i]``.

    Args:
        pix_to_face: (N, H, W, K) packed face index per slot, -1 where empty.
        barycentric_coords: (N, H, W, K, 3).
        face_attributes: (F, 3, D) attribute of each face's three vertices.
    Returns:
        (N, H, W, K, D), zero where ``pix_to_face < 0``. Differentiable in the barycentrics and the
        attributes. Only the valid slots are gathered, so memory follows the covered pixels. When
        no gradient is needed (CPU tensors, ``torch.no_grad()`` or inputs that do not require grad)
        one Numba pass does the same without temporaries (interactive views render faster).
    """
    if face_attributes.ndim != 3 or face_attributes.shape[1] != 3:
        raise P3DLabValueError(f"face_attributes must have shape (F, 3, D), got {tuple(face_attributes.shape)}")
    if barycentric_coords.shape != (*pix_to_face.shape, 3):
        raise P3DLabValueError("barycentric_coords must have shape pix_to_face.shape + (3,)")
    n_faces, _, dim = face_attributes.shape
    valid = pix_to_face >= 0
    faces = pix_to_face[valid]
    if faces.numel() and int(faces.max()) >= n_faces:
        raise P3DLabValueError(f"pix_to_face refers to face {int(faces.max())} but only {n_faces} faces were given")
    dtype = torch.promote_types(barycentric_coords.dtype, face_attributes.dtype)
    needs_grad = torch.is_grad_enabled() and (barycentric_coords.requires_grad or face_attributes.requires_grad)
    if not needs_grad and pix_to_face.device.type == "cpu" and dtype in (torch.float32, torch.float64):
        from p3dlab.kernels.interpolate import interpolate_cpu

        out = torch.empty((*pix_to_face.shape, dim), dtype=dtype)
        interpolate_cpu(
            pix_to_face.reshape(-1).numpy(),
            barycentric_coords.detach().reshape(-1, 3).to(dtype).contiguous().numpy(),
            face_attributes.detach().to(dtype).contiguous().numpy(),
            out.view(-1, dim).numpy(),
        )
        return out
    out = face_attributes.new_zeros((*pix_to_face.shape, dim), dtype=dtype)
    vals = (barycentric_coords[valid].to(dtype)[..., None] * face_attributes[faces].to(dtype)).sum(-2)
    return out.index_put((valid,), vals)
