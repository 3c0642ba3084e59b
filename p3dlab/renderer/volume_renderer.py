"""``VolumeSampler``, ``VolumeRenderer`` and ``ImplicitRenderer`` in PyTorch3D's shape.

Renderers return ``(images, ray_bundle)`` with images (N, ..., C + 1): the marcher's features and
opacity for every ray of the sampler (an (N, H, W, C + 1) image for a grid sampler).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from p3dlab.errors import P3DLabValueError
from p3dlab.renderer.raysampling import RayBundle, ray_bundle_to_ray_points


class VolumeSampler(torch.nn.Module):
    """Trilinear samples of a ``Volumes`` at the points of a ray bundle (``grid_sample`` semantics:
    corners outside the grid contribute 0 with ``padding_mode="zeros"``). Volumes without features
    use their densities as a single feature channel."""

    def __init__(self, volumes, sample_mode: str = "bilinear", padding_mode: str = "zeros"):
        super().__init__()
        if sample_mode not in ("bilinear", "nearest"):
            raise P3DLabValueError(f"VolumeSampler: unknown sample_mode {sample_mode!r}")
        self._volumes, self.sample_mode, self.padding_mode = volumes, sample_mode, padding_mode

    def forward(self, ray_bundle: RayBundle, **kwargs):
        vol = self._volumes
        pts = ray_bundle_to_ray_points(ray_bundle)  # (N, ..., P, 3)
        n = pts.shape[0]
        if len(vol) not in (1, n):
            raise P3DLabValueError(f"{len(vol)} volumes for {n} ray batches")
        local = (
            vol.world_to_local_coords(pts.reshape(n, -1, 3))
            if len(vol) == n
            else vol.world_to_local_coords(pts.reshape(1, -1, 3)).reshape(n, -1, 3)
        )
        grid = local.reshape(n, 1, 1, -1, 3)

        def sample(field):
            field = field.expand(n, *field.shape[1:]) if field.shape[0] == 1 else field
            out = F.grid_sample(
                field,
                grid.to(field.dtype),
                mode=self.sample_mode,
                padding_mode=self.padding_mode,
                align_corners=vol.align_corners,
            )
            return out.reshape(n, field.shape[1], -1).transpose(1, 2).reshape(*pts.shape[:-1], field.shape[1])

        densities = sample(vol.densities())
        features = sample(vol.features()) if vol.features() is not None else densities
        return densities, features


class VolumeRenderer(torch.nn.Module):
    def __init__(self, raysampler, raymarcher, sample_mode: str = "bilinear"):
        super().__init__()
        self.raysampler, self.raymarcher, self.sample_mode = raysampler, raymarcher, sample_mode

    def forward(self, cameras, volumes, **kwargs):
        bundle = self.raysampler(cameras, **kwargs)
        densities, features = VolumeSampler(volumes, self.sample_mode)(bundle)
        images = self.raymarcher(densities, features, lengths=bundle.lengths, directions=bundle.directions)
        return images, bundle


class ImplicitRenderer(torch.nn.Module):
    """``renderer(cameras, volumetric_function)``: the function receives ``ray_bundle=`` (and the
    call's other keyword arguments) and returns (densities (…, P, 1), features (…, P, C))."""

    def __init__(self, raysampler, raymarcher):
        super().__init__()
        self.raysampler, self.raymarcher = raysampler, raymarcher

    def forward(self, cameras, volumetric_function, **kwargs):
        bundle = self.raysampler(cameras, **{k: v for k, v in kwargs.items() if k == "generator"})
        densities, features = volumetric_function(
            ray_bundle=bundle, cameras=cameras, **{k: v for k, v in kwargs.items() if k != "generator"}
        )
        images = self.raymarcher(densities, features, lengths=bundle.lengths, directions=bundle.directions)
        return images, bundle
