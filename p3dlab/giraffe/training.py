"""Training compositional feature fields as an auto-decoder (docs/giraffe.md#training).

No GAN and no encoder: every object of every training scene owns a shape and an appearance code,
and the codes are learned with the networks by plain reconstruction. Each step renders
``scenes_per_step`` random (scene, view) pairs with their known box transforms and minimises

    MSE(rgb, image) + mask_weight · MSE(object opacity, mask ↓) + code_weight · mean(|z|²)

(the mask term on the feature image's grid, the mask average-pooled to it; the code term keeps the
codes near the origin, the auto-decoder's prior). Held-out PSNR is measured on the held-out views of
the same scenes: whether the fields are 3D, not just memorised images.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from p3dlab.common.history import FitHistory
from p3dlab.errors import P3DLabValueError
from p3dlab.giraffe.model import GiraffeModel
from p3dlab.giraffe.scenes import SceneViews, rig_cameras
from p3dlab.loss.image_losses import psnr


def render_all_views(model: GiraffeModel, views: SceneViews, chunk: int = 16) -> torch.Tensor:
    """Every view of ``views`` rendered with the learned codes and true transforms, without
    gradients: (S, V, H, W, 3)."""
    S, V = views.azimuths.shape
    scene = torch.arange(S).repeat_interleave(V)
    view = torch.arange(V).repeat(S)
    out = []
    with torch.no_grad():
        for a in range(0, S * V, chunk):
            sc, vw = scene[a : a + chunk], view[a : a + chunk]
            out.append(model.render_training_scenes(rig_cameras(views.azimuths[sc, vw]), sc, views.layout).rgb)
    return torch.cat(out).reshape(S, V, *out[0].shape[1:])


def evaluate_psnr(model: GiraffeModel, views: SceneViews) -> float:
    """PSNR (dB) of ``render_all_views(model, views)`` against the images."""
    return float(psnr(render_all_views(model, views), views.images))


def fit_giraffe(
    model: GiraffeModel,
    train: SceneViews,
    test: Optional[SceneViews] = None,
    iterations: int = 600,
    scenes_per_step: int = 8,
    lr: float = 3e-3,
    lr_codes: float = 1e-2,
    lr_final_ratio: float = 0.1,
    mask_weight: float = 0.5,
    code_weight: float = 1e-3,
    eval_every: int = 100,
    target_psnr: Optional[float] = None,
    seed: int = 0,
    callback: Optional[Callable[[int, float, Optional[float]], None]] = None,
) -> FitHistory:
    """Train ``model`` on ``train`` with Adam and a cosine schedule; returns a ``FitHistory``
    (``callback(step, loss, test_psnr or None)`` after every step, e.g. an ``OptimizationMonitor``'s)."""
    if iterations < 1 or scenes_per_step < 1 or eval_every < 1:
        raise P3DLabValueError("fit_giraffe: iterations, scenes_per_step and eval_every must be >= 1")
    S, V = train.azimuths.shape
    if S != model.shape_codes.shape[0] or model.shape_codes.shape[1] != train.layout.shapes.shape[1]:
        raise P3DLabValueError(
            f"fit_giraffe: the model has codes for {tuple(model.shape_codes.shape[:2])} (scenes, objects), "
            f"the data has {(S, train.layout.shapes.shape[1])}"
        )
    H = train.images.shape[2]
    if H != model.image_size:
        raise P3DLabValueError(f"fit_giraffe: the model renders {model.image_size}² images, the data is {H}²")
    gen = torch.Generator().manual_seed(seed)
    codes = [model.shape_codes, model.appearance_codes]
    networks = [p for n, p in model.named_parameters() if not n.endswith("_codes")]
    opt = torch.optim.Adam([{"params": networks, "lr": lr}, {"params": codes, "lr": lr_codes}])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: lr_final_ratio + (1 - lr_final_ratio) * 0.5 * (1 + math.cos(math.pi * k / iterations))
    )
    pool = H // model.feature_size
    hist = FitHistory(target_psnr=target_psnr)
    for step in range(iterations):
        pick = torch.randperm(S * V, generator=gen)[: min(scenes_per_step, S * V)]
        scene, view = pick // V, pick % V
        out = model.render_training_scenes(
            rig_cameras(train.azimuths[scene, view]), scene, train.layout, stratified=True, generator=gen
        )
        target = train.images[scene, view]
        mask = F.avg_pool2d(train.masks[scene, view][:, None], pool)[:, 0]
        used = torch.cat([model.shape_codes[scene], model.appearance_codes[scene]], -1)
        loss = (
            F.mse_loss(out.rgb, target)
            + mask_weight * F.mse_loss(out.object_opacity, mask)
            + code_weight * used.pow(2).sum(-1).mean()
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        loss_value = hist.record(step, loss)
        test_value = None
        if test is not None and test.images.shape[1] and hist.evaluation_due(step, eval_every, iterations):
            test_value = evaluate_psnr(model, test)
            hist.record_test(step, test_value)
        if callback is not None:
            callback(step, loss_value, test_value)
    return hist
