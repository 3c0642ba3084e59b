"""Shape metrics of Mesh R-CNN's evaluation: Chamfer distance and F-score@τ between point sets,
and voxel IoU (docs/meshrcnn.md#metrics)."""

from __future__ import annotations

from typing import Dict, Optional

import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.ops import chamfer_distance, knn_points, sample_points_from_meshes
from p3dlab.structures import Meshes


def _check_clouds(pred: torch.Tensor, gt: torch.Tensor, name: str) -> None:
    for label, x in (("pred", pred), ("gt", gt)):
        if not torch.is_tensor(x) or x.ndim != 3 or x.shape[-1] != 3:
            raise P3DLabValueError(f"{name}: {label} must be a tensor (N, P, 3), got {getattr(x, 'shape', type(x))}")
        if x.shape[1] == 0:
            raise P3DLabValueError(f"{name}: {label} has no points")
    if pred.shape[0] != gt.shape[0]:
        raise P3DLabValueError(f"{name}: pred and gt batch sizes differ ({pred.shape[0]} vs {gt.shape[0]})")


def nearest_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """For each point of x (N, P, 3) the Euclidean distance to its nearest point of y (N, Q, 3): (N, P)."""
    return knn_points(x, y, K=1).dists[..., 0].clamp(min=0).sqrt()


def f_score(pred: torch.Tensor, gt: torch.Tensor, tau: float) -> torch.Tensor:
    """F-score@τ (N,) between point sets pred (N, P, 3) and gt (N, Q, 3).

    precision = the fraction of predicted points within τ of a ground-truth point, recall = the
    fraction of ground-truth points within τ of a predicted point, ``F = 2 P R / (P + R)`` (0 when
    both are 0). Distances are Euclidean; a point exactly at τ counts as close."""
    _check_clouds(pred, gt, "f_score")
    if not tau > 0:
        raise P3DLabValueError(f"f_score: tau must be > 0, got {tau}")
    precision = (nearest_distances(pred, gt) <= tau).float().mean(1)
    recall = (nearest_distances(gt, pred) <= tau).float().mean(1)
    total = precision + recall
    return torch.where(total > 0, 2 * precision * recall / total.clamp(min=1e-12), torch.zeros_like(total))


def chamfer(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Chamfer distance (N,): mean squared distance from pred to gt plus from gt to pred (the sum
    of both directions' means, as ``chamfer_distance`` with ``point_reduction="mean"``)."""
    _check_clouds(pred, gt, "chamfer")
    return chamfer_distance(pred, gt, batch_reduction=None)[0]


def voxel_iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Intersection over union (N,) of boolean (or 0/1) occupancy grids (N, ...); 1 when both are empty."""
    if pred.shape != gt.shape:
        raise P3DLabValueError(f"voxel_iou: shapes differ, {tuple(pred.shape)} vs {tuple(gt.shape)}")
    p, g = pred.flatten(1) > 0.5, gt.flatten(1) > 0.5
    inter, union = (p & g).sum(1).float(), (p | g).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def mesh_metrics(
    pred: Meshes,
    gt: Meshes,
    num_samples: int = 2000,
    taus=(0.05, 0.1),
    generator: Optional[torch.Generator] = None,
) -> Dict[str, torch.Tensor]:
    """Chamfer and F-score@τ (per mesh, (N,)) between area-sampled points of two batches of meshes."""
    if len(pred) != len(gt):
        raise P3DLabValueError(f"mesh_metrics: {len(pred)} predicted meshes for {len(gt)} ground truths")
    if num_samples < 1:
        raise P3DLabValueError("mesh_metrics: num_samples must be >= 1")
    p = sample_points_from_meshes(pred, num_samples, generator=generator)
    g = sample_points_from_meshes(gt, num_samples, generator=generator)
    out = {"chamfer": chamfer(p, g)}
    for tau in taus:
        out[f"f_score@{tau:g}"] = f_score(p, g, tau)
    return out


__all__ = ["chamfer", "f_score", "mesh_metrics", "nearest_distances", "voxel_iou"]
