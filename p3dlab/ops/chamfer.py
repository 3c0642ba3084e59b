"""Chamfer distance between batches of point clouds, with PyTorch3D's semantics.

Default: ``CD(X, Y) = mean_x min_y |x - y|^2 + mean_y min_x |x - y|^2``, then the mean over the
batch. The nearest neighbours come from ``knn_points`` (exact; a Numba kernel on CPU, so no distance
matrix is ever built).

Every reduction and edge case follows ``pytorch3d.loss.chamfer_distance`` (0.7.8 and later):

* ``point_reduction="max"`` takes each direction's largest distance and combines the two directions
  with ``max`` (a squared Hausdorff distance for ``norm=2``), not with ``+``; it refuses normals.
* A cloud of length 0 contributes 0: its own points are padding, and a point whose target cloud is
  empty gets distance 0 and a zero neighbour normal (cosine 0, so a normal term of 1).
* float16/bfloat16 clouds are refused (call ``.float()``), like every kernel-backed op's inputs.
* All-zero ``weights`` give zero for both terms (the normal term too, even without normals), still
  connected to ``x``'s graph so ``backward`` works.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.checks import check_kernel_dtype


def _as_padded(x, lengths, normals, name: str):
    """Accept a (N, P, D) tensor (with optional lengths) or a Pointclouds; return padded tensors."""
    if hasattr(x, "points_padded"):
        lengths = x.num_points_per_cloud()
        normals = x.normals_padded()
        x = x.points_padded()
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        raise P3DLabValueError(f"chamfer_distance: {name} must be (N, P, D) or Pointclouds")
    check_kernel_dtype(x, name, "chamfer_distance")
    if normals is not None:
        check_kernel_dtype(normals, f"{name}_normals", "chamfer_distance")
    n, p, _ = x.shape
    if lengths is None:
        lengths = torch.full((n,), p, dtype=torch.int64, device=x.device)
    elif lengths.shape != (n,) or (n and (int(lengths.max()) > p or int(lengths.min()) < 0)):
        raise P3DLabValueError(f"chamfer_distance: {name}_lengths must be (N,) with values in [0, {p}]")
    if normals is not None and normals.shape != x.shape:
        raise P3DLabValueError(f"chamfer_distance: {name}_normals must have the shape of {name}")
    return x, lengths.to(x.device), normals


def _one_direction(a, a_len, a_nrm, b, b_len, b_nrm, weights, point_reduction, norm, abs_cosine):
    """Distances (and normal terms) from every point of ``a`` to its nearest point of ``b``, point-reduced.

    ``knn_points`` marks a missing neighbour (an empty ``b`` cloud, or padding of ``a``) with index -1
    and distance 0; ``knn_gather`` gives a zero normal there, hence a cosine of 0.
    """
    from p3dlab.ops.knn import knn_gather, knn_points

    res = knn_points(a, b, lengths1=a_len, lengths2=b_len, norm=norm, K=1)
    valid = torch.arange(a.shape[1], device=a.device)[None, :] < a_len[:, None]
    d = res.dists[..., 0].masked_fill(~valid, 0.0)
    nterm = None
    if a_nrm is not None:
        near = knn_gather(b_nrm, res.idx)[..., 0, :]
        cos = F.cosine_similarity(a_nrm, near, dim=2, eps=1e-6)
        nterm = (1 - (cos.abs() if abs_cosine else cos)).masked_fill(~valid, 0.0)
    if weights is not None:
        w = weights.to(d.dtype)[:, None]
        d = d * w
        nterm = nterm * w if nterm is not None else None
    if point_reduction is None:
        return d, nterm
    if point_reduction == "max":
        # an (N, 0) tensor has no maximum; its clouds are all empty, so their value is 0
        return (d.max(1).values if d.shape[1] else d.sum(1)), None
    d, nterm = d.sum(1), (nterm.sum(1) if nterm is not None else None)
    if point_reduction == "mean":
        count = a_len.clamp(min=1).to(d.dtype)
        d, nterm = d / count, (nterm / count if nterm is not None else None)
    return d, nterm


def _zero_weights_result(x, y, weights, batch_reduction, point_reduction, single_directional):
    """PyTorch3D's answer when every weight is 0: zero for both terms, connected to ``x``'s graph.

    The normal term is zero too (not None) even without normals, except for ``"max"`` in both
    directions, where PyTorch3D gives None. (PyTorch3D's unreduced zeros have shape (N, N); here they
    have the shapes the non-zero case would have.)
    """
    zero = x.sum((1, 2)) * weights.to(x.dtype) * 0.0  # (N,)
    if point_reduction is None:
        zx = zero[:, None].expand(-1, x.shape[1])
        zy = zero[:, None].expand(-1, y.shape[1])
        loss = zx if single_directional else (zx, zy)
        return loss, loss
    if batch_reduction is not None:
        zero = zero.sum()
    normals = None if (point_reduction == "max" and not single_directional) else zero
    return zero, normals


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
        x_lengths, y_lengths: (N,) number of valid points of each padded cloud (0 allowed).
        x_normals, y_normals: (N, P, 3) / (N, Q, 3); adds the normal term ``1 - |cos|``
            (``1 - cos`` with ``abs_cosine=False``) between each point and its nearest neighbour.
        weights: (N,) non-negative per-cloud weights; with ``batch_reduction="mean"`` the result is
            divided by their sum instead of N.
        batch_reduction: "mean", "sum" or None.
        point_reduction: "mean", "sum", "max" or None (then per-point tensors are returned). "max"
            takes each direction's largest distance and then the larger of the two directions
            (the squared Hausdorff distance with ``norm=2``); it cannot be combined with normals.
        norm: 2 (squared Euclidean distances) or 1 (L1 distances).
        single_directional: only the x -> y term.
    Returns:
        ``(loss, loss_normals)``; ``loss_normals`` is None without normals (but see all-zero weights
        in the module docstring). With ``point_reduction=None`` each is a tensor (N, P) or a pair
        ((N, P), (N, Q)).
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
    if point_reduction == "max" and (x_normals is not None or y_normals is not None):
        raise P3DLabValueError('chamfer_distance: normals must be None if point_reduction is "max"')
    if x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise P3DLabValueError(f"chamfer_distance: batch/dimension mismatch {tuple(x.shape)} vs {tuple(y.shape)}")
    if (x_normals is None) != (y_normals is None):
        raise P3DLabValueError("chamfer_distance: give normals for both clouds or for neither")
    n = x.shape[0]
    if weights is not None:
        if weights.shape != (n,) or bool((weights < 0).any()):
            raise P3DLabValueError("chamfer_distance: weights must be (N,) and non-negative")
        if n and float(weights.sum()) == 0.0:
            return _zero_weights_result(x, y, weights, batch_reduction, point_reduction, single_directional)

    args = (weights, point_reduction, norm, abs_cosine)
    cham_x, nrm_x = _one_direction(x, x_lengths, x_normals, y, y_lengths, y_normals, *args)
    if single_directional:
        loss, loss_normals = cham_x, nrm_x
    else:
        cham_y, nrm_y = _one_direction(y, y_lengths, y_normals, x, x_lengths, x_normals, *args)
        if point_reduction is None:
            loss = (cham_x, cham_y)
            loss_normals = (nrm_x, nrm_y) if nrm_x is not None else None
        elif point_reduction == "max":
            loss, loss_normals = torch.maximum(cham_x, cham_y), None
        else:
            loss = cham_x + cham_y
            loss_normals = nrm_x + nrm_y if nrm_x is not None else None
    if batch_reduction is None:
        return loss, loss_normals
    div = weights.sum().to(loss.dtype) if weights is not None else max(n, 1)
    loss = loss.sum() if batch_reduction == "sum" else loss.sum() / div
    if loss_normals is not None:
        loss_normals = loss_normals.sum() if batch_reduction == "sum" else loss_normals.sum() / div
    return loss, loss_normals
