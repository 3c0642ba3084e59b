"""``knn_points`` / ``knn_gather`` (PyTorch3D names): exact K nearest neighbours.

The search runs in Numba kernels on CPU tensors (no P1 x P2 distance matrix) and in blocked torch
on other devices; the returned distances are recomputed from the chosen neighbours in torch, so
they are differentiable with respect to both clouds. On the CPU, clouds of 1 to 3 dimensions whose
second cloud has ``GRID_MIN_POINTS`` points or more are searched through a uniform grid
(``kernels/knn_grid.py``), the others by brute force (``kernels/knn.py``); both return the same
neighbours (ties: the lower index first).

Rules at the boundary: float16/bfloat16 and complex clouds are refused (``p3dlab.ops.checks``); an
empty second cloud (P2 = 0, or a length of 0) is no error: its points have no neighbour, so every
slot is padding (index -1, distance 0, neighbour 0); a search whose outputs cannot fit in the memory
this process can still take is refused before anything is allocated (``P3DLabMemoryError`` naming
``K``); ``knn_gather`` refuses an index outside [-1, P2). Non-finite coordinates (NaN, inf) are not
refused: the brute force searches such clouds whatever their size (a grid cannot bin them), and the
neighbours of a point whose distances are NaN are unspecified.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.checks import check_count, check_index_range, check_kernel_dtype
from p3dlab.runtime import memory_budget
from p3dlab.runtime.fork_safety import check_cpu_kernels


class KNN(NamedTuple):
    dists: torch.Tensor  # (N, P1, K) squared (norm 2) or L1 (norm 1) distances
    idx: torch.Tensor  # (N, P1, K) int64 indices into p2, -1 where fewer than K exist
    knn: Optional[torch.Tensor]  # (N, P1, K, D) neighbours when return_nn


def _lengths(lengths, x):
    n, p, _ = x.shape
    if lengths is None:
        return torch.full((n,), p, dtype=torch.int64, device=x.device)
    if lengths.shape != (n,) or (n and (int(lengths.min()) < 0 or int(lengths.max()) > p)):
        raise P3DLabValueError(f"lengths must be (N,) with values in [0, {p}]")
    return lengths.to(device=x.device, dtype=torch.int64)


def _check_search_fits(n: int, P1: int, P2: int, K: int, D: int, item: int, on_cpu: bool) -> None:
    """Refuse a search whose outputs cannot fit: per (cloud, point, neighbour) slot the index and its
    gather index (int64), the distance twice and the gathered neighbour and its difference (D values
    each); on the CPU also the grid search's float64 distances (8 bytes a slot), float64 copies of the
    clouds and, per point of p2, its sorted copy, index, cell and cell start (8 D + 32 bytes); off the
    CPU the blocked torch search's (1024 x P2) distance block per cloud."""
    need = n * P1 * K * (16 + (2 + 2 * D) * item)
    if on_cpu:
        need += n * P1 * K * 8 + n * (P1 + P2) * D * 8 + n * P2 * (8 * D + 32)
    else:
        need += n * min(P1, 1024) * P2 * item
    what = f"the {n} x {P1} x K={K} nearest neighbours (indices, distances and the {D}-D neighbours)"
    memory_budget.check_fits("knn_points", need, what, "K (or the number of points of p1)")


def _search_torch(p1, p2, len2, K, norm, block=1024):
    q = p2.shape[1]
    invalid = torch.arange(q, device=p2.device)[None, None, :] >= len2[:, None, None]
    out = []
    for s in range(0, p1.shape[1], block):
        d = torch.cdist(p1[:, s : s + block], p2, p=float(norm))
        d = d.pow(2) if norm == 2 else d
        out.append(d.masked_fill(invalid, float("inf")).topk(min(K, q), dim=2, largest=False, sorted=True).indices)
    return torch.cat(out, 1)


# The grid search (kernels/knn_grid.py) replaces the brute force on the CPU for clouds of 1 to 3
# dimensions from this many points in the second cloud: below, building the grid costs more than it
# saves (docs/performance.md#other-operations).
GRID_MIN_POINTS = 256


def _grid_pays(a, b) -> bool:
    """Whether the grid search should run: D <= 3, cloud 2 large enough, and finite coordinates (a grid
    cannot bin NaN or inf; the brute force takes those clouds whatever their size)."""
    return (
        a.shape[2] <= 3
        and b.shape[1] >= GRID_MIN_POINTS
        and bool(torch.isfinite(a).all())
        and bool(torch.isfinite(b).all())
    )


def _search_grid(a, b, len1, len2, K, norm, idx, dist, points_per_cell=2.0):
    """``knn_cpu``'s search through a uniform grid over each cloud of ``b`` (``kernels/knn_grid.py``):
    the same neighbours and distances, written into ``idx`` / ``dist``.

    The grid kernels take float64 clouds only (float32 coordinates convert exactly, and the distances
    are float64 in any case): one build of them for both dtypes, whose compilation takes seconds."""
    from p3dlab.kernels.knn_grid import build_grids, knn_grid_cpu

    a64, b64 = a.to(torch.float64).numpy(), b.to(torch.float64).numpy()
    dist64 = dist if dist.dtype == torch.float64 else torch.zeros(dist.shape, dtype=torch.float64)
    grids = build_grids(b64, len2.numpy(), float(points_per_cell))
    knn_grid_cpu(a64, len1.numpy(), len2.numpy(), K, norm, *grids, idx.numpy(), dist64.numpy())
    if dist64 is not dist:
        dist.copy_(dist64)


