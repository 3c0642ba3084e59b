"""Barycentric interpolation of per-face-vertex attributes at rasterized pixels."""

from __future__ import annotations

import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.checks import check_index_range
from p3dlab.ops.gather import gather_rows
from p3dlab.runtime import memory_budget
from p3dlab.runtime.fork_safety import check_cpu_kernels


def _check_output_fits(slots: int, dim: int, item: int, fast: bool) -> None:
    """Refuse an interpolation whose output (slots x D values) and, off the fast path, its
    temporaries (mask, gathered indices, barycentrics, attributes and products of the covered slots,
    counted for all) cannot fit."""
    per_slot = dim * item if fast else 1 + 8 + (3 + 5 * dim) * item
    what = f"the attributes interpolated at {slots:,} fragment slots (D={dim}, {per_slot} bytes per slot)"
    lower = "the fragments' faces_per_pixel or image_size, or the attributes' size D"
    memory_budget.check_fits("interpolate_face_attributes", slots * per_slot, what, lower)


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

    Every ``pix_to_face`` value must be -1 or a face of ``face_attributes`` (checked with one
    min/max reduction, fragments changed after rasterization included). An output that cannot fit
    in the memory this process can still take is refused before anything is allocated.
    """
    if face_attributes.ndim != 3 or face_attributes.shape[1] != 3:
        raise P3DLabValueError(f"face_attributes must have shape (F, 3, D), got {tuple(face_attributes.shape)}")
    if barycentric_coords.shape != (*pix_to_face.shape, 3):
        raise P3DLabValueError("barycentric_coords must have shape pix_to_face.shape + (3,)")
    if pix_to_face.is_floating_point() or pix_to_face.is_complex() or pix_to_face.dtype == torch.bool:
        raise P3DLabValueError(
            f"interpolate_face_attributes: pix_to_face must be an integer tensor, got {pix_to_face.dtype}"
        )
    n_faces, _, dim = face_attributes.shape
    check_index_range(
        pix_to_face, -1, n_faces, "pix_to_face", "interpolate_face_attributes", "face", f"{n_faces} faces given"
    )
    dtype = torch.promote_types(barycentric_coords.dtype, face_attributes.dtype)
    needs_grad = torch.is_grad_enabled() and (barycentric_coords.requires_grad or face_attributes.requires_grad)
    fast = not needs_grad and pix_to_face.device.type == "cpu" and dtype in (torch.float32, torch.float64)
    _check_output_fits(pix_to_face.numel(), dim, torch.empty((), dtype=dtype).element_size(), fast)
    if fast:
        from p3dlab.kernels.interpolate import interpolate_cpu

        check_cpu_kernels("interpolate_face_attributes")

        out = torch.empty((*pix_to_face.shape, dim), dtype=dtype)
        interpolate_cpu(
            pix_to_face.reshape(-1).numpy(),
            barycentric_coords.detach().reshape(-1, 3).to(dtype).contiguous().numpy(),
            face_attributes.detach().to(dtype).contiguous().numpy(),
            out.view(-1, dim).numpy(),
        )
        return out
    out = face_attributes.new_zeros((*pix_to_face.shape, dim), dtype=dtype)
    valid = pix_to_face >= 0
    faces = pix_to_face[valid]
    vals = (barycentric_coords[valid].to(dtype)[..., None] * gather_rows(face_attributes, faces).to(dtype)).sum(-2)
    return out.index_put((valid,), vals)
