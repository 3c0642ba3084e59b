"""Training and evaluating the small SynSin (docs/synsin.md#training).

The loss is ``L1 + (1 - SSIM)`` between the predicted and the rendered target view (the chapter's
VGG perceptual loss and GAN are left out). Depth is given, so where the points land in the target
view does not depend on any learned weight: ``fit_synsin`` rasterizes every pair once and reuses
those fragments at every step (``SynSin.render``); only the feature CNN, the compositing and the
U-Net run per step.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

from p3dlab.common.history import FitHistory
from p3dlab.errors import P3DLabValueError
from p3dlab.loss import psnr, ssim
from p3dlab.synsin.model import SplatFragments, SynSin, splat, splat_fragments, unproject_depth
from p3dlab.synsin.scenes import RGBDPairs, relative_motion

__all__ = ["evaluate", "evaluate_baseline", "fit_synsin", "sequential_views", "synsin_loss"]


def synsin_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean |prediction - target| + (1 - SSIM(prediction, target))`` of (N, S, S, 3) images."""
    return F.l1_loss(prediction, target) + (1.0 - ssim(prediction, target))


def _check_pairs(pairs, op: str) -> None:
    if not isinstance(pairs, RGBDPairs) or len(pairs) == 0:
        raise P3DLabValueError(f"{op}: expected a non-empty RGBDPairs (p3dlab.synsin.rgbd_pairs), got {pairs!r}")


def _fragments(model: SynSin, pairs: RGBDPairs, chunk: int = 16) -> List[SplatFragments]:
    with torch.no_grad():
        return [
            model.fragments(pairs.depths[i : i + chunk], pairs.R[i : i + chunk], pairs.T[i : i + chunk], pairs.focal)
            for i in range(0, len(pairs), chunk)
        ]


def _select(frags: List[SplatFragments], chunk: int, rows: torch.Tensor) -> SplatFragments:
    """The fragments of pairs ``rows`` as one batch, point indices renumbered for the new batch."""
    parts = []
    for b, r in enumerate(rows.tolist()):
        f = frags[r // chunk]
        k = r % chunk
        P = f.idx.shape[-1] * f.idx.shape[-2]
        idx = f.idx[k]
        idx = torch.where(idx >= 0, idx - k * P + b * P, idx)
        parts.append(SplatFragments(idx, f.alphas[k], f.zbuf[k]))
    return SplatFragments(*(torch.stack(t) for t in zip(*parts)))


def evaluate(model: SynSin, pairs: RGBDPairs, refine: bool = True, chunk: int = 16) -> Dict[str, float]:
    """Mean PSNR (dB) and SSIM of the model's predictions of ``pairs.targets``."""
    _check_pairs(pairs, "evaluate")
    preds = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(pairs), chunk):
            p = pairs[list(range(i, min(i + chunk, len(pairs))))]
            preds.append(model(p.images, p.depths, p.R, p.T, p.focal, refine=refine))
    model.train(was_training)
    pred = torch.cat(preds)
    return {"psnr": float(psnr(pred, pairs.targets)), "ssim": float(ssim(pred, pairs.targets))}


def evaluate_baseline(pairs: RGBDPairs, compositor: str = "alpha", radius_px: float = 1.5, points_per_pixel: int = 8):
    """PSNR and SSIM of the no-network baseline: the input colours splatted (``splat``)."""
    _check_pairs(pairs, "evaluate_baseline")
    with torch.no_grad():
        pred = splat(pairs.images, pairs.depths, pairs.R, pairs.T, pairs.focal, compositor, radius_px, points_per_pixel)
    return {"psnr": float(psnr(pred, pairs.targets)), "ssim": float(ssim(pred, pairs.targets))}


