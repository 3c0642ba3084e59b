"""Point-cloud rendering (conventions §13): rasterizer, compositors, renderer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence, Tuple, Union

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
        """World points -> (x_ndc, y_ndc, Z_view) (conventions §3.4)."""
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


def _background(images, idx0, background_color):
    if background_color is None:
        return images
    bg = torch.as_tensor(background_color, dtype=images.dtype, device=images.device)
    C = images.shape[1]
    if bg.shape[0] not in (C, C - 1) and not (C == 4 and bg.shape[0] == 3):
        raise P3DLabValueError(f"background_color has {bg.shape[0]} values for {C} channels")
    if bg.shape[0] < C:
        bg = torch.cat([bg, bg.new_ones(C - bg.shape[0])])
    empty = (idx0 < 0)[:, None]
    return torch.where(empty, bg.view(1, C, 1, 1).expand_as(images), images)


def _gather(features, idx):
    """features (C, P), idx (N, K, H, W) -> (C, N, K, H, W), zero where idx < 0."""
    f = features[:, idx.clamp(min=0).long()]
    return f * (idx >= 0).to(f.dtype)[None]


def alpha_composite(idx, alphas, features):
    """Front to back: ``F = sum_k alpha_k prod_{l<k} (1 - alpha_l) f_k`` over valid slots."""
    a = alphas * (idx >= 0).to(alphas.dtype)
    trans = torch.cumprod(torch.cat([torch.ones_like(a[:, :1]), 1 - a[:, :-1]], 1), 1)
    return (_gather(features, idx) * (a * trans)[None]).sum(2).permute(1, 0, 2, 3)


def weighted_sum(idx, alphas, features):
    a = alphas * (idx >= 0).to(alphas.dtype)
    return (_gather(features, idx) * a[None]).sum(2).permute(1, 0, 2, 3)


def norm_weighted_sum(idx, alphas, features):
    a = alphas * (idx >= 0).to(alphas.dtype)
    return ((_gather(features, idx) * a[None]).sum(2) / a.sum(1).clamp(min=1e-4)[None]).permute(1, 0, 2, 3)


class _Compositor(torch.nn.Module):
    _fn = staticmethod(alpha_composite)

    def __init__(self, background_color: Optional[Sequence[float]] = None):
        super().__init__()
        self.background_color = background_color

    def forward(self, fragments, alphas, ptclds, **kwargs):
        images = self._fn(fragments, alphas, ptclds)
        return _background(images, fragments[:, 0], kwargs.get("background_color", self.background_color))


class AlphaCompositor(_Compositor):
    """``compositor(idx (N, K, H, W), alphas (N, K, H, W), features (C, P))`` -> (N, C, H, W)."""

    _fn = staticmethod(alpha_composite)


class NormWeightedCompositor(_Compositor):
    _fn = staticmethod(norm_weighted_sum)


class WeightedSumCompositor(_Compositor):
    _fn = staticmethod(weighted_sum)


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
