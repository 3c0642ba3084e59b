"""Mesh R-CNN's mesh head on procedural shapes: data, the operations it is built from, metrics, training."""

import pytest
import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.meshrcnn import (
    PIX3D_WEIGHTS,
    SHAPENET_WEIGHTS,
    LossWeights,
    MeshRCNNHead,
    chamfer,
    evaluate,
    f_score,
    fit_meshrcnn,
    make_shapes,
    occupancy_meshes,
    shape_occupancy,
    voxel_centres,
    voxel_iou,
)
from p3dlab.ops import GraphConv, vert_align
from p3dlab.structures import Meshes
from p3dlab.utils import ico_sphere


@pytest.fixture(scope="module")
def shapes():
    return make_shapes(8, seed=3, image_size=32, voxel_size=8)


def test_shapes_are_deterministic_and_aligned_with_their_images(shapes):
    again = make_shapes(8, seed=3, image_size=32, voxel_size=8)
    assert torch.equal(again.images, shapes.images) and torch.equal(again.voxels, shapes.voxels)
    other = make_shapes(8, seed=4, image_size=32, voxel_size=8)
    assert not torch.equal(other.voxels, shapes.voxels)
    assert shapes.labels.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    # voxel [d, h, w] sits behind image pixel (h, w): the occupancy seen along the view axis is the
    # silhouette of the render (pooled to the grid's resolution)
    seen = shapes.voxels.amax(1) > 0.5
    silhouette = torch.nn.functional.adaptive_avg_pool2d((shapes.images > 0.02).float(), 8)[:, 0] > 0.5
    assert (seen == silhouette).float().mean() > 0.9
    # the ground-truth meshes lie in the grid and their vertices are inside or on the shape
    assert shapes.meshes.verts_packed().abs().max() < 1
    m = shapes.meshes[1]  # an ellipsoid: its vertices are on the surface, slightly shrunk ones inside
    inside = shape_occupancy(1, shapes.sizes[1].double(), shapes.rotations[1].double(), 0.98 * m.verts_packed())
    assert inside.all()


def test_voxel_centres_follow_cubify_corner_alignment():
    c = voxel_centres(4)
    assert c[0, 0, 0].tolist() == [-0.75, -0.75, -0.75]
    assert c[1, 2, 3].tolist() == [0.75, 0.25, -0.25]  # (x, y, z) from (w, h, d)
    grid = torch.zeros(1, 4, 4, 4)
    grid[0, 1, 2, 3] = 1
    box = occupancy_meshes(grid).get_bounding_boxes()[0]
    assert box[:, 0].tolist() == [0.5, 0.0, -0.5] and box[:, 1].tolist() == [1.0, 0.5, 0.0]


def test_vert_align_matches_a_hand_computed_bilinear_sample():
    # feature value = 10 * row + column on a 3 x 4 map
    fm = (10 * torch.arange(3.0)[:, None] + torch.arange(4.0)[None]).view(1, 1, 3, 4).double()
    x, y = 0.3, -0.2
    verts = torch.tensor([[[x, y, 0.7]]], dtype=torch.float64)
    # align_corners=True: column = (x + 1)/2 * (W - 1), row = (y + 1)/2 * (H - 1)
    col, row = (x + 1) / 2 * 3, (y + 1) / 2 * 2
    c0, r0 = int(col), int(row)
    a, b = col - c0, row - r0
    f = fm[0, 0]
    by_hand = (
        (1 - a) * (1 - b) * f[r0, c0]
        + a * (1 - b) * f[r0, c0 + 1]
        + (1 - a) * b * f[r0 + 1, c0]
        + a * b * f[r0 + 1, c0 + 1]
    )
    assert vert_align(fm, verts)[0, 0, 0].item() == pytest.approx(by_hand.item(), abs=1e-12)
    assert by_hand.item() == pytest.approx(10 * row + col, abs=1e-12)  # bilinear reproduces a linear map
    # align_corners=False (pixel centres, what the mesh head uses): column = ((x + 1) W - 1)/2
    col, row = ((x + 1) * 4 - 1) / 2, ((y + 1) * 3 - 1) / 2
    out = vert_align(fm, verts, align_corners=False)
    assert out[0, 0, 0].item() == pytest.approx(10 * row + col, abs=1e-12)


def test_graph_conv_matches_a_dense_adjacency_reference():
    torch.manual_seed(0)
    mesh = ico_sphere(1)
    edges = mesh.edges_packed()
    V = mesh.verts_packed().shape[0]
    conv = GraphConv(5, 4).double()
    x = torch.randn(V, 5, dtype=torch.float64, requires_grad=True)
    A = torch.zeros(V, V, dtype=torch.float64)
    A[edges[:, 0], edges[:, 1]] = 1
    A[edges[:, 1], edges[:, 0]] = 1
    dense = conv.w0(x) + A @ conv.w1(x)  # y_i = W0 x_i + b0 + sum_j A_ij (W1 x_j + b1)
    assert torch.allclose(conv(x, edges), dense, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: conv(t, edges), (x,))
    directed = GraphConv(5, 4, directed=True).double()
    A_dir = torch.zeros(V, V, dtype=torch.float64)
    A_dir[edges[:, 0], edges[:, 1]] = 1
    assert torch.allclose(directed(x, edges), directed.w0(x) + A_dir @ directed.w1(x), atol=1e-12)


