import math

import pytest
import torch

from p3dlab.data import cube, ico_sphere, tetrahedron, uv_checker_texture, uv_sphere
from p3dlab.structures import (
    Meshes,
    Pointclouds,
    TexturesAtlas,
    TexturesUV,
    TexturesVertex,
    join_meshes_as_batch,
    join_meshes_as_scene,
    join_pointclouds_as_batch,
    join_pointclouds_as_scene,
    list_to_packed,
    list_to_padded,
    packed_to_list,
    padded_to_list,
    padded_to_packed,
)


def _random_mesh(nv, nf, gen):
    v = torch.rand((nv, 3), generator=gen)
    f = torch.randint(0, max(nv, 1), (nf, 3), generator=gen) if nv else torch.zeros((0, 3), dtype=torch.int64)
    return v, f


@pytest.fixture
def hetero():
    """The conventions' example V = [8, 6, 20], F = [12, 9, 36] plus an empty mesh."""
    g = torch.Generator().manual_seed(1)
    parts = [_random_mesh(8, 12, g), _random_mesh(6, 9, g), _random_mesh(20, 36, g), _random_mesh(0, 0, g)]
    return Meshes([p[0] for p in parts], [p[1] for p in parts])


def test_views_and_index_maps(hetero):
    m = hetero
    assert m.verts_padded().shape == (4, 20, 3)
    assert m.faces_padded().shape == (4, 36, 3)
    assert m.verts_packed().shape == (34, 3)
    assert m.faces_packed().shape == (57, 3)
    assert m.mesh_to_verts_packed_first_idx().tolist() == [0, 8, 14, 34]
    assert m.mesh_to_faces_packed_first_idx().tolist() == [0, 12, 21, 57]
    # The second mesh's first packed face is offset by 8 vertices.
    assert torch.equal(m.faces_packed()[12], m.faces_list()[1][0] + 8)
    assert m.verts_packed_to_mesh_idx().bincount().tolist() == [8, 6, 20]
    assert m.faces_packed_to_mesh_idx().bincount().tolist() == [12, 9, 36]
    # padding values
    assert (m.faces_padded()[0, 12:] == -1).all() and (m.verts_padded()[1, 6:] == 0).all()
    # padded -> packed index map
    assert torch.equal(m.verts_padded().view(-1, 3)[m.verts_padded_to_packed_idx()], m.verts_packed())


def test_list_padded_packed_round_trips(hetero):
    vl = hetero.verts_list()
    padded = list_to_padded(vl)
    back = padded_to_list(padded, [v.shape[0] for v in vl])
    assert all(torch.equal(a, b) for a, b in zip(vl, back))
    packed, n, first, idx = list_to_packed(vl)
    assert n.tolist() == [8, 6, 20, 0] and first.tolist() == [0, 8, 14, 34]
    assert all(torch.equal(a, b) for a, b in zip(vl, packed_to_list(packed, n.tolist())))
    assert torch.equal(padded_to_packed(padded, n.tolist()), packed)
    assert idx.tolist() == [0] * 8 + [1] * 6 + [2] * 20


def test_padded_constructor_drops_minus_one_faces():
    v = torch.rand(2, 4, 3)
    f = torch.tensor([[[0, 1, 2], [0, 2, 3]], [[0, 1, 2], [-1, -1, -1]]])
    m = Meshes(v, f)
    assert m.num_faces_per_mesh().tolist() == [2, 1]
    assert m.num_verts_per_mesh().tolist() == [4, 4]


def test_tetrahedron_edges_and_face_edge_map():
    m = Meshes([torch.rand(4, 3)], [torch.tensor([[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]])])
    edges = m.edges_packed()
    assert edges.tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    f2e = m.faces_packed_to_edges_packed()
    faces = m.faces_packed()
    for fi in range(4):
        for k in range(3):
            # column k is the edge opposite vertex k
            other = sorted(int(faces[fi, j]) for j in range(3) if j != k)
            assert edges[f2e[fi, k]].tolist() == other
    assert m.num_edges_per_mesh().tolist() == [6]


