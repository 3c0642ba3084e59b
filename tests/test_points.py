import math

import numpy as np
import pytest
import torch

from p3dlab.ops.pixels import pixel_centres
from p3dlab.ops.rasterize_points import rasterize_points
from p3dlab.renderer import (
    AlphaCompositor,
    FoVOrthographicCameras,
    NormWeightedCompositor,
    PointsRasterizationSettings,
    PointsRasterizer,
    PointsRenderer,
    WeightedSumCompositor,
)
from p3dlab.renderer.points import alpha_composite
from p3dlab.structures import Pointclouds


def _cloud(n=60, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    xy = (torch.rand(n, 2, generator=g, dtype=dtype) * 2 - 1) * 1.1
    z = torch.rand(n, 1, generator=g, dtype=dtype) * 3 - 0.5  # some behind the camera
    return torch.cat([xy, z], 1)


def _reference(pts, radius, H, W, K):
    px, py = pixel_centres(H, W, pts.dtype)
    d2 = (pts[:, 0][None, None] - px[..., None]) ** 2 + (pts[:, 1][None, None] - py[..., None]) ** 2
    ok = (d2 < radius**2) & (pts[:, 2] >= 0)[None, None]
    key = torch.where(ok, pts[:, 2].expand_as(d2), torch.full_like(d2, float("inf")))
    order = torch.sort(key, dim=2, stable=True).indices[..., :K]
    valid = torch.gather(ok, 2, order)
    idx = torch.where(valid, order, -1)
    z = torch.where(valid, pts[:, 2][order], -1.0)
    d = torch.where(valid, torch.gather(d2, 2, order), -1.0)
    return idx, z, d


@pytest.mark.parametrize("K, radius", [(1, 0.1), (4, 0.2), (10, 0.35)])
def test_point_kernel_matches_reference(K, radius):
    pts = _cloud()
    idx, z, d = rasterize_points(Pointclouds([pts]), image_size=(13, 17), radius=radius, points_per_pixel=K)
    ridx, rz, rd = _reference(pts, radius, 13, 17, K)
    assert idx.dtype == torch.int32
    assert torch.equal(idx[0].long(), ridx)
    assert torch.allclose(z[0], rz) and torch.allclose(d[0], rd)
    assert (idx >= 0).sum() > 10


def test_band_equals_naive_and_per_point_radius():
    from p3dlab.kernels.point_raster import rasterize_points_cpu, rasterize_points_cpu_naive

    pts = _cloud(200, seed=2).numpy()
    radius = np.random.default_rng(0).uniform(0.02, 0.2, 200)
    outs = []
    for fn in (rasterize_points_cpu, rasterize_points_cpu_naive):
        o = [np.full((1, 19, 23, 5), -1, np.int32), np.full((1, 19, 23, 5), -1.0), np.full((1, 19, 23, 5), -1.0)]
        fn(pts, radius, np.array([0]), np.array([200]), 19, 23, 5, *o)
        outs.append(o)
    for a, b in zip(*outs):
        assert np.array_equal(a, b)


def test_point_backward_gradcheck():
    pts = _cloud(8, seed=3).clamp(min=-0.9, max=0.9)
    pts[:, 2] = pts[:, 2].abs() + 0.5
    pts.requires_grad_(True)
    g = torch.Generator().manual_seed(0)
    wz, wd = (
        torch.randn(1, 9, 9, 3, generator=g, dtype=torch.float64),
        torch.randn(1, 9, 9, 3, generator=g, dtype=torch.float64),
    )

    def f(p):
        idx, z, d = rasterize_points(Pointclouds([p]), image_size=9, radius=0.3, points_per_pixel=3)
        valid = (idx >= 0).double()
        return (z * wz * valid).sum() + (d * wd * valid).sum()

    assert torch.autograd.gradcheck(f, (pts,), eps=1e-7, atol=1e-6)


def test_compositors():
    idx = torch.tensor([[[[0]], [[1]], [[-1]]]])  # (N=1, K=3, H=1, W=1)
    alphas = torch.tensor([[[[0.5]], [[0.5]], [[0.9]]]], dtype=torch.float64, requires_grad=True)
    feats = torch.tensor([[1.0, 3.0]], dtype=torch.float64, requires_grad=True)  # C=1, P=2
    out = alpha_composite(idx, alphas, feats)
    assert out.item() == pytest.approx(0.5 * 1 + 0.5 * 0.5 * 3)  # the invalid slot neither adds nor attenuates
    assert WeightedSumCompositor()(idx, alphas, feats).item() == pytest.approx(0.5 + 1.5)
    assert NormWeightedCompositor()(idx, alphas, feats).item() == pytest.approx(2.0 / 1.0)
    assert torch.autograd.gradcheck(lambda a, f: alpha_composite(idx, a, f), (alphas, feats))
    bg = AlphaCompositor(background_color=(0.2,))(torch.full((1, 3, 1, 1), -1), alphas, feats)
    assert bg.item() == pytest.approx(0.2)


def test_a_point_covers_a_disk_of_the_right_area():
    S, r = 64, 0.25
    pc = Pointclouds([torch.tensor([[0.013, -0.021, 2.0]])], features=[torch.ones(1, 3)])
    renderer = PointsRenderer(
        PointsRasterizer(
            FoVOrthographicCameras(), PointsRasterizationSettings(image_size=S, radius=r, points_per_pixel=1)
        ),
        AlphaCompositor(),
    )
    img = renderer(pc)
    area = (img[0, ..., 0] > 0).sum().item()
    assert area == pytest.approx(math.pi * (r * S / 2) ** 2, rel=0.03)


def test_bad_point_input():
    with pytest.raises(ValueError, match="radius"):
        rasterize_points(Pointclouds([_cloud(5)]), radius=-1.0)
    with pytest.raises(ValueError, match="features"):
        PointsRenderer(PointsRasterizer(FoVOrthographicCameras()), AlphaCompositor())(Pointclouds([_cloud(5)]))
