"""Point-cloud renderer (PyTorch3D's ``pytorch3d.renderer.points.renderer``): rasterizer, then
per-point alphas from the squared distance to the point's centre, then the compositor."""

from __future__ import annotations

import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.renderer.points.rasterizer import PointsRasterizer


class PointsRenderer(torch.nn.Module):
    """``alpha_k = 1 - d_k^2 / r^2``, then the compositor; returns (N, H, W, C)."""

    def __init__(self, rasterizer: PointsRasterizer, compositor):
        super().__init__()
        self.rasterizer = rasterizer
        self.compositor = compositor

    def forward(self, point_clouds, **kwargs) -> torch.Tensor:
        if point_clouds.features_packed() is None:
            raise P3DLabValueError("PointsRenderer needs point features (colours): Pointclouds(points, features=...)")
        frags = self.rasterizer(point_clouds, **kwargs)
        r = self.rasterizer.raster_settings.radius
        idx = frags.idx.long()
        if isinstance(r, torch.Tensor) and r.ndim == 2:
            r_pts = torch.cat([r[i, :c] for i, c in enumerate(point_clouds.num_points_per_cloud().tolist())])
            r2 = (r_pts[idx.clamp(min=0)] ** 2).permute(0, 3, 1, 2)
        else:
            r2 = torch.as_tensor(float(r) ** 2, dtype=frags.dists.dtype)
        dists2 = frags.dists.permute(0, 3, 1, 2)
        alphas = 1 - dists2.clamp(min=0) / r2
        images = self.compositor(
            idx.permute(0, 3, 1, 2), alphas, point_clouds.features_packed().permute(1, 0), **kwargs
        )
        return images.permute(0, 2, 3, 1)
