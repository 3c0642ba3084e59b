"""Mesh rasterization as a torch operation: validation, pre-passes and the kernel call.

``rasterize_meshes`` takes meshes whose vertices are already projected — (x_ndc, y_ndc, Z_view) —
and returns PyTorch3D's fragments ``(pix_to_face, zbuf, bary_coords, dists)``
(docs/conventions.md#rasterization-settings, docs/kernels.md#mesh-rasterization). The kernel only
ever sees validated, contiguous arrays of one dtype; it runs on the device of the input: the Numba
CPU kernel for CPU tensors, the Numba CUDA kernel (through ``p3dlab.kernels.cuda_adapter``) for
CUDA tensors.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
from torch.autograd.function import once_differentiable

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.checks import check_index_range, check_kernel_dtype, check_packed_ranges
from p3dlab.ops.dispatch import cuda_kernels
from p3dlab.ops.gather import gather_rows
from p3dlab.runtime import memory_budget
from p3dlab.runtime.volume_scratch import reused_empty

MAX_IMAGE_SIDE = 8192
#: Upper bound on N * H * W * K fragment slots (28 bytes each): about 1.5 GB.
MAX_SLOTS = 56_000_000


def _image_hw(image_size) -> Tuple[int, int]:
    if isinstance(image_size, (tuple, list)):
        if len(image_size) != 2:
            raise P3DLabValueError(f"image_size must be an int or (H, W), got {image_size!r}")
        h, w = image_size
    else:
        h = w = image_size
    if isinstance(h, torch.Tensor):
        h, w = int(h), int(w)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (h, w)):
        raise P3DLabValueError(f"image_size must be integers, got {image_size!r}")
    if not (0 < h <= MAX_IMAGE_SIDE and 0 < w <= MAX_IMAGE_SIDE):
        raise P3DLabValueError(f"image_size must be in [1, {MAX_IMAGE_SIDE}], got (H, W) = ({h}, {w})")
    return h, w


def check_raster_settings(image_size, blur_radius: float, faces_per_pixel: int, n_images: int = 1):
    """Validate settings before anything is allocated; returns (H, W)."""
    h, w = _image_hw(image_size)
    if not isinstance(faces_per_pixel, int) or isinstance(faces_per_pixel, bool) or faces_per_pixel < 1:
        raise P3DLabValueError(f"faces_per_pixel must be an int >= 1, got {faces_per_pixel!r}")
    if not (isinstance(blur_radius, (int, float)) and math.isfinite(blur_radius) and blur_radius >= 0):
        raise P3DLabValueError(f"blur_radius must be a finite number >= 0, got {blur_radius!r}")
    slots = n_images * h * w * faces_per_pixel
    if slots > MAX_SLOTS:
        raise P3DLabValueError(
            f"fragments of {n_images} x {h} x {w} x K={faces_per_pixel} would need about {slots * 28 / 1e9:.1f} GB; "
            f"use a smaller faces_per_pixel or image_size (limit {MAX_SLOTS:,} slots)"
        )
    return h, w


def check_fragments_fit(
    op: str, n: int, h: int, w: int, k: int, k_name: str, bytes_per_slot: int, grad_bytes_per_slot: int
) -> None:
    """Refuse fragments of ``n * h * w * k`` slots that cannot fit (``memory_budget.check_fits``):
    ``bytes_per_slot`` for the forward's outputs and, when the inputs need gradients,
    ``grad_bytes_per_slot`` for the gradients of those outputs that the backward reads."""
    slots = n * h * w * k
    per_slot = bytes_per_slot + grad_bytes_per_slot
    what = f"the fragments of {n} x {h} x {w} x {k_name}={k} slots ({bytes_per_slot} bytes per slot"
    what += f", {grad_bytes_per_slot} more for their gradients)" if grad_bytes_per_slot else ")"
    memory_budget.check_fits(op, slots * per_slot, what, f"{k_name}, image_size or the batch size")


class _RasterizeFaces(torch.autograd.Function):
    """Fragments of packed face vertices (F, 3, 3). Backward: ``p3dlab.ops.rasterize_backward``."""

    @staticmethod
    def forward(ctx, face_verts, sibling, face_first, face_count, H, W, K, blur, persp, clip, cull):
        N = face_first.shape[0]
        dev, dt = face_verts.device, face_verts.dtype
        args = (face_verts.detach().contiguous(), sibling, face_first, face_count)
        settings = (H, W, K, float(blur), bool(persp), bool(clip), bool(cull))
        if dev.type == "cpu" and N > 0 and face_verts.shape[0] > 0:
            # the CPU kernel writes -1 into the empty slots itself; the memory is that of earlier
            # fragments nothing refers to any more, where there are some (fresh pages cost more to
            # fault in than the kernel takes to fill them: docs/performance.md#fragments-memory)
            p2f = reused_empty((N, H, W, K), torch.int64, dev)
            zbuf = reused_empty((N, H, W, K), dt, dev)
            bary = reused_empty((N, H, W, K, 3), dt, dev)
            dists = reused_empty((N, H, W, K), dt, dev)
        else:
            p2f = torch.full((N, H, W, K), -1, dtype=torch.int64, device=dev)
            zbuf = torch.full((N, H, W, K), -1.0, dtype=dt, device=dev)
            bary = torch.full((N, H, W, K, 3), -1.0, dtype=dt, device=dev)
            dists = torch.full((N, H, W, K), -1.0, dtype=dt, device=dev)
        if N > 0 and face_verts.shape[0] > 0:
            gpu = cuda_kernels(face_verts, "rasterize_meshes")
            if gpu:
                gpu.rasterize_meshes_cuda(*args, *settings, p2f, zbuf, bary, dists)
            else:
                from p3dlab.kernels.mesh_raster_cpu import rasterize_meshes_cpu

                arrays = [a.numpy() for a in args]
                rasterize_meshes_cpu(*arrays, *settings, p2f.numpy(), zbuf.numpy(), bary.numpy(), dists.numpy())
        ctx.save_for_backward(face_verts.detach(), p2f)
        ctx.settings = settings
        ctx.mark_non_differentiable(p2f)
        ctx.set_materialize_grads(False)  # no (N, H, W, K) zeros for pix_to_face or unused outputs
        return p2f, zbuf, bary, dists

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_p2f, grad_zbuf, grad_bary, grad_dists):
        from p3dlab.ops.rasterize_backward import rasterize_faces_backward  # checks the saved pix_to_face

        face_verts, p2f = ctx.saved_tensors
        grad = rasterize_faces_backward(face_verts, p2f, grad_zbuf, grad_bary, grad_dists, *ctx.settings)
        return (grad,) + (None,) * 10


def _frustum_cull(face_verts: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Mask of faces with all three vertices beyond the same side of the image (true NDC extents)."""
    s = min(H, W)
    ux, uy = W / s, H / s
    x, y = face_verts[..., 0], face_verts[..., 1]
    out = (x < -ux).all(1) | (x > ux).all(1) | (y < -uy).all(1) | (y > uy).all(1)
    return ~out