def test_edges_in_heterogeneous_batch_are_grouped_by_mesh(hetero):
    e2m = hetero.edges_packed_to_mesh_idx()
    assert (e2m[1:] >= e2m[:-1]).all()
    first = hetero.mesh_to_edges_packed_first_idx()
    assert first[0] == 0 and first[-1] == hetero.edges_packed().shape[0]


def test_cube_normals_and_areas():
    m = cube()
    fn = m.faces_normals_packed()
    centres = m.verts_packed()[m.faces_packed()].mean(1)
    # each face normal is the axis of its largest centroid coordinate, pointing outward
    axis = centres.abs().argmax(1)
    expected = torch.zeros_like(fn)
    expected[torch.arange(12), axis] = centres[torch.arange(12), axis].sign()
    assert torch.allclose(fn, expected, atol=1e-6)
    vn = m.verts_normals_packed()
    assert torch.allclose(vn, m.verts_packed() / math.sqrt(3), atol=1e-6)
    assert torch.allclose(m.faces_areas_packed(), torch.full((12,), 2.0))


def test_sphere_area_approaches_4pi():
    areas = [ico_sphere(level).faces_areas_packed().sum().item() for level in (2, 3, 4)]
    errors = [abs(a - 4 * math.pi) for a in areas]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] / (4 * math.pi) < 2e-3


def test_laplacian_is_neighbour_centroid_minus_vertex():
    m = tetrahedron()
    L = m.laplacian_packed().to_dense()
    v = m.verts_packed()
    lv = L @ v
    for i in range(4):
        others = [j for j in range(4) if j != i]
        assert torch.allclose(lv[i], v[others].mean(0) - v[i], atol=1e-6)


def test_offset_scale_update_padded_and_gradients(hetero):
    m = hetero
    total = m.verts_packed().shape[0]
    d = torch.zeros(total, 3, requires_grad=True)
    m2 = m.offset_verts(d)
    (m2.verts_packed() * torch.arange(total, dtype=torch.float32)[:, None]).sum().backward()
    assert torch.equal(d.grad[:, 0], torch.arange(total, dtype=torch.float32))
    m3 = m.offset_verts(torch.tensor([1.0, 2.0, 3.0]))
    assert torch.allclose(m3.verts_packed() - m.verts_packed(), torch.tensor([1.0, 2.0, 3.0]).expand(total, 3))
    m4 = m.clone()
    m4.scale_verts_(2.0)
    assert torch.allclose(m4.verts_packed(), 2 * m.verts_packed())
    m5 = m.update_padded(m.verts_padded() * 3)
    assert torch.allclose(m5.verts_packed(), 3 * m.verts_packed())
    assert m5.faces_list()[2] is m.faces_list()[2]
    with pytest.raises(ValueError, match="offset"):
        m.offset_verts(torch.zeros(5, 3))


def test_indexing_extend_join(hetero):
    m = hetero
    sub = m[[2, 0]]
    assert sub.num_verts_per_mesh().tolist() == [20, 8]
    assert torch.equal(m[1].verts_packed(), m.verts_list()[1])
    assert m[torch.tensor([True, False, True, False])].num_faces_per_mesh().tolist() == [12, 36]
    assert m[1:3].num_verts_per_mesh().tolist() == [6, 20]
    ext = m[:2].extend(3)
    assert ext.num_verts_per_mesh().tolist() == [8, 8, 8, 6, 6, 6]
    batch = join_meshes_as_batch([m[:2], m[2:]])
    assert torch.equal(batch.verts_packed(), m.verts_packed())
    scene = join_meshes_as_scene(m)
    assert len(scene) == 1 and torch.equal(scene.faces_packed(), m.faces_packed())
    with pytest.raises(IndexError):
        m[7]


