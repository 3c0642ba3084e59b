"""Point rasterization as a torch operation (docs/conventions.md#point-rendering,
docs/kernels.md#point-rasterization)."""

from __future__ import annotations

import numbers

import torch
from torch.autograd.function import once_differentiable

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.checks import check_kernel_dtype, check_packed_ranges, check_saved_indices
from p3dlab.ops.dispatch import cuda_kernels
from p3dlab.ops.rasterize_meshes import check_fragments_fit, check_raster_settings


class _RasterizePoints(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pts, radius, first_idx, counts, H, W, K):
        N = first_idx.shape[0]
        dev, dt = pts.device, pts.dtype
        idx = torch.full((N, H, W, K), -1, dtype=torch.int32, device=dev)
        zbuf = torch.full((N, H, W, K), -1.0, dtype=dt, device=dev)
        dists = torch.full((N, H, W, K), -1.0, dtype=dt, device=dev)
        if N and pts.shape[0]:
            args = (pts.detach().contiguous(), radius.detach().to(dt).contiguous(), first_idx, counts)
            gpu = cuda_kernels(pts, "rasterize_points")
            if gpu:
                gpu.rasterize_points_cuda(*args, H, W, K, idx, zbuf, dists)
            else:
                from p3dlab.kernels.point_raster import rasterize_points_cpu

                rasterize_points_cpu(*[a.numpy() for a in args], H, W, K, idx.numpy(), zbuf.numpy(), dists.numpy())
        ctx.save_for_backward(pts.detach(), idx)
        ctx.hw = (H, W)
        ctx.mark_non_differentiable(idx)
        ctx.set_materialize_grads(False)  # no (N, H, W, K) zeros for idx or unused outputs
        return idx, zbuf, dists

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_idx, grad_zbuf, grad_dists):
        pts, idx = ctx.saved_tensors
        H, W = ctx.hw
        shape = next((g.shape for g in (grad_zbuf, grad_dists) if g is not None), idx.shape)
        check_saved_indices(idx, pts.shape[0], (shape[0], H, W, shape[3]), "idx", "rasterize_points")
        dt = pts.dtype
        prep = lambda g: torch.zeros((0,) * 4, dtype=dt, device=pts.device) if g is None else g.to(dt).contiguous()
        gz, gd = prep(grad_zbuf), prep(grad_dists)
        grad = torch.zeros_like(pts)
        gpu = cuda_kernels(pts, "rasterize_points (backward)")
        if gpu:
            gpu.rasterize_points_backward_cuda(pts, idx, gz, gd, H, W, grad)
        else:
            import numba

            from p3dlab.kernels.point_raster import rasterize_points_backward_cpu

            rasterize_points_backward_cpu(
                pts.numpy(), idx.numpy(), gz.numpy(), gd.numpy(), H, W, grad.numpy(), numba.get_num_threads()
            )
        return grad, None, None, None, None, None, None


def _per_point_radius(radius, counts: torch.Tensor, pts: torch.Tensor, op: str) -> torch.Tensor:
    """``radius`` (a number, a one-element tensor or an (N, P) tensor for the padded clouds) as one
    finite, non-negative radius per packed point."""
    n = counts.shape[0]
    p_max = int(counts.max()) if n else 0
    expected = f"a float or an (N, P) = ({n}, {p_max}) tensor, one radius per point of the padded clouds"
    if isinstance(radius, torch.Tensor):
        check_kernel_dtype(radius, "radius", op)
        if radius.numel() != 1 and (radius.ndim != 2 or tuple(radius.shape) != (n, p_max)):
            raise P3DLabValueError(f"{op}: radius must be {expected}, got shape {tuple(radius.shape)}")
        if radius.numel() != 1:
            r = torch.cat([radius[i, :c] for i, c in enumerate(counts.tolist())]) if n else radius.reshape(-1)
            return r.to(device=pts.device)
        radius = radius.reshape(())
    elif not isinstance(radius, numbers.Real) or isinstance(radius, bool):
        raise P3DLabValueError(f"{op}: radius must be {expected}, got {type(radius).__name__}")
    return torch.as_tensor(radius, dtype=pts.dtype, device=pts.device).reshape(1).expand(pts.shape[0])


def rasterize_points(
    pointclouds, image_size=256, radius=0.01, points_per_pixel: int = 8, bin_size=None, max_points_per_bin=None
):
    """Rasterize point clouds whose points are (x_ndc, y_ndc, Z_view).

    ``radius`` (NDC) is a float or an (N, P) tensor of per-point radii. Returns ``idx`` (N, H, W, K)
    int32 packed point indices, ``zbuf`` (view Z) and ``dists`` (unsigned squared NDC distance),
    sorted by ascending Z (ties: lower index), padded with -1. Differentiable in the points.

    Points must be float32 or float64 (float16/bfloat16 refused: call ``.float()``); fragments that
    cannot fit in the memory this process can still take (``4 + 2 x itemsize`` bytes per slot,
    ``2 x itemsize`` more when the points need gradients) are refused before anything is allocated.
    """
    op = "rasterize_points"
    H, W = check_raster_settings(image_size, 0.0, points_per_pixel, len(pointclouds))
    pts = pointclouds.points_packed()
    check_kernel_dtype(pts, "the points of pointclouds", op, "build the Pointclouds from points.float()")
    if not pts.is_floating_point():
        raise P3DLabValueError("rasterize_points: points must be floating point")
    bad = ~torch.isfinite(pts).all(1) & ~(pts[:, 2] < 0)
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        raise P3DLabValueError(f"rasterize_points: projected point {k} is not finite: {pts[k].tolist()}")
    counts = pointclouds.num_points_per_cloud()
    r = _per_point_radius(radius, counts, pts, op)
    if not bool(torch.isfinite(r).all()) or bool((r < 0).any()):
        raise P3DLabValueError("rasterize_points: radius must be finite and >= 0")
    item = pts.element_size()
    needs_grad = pts.requires_grad and torch.is_grad_enabled()
    check_fragments_fit(
        op, len(pointclouds), H, W, points_per_pixel, "points_per_pixel", 4 + 2 * item, 2 * item * needs_grad
    )
    first = pointclouds.cloud_to_packed_first_idx()
    check_packed_ranges(first, counts, pts.shape[0], "the points of pointclouds", op)
    return _RasterizePoints.apply(
        pts.contiguous(), r.contiguous(), first.contiguous(), counts.contiguous(), H, W, points_per_pixel
    )
