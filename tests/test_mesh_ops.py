import pytest
import torch
import torch.nn.functional as F

from p3dlab import data
from p3dlab.data import signed_volume
from p3dlab.ops import GraphConv, SubdivideMeshes, cubify, vert_align
from p3dlab.structures import Meshes, Pointclouds, TexturesVertex


def _closed_and_outward(m):
    f = m.faces_packed()
    directed = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    n = m.verts_packed().shape[0]
    key, rev = directed[:, 0] * n + directed[:, 1], directed[:, 1] * n + directed[:, 0]
    return (
        key.unique().numel() == key.numel()
        and bool(torch.isin(rev, key).all())
        and signed_volume(m.verts_packed().double(), f) > 0
    )


def test_cubify_counts_winding_and_alignment():
    v = torch.zeros(1, 3, 4, 5)
    v[0, 1, 1, 1] = 1
    one = cubify(v, 0.5)
    assert one.num_verts_per_mesh().tolist() == [8] and one.num_faces_per_mesh().tolist() == [12]
    assert _closed_and_outward(one)
    v[0, 1, 1, 2] = 1
    two = cubify(v, 0.5)
    assert two.num_verts_per_mesh().tolist() == [12] and two.num_faces_per_mesh().tolist() == [20]
    assert _closed_and_outward(two)
    full = cubify(torch.ones(1, 2, 2, 2), 0.5, align="corner")
    assert torch.equal(full.get_bounding_boxes()[0], torch.tensor([[-1.0, 1.0]] * 3))
    assert signed_volume(full.verts_packed(), full.faces_packed()).item() == pytest.approx(8.0)
    # x follows W, y follows H, z follows D
    box = cubify(v, 0.5, align="corner").get_bounding_boxes()[0]
    assert box[0].tolist() == pytest.approx([2 * 1 / 5 - 1, 2 * 3 / 5 - 1]) and box[2].tolist() == pytest.approx(
        [2 * 1 / 3 - 1, 2 * 2 / 3 - 1]
    )
    sphere = torch.zeros(1, 12, 12, 12)
    g = torch.linspace(-1, 1, 12)
    Z, Y, X = torch.meshgrid(g, g, g, indexing="ij")
    sphere[0] = ((X**2 + Y**2 + Z**2) < 0.6).float()
    assert _closed_and_outward(cubify(sphere, 0.5))
    with pytest.raises(ValueError, match="align"):
        cubify(v, 0.5, align="middle")


def test_subdivide_meshes_counts_positions_and_textures():
    tet = data.tetrahedron()
    tet.textures = TexturesVertex([torch.eye(4)[:, :3]])
    feats = torch.arange(4.0)[:, None]
    out, new_feats = SubdivideMeshes()(tet, feats)
    assert out.num_verts_per_mesh().tolist() == [10] and out.num_faces_per_mesh().tolist() == [16]
    assert _closed_and_outward(out)
    v, e = tet.verts_packed(), tet.edges_packed()
    mids = out.verts_packed()[4:]
    assert torch.allclose(mids, 0.5 * (v[e[:, 0]] + v[e[:, 1]]))
    assert torch.allclose(new_feats[4:, 0], 0.5 * (feats[e[:, 0], 0] + feats[e[:, 1], 0]))
    assert out.textures.verts_features_packed().shape == (10, 3)
    batch = SubdivideMeshes()(Meshes([v, v * 2], [tet.faces_packed()] * 2))
    assert batch.num_faces_per_mesh().tolist() == [16, 16]


def test_vert_align_reads_grid_sample_coordinates():
    fm = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 2, 3, 4)
    verts = torch.tensor([[[-1.0, -1.0, 0.0], [1.0, 1.0, 5.0], [0.0, 0.0, 1.0]]])
    out = vert_align(fm, verts)
    assert out.shape == (1, 3, 2)
    assert out[0, 0].tolist() == [0.0, 12.0]  # top-left
    assert out[0, 1].tolist() == [11.0, 23.0]  # bottom-right
    ref = F.grid_sample(fm, verts[:, :, None, :2], align_corners=True)[..., 0].transpose(1, 2)
    assert torch.allclose(out, ref)
    both = vert_align([fm, fm * 2], Pointclouds([verts[0]]), return_packed=True)
    assert both.shape == (3, 4) and torch.allclose(both[:, 2:], 2 * both[:, :2])


def test_graph_conv_matches_the_formula():
    torch.manual_seed(0)
    conv = GraphConv(3, 2)
    assert conv.w0.weight.std() < 0.05 and (conv.w0.bias == 0).all()
    x = torch.randn(4, 3)
    edges = torch.tensor([[0, 1], [1, 2], [2, 3]])
    y = conv(x, edges)
    nbrs = {0: [1], 1: [0, 2], 2: [1, 3], 3: [2]}
    for i in range(4):
        expected = conv.w0(x[i]) + sum(conv.w1(x[j]) for j in nbrs[i])
        assert torch.allclose(y[i], expected, atol=1e-6)
    directed = GraphConv(3, 2, directed=True)
    assert directed(x, edges).shape == (4, 2)
    with pytest.raises(ValueError, match="out of range"):
        conv(x, torch.tensor([[0, 9]]))