def knn_points(
    p1,
    p2,
    lengths1=None,
    lengths2=None,
    norm: int = 2,
    K: int = 1,
    version: int = -1,
    return_nn: bool = False,
    return_sorted: bool = True,
) -> KNN:
    """The K nearest points of ``p2`` (N, P2, D) for every point of ``p1`` (N, P1, D) (see the
    module docstring for the rules on dtypes, empty clouds and memory)."""
    for name, cloud in (("p1", p1), ("p2", p2)):
        if not torch.is_tensor(cloud):
            raise P3DLabValueError(f"knn_points: {name} must be a tensor (N, P, D), got {type(cloud).__name__}")
        check_kernel_dtype(cloud, name, "knn_points")
    if p1.ndim != 3 or p2.ndim != 3 or p1.shape[0] != p2.shape[0] or p1.shape[2] != p2.shape[2]:
        raise P3DLabValueError(
            f"knn_points: p1 (N, P1, D) and p2 (N, P2, D) expected, got {tuple(p1.shape)} and {tuple(p2.shape)}"
        )
    if norm not in (1, 2):
        raise P3DLabValueError("knn_points: norm must be 1 or 2")
    K = check_count(K, "K", "knn_points")
    if p1.device != p2.device:
        raise P3DLabValueError(f"knn_points: clouds on {p1.device} and {p2.device}")
    len1, len2 = _lengths(lengths1, p1), _lengths(lengths2, p2)
    dtype = torch.promote_types(p1.dtype, p2.dtype)
    a, b = p1.detach().to(dtype).contiguous(), p2.detach().to(dtype).contiguous()
    n, P1, D = p1.shape
    _check_search_fits(n, P1, p2.shape[1], K, D, a.element_size(), p1.device.type == "cpu")
    with torch.no_grad():
        if p1.device.type == "cpu":
            from p3dlab.kernels.knn import knn_cpu

            check_cpu_kernels("knn_points")

            # both kernels leave the slots beyond the clouds' lengths at -1
            idx = torch.full((n, P1, K), -1, dtype=torch.int64)
            dist = torch.zeros((n, P1, K), dtype=dtype)
            if _grid_pays(a, b):
                _search_grid(a, b, len1, len2, K, norm, idx, dist)
            else:
                knn_cpu(a.numpy(), b.numpy(), len1.numpy(), len2.numpy(), K, norm, idx.numpy(), dist.numpy())
        else:
            idx = _search_torch(a, b, len2, K, norm)
            if idx.shape[2] < K:
                idx = torch.cat([idx, idx.new_full((n, P1, K - idx.shape[2]), -1)], 2)
            # slots beyond the clouds' lengths stay -1
            idx = torch.where(torch.arange(K, device=idx.device)[None, None] < len2[:, None, None], idx, -1)
            idx = torch.where((torch.arange(P1, device=idx.device)[None, :, None] < len1[:, None, None]), idx, -1)
    nn = knn_gather(p2, idx)
    diff = p1[:, :, None, :] - nn
    dists = diff.pow(2).sum(-1) if norm == 2 else diff.abs().sum(-1)
    dists = dists * (idx >= 0).to(dists.dtype)
    return KNN(dists, idx, nn if return_nn else None)


def knn_gather(x: torch.Tensor, idx: torch.Tensor, lengths=None) -> torch.Tensor:
    """``out[n, i, k] = x[n, idx[n, i, k]]`` (zeros where idx is -1): (N, P1, K, D).

    ``idx`` (N, P1, K) integers in [-1, P2) (``knn_points``' indices; -1 is padding), ``x`` (N, P2, D).
    ``lengths`` is accepted for PyTorch3D compatibility: ``knn_points`` already pads with -1."""
    if not (
        torch.is_tensor(x) and x.ndim == 3 and torch.is_tensor(idx) and idx.ndim == 3 and x.shape[0] == idx.shape[0]
    ):
        raise P3DLabValueError(
            f"knn_gather: x (N, P2, D) and idx (N, P1, K) expected, got {getattr(x, 'shape', x)} and "
            f"{getattr(idx, 'shape', idx)}"
        )
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise P3DLabValueError(f"knn_gather: idx must be an integer tensor, got {idx.dtype}")
    n, p1, K = idx.shape
    p2, d = x.shape[1], x.shape[2]
    check_index_range(idx, -1, p2, "idx", "knn_gather", "point", f"x has {p2} points per cloud")
    if p2 == 0:  # nothing to gather: every index is -1
        return x.new_zeros((n, p1, K, d))
    flat = (idx.clamp(min=0) + torch.arange(n, device=idx.device)[:, None, None] * p2).reshape(-1)
    out = x.reshape(n * p2, d).index_select(0, flat).reshape(n, p1, K, d)  # backward: index_add
    return out * (idx >= 0)[..., None].to(out.dtype)
