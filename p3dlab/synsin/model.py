"""SynSin's pipeline, CPU-sized (docs/synsin.md#the-pipeline).

    input image, depth ──unproject──> point cloud (source view) ──features──> (P, C)
        ──(R, T)──> target view ──splat (point rasterizer + compositor)──> feature image
        ──refinement U-Net──> novel view

Each step is a function of its own so that a lesson can run them one at a time:

* ``unproject_depth``: pixel centre (x, y) in NDC with view depth Z -> ``(x Z / f, y Z / f, Z)``
  (the inverse of the pinhole projection ``x = f X / Z``), through ``PerspectiveCameras.unproject_points``.
* ``splat_fragments``: the points moved by ``X R + T`` and rasterized with the kit's point rasterizer;
  each of the K nearest points of a pixel gets SynSin's opacity
  ``alpha = (1 - sqrt(clamp(d^2 / r^2, 1e-3, 1)))^tau`` from its squared NDC distance ``d^2`` to the
  pixel centre (``r = 2 r_px / S`` is the radius in NDC).
* ``composite``: the kit's alpha / weighted-sum / normalised weighted-sum compositors.
* ``SynSin``: per-point features from a small CNN on the input image, the splat, and a U-Net that
  turns the splatted features into colours and fills what no point covers (disocclusions, the image
  border that moved into view).
"""

from __future__ import annotations

import math
from typing import Dict, NamedTuple, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.pixels import pixel_centres
from p3dlab.renderer import PerspectiveCameras, PointsRasterizationSettings, PointsRasterizer
from p3dlab.renderer.compositing import alpha_composite, norm_weighted_sum, weighted_sum
from p3dlab.structures import Pointclouds

__all__ = [
    "COMPOSITORS",
    "SplatFragments",
    "SynSin",
    "composite",
    "coverage",
    "splat",
    "splat_fragments",
    "synsin_alphas",
    "unproject_depth",
]

COMPOSITORS: Dict[str, object] = {
    "alpha": alpha_composite,
    "weighted_sum": weighted_sum,
    "norm_weighted_sum": norm_weighted_sum,
}


class SplatFragments(NamedTuple):
    """Per pixel, the K nearest points after the motion: ``idx`` (N, K, H, W) packed point indices
    (cloud n's points are ``n P ... n P + P - 1``; -1 where empty), ``alphas`` (N, K, H, W) their
    opacities, ``zbuf`` (N, K, H, W) their target-view depths (-1 where empty)."""

    idx: torch.Tensor
    alphas: torch.Tensor
    zbuf: torch.Tensor


def _check_depth(depth: torch.Tensor, op: str) -> None:
    if not isinstance(depth, torch.Tensor) or depth.ndim != 3 or not depth.is_floating_point():
        raise P3DLabValueError(f"{op}: depth must be a floating-point (N, H, W) tensor, got {_describe(depth)}")
    if depth.shape[1] < 2 or depth.shape[2] < 2:
        raise P3DLabValueError(f"{op}: depth must be at least 2 x 2 pixels, got {tuple(depth.shape[1:])}")
    if not bool(torch.isfinite(depth).all()) or bool((depth <= 0).any()):
        raise P3DLabValueError(f"{op}: depth must be finite and > 0 everywhere (view Z of every pixel)")


def _describe(x) -> str:
    return f"shape {tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__


def _check_focal(focal) -> float:
    if isinstance(focal, bool) or not isinstance(focal, (int, float)) or not math.isfinite(focal) or focal <= 0:
        raise P3DLabValueError(f"focal must be a finite number > 0 (NDC focal length), got {focal!r}")
    return float(focal)


