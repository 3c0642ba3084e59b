"""``RasterizationSettings``, ``Fragments`` and ``MeshRasterizer`` (docs/conventions.md#rasterization-settings)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple, Optional, Tuple, Union

import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.rasterize_meshes import check_raster_settings, rasterize_meshes


@dataclass
class RasterizationSettings:
    """PyTorch3D's settings and defaults.

    ``perspective_correct=None`` follows ``cameras.is_perspective()``; ``clip_barycentric_coords=None``
    means ``blur_radius > 0``; ``z_clip_value=None`` means znear/2 for perspective-corrected cameras
    that have a znear (FoV cameras), no clipping otherwise. ``bin_size`` and ``max_faces_per_bin``
    are accepted for compatibility and never change the output.
    """

    image_size: Union[int, Tuple[int, int]] = 256
    blur_radius: float = 0.0
    faces_per_pixel: int = 1
    bin_size: Optional[int] = None
    max_faces_per_bin: Optional[int] = None
    perspective_correct: Optional[bool] = None
    clip_barycentric_coords: Optional[bool] = None
    cull_backfaces: bool = False
    z_clip_value: Optional[float] = None
    cull_to_frustum: bool = False

    def __post_init__(self):
        check_raster_settings(self.image_size, self.blur_radius, self.faces_per_pixel)


class Fragments(NamedTuple):
    """Rasterizer output: (N, H, W, K) ``pix_to_face`` (int64, -1 empty), ``zbuf`` (view Z),
    ``bary_coords`` (N, H, W, K, 3) and ``dists`` (signed squared NDC distance, negative inside)."""

    pix_to_face: torch.Tensor
    zbuf: torch.Tensor
    bary_coords: torch.Tensor
    dists: torch.Tensor

    def detach(self) -> "Fragments":
        return Fragments(*(t.detach() for t in self))


def check_batch(n_meshes: int, cameras) -> None:
    if len(cameras) not in (1, n_meshes):
        raise P3DLabValueError(
            f"{len(cameras)} cameras for {n_meshes} meshes: give one camera, or one per mesh "
            "(meshes.extend(n) repeats a mesh)"
        )


class MeshRasterizer(torch.nn.Module):
    """World-space meshes -> ``Fragments`` through ``cameras`` (given here or at call time)."""

    def __init__(self, cameras=None, raster_settings: Optional[RasterizationSettings] = None):
        super().__init__()
        self.cameras = cameras
        self.raster_settings = raster_settings if raster_settings is not None else RasterizationSettings()

    def to(self, device):
        if self.cameras is not None:
            self.cameras = self.cameras.to(device)
        return self

    def _cameras(self, kwargs):
        cameras = kwargs.get("cameras", self.cameras)
        if cameras is None:
            raise P3DLabValueError(
                "MeshRasterizer needs cameras: MeshRasterizer(cameras=...) or rasterizer(meshes, cameras=...)"
            )
        return cameras

    def transform(self, meshes_world, **kwargs):
        """Project vertices: (x_ndc, y_ndc) with the view Z as third coordinate
        (docs/conventions.md#what-the-rasterizers-see).

        Returns the projected meshes and (x, y) before the perspective division (for z-clipping).
        """
        cameras = self._cameras(kwargs)
        check_batch(len(meshes_world), cameras)
        verts_world = meshes_world.verts_padded()
        if verts_world.dtype != cameras.R.dtype:
            raise P3DLabValueError(f"meshes are {verts_world.dtype} but cameras are {cameras.R.dtype}: use one dtype")
        view = cameras.get_world_to_view_transform(**kwargs).transform_points(verts_world)
        proj = cameras.get_projection_transform(**kwargs).compose(cameras.get_ndc_camera_transform(**kwargs))
        M = proj.get_matrix()
        h = view @ M[:, :3, :] + M[:, 3:, :]  # homogeneous (x, y, z, w)
        # |w| is kept >= 1e-10 (sign kept) so a vertex exactly on the camera plane projects far
        # away instead of to inf/NaN, and its (zero) gradient stays finite.
        w = h[..., 3:]
        w = torch.where(w.abs() < 1e-10, torch.where(w < 0, -1e-10, 1e-10).to(w), w)
        verts_ndc = torch.cat([h[..., :2] / w, view[..., 2:3]], -1)
        xy_h = None
        if cameras.is_perspective():  # w = Z_view: (x_ndc Z, y_ndc Z) for exact z-clipping
            xy_h = h[..., :2].reshape(-1, 2)[meshes_world.verts_padded_to_packed_idx()]
        return meshes_world.update_padded(verts_ndc), xy_h

    def resolved_settings(self, **kwargs) -> RasterizationSettings:
        """The settings with their None defaults resolved for the cameras in use."""
        cameras = self._cameras(kwargs)
        rs = kwargs.get("raster_settings", self.raster_settings)
        persp = rs.perspective_correct if rs.perspective_correct is not None else cameras.is_perspective()
        clip = rs.clip_barycentric_coords if rs.clip_barycentric_coords is not None else rs.blur_radius > 0
        z_clip = rs.z_clip_value
        if z_clip is None and persp and cameras.get_znear() is not None:
            znear = kwargs.get("znear", cameras.get_znear())
            z_clip = float(torch.as_tensor(znear).min()) / 2.0
        return replace(rs, perspective_correct=persp, clip_barycentric_coords=clip, z_clip_value=z_clip)

    def forward(self, meshes_world, **kwargs) -> Fragments:
        rs = self.resolved_settings(**kwargs)
        meshes_proj, xy_h = self.transform(meshes_world, **kwargs)
        out = rasterize_meshes(
            meshes_proj,
            image_size=rs.image_size,
            blur_radius=rs.blur_radius,
            faces_per_pixel=rs.faces_per_pixel,
            bin_size=rs.bin_size,
            max_faces_per_bin=rs.max_faces_per_bin,
            perspective_correct=rs.perspective_correct,
            clip_barycentric_coords=rs.clip_barycentric_coords,
            cull_backfaces=rs.cull_backfaces,
            z_clip_value=rs.z_clip_value,
            cull_to_frustum=rs.cull_to_frustum,
            verts_xy_homogeneous=xy_h,
        )
        return Fragments(*out)
