"""The grid search (``kernels/knn_grid.py``) against the brute force it stands in for (``kernels/knn.py``):
the same neighbours and the same distances, bit for bit, on clouds chosen to stress the grid."""

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import p3dlab.ops.knn as knn_ops
from p3dlab.kernels.knn import knn_cpu
from p3dlab.kernels.knn_grid import MATH_SOURCE_SHA256, build_grids, grid_resolution
from p3dlab.ops import knn_points

KERNELS = Path(__file__).resolve().parents[1] / "kernels"
LEN1 = [60, 37, 60, 12]  # heterogeneous lengths: a full cloud, shorter ones, and
LEN2 = [150, 61, 2, 0]  # a cloud 2 smaller than most K, and an empty one
KINDS = ["uniform", "integer", "flat", "outlier", "far queries", "clusters", "2-D", "1-D"]


def _clouds(kind: str, dtype):
    g = torch.Generator().manual_seed(KINDS.index(kind))
    D = {"2-D": 2, "1-D": 1}.get(kind, 3)
    p1 = torch.rand(4, 60, D, generator=g, dtype=torch.float64)
    p2 = torch.rand(4, 150, D, generator=g, dtype=torch.float64)
    if kind == "integer":  # many duplicate points and exactly equal distances: the order of the indices decides
        p1, p2 = (p1 * 4).round(), (p2 * 4).round()
    elif kind == "flat":  # zero extent along one axis; the queries lie off that plane
        p2[..., 1] = 0.25
    elif kind == "outlier":  # one far point stretches the box: nearly all points share a cell
        p2[:, 0] = torch.tensor([1000.0, -5.0, 3.0])
    elif kind == "far queries":  # most queries outside cloud 2's box, some very far
        p1 = p1 * 40 - 20
        p1[:, :5] *= 1e4
    elif kind == "clusters":  # dense clumps and empty space between them
        centres = torch.rand(4, 5, D, generator=g, dtype=torch.float64) * 10
        p2 = centres[:, torch.randint(0, 5, (150,), generator=g)] + 0.01 * p2
        p1 = p1 * 10
    return p1.to(dtype), p2.to(dtype)


def _search(p1, p2, K, norm, grid: bool):
    n, P1 = p1.shape[:2]
    idx = torch.full((n, P1, K), -1, dtype=torch.int64)
    dist = torch.zeros((n, P1, K), dtype=p1.dtype)
    len1, len2 = torch.tensor(LEN1), torch.tensor(LEN2)
    if grid:
        knn_ops._search_grid(p1, p2, len1, len2, K, norm, idx, dist)
    else:
        knn_cpu(p1.numpy(), p2.numpy(), len1.numpy(), len2.numpy(), K, norm, idx.numpy(), dist.numpy())
    return idx, dist


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_grid_search_equals_the_brute_force(kind, dtype):
    p1, p2 = _clouds(kind, dtype)
    for K in (1, 3, 10, 151):  # 151: more than any cloud 2 holds, the extra slots stay -1 / 0
        for norm in (1, 2):
            idx, dist = _search(p1, p2, K, norm, grid=True)
            ref_idx, ref_dist = _search(p1, p2, K, norm, grid=False)
            assert torch.equal(idx, ref_idx), (kind, dtype, K, norm)
            assert torch.equal(dist, ref_dist), (kind, dtype, K, norm)
    assert (idx[:, :, 150:] == -1).all() and (idx[2, :, 2:] == -1).all() and (idx[3] == -1).all()
    assert (idx[1, 37:] == -1).all() and (dist[1, 37:] == 0).all()


def _cell(x, lo, size, res):
    """The grid cell (per axis) of the points x (P, D), clamped into the grid as the kernel does."""
    D = x.shape[1]
    t = np.where(size[:D] > 0, (x - lo[:D]) / np.where(size[:D] > 0, size[:D], 1.0), 0.0)
    return np.clip(np.floor(t), 0, res[:D] - 1).astype(np.int64)


@pytest.mark.parametrize("kind", ["uniform", "far queries"])
def test_the_cases_need_more_than_the_query_cell_and_its_neighbours(kind):
    """A search that stopped after the first ring of cells around the query (or that trusted a bound
    measured from the wrong cell) would miss neighbours here: the comparison above can fail."""
    p1, p2 = _clouds(kind, torch.float64)
    box_lo, cell_size, res = build_grids(p2.numpy(), np.array(LEN2), 2.0)[:3]
    idx, _ = _search(p1, p2, 10, 2, grid=False)
    q = _cell(p1[0].numpy(), box_lo[0], cell_size[0], res[0])
    nb = _cell(p2[0].numpy()[idx[0].numpy()].reshape(-1, p1.shape[2]), box_lo[0], cell_size[0], res[0])
    ring = np.abs(nb.reshape(60, 10, -1) - q[:, None]).max(axis=(1, 2))
    assert (ring >= 2).any()