def test_empty_meshes():
    m = Meshes([torch.zeros(0, 3)], [torch.zeros(0, 3, dtype=torch.int64)])
    assert m.isempty()
    assert m.verts_padded().shape == (1, 0, 3)
    assert m.edges_packed().shape == (0, 2)
    assert m.verts_normals_packed().shape == (0, 3)
    assert m.get_bounding_boxes().tolist() == [[[0, 0], [0, 0], [0, 0]]]
    none = Meshes([], [])
    assert none.isempty() and len(none) == 0 and none.verts_packed().shape == (0, 3)


def test_bounding_boxes_to_and_detach():
    m = cube(size=2.0)
    assert torch.equal(m.get_bounding_boxes()[0], torch.tensor([[-1.0, 1.0]] * 3))
    assert m.to(torch.float64).verts_packed().dtype == torch.float64
    v = torch.rand(4, 3, requires_grad=True)
    m2 = Meshes([v], [torch.tensor([[0, 1, 2]])])
    assert not m2.detach().verts_packed().requires_grad


@pytest.mark.parametrize(
    "verts, faces, message",
    [
        ([torch.rand(4, 3)], [torch.tensor([[0, 1, 4]])], r"mesh 0, face 0 .*\[0, 1, 4\].*4 vertices"),
        (
            [torch.rand(4, 3), torch.rand(3, 3)],
            [torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, -2]])],
            "mesh 1, face 0",
        ),
        ([torch.rand(4, 2)], [torch.tensor([[0, 1, 2]])], r"mesh 0 must have shape \(V, 3\)"),
        ([torch.rand(4, 3)], [torch.tensor([[0.0, 1.0, 2.0]])], "integer"),
        ([torch.randint(0, 3, (4, 3))], [torch.tensor([[0, 1, 2]])], "floating"),
        ([torch.tensor([[0.0, 0, 0], [1, float("nan"), 0], [0, 1, 0]])], [torch.tensor([[0, 1, 2]])], "vertex 1"),
        ([torch.rand(4, 3)], [torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 2]])], "1 vertex tensors but 2"),
        ([torch.rand(3, 3), torch.rand(3, 3, dtype=torch.float64)], [torch.tensor([[0, 1, 2]])] * 2, "one dtype"),
    ],
)
def test_bad_input_raises_value_error(verts, faces, message):
    with pytest.raises(ValueError, match=message):
        Meshes(verts, faces)


def test_mixed_devices_are_refused():
    v = torch.rand(3, 3, device="meta")
    with pytest.raises(ValueError, match="device"):
        Meshes(
            [torch.rand(3, 3), torch.rand(3, 3)], [torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 2]], device="meta")]
        )
    assert v.device.type == "meta"


# ---------------------------------------------------------------- textures
class _Frag:
    def __init__(self, p2f, bary):
        self.pix_to_face, self.bary_coords = p2f, bary


def test_textures_vertex_follow_the_batch(hetero):
    feats = [torch.rand(v.shape[0], 3) for v in hetero.verts_list()]
    m = Meshes(hetero.verts_list(), hetero.faces_list(), TexturesVertex(feats))
    sub = m[[2, 0]]
    assert torch.equal(sub.textures.verts_features_list()[0], feats[2])
    ext = m[:1].extend(2)
    assert len(ext.textures) == 2
    joined = join_meshes_as_batch([m[:1], m[1:2]])
    assert torch.equal(joined.textures.verts_features_packed(), torch.cat(feats[:2]))
    scene = join_meshes_as_scene(m)
    assert scene.textures.verts_features_packed().shape == (34, 3)
    with pytest.raises(ValueError, match="mesh 0 has 8 vertices but 5"):
        Meshes(hetero.verts_list(), hetero.faces_list(), TexturesVertex([torch.rand(5, 3)] + feats[1:]))
    with pytest.raises(ValueError, match="batch size"):
        Meshes(hetero.verts_list(), hetero.faces_list(), TexturesVertex(feats[:2]))