def unproject_depth(depth: torch.Tensor, focal: float) -> torch.Tensor:
    """(N, H, W) view depths -> (N, H W, 3) points in the camera's view frame, row-major pixels.

    Pixel (i, j) has its centre at NDC ``(x, y)`` (``p3dlab.ops.pixels``); with depth Z its point is
    ``(x Z / f, y Z / f, Z)``, computed by ``PerspectiveCameras(focal).unproject_points`` in float32
    (the camera's precision) and returned in ``depth``'s dtype."""
    _check_depth(depth, "unproject_depth")
    focal = _check_focal(focal)
    N, H, W = depth.shape
    x, y = pixel_centres(H, W, dtype=depth.dtype, device=depth.device)
    xy_depth = torch.stack([x.expand(N, H, W), y.expand(N, H, W), depth], -1).reshape(N, H * W, 3)
    cameras = PerspectiveCameras(focal_length=focal, device=depth.device)
    return cameras.unproject_points(xy_depth.to(torch.float32), world_coordinates=False, from_ndc=True).to(depth.dtype)


def synsin_alphas(dists: torch.Tensor, radius_ndc: float, tau: float = 1.0) -> torch.Tensor:
    """SynSin's splat opacity ``(1 - sqrt(clamp(d^2 / r^2, 1e-3, 1)))^tau`` of squared NDC distances
    ``dists`` (the rasterizer's); empty slots (``dists < 0``) get 0."""
    a = (1.0 - torch.sqrt((dists / radius_ndc**2).clamp(1e-3, 1.0))) ** tau
    return torch.where(dists >= 0, a, torch.zeros_like(a))


def _check_splat_args(points, R, T, image_size, radius_px, points_per_pixel, tau, op):
    if not isinstance(points, torch.Tensor) or points.ndim != 3 or points.shape[-1] != 3:
        raise P3DLabValueError(f"{op}: points must be an (N, P, 3) tensor, got {_describe(points)}")
    if points.dtype not in (torch.float32, torch.float64):
        raise P3DLabValueError(f"{op}: points must be float32 or float64, got {points.dtype}")
    N = points.shape[0]
    if not isinstance(R, torch.Tensor) or tuple(R.shape) != (N, 3, 3):
        raise P3DLabValueError(f"{op}: R must be an (N, 3, 3) = ({N}, 3, 3) tensor, got {_describe(R)}")
    if not isinstance(T, torch.Tensor) or tuple(T.shape) != (N, 3):
        raise P3DLabValueError(f"{op}: T must be an (N, 3) = ({N}, 3) tensor, got {_describe(T)}")
    if not (bool(torch.isfinite(R).all()) and bool(torch.isfinite(T).all())):
        raise P3DLabValueError(f"{op}: R and T must be finite")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or not 2 <= image_size <= 1024:
        raise P3DLabValueError(f"{op}: image_size must be an integer in [2, 1024], got {image_size!r}")
    if not isinstance(radius_px, (int, float)) or not math.isfinite(radius_px) or not 0 < radius_px <= 32:
        raise P3DLabValueError(f"{op}: radius_px must be in (0, 32] pixels, got {radius_px!r}")
    if isinstance(points_per_pixel, bool) or not isinstance(points_per_pixel, int) or not 1 <= points_per_pixel <= 128:
        raise P3DLabValueError(f"{op}: points_per_pixel must be an integer in [1, 128], got {points_per_pixel!r}")
    if not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau <= 0:
        raise P3DLabValueError(f"{op}: tau must be a finite number > 0, got {tau!r}")


def splat_fragments(
    points: torch.Tensor,
    R: torch.Tensor,
    T: torch.Tensor,
    focal: float,
    image_size: int,
    radius_px: float = 1.5,
    points_per_pixel: int = 8,
    tau: float = 1.0,
) -> SplatFragments:
    """Move (N, P, 3) source-view points to the target view (``X R + T``), project them with the
    pinhole camera of NDC focal length ``focal`` and rasterize them at ``image_size``² with the kit's
    point rasterizer (radius ``radius_px`` pixels, K = ``points_per_pixel``); opacities by
    ``synsin_alphas``. Differentiable in the points (through the distances)."""
    _check_splat_args(points, R, T, image_size, radius_px, points_per_pixel, tau, "splat_fragments")
    focal = _check_focal(focal)
    radius_ndc = 2.0 * radius_px / image_size
    cameras = PerspectiveCameras(focal_length=focal, R=R.to(points.dtype), T=T.to(points.dtype), device=points.device)
    settings = PointsRasterizationSettings(image_size=image_size, radius=radius_ndc, points_per_pixel=points_per_pixel)
    fragments = PointsRasterizer(cameras, settings)(Pointclouds(points))
    idx = fragments.idx.permute(0, 3, 1, 2).long()
    alphas = synsin_alphas(fragments.dists.permute(0, 3, 1, 2), radius_ndc, tau)
    return SplatFragments(idx, alphas, fragments.zbuf.permute(0, 3, 1, 2))


