import math

import pytest
import torch

from p3dlab import data
from p3dlab.loss import mesh_edge_loss, mesh_laplacian_smoothing, mesh_normal_consistency
from p3dlab.structures import Meshes, join_meshes_as_batch

D = torch.float64


def _ring(centre, lift=0.0):
    """A planar hexagonal one-ring around a centre vertex (index 0)."""
    ang = torch.arange(6, dtype=D) * math.pi / 3
    ring = torch.stack([torch.cos(ang), torch.sin(ang), torch.zeros(6, dtype=D)], 1)
    c = torch.tensor([[*centre, lift]], dtype=D)
    faces = torch.tensor([[0, 1 + i, 1 + (i + 1) % 6] for i in range(6)])
    return Meshes([torch.cat([c, ring])], [faces])


def _delta(mesh, method):
    # per-vertex delta of the centre only: the loss over a one-mesh batch is the mean of norms, so
    # recover the centre's norm by comparing with the rim-only contribution
    return mesh_laplacian_smoothing(mesh, method)


def test_edge_loss_is_a_mean_of_squared_lengths():
    sq = Meshes([torch.tensor([[0.0, 0, 0], [2, 0, 0], [2, 2, 0], [0, 2, 0]])], [torch.tensor([[0, 1, 2], [0, 2, 3]])])
    # 4 sides of length 2 and one diagonal of length sqrt(8)
    assert mesh_edge_loss(sq).item() == pytest.approx((4 * 4 + 8) / 5)
    assert mesh_edge_loss(sq, target_length=2.0).item() == pytest.approx((math.sqrt(8) - 2) ** 2 / 5)
    batch = join_meshes_as_batch([sq, sq.scale_verts(0.5)])
    assert mesh_edge_loss(batch).item() == pytest.approx(((4 * 4 + 8) / 5 + (4 + 2) / 5) / 2)


def test_normal_consistency_flat_hinge_and_fold():
    def hinge(alpha):
        v = torch.tensor([[0.0, 0, 0], [0, 1, 0], [1, 0, 0], [-math.cos(alpha), 0, math.sin(alpha)]], dtype=D)
        return Meshes([v], [torch.tensor([[0, 1, 2], [0, 3, 1]])])

    assert mesh_normal_consistency(hinge(0.0)).item() == pytest.approx(0.0, abs=1e-12)
    a = 0.7
    assert mesh_normal_consistency(hinge(a)).item() == pytest.approx(1 - math.cos(a), abs=1e-12)
    assert mesh_normal_consistency(hinge(math.pi - 1e-9)).item() == pytest.approx(2.0, abs=1e-6)
    assert mesh_normal_consistency(data.cube().to(D)).item() == pytest.approx((6 * 0 + 12 * 1) / 18)


def test_laplacian_uniform_vs_cot_on_a_planar_ring():
    centred, off = _ring((0.0, 0.0)), _ring((0.1, 0.3))
    assert mesh_laplacian_smoothing(centred, "uniform").item() > 0  # the rim vertices are not centred
    # cot: zero for every vertex of a planar patch? only interior vertices; compare centre deltas directly
    from p3dlab.loss.mesh_losses import cot_laplacian_weights

    for mesh in (centred, off):
        W, _ = cot_laplacian_weights(mesh.verts_packed(), mesh.faces_packed())
        v = mesh.verts_packed()
        row = W.to_dense()[0]
        delta_cot = (row @ v) / row.sum() - v[0]
        delta_uni = v[1:].mean(0) - v[0]
        assert torch.allclose(delta_cot, torch.zeros(3, dtype=D), atol=1e-12)
        if mesh is off:
            assert torch.allclose(delta_uni, torch.tensor([-0.1, -0.3, 0.0], dtype=D), atol=1e-12)
    lifted = _ring((0.0, 0.0), lift=0.3)
    W, _ = cot_laplacian_weights(lifted.verts_packed(), lifted.faces_packed())
    v = lifted.verts_packed()
    row = W.to_dense()[0]
    assert torch.allclose((row @ v) / row.sum() - v[0], torch.tensor([0, 0, -0.3], dtype=D), atol=1e-12)
    assert torch.allclose(v[1:].mean(0) - v[0], torch.tensor([0, 0, -0.3], dtype=D), atol=1e-12)


def test_laplacian_losses_on_a_sphere_and_gradients():
    s = data.ico_sphere(3).to(D)
    u = mesh_laplacian_smoothing(s, "uniform").item()
    c = mesh_laplacian_smoothing(s, "cot").item()
    k = mesh_laplacian_smoothing(s, "cotcurv").item()
    # on a unit sphere sum_j w_ij (v_j - v_i) = 2 A_voronoi |2H n| = 4 A_voronoi, and A_i (all
    # incident faces) = 3 A_voronoi, so cotcurv's |delta| = 4 / (4 * 3) = 1/3; uniform/cot are small
    assert 0 < u < 0.05 and 0 < c < 0.05 and k == pytest.approx(1 / 3, rel=0.01)
    v = s.verts_packed().clone().requires_grad_(True)
    m = Meshes([v], s.faces_list())
    for method in ("uniform", "cot", "cotcurv"):
        v.grad = None
        mesh_laplacian_smoothing(m, method).backward()
        assert torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown method"):
        mesh_laplacian_smoothing(s, "bogus")


def test_losses_on_empty_meshes_are_zero():
    empty = Meshes([torch.zeros(0, 3)], [torch.zeros(0, 3, dtype=torch.int64)])
    for fn in (mesh_edge_loss, mesh_normal_consistency, mesh_laplacian_smoothing):
        assert fn(empty).item() == 0.0
