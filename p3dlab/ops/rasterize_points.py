"""Point rasterization as a torch operation (docs/conventions.md#point-rendering,
docs/kernels.md#point-rasterization)."""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.dispatch import cuda_kernels
from p3dlab.ops.rasterize_meshes import check_raster_settings


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
        return idx, zbuf, dists

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_idx, grad_zbuf, grad_dists):
        pts, idx = ctx.saved_tensors
        H, W = ctx.hw
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


def rasterize_points(
    pointclouds, image_size=256, radius=0.01, points_per_pixel: int = 8, bin_size=None, max_points_per_bin=None
):
    """Rasterize point clouds whose points are (x_ndc, y_ndc, Z_view).

    ``radius`` (NDC) is a float or an (N, P) tensor of per-point radii. Returns ``idx`` (N, H, W, K)
    int32 packed point indices, ``zbuf`` (view Z) and ``dists`` (unsigned squared NDC distance),
    sorted by ascending Z (ties: lower index), padded with -1. Differentiable in the points.
    """
    H, W = check_raster_settings(image_size, 0.0, points_per_pixel, len(pointclouds))
    pts = pointclouds.points_packed()
    if not pts.is_floating_point():
        raise P3DLabValueError("rasterize_points: points must be floating point")
    bad = ~torch.isfinite(pts).all(1) & ~(pts[:, 2] < 0)
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        raise P3DLabValueError(f"rasterize_points: projected point {k} is not finite: {pts[k].tolist()}")
    counts = pointclouds.num_points_per_cloud()
    if isinstance(radius, torch.Tensor) and radius.ndim == 2:
        r = torch.cat([radius[i, :c] for i, c in enumerate(counts.tolist())]) if len(counts) else radius.reshape(-1)
    else:
        r = torch.as_tensor(radius, dtype=pts.dtype, device=pts.device).reshape(-1).expand(pts.shape[0])
    if r.shape[0] != pts.shape[0] or not torch.isfinite(r).all() or bool((r < 0).any()):
        raise P3DLabValueError("rasterize_points: radius must be finite, >= 0, a float or (N, P)")
    first = pointclouds.cloud_to_packed_first_idx()
    return _RasterizePoints.apply(
        pts.contiguous(), r.contiguous(), first.contiguous(), counts.contiguous(), H, W, points_per_pixel
    )
