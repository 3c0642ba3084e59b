"""Training and evaluation of ``MeshRCNNHead`` on procedural shapes (docs/meshrcnn.md#training).

The loss of one batch is Mesh R-CNN's:

``L = w_vox BCE(voxel logits, occupancy) + sum over stages [w_cham Chamfer(P, Q) + w_norm Normal(P, Q)
+ w_edge Edge(mesh)]``

with P and Q points sampled uniformly by area on the stage's mesh and on the ground truth, Normal the
``1 - |cos|`` term between each point's normal and its nearest neighbour's, and Edge the mean squared
edge length.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

from p3dlab.errors import P3DLabValueError
from p3dlab.loss import chamfer_distance, mesh_edge_loss
from p3dlab.meshrcnn.data import ShapeSplit
from p3dlab.meshrcnn.metrics import mesh_metrics, voxel_iou
from p3dlab.meshrcnn.model import MeshRCNNHead
from p3dlab.ops import sample_points_from_meshes


@dataclass(frozen=True)
class LossWeights:
    """The weights of the loss terms. The defaults are the Pix3D configuration printed in the book
    (voxel 3.0, Chamfer 1.0, normals 0.1, edge 1.0); ``SHAPENET_WEIGHTS`` is its ShapeNet one."""

    voxel: float = 3.0
    chamfer: float = 1.0
    normal: float = 0.1
    edge: float = 1.0


PIX3D_WEIGHTS = LossWeights()
SHAPENET_WEIGHTS = LossWeights(voxel=1.0, chamfer=1.0, normal=0.0, edge=0.2)


@dataclass
class MeshRCNNHistory:
    """Losses per step (total and per term), wall times, and held-out metrics at evaluated steps.
    ``seconds_to_target`` is the time at which the held-out Chamfer first fell to ``target_chamfer``."""

    steps: List[int] = field(default_factory=list)
    loss: List[float] = field(default_factory=list)
    terms: Dict[str, List[float]] = field(default_factory=dict)
    seconds: List[float] = field(default_factory=list)
    test_steps: List[int] = field(default_factory=list)
    test_chamfer: List[float] = field(default_factory=list)
    test_f_score: List[float] = field(default_factory=list)
    test_cubified_chamfer: List[float] = field(default_factory=list)
    test_voxel_iou: List[float] = field(default_factory=list)
    target_chamfer: Optional[float] = None
    seconds_to_target: Optional[float] = None
    start: float = field(default_factory=time.perf_counter, repr=False)


def mesh_losses(meshes, gt, num_samples: int, weights: LossWeights, generator: torch.Generator):
    """Chamfer, normal and edge terms of one stage's meshes against the ground-truth meshes."""
    p, pn = sample_points_from_meshes(meshes, num_samples, return_normals=True, generator=generator)
    q, qn = sample_points_from_meshes(gt, num_samples, return_normals=True, generator=generator)
    cham, normal = chamfer_distance(p, q, x_normals=pn, y_normals=qn)
    edge = mesh_edge_loss(meshes)
    total = weights.chamfer * cham + weights.normal * normal + weights.edge * edge
    return total, {"chamfer": float(cham.detach()), "normal": float(normal.detach()), "edge": float(edge.detach())}


