import pytest
import torch

from p3dlab.ops import chamfer_distance
from p3dlab.structures import Pointclouds

X = torch.tensor([[[0.0, 0, 0], [1, 0, 0]]])
Y = torch.tensor([[[0.0, 0, 0], [0, 2, 0], [0, 0, 3]]])


def test_worked_example_from_the_conventions():
    assert chamfer_distance(X, Y)[0].item() == pytest.approx(0.5 + 13 / 3)
    assert chamfer_distance(X, Y, point_reduction="sum")[0].item() == pytest.approx(14.0)
    assert chamfer_distance(X, Y, norm=1)[0].item() == pytest.approx(2.1667, abs=1e-4)
    assert chamfer_distance(X, Y, single_directional=True)[0].item() == pytest.approx(0.5)
    # "max": each direction's largest distance (x: 1, y: 9), then the larger of the two (PyTorch3D >= 0.7.8)
    assert chamfer_distance(X, Y, point_reduction="max")[0].item() == pytest.approx(9.0)


def _brute(x, y):
    d = ((x[:, None] - y[None]) ** 2).sum(-1)
    return d.min(1).values.mean() + d.min(0).values.mean()


def test_heterogeneous_lengths_match_unpadded_clouds():
    g = torch.Generator().manual_seed(0)
    xs = [torch.rand(n, 3, generator=g) for n in (5, 9)]
    ys = [torch.rand(n, 3, generator=g) for n in (7, 3)]
    pcx, pcy = Pointclouds(xs), Pointclouds(ys)
    loss, _ = chamfer_distance(pcx, pcy, batch_reduction=None)
    expected = torch.stack([_brute(a, b) for a, b in zip(xs, ys)])
    assert torch.allclose(loss, expected, atol=1e-6)
    # padding values must not matter
    xp = pcx.points_padded().clone()
    xp[0, 5:] = 100.0
    loss2, _ = chamfer_distance(
        xp, pcy.points_padded(), pcx.num_points_per_cloud(), pcy.num_points_per_cloud(), batch_reduction=None
    )
    assert torch.allclose(loss2, expected, atol=1e-6)


def test_blocks_and_gradients():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 2500, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 1800, 3, generator=g, dtype=torch.float64)
    loss, _ = chamfer_distance(x, y)
    assert loss.item() == pytest.approx(_brute(x[0], y[0]).item(), rel=1e-10)
    xs = x[:, :6].detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: chamfer_distance(a, y[:, :7])[0], (xs,))


def test_normals_term():
    n = torch.tensor([[[0.0, 0, 1], [0, 0, -1]]])
    m = torch.tensor([[[0.0, 0, 1], [1, 0, 0], [0, 1, 0]]])
    _, ln = chamfer_distance(X, Y, x_normals=n, y_normals=m)
    # x0 -> y0 cos 1; x1 -> y0 |cos| 1 -> 0; y0 -> x0: 0; y1 (0,1,0) -> x0 (0,0,1): 1; y2 -> x0: 1 - 0 = 1
    assert ln.item() == pytest.approx(0.0 + (0 + 1 + 1) / 3)
    _, ln2 = chamfer_distance(X, Y, x_normals=n, y_normals=m, abs_cosine=False)
    assert ln2.item() == pytest.approx((0 + 2) / 2 + (0 + 1 + 1) / 3)


def test_bad_inputs():
    with pytest.raises(ValueError, match="norm"):
        chamfer_distance(X, Y, norm=3)
    with pytest.raises(ValueError, match="mismatch"):
        chamfer_distance(X, Y[:, :, :2])