def test_textures_vertex_interpolation():
    m = Meshes([torch.rand(3, 3)], [torch.tensor([[0, 1, 2]])], TexturesVertex([torch.eye(3)]))
    p2f = torch.tensor([[[[0], [-1]]]])  # (1, 1, 2, 1)
    bary = torch.tensor([[[[[0.2, 0.3, 0.5]], [[1.0, 0.0, 0.0]]]]])
    tex = m.sample_textures(_Frag(p2f, bary))
    assert torch.allclose(tex[0, 0, 0, 0], torch.tensor([0.2, 0.3, 0.5]))
    assert torch.equal(tex[0, 0, 1, 0], torch.zeros(3))


def test_textures_uv_v_flip_and_corners():
    # A 2x2 map: top row red/green, bottom row blue/white.
    img = torch.tensor([[[1.0, 0, 0], [0, 1, 0]], [[0, 0, 1], [1, 1, 1]]])
    uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    tex = TexturesUV([img], [torch.tensor([[0, 1, 2], [1, 3, 2]])], [uvs])
    # bary one-hot on each corner of face 0 -> uv (0,0) bottom-left (blue), (1,0) bottom-right (white)
    p2f = torch.zeros(1, 1, 3, 1, dtype=torch.int64)
    bary = torch.eye(3)[None, None, :, None, :]
    out = tex.sample_textures(_Frag(p2f, bary))
    assert torch.allclose(out[0, 0, 0, 0], torch.tensor([0.0, 0, 1]))  # u=0, v=0: bottom-left
    assert torch.allclose(out[0, 0, 1, 0], torch.tensor([1.0, 1, 1]))  # u=1, v=0: bottom-right
    assert torch.allclose(out[0, 0, 2, 0], torch.tensor([1.0, 0, 0]))  # u=0, v=1: top-left


def test_textures_uv_join_scene_keeps_colours():
    tex_img = uv_checker_texture(16)
    s = uv_sphere(6, 8, texture=tex_img)
    two = join_meshes_as_batch([s, s.offset_verts(torch.tensor([3.0, 0, 0]))])
    scene = join_meshes_as_scene(two)
    g = torch.Generator().manual_seed(0)
    f = torch.randint(0, s.faces_packed().shape[0], (50,), generator=g)
    bary = torch.distributions.Dirichlet(torch.ones(3)).sample((50,))
    frag_one = _Frag(f.view(1, 50, 1, 1), bary.view(1, 50, 1, 1, 3))
    frag_scene = _Frag((f + s.faces_packed().shape[0]).view(1, 50, 1, 1), bary.view(1, 50, 1, 1, 3))
    a = s.sample_textures(frag_one)
    b = scene.sample_textures(frag_scene)
    assert torch.allclose(a, b, atol=1e-5)


def test_textures_uv_bad_indices():
    with pytest.raises(ValueError, match="index outside"):
        TexturesUV([torch.rand(4, 4, 3)], [torch.tensor([[0, 1, 5]])], [torch.rand(3, 2)])


def _atlas_read(atlas, bary):
    """The atlas entry a pixel of face 0 with barycentrics ``bary`` (M, 3) reads, as (M, C)."""
    M = bary.shape[0]
    frag = _Frag(torch.zeros(1, M, 1, 1, dtype=torch.int64), bary.view(1, M, 1, 1, 3))
    return TexturesAtlas([atlas]).sample_textures(frag)[0, :, 0, 0]


def test_textures_atlas_sampling_follows_pytorch3d_layout():
    """(w0, w1) picks the column and the row, PyTorch3D's way round: (0.8, 0.1) with R = 2 is in
    square (1, 0), lower-left half, so it reads atlas[0, 1]."""
    atlas = torch.zeros(1, 2, 2, 3)
    atlas[0, 0, 1] = torch.tensor([1.0, 0, 0])
    assert torch.equal(_atlas_read(atlas, torch.tensor([[0.8, 0.1, 0.1]]))[0], torch.tensor([1.0, 0, 0]))