def composite(fragments: SplatFragments, features: torch.Tensor, compositor: str = "alpha") -> torch.Tensor:
    """Blend (N, P, C) per-point features into (N, C, H, W) images with one of ``COMPOSITORS``
    (alpha: ``sum_k a_k prod_{l<k} (1 - a_l) f_k``; weighted_sum: ``sum_k a_k f_k``;
    norm_weighted_sum: ``sum_k a_k f_k / max(sum_k a_k, 1e-4)``, K nearest first)."""
    if compositor not in COMPOSITORS:
        raise P3DLabValueError(f"composite: compositor must be one of {sorted(COMPOSITORS)}, got {compositor!r}")
    if not isinstance(features, torch.Tensor) or features.ndim != 3:
        raise P3DLabValueError(f"composite: features must be an (N, P, C) tensor, got {_describe(features)}")
    N, P, C = features.shape
    if fragments.idx.shape[0] != N or (fragments.idx.numel() and int(fragments.idx.max()) >= N * P):
        raise P3DLabValueError(f"composite: the fragments index {N} clouds of {P} points; features are {N}x{P}")
    packed = features.reshape(N * P, C).permute(1, 0)
    return COMPOSITORS[compositor](fragments.idx, fragments.alphas.to(features.dtype), packed)


def coverage(fragments: SplatFragments) -> torch.Tensor:
    """(N, 1, H, W) accumulated opacity ``1 - prod_k (1 - a_k)``: 0 where no point lands."""
    return 1.0 - torch.prod(1.0 - fragments.alphas, dim=1, keepdim=True)


