"""Chamfer distance between batches of point clouds (conventions §15).

Default: ``CD(X, Y) = mean_x min_y |x - y|^2 + mean_y min_x |x - y|^2``, then the mean over the
batch. The nearest neighbours come from ``knn_points`` (exact; a Numba kernel on CPU, so no distance
matrix is ever built).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from p3dlab.errors import P3DLabValueError


def _as_padded(x, lengths, normals, name: str):
    """Accept a (N, P, D) tensor (with optional lengths) or a Pointclouds; return padded tensors."""
    if hasattr(x, "points_padded"):
        if x.isempty():
            raise P3DLabValueError(f"chamfer_distance: {name} is empty")
        lengths = x.num_points_per_cloud()
        normals = x.normals_padded()
        x = x.points_padded()
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        raise P3DLabValueError(f"chamfer_distance: {name} must be (N, P, D) or Pointclouds")
    n, p, _ = x.shape
    if lengths is None:
        lengths = torch.full((n,), p, dtype=torch.int64, device=x.device)
    elif lengths.shape != (n,) or (n and (int(lengths.max()) > p or int(lengths.min()) < 0)):
        raise P3DLabValueError(f"chamfer_distance: {name}_lengths must be (N,) with values in [0, {p}]")
    if normals is not None and normals.shape != x.shape:
        raise P3DLabValueError(f"chamfer_distance: {name}_normals must have the shape of {name}")
    return x, lengths.to(x.device), normals


def _nearest(x: torch.Tensor, y: torch.Tensor, y_lengths: torch.Tensor, norm: int):
    """For every x point the distance (squared L2 or L1) to, and the index of, its nearest y point.

    The search is ``knn_points`` (a Numba kernel on CPU, no distance matrix); the distance to the
    winner is recomputed in torch, so gradients are those of |x - y_nn|^2.
    """
    from p3dlab.ops.knn import knn_points

    res = knn_points(x, y, lengths2=y_lengths, norm=norm, K=1)
    return res.dists[..., 0], res.idx[..., 0].clamp(min=0)


def chamfer_distance(
    x,
    y,
    x_lengths: Optional[torch.Tensor] = None,
    y_lengths: Optional[torch.Tensor] = None,
    x_normals: Optional[torch.Tensor] = None,
    y_normals: Optional[torch.Tensor] = None,
    weights: Optional[torch.Tensor] = None,
    batch_reduction: Optional[str] = "mean",
    point_reduction: Optional[str] = "mean",
    norm: int = 2,
    single_directional: bool = False,
    abs_cosine: bool = True,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Chamfer distance between point sets x (N, P, D) and y (N, Q, D) or ``Pointclouds``.

    Args:
        x_lengths, y_lengths: (N,) number of valid points of each padded cloud.
        x_normals, y_normals: (N, P, 3) / (N, Q, 3); adds the normal term ``1 - |cos|``
            (``1 - cos`` with ``abs_cosine=False``) between each point and its nearest neighbour.
        weights: (N,) per-cloud weights applied before the batch reduction.
        batch_reduction: "mean", "sum" or None.
        point_reduction: "mean", "sum", "max" or None (then per-point tensors are returned).
        norm: 2 (squared Euclidean distances) or 1 (L1 distances).
        single_directional: only the x -> y term.
    Returns:
        ``(loss, loss_normals)``; ``loss_normals`` is None without normals. With
        ``point_reduction=None`` each is a tensor (N, P) or a pair ((N, P), (N, Q)).
    """
    if norm not in (1, 2):
        raise P3DLabValueError("chamfer_distance: norm must be 1 or 2")
    if point_reduction not in ("mean", "sum", "max", None):
        raise P3DLabValueError(f"chamfer_distance: unknown point_reduction {point_reduction!r}")
    if batch_reduction not in ("mean", "sum", None):
        raise P3DLabValueError(f"chamfer_distance: unknown batch_reduction {batch_reduction!r}")
    if point_reduction is None and batch_reduction is not None:
        raise P3DLabValueError("chamfer_distance: point_reduction=None needs batch_reduction=None")
    x, x_lengths, x_normals = _as_padded(x, x_lengths, x_normals, "x")
    y, y_lengths, y_normals = _as_padded(y, y_lengths, y_normals, "y")
    if x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise P3DLabValueError(f"chamfer_distance: batch/dimension mismatch {tuple(x.shape)} vs {tuple(y.shape)}")
    if (x_normals is None) != (y_normals is None):
        raise P3DLabValueError("chamfer_distance: give normals for both clouds or for neither")
    if bool((x_lengths == 0).any()) or bool((y_lengths == 0).any()):
        raise P3DLabValueError("chamfer_distance: every cloud needs at least one point")
    n = x.shape[0]
    if weights is not None:
        if weights.shape != (n,) or bool((weights < 0).any()):
            raise P3DLabValueError("chamfer_distance: weights must be (N,) and non-negative")

    def one_side(a, a_len, a_nrm, b, b_len, b_nrm):
        d, idx = _nearest(a, b, b_len, norm)
        valid = torch.arange(a.shape[1], device=a.device)[None, :] < a_len[:, None]
        d = d.masked_fill(~valid, 0.0)
        nterm = None
        if a_nrm is not None:
            nb = torch.gather(b_nrm, 1, idx[..., None].expand(-1, -1, b_nrm.shape[-1]))
            cos = F.cosine_similarity(a_nrm, nb, dim=2, eps=1e-6)
            nterm = (1 - cos.abs() if abs_cosine else 1 - cos).masked_fill(~valid, 0.0)
        return d, nterm, a_len

    sides = [one_side(x, x_lengths, x_normals, y, y_lengths, y_normals)]
    if not single_directional:
        sides.append(one_side(y, y_lengths, y_normals, x, x_lengths, x_normals))

    def reduce(values):
        if point_reduction is None:
            return values[0] if len(values) == 1 else tuple(values)
        total = 0.0
        for v, (_, _, lens) in zip(values, sides):
            if point_reduction == "mean":
                r = v.sum(1) / lens.to(v.dtype)
            elif point_reduction == "sum":
                r = v.sum(1)
            else:
                r = v.max(1).values
            total = total + r
        if weights is not None:
            total = total * weights.to(total.dtype)
        if batch_reduction == "mean":
            denom = weights.sum().clamp(min=1e-12) if weights is not None else n
            return total.sum() / denom if weights is not None else total.mean()
        if batch_reduction == "sum":
            return total.sum()
        return total

    loss = reduce([s[0] for s in sides])
    loss_normals = reduce([s[1] for s in sides]) if x_normals is not None else None
    return loss, loss_normals