def fit_synsin(
    model: SynSin,
    train: RGBDPairs,
    test: Optional[RGBDPairs] = None,
    iterations: int = 300,
    batch_size: int = 8,
    lr: float = 2e-3,
    lr_final_ratio: float = 0.1,
    eval_every: int = 50,
    target_psnr: Optional[float] = None,
    seed: int = 0,
    callback: Optional[Callable[[int, float, Optional[float]], None]] = None,
) -> FitHistory:
    """Train ``model`` on ``train`` with Adam (cosine decay of ``lr`` to ``lr x lr_final_ratio``) and
    ``synsin_loss`` on random batches of ``batch_size`` pairs (drawn with ``seed``). The held-out PSNR
    on ``test`` is recorded every ``eval_every`` steps and after the last; ``callback(step, loss,
    test_psnr or None)`` runs after each step (e.g. an ``OptimizationMonitor``'s update). Returns a
    ``FitHistory``; ``seconds_to_target`` is when the held-out PSNR first reached ``target_psnr``."""
    _check_pairs(train, "fit_synsin")
    if test is not None:
        _check_pairs(test, "fit_synsin")
    if not isinstance(model, SynSin):
        raise P3DLabValueError(f"fit_synsin: model must be a SynSin, got {type(model).__name__}")
    for name, value in (("iterations", iterations), ("batch_size", batch_size), ("eval_every", eval_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise P3DLabValueError(f"fit_synsin: {name} must be an integer >= 1, got {value!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise P3DLabValueError(f"fit_synsin: lr must be a finite number > 0, got {lr!r}")
    if train.images.shape[1] % 4:
        raise P3DLabValueError(f"fit_synsin: the image size must be a multiple of 4, got {train.images.shape[1]}")
    history = FitHistory(target_psnr=target_psnr)
    chunk = 16
    frags = _fragments(model, train, chunk)
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_final_ratio + (1 - lr_final_ratio) * 0.5 * (1 + math.cos(math.pi * s / iterations))
    )
    batch_size = min(batch_size, len(train))
    model.train()
    for step in range(iterations):
        rows = torch.randperm(len(train), generator=gen)[:batch_size]
        pred = model.render(train.images[rows], _select(frags, chunk, rows))
        loss = synsin_loss(pred, train.targets[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        value = history.record(step, loss)
        test_psnr = None
        if test is not None and FitHistory.evaluation_due(step, eval_every, iterations):
            test_psnr = evaluate(model, test)["psnr"]
            history.record_test(step, test_psnr)
        if callback is not None:
            callback(step, value, test_psnr)
    model.eval()
    return history


def sequential_views(
    model: SynSin, image: torch.Tensor, depth: torch.Tensor, focal: float, motion=(0.06, 0.0, 0.05), steps: int = 5
) -> torch.Tensor:
    """The book's sequential view synthesis: apply the same relative ``motion`` (theta, phi, t_z)
    ``steps`` times, each predicted view fed back as the next input. The next depth map is the
    target-view depth of the nearest splatted point, its holes filled with
    the farthest depth of the view, so errors accumulate from frame to frame, as they do in the book.
    Returns (steps + 1, S, S, 3) float frames in [0, 1], the input first (``p3dlab.video.to_uint8``
    and ``save_video`` turn them into a GIF)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[-1] != 3:
        raise P3DLabValueError(f"sequential_views: image must be one (S, S, 3) image, got {type(image).__name__}")
    if not isinstance(depth, torch.Tensor) or depth.shape != image.shape[:2]:
        raise P3DLabValueError("sequential_views: depth must be one (S, S) depth map like the image")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 100:
        raise P3DLabValueError(f"sequential_views: steps must be an integer in [1, 100], got {steps!r}")
    R, T = relative_motion(*motion)
    frames = [image]
    img, dep = image[None], depth[None]
    with torch.no_grad():
        for _ in range(steps):
            points = unproject_depth(dep, focal)
            frags = splat_fragments(points, R, T, focal, img.shape[1], model.radius_px, model.points_per_pixel)
            img = model.render(img, frags)
            z = frags.zbuf[:, 0]  # the nearest point's target-view depth, -1 where no point landed
            dep = torch.where(z > 0, z, z.max())
            frames.append(img[0])
    return torch.stack(frames).clamp(0, 1)