def splat(
    image: torch.Tensor,
    depth: torch.Tensor,
    R: torch.Tensor,
    T: torch.Tensor,
    focal: float,
    compositor: str = "alpha",
    radius_px: float = 1.5,
    points_per_pixel: int = 8,
    tau: float = 1.0,
) -> torch.Tensor:
    """The no-network baseline: the input image's colours splatted into the target view,
    (N, H, W, 3) images in, (N, H, W, 3) out (black where no point lands)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[:3] != getattr(depth, "shape", None):
        raise P3DLabValueError(
            f"splat: image must be (N, H, W, C) with depth (N, H, W) of the same size, got {_describe(image)} "
            f"and {_describe(depth)}"
        )
    N, H, W, C = image.shape
    if H != W:
        raise P3DLabValueError(f"splat: images must be square, got {H} x {W}")
    points = unproject_depth(depth, focal)
    frags = splat_fragments(points, R, T, focal, H, radius_px, points_per_pixel, tau)
    return composite(frags, image.reshape(N, H * W, C), compositor).permute(0, 2, 3, 1)


def _conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True))


class _UNet(nn.Module):
    """Three scales (S, S/2, S/4) with skip connections, one convolution at full resolution on each
    side (the costly scale), two below; the last layer starts at zero."""

    def __init__(self, c_in: int, widths: Tuple[int, int, int] = (16, 32, 48)):
        super().__init__()
        a, b, c = widths
        self.enc1 = _conv(c_in, a)
        self.enc2 = nn.Sequential(_conv(a, b), _conv(b, b))
        self.mid = nn.Sequential(_conv(b, c), _conv(c, c))
        self.dec2 = _conv(c + b, b)
        self.dec1 = _conv(b + a, a)
        self.out = nn.Conv2d(a, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.avg_pool2d(e1, 2))
        m = self.mid(F.avg_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([F.interpolate(m, size=e2.shape[-2:]), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[-2:]), e1], 1))
        return self.out(d1)


class SynSin(nn.Module):
    """SynSin, small: per-point features ``[rgb, CNN(image)]`` (3 + ``feature_channels``), splatted with
    ``compositor``; the refinement U-Net sees the splatted features and the coverage and predicts a
    correction of the splatted colours: ``out = rgb_splat + unet([features_splat, coverage])``, clamped
    to [0, 1] in eval mode. Its last layer starts at zero, so an untrained model returns the baseline
    splat. Weights are drawn from ``seed``.

    ``model(image (N, S, S, 3), depth (N, S, S), R (N, 3, 3), T (N, 3), focal)`` -> (N, S, S, 3);
    ``refine=False`` returns the splatted colours alone."""

    def __init__(
        self,
        feature_channels: int = 13,
        compositor: str = "alpha",
        radius_px: float = 1.5,
        points_per_pixel: int = 8,
        tau: float = 1.0,
        widths: Tuple[int, int, int] = (16, 32, 48),
        seed: int = 0,
    ):
        super().__init__()
        if compositor not in COMPOSITORS:
            raise P3DLabValueError(f"SynSin: compositor must be one of {sorted(COMPOSITORS)}, got {compositor!r}")
        if isinstance(feature_channels, bool) or not isinstance(feature_channels, int) or feature_channels < 0:
            raise P3DLabValueError(f"SynSin: feature_channels must be an integer >= 0, got {feature_channels!r}")
        self.compositor, self.radius_px, self.points_per_pixel, self.tau = compositor, radius_px, points_per_pixel, tau
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.features = (
                nn.Sequential(_conv(3, 16), nn.Conv2d(16, feature_channels, 3, padding=1)) if feature_channels else None
            )
            self.refine = _UNet(3 + feature_channels + 1, widths)

    def point_features(self, image: torch.Tensor) -> torch.Tensor:
        """(N, S, S, 3) images -> (N, S S, 3 + C) per-pixel (per-point) features ``[rgb, CNN(image)]``."""
        N, H, W, _ = image.shape
        feats = [image]
        if self.features is not None:
            feats.append(self.features(image.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
        return torch.cat(feats, -1).reshape(N, H * W, -1)

    def fragments(self, depth: torch.Tensor, R: torch.Tensor, T: torch.Tensor, focal: float) -> SplatFragments:
        """Where the points of ``depth`` land in the target view (no learned weights involved)."""
        points = unproject_depth(depth, focal)
        return splat_fragments(points, R, T, focal, depth.shape[-1], self.radius_px, self.points_per_pixel, self.tau)

    def render(self, image: torch.Tensor, fragments: SplatFragments, refine: bool = True) -> torch.Tensor:
        """The network part: features, composite with precomputed ``fragments``, refine."""
        splatted = composite(fragments, self.point_features(image), self.compositor)  # (N, 3 + C, S, S)
        rgb = splatted[:, :3]
        if refine:
            x = torch.cat([splatted, coverage(fragments).to(splatted.dtype)], 1)
            rgb = rgb + self.refine(x)
            if not self.training:  # training sees the raw sum: a clamp would stop the gradient of overshoots
                rgb = rgb.clamp(0.0, 1.0)
        return rgb.permute(0, 2, 3, 1)

    def forward(self, image, depth, R, T, focal: float, refine: bool = True) -> torch.Tensor:
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] != 3:
            raise P3DLabValueError(f"SynSin: image must be an (N, S, S, 3) tensor, got {_describe(image)}")
        if image.shape[1] != image.shape[2]:
            raise P3DLabValueError(f"SynSin: images must be square, got {tuple(image.shape[1:3])}")
        if not isinstance(depth, torch.Tensor) or depth.shape != image.shape[:3]:
            raise P3DLabValueError(f"SynSin: depth must be (N, S, S) like the image, got {_describe(depth)}")
        if image.shape[1] % 4:
            raise P3DLabValueError(f"SynSin: the image size must be a multiple of 4, got {image.shape[1]}")
        return self.render(image, self.fragments(depth, R, T, focal), refine)