@torch.no_grad()
def evaluate(
    model: MeshRCNNHead,
    split: ShapeSplit,
    num_samples: int = 2000,
    tau: float = 0.1,
    batch_size: int = 16,
    use_gt_voxels: bool = False,
    seed: int = 0,
) -> Dict[str, float]:
    """Mean held-out metrics: Chamfer and F-score@τ of the final mesh and of the cubified mesh
    (``cubified_chamfer``, ``cubified_f_score``) against the ground truth, and voxel IoU at the
    cubify threshold."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    sums: Dict[str, float] = {}
    for start in range(0, len(split), batch_size):
        batch = split[list(range(start, min(start + batch_size, len(split))))]
        logits, meshes = model(batch.images, batch.voxels if use_gt_voxels else None)
        final = mesh_metrics(meshes[-1], batch.meshes, num_samples, (tau,), generator=gen)
        cubified = mesh_metrics(meshes[0], batch.meshes, num_samples, (tau,), generator=gen)
        iou = voxel_iou(torch.sigmoid(logits) > model.cubify_thresh, batch.voxels)
        for key, value in (
            ("chamfer", final["chamfer"]),
            ("f_score", final[f"f_score@{tau:g}"]),
            ("cubified_chamfer", cubified["chamfer"]),
            ("cubified_f_score", cubified[f"f_score@{tau:g}"]),
            ("voxel_iou", iou),
        ):
            sums[key] = sums.get(key, 0.0) + float(value.sum())
    model.train(was_training)
    return {k: v / len(split) for k, v in sums.items()}


def fit_meshrcnn(
    model: MeshRCNNHead,
    train: ShapeSplit,
    test: Optional[ShapeSplit] = None,
    iterations: int = 300,
    batch_size: int = 8,
    lr: float = 2e-3,
    weights: LossWeights = PIX3D_WEIGHTS,
    num_samples: int = 1000,
    use_gt_voxels: bool = False,
    eval_every: int = 50,
    eval_samples: int = 2000,
    tau: float = 0.1,
    target_chamfer: Optional[float] = None,
    seed: int = 0,
    callback: Optional[Callable[[int, float, Optional[Dict[str, float]]], None]] = None,
) -> MeshRCNNHistory:
    """Train ``model`` with Adam (cosine-decayed ``lr``) on random batches of ``train``.

    Each step: voxel logits and the meshes of every stage for ``batch_size`` images; the loss of the
    module docstring with ``num_samples`` points per mesh. With ``use_gt_voxels`` the refinement starts
    from the cubified ground-truth occupancy (the voxel branch still learns from its BCE term); otherwise
    from the cubified prediction, as in Mesh R-CNN. Held-out metrics (``evaluate``) every ``eval_every``
    steps and after the last; ``callback(step, loss, metrics or None)`` after each step (an
    ``OptimizationMonitor`` fits). Deterministic for a given ``seed``."""
    if iterations < 1 or batch_size < 1 or num_samples < 1 or eval_every < 1:
        raise P3DLabValueError("fit_meshrcnn: iterations, batch_size, num_samples and eval_every must be >= 1")
    if not lr > 0:
        raise P3DLabValueError(f"fit_meshrcnn: lr must be > 0, got {lr}")
    S = model.voxel_size
    if train.voxels.shape[1:] != (S, S, S):
        raise P3DLabValueError(f"fit_meshrcnn: the data's voxels are {tuple(train.voxels.shape[1:])}, the model's {S}³")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iterations, eta_min=lr * 0.05)
    hist = MeshRCNNHistory(target_chamfer=target_chamfer)
    model.train()
    for step in range(iterations):
        idx = torch.randperm(len(train), generator=gen)[: min(batch_size, len(train))]
        batch = train[idx.tolist()]
        logits, meshes = model(batch.images, batch.voxels if use_gt_voxels else None)
        voxel_loss = F.binary_cross_entropy_with_logits(logits, batch.voxels)
        loss = weights.voxel * voxel_loss
        terms = {"voxel": float(voxel_loss.detach())}
        for k, mesh in enumerate(meshes[1:], 1):
            stage_loss, stage_terms = mesh_losses(mesh, batch.meshes, num_samples, weights, gen)
            loss = loss + stage_loss
            for name, value in stage_terms.items():
                terms[f"{name}{k}"] = value
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        hist.steps.append(step)
        hist.loss.append(float(loss.detach()))
        hist.seconds.append(time.perf_counter() - hist.start)
        for name, value in terms.items():
            hist.terms.setdefault(name, []).append(value)
        metrics = None
        if test is not None and (step % eval_every == eval_every - 1 or step == iterations - 1):
            metrics = evaluate(model, test, eval_samples, tau, use_gt_voxels=use_gt_voxels, seed=seed)
            hist.test_steps.append(step)
            hist.test_chamfer.append(metrics["chamfer"])
            hist.test_f_score.append(metrics["f_score"])
            hist.test_cubified_chamfer.append(metrics["cubified_chamfer"])
            hist.test_voxel_iou.append(metrics["voxel_iou"])
            if target_chamfer is not None and hist.seconds_to_target is None and metrics["chamfer"] <= target_chamfer:
                hist.seconds_to_target = time.perf_counter() - hist.start
        if callback is not None:
            callback(step, hist.loss[-1], metrics)
    model.eval()
    return hist


__all__ = [
    "LossWeights",
    "MeshRCNNHistory",
    "PIX3D_WEIGHTS",
    "SHAPENET_WEIGHTS",
    "evaluate",
    "fit_meshrcnn",
    "mesh_losses",
]