def test_f_score_and_chamfer_on_known_point_sets():
    gt = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]])
    assert f_score(gt, gt, 0.01).item() == 1.0
    assert f_score(gt + 5, gt, 0.5).item() == 0.0
    # two predicted points within 0.1 of gt, one 0.3 away: precision 2/3; recall 2/4
    pred = torch.tensor([[[0.05, 0, 0], [1, 0.05, 0], [0, 1.3, 0]]])
    p, r = 2 / 3, 2 / 4
    assert f_score(pred, gt, 0.1).item() == pytest.approx(2 * p * r / (p + r))
    # τ = 0.35: every predicted point is close (precision 1); three of the four gt points (recall 3/4)
    assert f_score(pred, gt, 0.35).item() == pytest.approx(2 * 0.75 / 1.75)
    # Chamfer: mean squared nearest distance both ways
    x = torch.tensor([[[0.0, 0, 0], [2, 0, 0]]])
    y = torch.tensor([[[0.0, 0, 1]]])
    assert chamfer(x, y).item() == pytest.approx((1 + 5) / 2 + 1)
    assert voxel_iou(torch.tensor([[1, 1, 0, 0]]), torch.tensor([[1, 0, 1, 0]])).item() == pytest.approx(1 / 3)


def test_f_score_recall_counts_ground_truth_points():
    gt = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]])
    pred = torch.tensor([[[0.0, 0, 0]]])  # one perfect point: precision 1, recall 1/4
    assert f_score(pred, gt, 0.1).item() == pytest.approx(2 * 0.25 / 1.25)


def test_head_shapes_and_identity_at_start(shapes):
    torch.manual_seed(0)
    model = MeshRCNNHead(voxel_size=8, num_stages=2, hidden=16, width=8)
    logits, meshes = model(shapes.images[:2], shapes.voxels[:2])
    assert logits.shape == (2, 8, 8, 8) and len(meshes) == 3
    # untrained offset layers are zero: every stage returns the cubified mesh
    assert torch.equal(meshes[2].verts_packed(), meshes[0].verts_packed())
    assert torch.equal(meshes[0].verts_packed(), occupancy_meshes(shapes.voxels[:2]).verts_packed())
    logits, meshes = model(shapes.images[:2])  # from the prediction: never an empty mesh
    assert (meshes[0].num_faces_per_mesh() > 0).all()
    assert PIX3D_WEIGHTS == LossWeights(voxel=3.0, chamfer=1.0, normal=0.1, edge=1.0)


def test_refinement_reduces_chamfer_on_held_out_shapes():
    # one small stage learns to move the vertices of coarse (8³) cubified ground truth towards the
    # surface; measured on shapes it never saw
    train = make_shapes(32, seed=0, image_size=32, voxel_size=8)
    test = make_shapes(6, seed=100, image_size=32, voxel_size=8)
    torch.manual_seed(0)
    model = MeshRCNNHead(voxel_size=8, num_stages=1, num_convs=2, hidden=32, width=8)
    hist = fit_meshrcnn(model, train, test, iterations=60, batch_size=4, lr=3e-3, num_samples=300,
                        weights=SHAPENET_WEIGHTS, use_gt_voxels=True, eval_every=60, eval_samples=500)  # fmt: skip
    metrics = evaluate(model, test, 500, use_gt_voxels=True)
    assert metrics["chamfer"] < 0.98 * metrics["cubified_chamfer"]
    assert metrics["f_score"] > metrics["cubified_f_score"]
    assert hist.test_chamfer[-1] == pytest.approx(metrics["chamfer"])
    assert set(hist.terms) == {"voxel", "chamfer1", "normal1", "edge1"}


def test_bad_input_raises_clear_errors(shapes):
    with pytest.raises(P3DLabValueError, match="n >= 1"):
        make_shapes(0)
    with pytest.raises(P3DLabValueError, match="classes"):
        make_shapes(2, classes=("teapot",))
    with pytest.raises(P3DLabValueError, match="voxel_size <= 128"):
        make_shapes(1, voxel_size=4096)
    with pytest.raises(P3DLabValueError, match="tau"):
        f_score(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), 0.0)
    with pytest.raises(P3DLabValueError, match=r"\(N, P, 3\)"):
        f_score(torch.zeros(2, 3), torch.zeros(1, 2, 3), 0.1)
    with pytest.raises(P3DLabValueError, match="no points"):
        chamfer(torch.zeros(1, 0, 3), torch.zeros(1, 2, 3))
    with pytest.raises(P3DLabValueError, match="batch sizes"):
        chamfer(torch.zeros(1, 2, 3), torch.zeros(2, 2, 3))
    model = MeshRCNNHead(voxel_size=8, num_stages=1, hidden=8, width=4)
    with pytest.raises(P3DLabValueError, match=r"\(N, 1, H, W\)"):
        model(torch.zeros(1, 3, 32, 32))
    with pytest.raises(P3DLabValueError, match="voxels must be"):
        model(shapes.images[:1], torch.zeros(1, 4, 4, 4))
    with pytest.raises(P3DLabValueError, match="cubify_thresh"):
        MeshRCNNHead(cubify_thresh=1.5)
    with pytest.raises(P3DLabValueError, match="model's 16"):
        fit_meshrcnn(MeshRCNNHead(voxel_size=16, hidden=8, width=4), shapes, iterations=1)
    with pytest.raises(P3DLabValueError, match="lr"):
        fit_meshrcnn(model, shapes, iterations=1, lr=0.0)
    with pytest.raises(P3DLabValueError, match="meshes"):
        from p3dlab.meshrcnn import mesh_metrics

        mesh_metrics(shapes.meshes[:2], shapes.meshes[:3])
    assert isinstance(shapes.meshes, Meshes)
