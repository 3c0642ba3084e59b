"""Backward of the mesh rasterizer: upstream fragment gradients -> dL/d(face_verts)."""

from __future__ import annotations

import torch

from p3dlab.ops.checks import check_saved_indices, saved_index_error
from p3dlab.ops.dispatch import cuda_kernels


def rasterize_faces_backward(face_verts, p2f, grad_zbuf, grad_bary, grad_dists, H, W, K, blur, persp, clip, cull):
    """(F, 3, 3) gradient of the loss with respect to the projected face vertices.

    Missing upstream gradients count as zero; incoming gradients are made contiguous and cast
    to the dtype of the face vertices before reaching the kernel (docs/kernels.md#how-the-kernels-are-built, rule 3).
    Zero-size arrays stand for "no gradient" and are skipped by the kernels. ``p2f`` is checked
    (shape, dtype, indices within the faces): the kernel indexes ``face_verts`` with it. On the CPU
    the kernel checks each index before it uses one, and the error is raised after it returns.
    """
    dt, dev = face_verts.dtype, face_verts.device
    grad = torch.zeros_like(face_verts)
    shape = next((g.shape[:4] for g in (grad_zbuf, grad_dists, grad_bary) if g is not None), p2f.shape)
    on_cpu = dev.type == "cpu"  # the CPU kernel checks the indices it reads (one pass over them, not two)
    check_saved_indices(
        p2f, face_verts.shape[0], (*shape[:1], H, W, K), "pix_to_face", "rasterize_meshes", values=not on_cpu
    )
    if face_verts.shape[0] == 0 or p2f.numel() == 0:
        return grad

    # Missing upstream gradients are passed as empty arrays and skipped by the kernel, so a
    # silhouette loss (dists only) never allocates (N, H, W, K, 3) zeros for the barycentrics.
    def prep(g, ndim):
        if g is None:  # an empty array of the right rank (the kernels are compiled per rank)
            return torch.zeros((0,) * ndim, dtype=dt, device=dev)
        return g.to(dtype=dt).contiguous()

    gz, gb, gd = prep(grad_zbuf, 4), prep(grad_bary, 5), prep(grad_dists, 4)
    fv = face_verts.contiguous()
    gpu = cuda_kernels(fv, "rasterize_meshes (backward)")
    if gpu:
        gpu.rasterize_meshes_backward_cuda(fv, p2f, gz, gb, gd, H, W, blur, persp, clip, grad)
    else:
        import numba

        from p3dlab.kernels.mesh_raster_cpu import rasterize_meshes_backward_cpu

        arrays = [t.numpy() for t in (fv, p2f, gz, gb, gd)]
        bad = rasterize_meshes_backward_cpu(*arrays, H, W, blur, persp, clip, grad.numpy(), numba.get_num_threads())
        if bad != -1:
            n_faces = face_verts.shape[0]
            raise saved_index_error(f"pix_to_face holds {bad}, outside [-1, {n_faces - 1}]", "rasterize_meshes")
    return grad
