"""Rendering and training of radiance fields on a ``MultiViewSplit`` (``p3dlab.data.multiview_dataset``).

``render_rays`` renders a ray bundle with stratified coarse samples and, optionally, hierarchical fine
samples (``p3dlab.nerf.sampling``) and the quadrature marcher. ``render_image`` renders whole images
in chunks of rays so memory stays flat. ``fit_nerf`` trains any volumetric function (the hybrid
field or the book's MLP) on random pixels of the training views.

Pixels are sampled at their exact centres, so the targets are the stored pixel values: no
``grid_sample`` of the image is needed (and none can be flipped, docs/errata.md#e61).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F

from p3dlab.common.history import FitHistory
from p3dlab.errors import P3DLabValueError
from p3dlab.loss.image_losses import huber, psnr
from p3dlab.nerf.sampling import importance_resample
from p3dlab.ops.pixels import pixel_centres
from p3dlab.renderer.raymarching import QuadratureRaymarcher
from p3dlab.renderer.raysampling import near_far_from_sphere, rays_from_xy


def total_variation(grid: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring voxels of an (N, C, D, H, W) grid."""
    return (
        (grid[:, :, 1:] - grid[:, :, :-1]).pow(2).mean()
        + (grid[:, :, :, 1:] - grid[:, :, :, :-1]).pow(2).mean()
        + (grid[..., 1:] - grid[..., :-1]).pow(2).mean()
    )


def render_rays(
    field,
    bundle,
    n_fine: int = 0,
    stratified_fine: bool = True,
    generator: Optional[torch.Generator] = None,
    background: Optional[Tuple[float, float, float]] = None,
):
    """Render a bundle: returns ``(rgb, opacity, depth, rgb_coarse)`` with rgb (…, 3), opacity and
    depth (…, 1); ``rgb_coarse`` is None without a fine pass."""
    marcher = QuadratureRaymarcher(background=background)
    coarse = marcher.march(*field(ray_bundle=bundle), lengths=bundle.lengths, directions=bundle.directions)
    if n_fine <= 0:
        return coarse.features, coarse.opacity, coarse.depth, None
    fine = importance_resample(bundle, coarse.weights, n_fine, not stratified_fine, generator)
    result = marcher.march(*field(ray_bundle=fine), lengths=fine.lengths, directions=fine.directions)
    return result.features, result.opacity, result.depth, coarse.features


#: Field evaluations one chunk of ``render_image`` holds at once. Each is a row of every tensor the
#: field makes: with the book's L = 60 embedding (360 features) a tensor of 2^16 rows is 94 MB, and
#: an embedding makes about four (phases, sines, cosines, their concatenation).
POINTS_PER_CHUNK = 2**16


