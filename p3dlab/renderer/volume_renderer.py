"""``VolumeSampler``, ``VolumeRenderer`` and ``ImplicitRenderer`` in PyTorch3D's shape.

Renderers return ``(images, ray_bundle)`` with images (N, ..., C + 1): the marcher's features and
opacity for every ray of the sampler (an (N, H, W, C + 1) image for a grid sampler).
``VolumeRenderer.render`` returns a ``VolumeRendering`` with the expected depth (and, on the
reference path, the per-sample weights) as well: results are returned, never stored on a module.

``VolumeRenderer`` runs sampling and marching in one fused Numba kernel (``p3dlab.ops.march_volumes``)
whenever the marcher is ``EmissionAbsorptionRaymarcher`` (surface thickness 1) or
``QuadratureRaymarcher`` with trilinear sampling; otherwise (or with ``fused=False``) it samples
with ``VolumeSampler`` and calls the marcher, the reference path.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.volume_sampling import march_volumes, sample_grid
from p3dlab.renderer.raymarching import EmissionAbsorptionRaymarcher, QuadratureRaymarcher
from p3dlab.renderer.raysampling import RayBundle, ray_bundle_to_ray_points


class VolumeRendering(NamedTuple):
    """What ``VolumeRenderer.render`` computes: ``images`` (N, ..., C + 1) and ``ray_bundle`` as
    ``forward`` returns them; ``depth`` (N, ..., 1), the expected depth Σ w_i t_i (None for a marcher
    that has none); ``weights`` (N, ..., P), the per-sample weights w_i (None when the fused kernel
    marched the rays: it composites sample by sample and never holds them all)."""

    images: torch.Tensor
    ray_bundle: RayBundle
    depth: Optional[torch.Tensor]
    weights: Optional[torch.Tensor]


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
            if self.sample_mode == "bilinear" and self.padding_mode == "zeros":
                out = sample_grid(field, local.to(field.dtype), vol.align_corners)
                return out.reshape(*pts.shape[:-1], field.shape[1])
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
    """``renderer(cameras, volumes)`` -> ``(images (N, ..., C + 1), ray_bundle)``.

    Args:
        raysampler, raymarcher: as in PyTorch3D.
        sample_mode: "bilinear" (trilinear) or "nearest".
        fused: use the fused Numba kernel when the marcher allows it (default True).
    """

    def __init__(self, raysampler, raymarcher, sample_mode: str = "bilinear", fused: bool = True):
        super().__init__()
        self.raysampler, self.raymarcher, self.sample_mode = raysampler, raymarcher, sample_mode
        self.fused = fused

    def _fused_mode(self, bundle):
        m = self.raymarcher
        if not self.fused or self.sample_mode != "bilinear" or bundle.lengths.requires_grad:
            return None
        if type(m) is EmissionAbsorptionRaymarcher and m.surface_thickness == 1:
            return "ea"
        if type(m) is QuadratureRaymarcher:
            return "quadrature"
        return None

    def forward(self, cameras, volumes, **kwargs):
        images, bundle, _, _ = self.render(cameras, volumes, **kwargs)
        return images, bundle

    def render(self, cameras, volumes, **kwargs) -> VolumeRendering:
        """As ``forward``, with the depth and weights the march computed (``VolumeRendering``)."""
        bundle = self.raysampler(cameras, **kwargs)
        mode = self._fused_mode(bundle)
        if mode is not None:
            images, depth = self._forward_fused(volumes, bundle, mode, kwargs.get("eps", 1e-10))
            return VolumeRendering(images, bundle, depth, None)
        densities, features = VolumeSampler(volumes, self.sample_mode)(bundle)
        marcher_args = dict(lengths=bundle.lengths, directions=bundle.directions)
        if isinstance(self.raymarcher, QuadratureRaymarcher):
            result = self.raymarcher.march(densities, features, **marcher_args)
            images = torch.cat([result.features, result.opacity], -1)
            return VolumeRendering(images, bundle, result.depth, result.weights)
        return VolumeRendering(self.raymarcher(densities, features, **marcher_args), bundle, None, None)

    def _forward_fused(self, volumes, bundle, mode, eps):
        """Images and expected depth (quadrature; None for PyTorch3D's EA marcher, which has none)."""
        m = self.raymarcher
        last = getattr(m, "last_delta", "interval")
        feats, opacity, depth, _ = march_volumes(volumes, bundle, mode, eps, m.termination_threshold, last)
        if mode != "quadrature":
            return torch.cat([feats, opacity], -1), None
        if m.background is not None:
            bg = torch.as_tensor(m.background, dtype=feats.dtype, device=feats.device)
            feats = feats + (1.0 - opacity) * bg
        return torch.cat([feats, opacity], -1), depth


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
