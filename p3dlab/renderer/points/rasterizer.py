"""Point-cloud rasterizer (PyTorch3D's ``pytorch3d.renderer.points.rasterizer``): settings, fragments
and the module that projects a ``Pointclouds`` to NDC and rasterizes it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Tuple, Union

import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.rasterize_points import rasterize_points
from p3dlab.renderer.mesh_rasterizer import check_batch


@dataclass
class PointsRasterizationSettings:
    """``radius`` in NDC units (float or (N, P)); ``points_per_pixel`` = K. ``bin_size`` and
    ``max_points_per_bin`` are accepted for compatibility and never change the output."""

    image_size: Union[int, Tuple[int, int]] = 256
    radius: Union[float, torch.Tensor] = 0.01
    points_per_pixel: int = 8
    bin_size: Optional[int] = None
    max_points_per_bin: Optional[int] = None


class PointFragments(NamedTuple):
    idx: torch.Tensor  # (N, H, W, K) int32
    zbuf: torch.Tensor
    dists: torch.Tensor


class PointsRasterizer(torch.nn.Module):
    def __init__(self, cameras=None, raster_settings: Optional[PointsRasterizationSettings] = None):
        super().__init__()
        self.cameras = cameras
        self.raster_settings = raster_settings if raster_settings is not None else PointsRasterizationSettings()

    def transform(self, point_clouds, **kwargs):
        """World points -> (x_ndc, y_ndc, Z_view): NDC x and y, view-space depth."""
        cameras = kwargs.get("cameras", self.cameras)
        if cameras is None:
            raise P3DLabValueError("PointsRasterizer needs cameras")
        check_batch(len(point_clouds), cameras)
        pts = point_clouds.points_padded()
        view = cameras.get_world_to_view_transform(**kwargs).transform_points(pts)
        M = cameras.get_projection_transform(**kwargs).compose(cameras.get_ndc_camera_transform(**kwargs)).get_matrix()
        h = view @ M[:, :3, :] + M[:, 3:, :]
        w = h[..., 3:]
        w = torch.where(w.abs() < 1e-10, torch.where(w < 0, -1e-10, 1e-10).to(w), w)
        ndc = torch.cat([h[..., :2] / w, view[..., 2:3]], -1)
        return point_clouds.update_padded(ndc)

    def forward(self, point_clouds, **kwargs) -> PointFragments:
        rs = kwargs.get("raster_settings", self.raster_settings)
        proj = self.transform(point_clouds, **kwargs)
        return PointFragments(*rasterize_points(proj, rs.image_size, rs.radius, rs.points_per_pixel))