def rasterize_meshes(
    meshes,
    image_size: Union[int, Tuple[int, int]] = 256,
    blur_radius: float = 0.0,
    faces_per_pixel: int = 1,
    bin_size: Optional[int] = None,
    max_faces_per_bin: Optional[int] = None,
    perspective_correct: bool = False,
    clip_barycentric_coords: bool = False,
    cull_backfaces: bool = False,
    z_clip_value: Optional[float] = None,
    cull_to_frustum: bool = False,
    verts_xy_homogeneous: Optional[torch.Tensor] = None,
):
    """Rasterize meshes whose vertices are (x_ndc, y_ndc, Z_view).

    Returns ``pix_to_face`` (N, H, W, K) int64 packed face indices (-1 empty), ``zbuf`` (N, H, W, K)
    view Z, ``bary_coords`` (N, H, W, K, 3) and ``dists`` (N, H, W, K) signed squared NDC distance
    (negative inside), sorted by ascending Z with ties broken by lower face index.

    ``bin_size`` and ``max_faces_per_bin`` are accepted for PyTorch3D compatibility; they never
    change the output (the CPU kernel culls by bounding boxes within row bands).
    Differentiable with respect to the vertices through ``zbuf``, ``bary_coords`` and ``dists``.

    ``z_clip_value`` clips faces at view Z = c (perspective cameras). ``verts_xy_homogeneous``
    (sum V, 2) optionally gives (x_ndc Z, y_ndc Z) before the perspective division, so that
    vertices exactly at Z = 0 (which project to infinity) can still be clipped exactly.

    Checked before anything is allocated: vertices float32 or float64 (float16/bfloat16 refused:
    call ``.float()``), every face index within the packed vertices (faces changed after the
    ``Meshes`` was built included), and fragments that fit in the memory this process can still take
    (``8 + 5 x itemsize`` bytes per slot, ``5 x itemsize`` more when the vertices need gradients:
    28 + 20 bytes in float32);
    otherwise ``P3DLabValueError`` / ``P3DLabMemoryError`` naming the argument to change.
    """
    op = "rasterize_meshes"
    H, W = check_raster_settings(image_size, blur_radius, faces_per_pixel, len(meshes))
    if bin_size is not None and (not isinstance(bin_size, int) or bin_size < 0):
        raise P3DLabValueError(f"bin_size must be None or an int >= 0, got {bin_size!r}")
    if z_clip_value is not None and not (math.isfinite(z_clip_value) and z_clip_value > 0):
        raise P3DLabValueError(f"z_clip_value must be None or > 0, got {z_clip_value!r}")
    verts = meshes.verts_packed()
    faces = meshes.faces_packed()
    check_kernel_dtype(verts, "the vertices of meshes", op, "build the Meshes from verts.float()")
    if verts.dtype not in (torch.float32, torch.float64):
        raise P3DLabValueError(f"rasterize_meshes: vertices must be float32 or float64, got {verts.dtype}")
    # Vertices behind the camera may project to inf (their faces are dropped or clipped); any
    # other non-finite value is an error.
    bad = ~torch.isfinite(verts).all(1) & ~(verts[:, 2] < 1e-8)
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        raise P3DLabValueError(f"rasterize_meshes: projected vertex {k} is not finite: {verts[k].tolist()}")
    n_verts = verts.shape[0]
    check_index_range(faces, 0, n_verts, "meshes.faces_packed()", op, "vertex", f"{n_verts} packed vertices")
    if verts_xy_homogeneous is not None and tuple(verts_xy_homogeneous.shape) != (n_verts, 2):
        raise P3DLabValueError(
            f"{op}: verts_xy_homogeneous must be (sum V, 2) = ({n_verts}, 2), got {tuple(verts_xy_homogeneous.shape)}"
        )
    face_verts = gather_rows(verts, faces)  # (F, 3, 3), differentiable gather
    face_first = meshes.mesh_to_faces_packed_first_idx()
    face_count = meshes.num_faces_per_mesh()
    n_faces = face_verts.shape[0]
    orig_index = None
    bary_map = None
    sibling = torch.full((n_faces,), -1, dtype=torch.int64, device=verts.device)

    keep = None
    if cull_to_frustum and n_faces:
        keep = _frustum_cull(face_verts.detach(), H, W)
    if z_clip_value is not None and n_faces and bool((face_verts[..., 2] < z_clip_value).any()):
        from p3dlab.ops.clip_faces import clip_faces_at_z

        face_xy_h = gather_rows(verts_xy_homogeneous, faces) if verts_xy_homogeneous is not None else None
        clipped = clip_faces_at_z(
            face_verts, face_first, face_count, z_clip_value, perspective_correct, keep, face_xy_h
        )
        face_verts, face_first, face_count, orig_index, bary_map, sibling = clipped
    elif keep is not None and not bool(keep.all()):
        orig_index = keep.nonzero().flatten()
        face_verts = face_verts[orig_index]
        mesh_of_face = meshes.faces_packed_to_mesh_idx()[orig_index]
        face_count = torch.bincount(mesh_of_face, minlength=len(meshes))
        face_first = torch.cumsum(face_count, 0) - face_count
        sibling = sibling[: face_verts.shape[0]]

    item = verts.element_size()
    per_slot = 8 + 5 * item  # pix_to_face, zbuf, bary_coords, dists
    if bary_map is not None:  # clipped faces: their barycentrics mapped back to the original faces
        per_slot += 8 + 12 * item
    needs_grad = face_verts.requires_grad and torch.is_grad_enabled()
    check_fragments_fit(op, len(meshes), H, W, faces_per_pixel, "faces_per_pixel", per_slot, 5 * item * needs_grad)
    check_packed_ranges(face_first, face_count, face_verts.shape[0], "the faces of meshes", op)
    p2f, zbuf, bary, dists = _RasterizeFaces.apply(
        face_verts.contiguous(),
        sibling.contiguous(),
        face_first.contiguous(),
        face_count.contiguous(),
        H,
        W,
        faces_per_pixel,
        float(blur_radius),
        bool(perspective_correct),
        bool(clip_barycentric_coords),
        bool(cull_backfaces),
    )
    if orig_index is not None:
        valid = p2f >= 0
        if bary_map is not None:
            # barycentrics with respect to the original face: bary_sub @ W_sub (3 x 3 per sub-face)
            sub = bary_map[p2f.clamp(min=0)]  # (N, H, W, K, 3, 3)
            bary = torch.where(valid[..., None], (bary[..., None, :] @ sub)[..., 0, :], bary)
        p2f = torch.where(valid, orig_index[p2f.clamp(min=0)], p2f)
    return p2f, zbuf, bary, dists
