import pytest
import torch

from p3dlab.ops import knn_gather, knn_points
from p3dlab.ops.knn import _search_torch


def _brute(p1, p2, K, norm=2):
    d = (p1[:, :, None] - p2[:, None]).abs()
    d = d.pow(2).sum(-1) if norm == 2 else d.sum(-1)
    return d.topk(K, dim=2, largest=False, sorted=True)


@pytest.mark.parametrize("norm", [1, 2])
def test_knn_matches_brute_force(norm):
    g = torch.Generator().manual_seed(0)
    p1 = torch.rand(2, 40, 3, generator=g, dtype=torch.float64)
    p2 = torch.rand(2, 55, 3, generator=g, dtype=torch.float64)
    res = knn_points(p1, p2, K=5, norm=norm, return_nn=True)
    ref = _brute(p1, p2, 5, norm)
    assert torch.equal(res.idx, ref.indices)
    assert torch.allclose(res.dists, ref.values)
    assert torch.allclose(res.knn, knn_gather(p2, res.idx))
    # the torch path used on other devices agrees
    assert torch.equal(_search_torch(p1, p2, torch.tensor([55, 55]), 5, norm), ref.indices)


def test_knn_lengths_and_padding():
    g = torch.Generator().manual_seed(1)
    p1, p2 = torch.rand(2, 6, 3, generator=g), torch.rand(2, 8, 3, generator=g)
    res = knn_points(p1, p2, lengths1=torch.tensor([6, 3]), lengths2=torch.tensor([8, 2]), K=4)
    assert (res.idx[1, :3, 2:] == -1).all() and (res.idx[1, 3:] == -1).all()
    assert (res.idx[1, :3, :2] < 2).all() and (res.dists[1, 3:] == 0).all()
    ref = _brute(p1[1:, :3], p2[1:, :2], 2)
    assert torch.equal(res.idx[1, :3, :2], ref.indices[0])


def test_knn_gradients_and_ties():
    p1 = torch.rand(1, 5, 3, dtype=torch.float64, requires_grad=True)
    p2 = torch.rand(1, 7, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: knn_points(a, b, K=2).dists, (p1, p2))
    same = torch.zeros(1, 3, 3)
    assert knn_points(torch.zeros(1, 1, 3), same, K=3).idx.tolist() == [[[0, 1, 2]]]  # ties: lower index first


def test_knn_bad_input():
    with pytest.raises(ValueError, match="K must be"):
        knn_points(torch.rand(1, 3, 3), torch.rand(1, 3, 3), K=0)
    with pytest.raises(ValueError, match="p1"):
        knn_points(torch.rand(3, 3), torch.rand(1, 3, 3))