@pytest.mark.parametrize(
    "extent, points, expect",
    [
        ((1.0, 1.0, 1.0), 2000, None),
        ((1e4, 1.0, 1.0), 2000, None),  # a far outlier: the short axes get one cell
        ((1.0, 1.0, 0.0), 2000, None),  # flat
        ((1e-300, 1.0, 1e300), 2000, None),  # extents whose product overflows
        ((0.0, 0.0, 0.0), 2000, (1, 1, 1)),  # all points equal
        ((1.0, 1.0, 1.0), 0, (1, 1, 1)),
        ((math.inf, 1.0, 1.0), 2000, (1, 1, 1)),  # float64 coordinates near the end of the range
    ],
)
def test_grid_resolution_never_exceeds_the_cell_budget(extent, points, expect):
    res = np.zeros(3, dtype=np.int64)
    grid_resolution(np.array(extent), points, 2.0, res)
    assert (res >= 1).all() and res.prod() <= max(1, points / 2)
    assert all(r == 1 for r, e in zip(res, extent) if e == 0.0)
    if expect is not None:
        assert tuple(res) == expect
    elif points:
        assert res.prod() >= points / 2 / 8  # and not far below it: cells of about two points


def test_knn_points_takes_the_grid_where_it_pays(monkeypatch):
    calls = []
    search = knn_ops._search_grid
    monkeypatch.setattr(knn_ops, "_search_grid", lambda *args: calls.append(1) or search(*args))
    g = torch.Generator().manual_seed(0)
    big, small = torch.rand(2, knn_ops.GRID_MIN_POINTS, 3, generator=g), torch.rand(2, 40, 3, generator=g)
    res = knn_points(small, big, K=4)
    assert calls == [1]
    knn_points(big, small, K=4)  # cloud 2 below GRID_MIN_POINTS: the brute force
    knn_points(torch.rand(1, 5, 4, generator=g), torch.rand(1, knn_ops.GRID_MIN_POINTS, 4, generator=g))  # D = 4
    for bad in (math.nan, math.inf):  # a grid cannot bin them: the brute force takes the clouds
        p2 = big.clone()
        p2[1, 7, 2] = bad
        knn_points(small, p2, K=3)
        knn_points(p2, big, K=3)
    assert calls == [1]
    monkeypatch.setattr(knn_ops, "GRID_MIN_POINTS", 10**9)
    assert torch.equal(knn_points(small, big, K=4).idx, res.idx)


def test_the_grid_kernel_carries_the_hash_of_the_brute_force_it_inlines():
    """Numba's cache does not see changes to knn.py's helpers inside knn_grid.py's kernels: the stamp does."""
    digest = hashlib.sha256((KERNELS / "knn.py").read_bytes()).hexdigest()[:16]
    assert MATH_SOURCE_SHA256 == digest, f'knn.py changed: set MATH_SOURCE_SHA256 = "{digest}" in kernels/knn_grid.py'


def test_far_outliers_are_searched_as_stragglers_and_leave_the_grid_fine():
    """Far points are kept out of the grid's box (one list every query examines): the other points
    still get cells of about two points, and queries next to an outlier find it."""
    g = torch.Generator().manual_seed(11)
    p2 = torch.rand(2, 2000, 3, generator=g, dtype=torch.float64)
    p2[0, :3] = torch.tensor([[1e4, 0.5, 0.5], [-3e3, 2e3, 0.0], [0.5, 0.5, -7e2]])
    p2[1, :100] = torch.rand(100, 3, generator=g, dtype=torch.float64) * 1e4  # too many to leave out
    p1 = torch.rand(2, 64, 3, generator=g, dtype=torch.float64)
    p1[:, :3] = p2[0, :3] + 0.5  # queries beside the outliers
    len1, len2 = torch.tensor([64, 64]), torch.tensor([2000, 2000])
    box_lo, cell_size, res = build_grids(p2.numpy(), len2.numpy(), 2.0)[:3]
    assert res[0].prod() >= 2000 / 2 / 8 and (cell_size[0] < 0.5).all()  # the outliers did not stretch it
    assert (box_lo[1] + cell_size[1] * res[1] >= p2[1].max(0).values.numpy() - 1e-9).all()  # the whole box
    for K in (1, 10):
        idx = torch.full((2, 64, K), -1, dtype=torch.int64)
        dist = torch.zeros((2, 64, K), dtype=torch.float64)
        knn_ops._search_grid(p1, p2, len1, len2, K, 2, idx, dist)
        ref_idx, ref_dist = idx.clone().fill_(-1), dist.clone().zero_()
        knn_cpu(p1.numpy(), p2.numpy(), len1.numpy(), len2.numpy(), K, 2, ref_idx.numpy(), ref_dist.numpy())
        assert torch.equal(idx, ref_idx) and torch.equal(dist, ref_dist)
    assert idx[0, :3, 0].tolist() == [0, 1, 2]