def render_image(
    field,
    cameras,
    image_size: Tuple[int, int],
    near: float,
    far: float,
    n_coarse: int = 64,
    n_fine: int = 0,
    chunk: Optional[int] = None,
) -> torch.Tensor:
    """(N, H, W, 4) RGB + opacity renders, ``chunk`` rays at a time, without gradients.

    ``chunk=None`` takes as many rays as make ``POINTS_PER_CHUNK`` field evaluations (a ray costs
    ``n_coarse`` of them, plus ``n_coarse + n_fine`` with a fine pass), so memory stays flat however
    many samples a ray has."""
    if chunk is None:
        per_ray = n_coarse + (n_coarse + n_fine if n_fine > 0 else 0)
        chunk = max(1, POINTS_PER_CHUNK // max(per_ray, 1))
    elif chunk < 1:
        raise P3DLabValueError(f"render_image: chunk must be a positive number of rays, got {chunk}")
    H, W = image_size
    x, y = pixel_centres(H, W, cameras.R.dtype, cameras.device)
    xy = torch.stack([x, y], -1).reshape(-1, 2)
    out = []
    with torch.no_grad():
        for n in range(len(cameras)):
            cam = cameras[n]
            parts = []
            for s in range(0, xy.shape[0], chunk):
                bundle = rays_from_xy(cam, xy[None, s : s + chunk], n_coarse, near, far)
                rgb, opacity, _, _ = render_rays(field, bundle, n_fine, stratified_fine=False)
                parts.append(torch.cat([rgb, opacity], -1)[0])
            out.append(torch.cat(parts).reshape(H, W, 4))
    return torch.stack(out)


def fit_nerf(
    field: torch.nn.Module,
    train,
    test=None,
    iterations: int = 300,
    rays_per_step: int = 1024,
    views_per_step: int = 4,
    n_coarse: int = 48,
    n_fine: int = 0,
    scene_radius: float = 1.2,
    lr: float = 0.05,
    lr_mlp: Optional[float] = None,
    lr_final_ratio: float = 0.05,
    loss: str = "mse",
    mask_weight: float = 1.0,
    tv_weight: float = 0.01,
    eval_every: int = 50,
    target_psnr: Optional[float] = None,
    seed: int = 0,
    progress: bool = False,
    callback: Optional[Callable[[int, float, Optional[float]], None]] = None,
) -> FitHistory:
    """Train ``field`` on random pixels of ``train`` with Adam and a cosine schedule.

    Each step draws ``rays_per_step`` pixels from ``views_per_step`` random views, renders them
    (``n_coarse`` stratified samples between the near/far of a sphere of ``scene_radius``, plus
    ``n_fine`` hierarchical samples) and minimises the colour loss ("mse" or the book's pseudo-Huber
    "huber") of the fine and coarse renders plus ``mask_weight`` × MSE(opacity, mask) plus
    ``tv_weight`` × the total variation of every ``grid`` parameter (smooths away speckle). Parameters
    named ``grid`` use ``lr``; the others ``lr_mlp`` (default ``lr / 10``). Held-out PSNR on ``test``
    is recorded every ``eval_every`` steps; ``callback(step, loss, test_psnr or None)`` runs after each
    step; ``progress`` shows a tqdm bar."""
    if loss not in ("mse", "huber"):
        raise P3DLabValueError(f"fit_nerf: loss must be 'mse' or 'huber', got {loss!r}")
    if iterations < 1 or rays_per_step < 1 or views_per_step < 1 or n_coarse < 2:
        raise P3DLabValueError("fit_nerf: need iterations, rays_per_step, views_per_step >= 1 and n_coarse >= 2")
    colour_loss = F.mse_loss if loss == "mse" else huber
    gen = torch.Generator().manual_seed(seed)
    grid_params = [p for n, p in field.named_parameters() if n.split(".")[-1] == "grid"]
    other = [p for n, p in field.named_parameters() if n.split(".")[-1] != "grid"]
    groups = [{"params": grid_params, "lr": lr}] if grid_params else []
    if other:
        groups.append({"params": other, "lr": lr_mlp if lr_mlp is not None else lr / 10})
    opt = torch.optim.Adam(groups, fused=True)  # one kernel for all parameters (see fit_volume)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: lr_final_ratio + (1 - lr_final_ratio) * 0.5 * (1 + math.cos(math.pi * k / iterations))
    )
    near, far = near_far_from_sphere(train.cameras, radius=scene_radius)
    H, W = train.images.shape[1:3]
    x, y = pixel_centres(H, W, train.cameras.R.dtype)
    xy_all = torch.stack([x, y], -1).reshape(-1, 2)
    per_view = max(rays_per_step // views_per_step, 1)
    steps = range(iterations)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="training")
    hist = FitHistory(target_psnr=target_psnr)
    for step in steps:
        views = torch.randperm(len(train), generator=gen)[: min(views_per_step, len(train))]
        pix = torch.randint(0, H * W, (len(views), per_view), generator=gen)
        bundle = rays_from_xy(
            train.cameras[views.tolist()], xy_all[pix], n_coarse, near, far, stratified=True, generator=gen
        )
        rgb, opacity, _, rgb_coarse = render_rays(field, bundle, n_fine, generator=gen)
        target = train.images.reshape(len(train), -1, 3)[views[:, None], pix]
        mask = train.masks.reshape(len(train), -1)[views[:, None], pix]
        value = colour_loss(rgb, target) + mask_weight * F.mse_loss(opacity[..., 0], mask)
        if rgb_coarse is not None:
            value = value + colour_loss(rgb_coarse, target)
        if tv_weight > 0:
            value = value + tv_weight * sum(total_variation(p) for p in grid_params)
        opt.zero_grad()
        value.backward()
        opt.step()
        sched.step()
        loss_value = hist.record(step, value)
        test_value = None
        if test is not None and len(test) and hist.evaluation_due(step, eval_every, iterations):
            images = render_image(field, test.cameras, (H, W), near, far, n_coarse, n_fine)
            test_value = float(psnr(images[..., :3], test.images))
            hist.record_test(step, test_value)
        if callback is not None:
            callback(step, loss_value, test_value)
    return hist
