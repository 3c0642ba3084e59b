"""Multi-view volume reconstruction (the book's chapter 5, at CPU size): fit a density + colour voxel
grid to images with the volume renderer.

The model stores unconstrained parameters per voxel; the rendered grid holds densities
``σ = density_scale · softplus(raw)`` (extinction per world unit, for the quadrature marcher) and
colours ``sigmoid(raw_colour)``. It starts as a faint fog of known opacity along the box diagonal
rather than the book's sigmoid(−4) per sample, whose opacity depends on the number of samples
(docs/errata.md#e55).

Rays are clipped to the grid's box so every sample lands inside it (docs/errata.md#e54), jittered within their
interval at training time, and the samples are composited by the fused Numba kernel
(``VolumeRenderer`` → ``march_volumes``).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F

from p3dlab.common.history import FitHistory
from p3dlab.errors import P3DLabValueError
from p3dlab.loss.image_losses import psnr
from p3dlab.ops.stratified import stratified_jitter
from p3dlab.renderer.raysampling import NDCMultinomialRaysampler, RayBundle, clip_ray_bundle_to_aabb
from p3dlab.structures.volumes import Volumes

MAX_GRID = 256  # 256³ × 4 channels × 3 (parameters, Adam's two moments) ≈ 0.8 GB in float32


class VoxelRadianceField(torch.nn.Module):
    """A (grid_size)³ density + RGB grid spanning ``[-half_extent, half_extent]³`` (voxel centres).

    Args:
        grid_size: voxels per side (2 … 256).
        half_extent: half the side of the box in world units.
        density_scale: σ = density_scale · softplus(raw); larger values let the optimiser reach
            opaque surfaces in fewer steps.
        init_opacity: opacity of the initial uniform fog along one side of the box.
    """

    def __init__(
        self, grid_size: int = 64, half_extent: float = 1.1, density_scale: float = 10.0, init_opacity: float = 0.5
    ):
        super().__init__()
        if not (isinstance(grid_size, int) and 2 <= grid_size <= MAX_GRID):
            raise P3DLabValueError(f"VoxelRadianceField: grid_size must be an int in [2, {MAX_GRID}], got {grid_size}")
        if not (half_extent > 0 and density_scale > 0 and 0 < init_opacity < 1):
            raise P3DLabValueError("VoxelRadianceField: need half_extent > 0, density_scale > 0, 0 < init_opacity < 1")
        self.grid_size, self.half_extent, self.density_scale = grid_size, float(half_extent), float(density_scale)
        sigma0 = -math.log(1.0 - init_opacity) / (2.0 * half_extent)
        raw0 = math.log(math.expm1(sigma0 / density_scale))  # softplus^-1
        S = grid_size
        self.raw_density = torch.nn.Parameter(torch.full((1, 1, S, S, S), raw0))
        self.raw_colour = torch.nn.Parameter(torch.zeros(1, 3, S, S, S))

    @property
    def voxel_size(self) -> float:
        return 2.0 * self.half_extent / (self.grid_size - 1)

    def densities(self) -> torch.Tensor:
        return self.density_scale * F.softplus(self.raw_density)

    def volumes(self) -> Volumes:
        return Volumes(self.densities(), torch.sigmoid(self.raw_colour), voxel_size=self.voxel_size)

    def box(self) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        h = self.half_extent
        return (-h, -h, -h), (h, h, h)

    def rays(self, cameras, image_size: Tuple[int, int], n_pts: int, generator=None) -> RayBundle:
        """One ray per pixel, ``n_pts`` samples spread over the part inside the box; with a
        ``generator``, each sample is jittered uniformly within its interval (stratified)."""
        H, W = image_size
        bundle = NDCMultinomialRaysampler(W, H, 2, 0.1, 1.0)(cameras)
        lo, hi = self.box()
        bundle = clip_ray_bundle_to_aabb(bundle, lo, hi, n_pts)
        return jitter_samples(bundle, generator) if generator is not None else bundle

    def render(self, cameras, image_size: Tuple[int, int], n_pts: int = 64, generator=None) -> torch.Tensor:
        """(N, H, W, 4) RGB + opacity images (black background). With gradients on, the fused kernel
        keeps the samples for a faster backward (``march_volumes(keep_samples=True)``: N·H·W·n_pts·4
        values)."""
        return self.render_rays(self.rays(cameras, image_size, n_pts, generator))

    def render_rays(self, bundle: RayBundle) -> torch.Tensor:
        """``render`` of the rays of ``bundle`` (from ``rays``)."""
        from p3dlab.ops.volume_sampling import march_volumes

        feats, opacity, _, _ = march_volumes(self.volumes(), bundle, "quadrature", keep_samples=True)
        return torch.cat([feats, opacity], -1)

    def render_loss(self, bundle: RayBundle, images: torch.Tensor, masks: torch.Tensor):
        """``(loss, rgba)``: the fitting loss ``MSE(rgb, images) + MSE(opacity, masks)`` of the rays
        of ``bundle`` (from ``rays``; images (N, H, W, 3), masks (N, H, W)) and the rendered (N, H, W,
        4) RGB + opacity images, without gradient (the loss carries it). The same values as
        ``render_rays`` followed by the two ``F.mse_loss``, in one fused kernel on the CPU that
        scatters the loss's gradient while it marches each ray (``march_volumes_mse``) and applies
        the activations to the raw parameters itself (``raw_density_scale``)."""
        from p3dlab.ops.volume_fit_loss import march_volumes_mse

        raw = Volumes(self.raw_density, self.raw_colour, voxel_size=self.voxel_size)
        loss, feats, opacity = march_volumes_mse(raw, bundle, images, masks, raw_density_scale=self.density_scale)
        return loss, torch.cat([feats, opacity], -1)

    def to_mesh(self, opacity_per_voxel: float = 0.2):
        """The fitted surface as a ``Meshes`` with vertex colours: marching cubes on σ at the level
        where one voxel of matter absorbs ``opacity_per_voxel`` (σ δ = −ln(1 − α)), colours sampled
        from the colour grid at the vertices (``isosurface``)."""
        from p3dlab.volumes.surface import isosurface

        if not 0 < opacity_per_voxel < 1:
            raise P3DLabValueError("to_mesh: opacity_per_voxel must be in (0, 1)")
        level = -math.log(1.0 - opacity_per_voxel) / self.voxel_size
        with torch.no_grad():
            return isosurface(self.volumes(), level, colours=True)


def select_views(bundle: RayBundle, views) -> RayBundle:
    """The rays of the cameras ``views`` (indices into the bundle's first axis)."""
    return RayBundle(bundle.origins[views], bundle.directions[views], bundle.lengths[views], bundle.xys[views])


def jitter_samples(bundle: RayBundle, generator: torch.Generator) -> RayBundle:
    """Stratified sampling: move each sample uniformly within ±half the ray's (even) sample spacing
    (``p3dlab.ops.stratified_jitter``, one seed drawn from ``generator``)."""
    if bundle.lengths.shape[-1] < 2:
        return bundle
    lengths = stratified_jitter(bundle.lengths, generator)
    return RayBundle(bundle.origins, bundle.directions, lengths, bundle.xys)


def evaluate(model: VoxelRadianceField, split, n_pts: int = 64) -> Tuple[float, torch.Tensor]:
    """Held-out PSNR (dB) of the RGB renders against ``split.images`` and the renders."""
    with torch.no_grad():
        images = model.render(split.cameras, tuple(split.images.shape[1:3]), n_pts)
    return float(psnr(images[..., :3], split.images)), images


def fit_volume(
    model: VoxelRadianceField,
    train,
    test=None,
    iterations: int = 200,
    views_per_step: int = 4,
    n_pts: int = 64,
    lr: float = 0.1,
    lr_final: float = 0.005,
    eval_every: int = 25,
    target_psnr: Optional[float] = None,
    seed: int = 0,
    callback: Optional[Callable[[int, float, Optional[float], torch.Tensor], None]] = None,
) -> FitHistory:
    """Fit ``model`` to a ``MultiViewSplit`` with Adam (cosine schedule from ``lr`` to ``lr_final``,
    one optimiser throughout, docs/errata.md#e56) on ``MSE(rgb) + MSE(opacity, mask)``.

    Every ``eval_every`` steps (and at the end) the held-out PSNR on ``test`` is recorded; the time
    to first reach ``target_psnr`` is stored in ``history.seconds_to_target``. ``callback(step,
    loss, test_psnr or None, preview)`` is called after every step (preview: the first training
    view of the batch)."""
    if iterations < 1 or views_per_step < 1 or n_pts < 2:
        raise P3DLabValueError("fit_volume: need iterations >= 1, views_per_step >= 1, n_pts >= 2")
    gen = torch.Generator().manual_seed(seed)
    # fused: one kernel for all parameters (64³ RGB grid: 0.3 ms a step, against 3-4 ms for torch's
    # default per-tensor loop on the CPU)
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iterations, eta_min=lr_final)
    size = tuple(train.images.shape[1:3])
    hist = FitHistory(target_psnr=target_psnr)
    # the training views' rays, clipped to the box, once (3 ms a step for 4 views at 64²); each step
    # jitters the samples of its views' rays
    view_rays = model.rays(train.cameras, size, n_pts)
    for step in range(iterations):
        idx = torch.randperm(len(train), generator=gen)[: min(views_per_step, len(train))].tolist()
        batch = train[idx]
        loss, images = model.render_loss(jitter_samples(select_views(view_rays, idx), gen), batch.images, batch.masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        loss_value = hist.record(step, loss)
        value = None
        if test is not None and len(test) and hist.evaluation_due(step, eval_every, iterations):
            value, _ = evaluate(model, test, n_pts)
            hist.record_test(step, value)
        if callback is not None:
            callback(step, loss_value, value, images[0].detach())
    return hist