@pytest.mark.parametrize("R", [1, 2, 3, 5])
def test_textures_atlas_gives_each_of_the_r2_small_triangles_its_own_entry(R):
    """The centroids of the R² small triangles of the face (lower-left and upper-right halves of the
    squares of side 1/R in (w0, w1)) read R² different entries; points near a small triangle's
    corners read the same entry as its centroid."""
    atlas = torch.arange(R * R, dtype=torch.float32).view(1, R, R, 1)
    centroids = []
    for i in range(R):
        for j in range(R - i):
            corners = [(i, j), (i + 1, j), (i, j + 1)]  # lower-left half of square (i, j)
            centroids.append(corners)
            if i + j + 2 <= R:
                centroids.append([(i + 1, j), (i, j + 1), (i + 1, j + 1)])  # upper-right half
    assert len(centroids) == R * R
    entries = []
    for corners in centroids:
        c = torch.tensor(corners, dtype=torch.float32) / R  # (3, 2) in (w0, w1)
        centre = c.mean(0)
        pts = torch.cat([centre[None], 0.9 * c + 0.1 * centre])  # the centroid and near its corners
        bary = torch.cat([pts, 1 - pts.sum(1, keepdim=True)], 1)
        read = _atlas_read(atlas, bary)[:, 0]
        assert (read == read[0]).all(), (corners, read)
        entries.append(int(read[0]))
    assert sorted(entries) == list(range(R * R))


# ---------------------------------------------------------------- point clouds
def test_pointclouds_views_and_ops():
    pts = [torch.rand(5, 3), torch.rand(0, 3), torch.rand(7, 3)]
    feats = [torch.rand(5, 4), torch.rand(0, 4), torch.rand(7, 4)]
    pc = Pointclouds(pts, features=feats)
    assert pc.points_padded().shape == (3, 7, 3)
    assert pc.points_packed().shape == (12, 3)
    assert pc.cloud_to_packed_first_idx().tolist() == [0, 5, 5]
    assert torch.equal(pc.points_padded().view(-1, 3)[pc.padded_to_packed_idx()], pc.points_packed())
    assert pc.features_padded().shape == (3, 7, 4)
    moved = pc.offset(torch.tensor([1.0, 0, 0]))
    assert torch.allclose(moved.points_packed()[:, 0], pc.points_packed()[:, 0] + 1)
    assert pc[[2]].num_points_per_cloud().tolist() == [7]
    assert pc.extend(2).num_points_per_cloud().tolist() == [5, 5, 0, 0, 7, 7]
    assert join_pointclouds_as_batch([pc, pc]).num_points_per_cloud().tolist() == [5, 0, 7, 5, 0, 7]
    assert join_pointclouds_as_scene(pc).points_packed().shape == (12, 3)
    sub = pc.subsample(3, generator=torch.Generator().manual_seed(0))
    assert sub.num_points_per_cloud().tolist() == [3, 0, 3]
    assert pc.get_bounding_boxes().shape == (3, 3, 2)


def test_pointclouds_estimate_normals_on_a_plane():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g)
    pts = torch.cat([xy, torch.zeros(200, 1)], 1)
    n = Pointclouds([pts]).estimate_normals(8)[0]
    assert torch.allclose(n[:, 2].abs(), torch.ones(200), atol=1e-4)


def test_pointclouds_bad_input():
    with pytest.raises(ValueError, match="cloud 0"):
        Pointclouds([torch.rand(5, 2)])
    with pytest.raises(ValueError, match="features of cloud 0"):
        Pointclouds([torch.rand(5, 3)], features=[torch.rand(4, 3)])
    with pytest.raises(ValueError, match="non-finite"):
        Pointclouds([torch.tensor([[0.0, float("inf"), 0.0]])])


def test_a_mesh_with_trainable_vertices_can_be_used_for_several_backward_passes():
    v = torch.rand(4, 3, requires_grad=True)
    m = Meshes([v], [torch.tensor([[0, 1, 2], [0, 2, 3]])])
    for _ in range(2):
        (m.verts_packed().sum() + m.faces_areas_packed().sum() + m.verts_normals_packed().sum()).backward()
    assert torch.isfinite(v.grad).all()
