import math

import pytest
import torch

from p3dlab import data
from p3dlab.data import signed_volume
from p3dlab.ops import sample_points_from_meshes
from p3dlab.structures import Meshes


def _euler_characteristic(m: Meshes) -> int:
    v = int(m.num_verts_per_mesh()[0])
    e = int(m.num_edges_per_mesh()[0])
    f = int(m.num_faces_per_mesh()[0])
    return v - e + f


def _is_closed_and_consistent(m: Meshes) -> bool:
    """Every undirected edge is used by exactly two faces, once in each direction."""
    f = m.faces_packed()
    directed = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    n = int(m.num_verts_per_mesh()[0])
    key = directed[:, 0] * n + directed[:, 1]
    rev = directed[:, 1] * n + directed[:, 0]
    if key.unique().numel() != key.numel():
        return False  # a directed edge used twice: inconsistent winding
    return bool(torch.isin(rev, key).all())


GENUS0 = {
    "cube": (data.cube, 8, 12),
    "tetrahedron": (data.tetrahedron, 4, 4),
    "octahedron": (data.octahedron, 6, 8),
    "icosahedron": (data.icosahedron, 12, 20),
    "dodecahedron": (data.dodecahedron, 20, 36),
    "ico_sphere(3)": (lambda: data.ico_sphere(3), 642, 1280),
    "uv_sphere": (lambda: data.uv_sphere(8, 12), 7 * 12 + 2, 2 * 12 * 7),
    "cylinder": (lambda: data.cylinder(n=16), 34, 64),
    "capsule": (lambda: data.capsule(n_around=12, n_cap=4), 12 * 8 + 2, 2 * 12 * 8),
}


@pytest.mark.parametrize("name", list(GENUS0))
def test_closed_genus0_shapes(name):
    make, nv, nf = GENUS0[name]
    m = make()
    assert m.num_verts_per_mesh().tolist() == [nv]
    assert m.num_faces_per_mesh().tolist() == [nf]
    assert _euler_characteristic(m) == 2
    assert _is_closed_and_consistent(m)
    assert signed_volume(m.verts_packed().double(), m.faces_packed()) > 0


def test_volumes_match_analytic_values():
    assert float(signed_volume(data.cube(size=2.0).verts_packed(), data.cube().faces_packed())) == pytest.approx(8.0)
    s = data.ico_sphere(4)
    assert float(signed_volume(s.verts_packed().double(), s.faces_packed())) == pytest.approx(4 / 3 * math.pi, rel=5e-3)
    t = data.torus(1.0, 0.25, 64, 32)
    assert float(signed_volume(t.verts_packed().double(), t.faces_packed())) == pytest.approx(
        2 * math.pi**2 * 0.25**2, rel=1e-2
    )
    c = data.cylinder(0.5, 2.0, n=64)
    assert float(signed_volume(c.verts_packed().double(), c.faces_packed())) == pytest.approx(math.pi * 0.5, rel=2e-3)


def test_torus_is_genus_one():
    t = data.torus()
    assert _euler_characteristic(t) == 0 and _is_closed_and_consistent(t)


def test_ico_sphere_counts_and_radius():
    for level in range(5):
        s = data.ico_sphere(level)
        assert s.num_verts_per_mesh().item() == 10 * 4**level + 2
        assert s.num_faces_per_mesh().item() == 20 * 4**level
        assert torch.allclose(s.verts_packed().norm(dim=1), torch.ones(1), atol=1e-6)
    with pytest.raises(ValueError):
        data.ico_sphere(-1)


def test_inverted_cube_is_the_books_bug():
    m = data.cube(inverted=True)
    assert signed_volume(m.verts_packed(), m.faces_packed()) < 0
    # the vertex normal at (1, 1, 1) points inward, as in docs/errata.md#e8
    i = int((m.verts_packed() - 1).abs().sum(1).argmin())
    assert torch.allclose(m.verts_normals_packed()[i], -torch.ones(3) / math.sqrt(3), atol=1e-6)


def test_colored_cube_has_red_plus_x():
    m = data.colored_cube()
    fn = m.faces_normals_packed()
    cols = m.textures.verts_features_packed()[m.faces_packed()[:, 0]]
    plus_x = fn[:, 0] > 0.9
    assert plus_x.sum() == 2
    assert torch.allclose(cols[plus_x], torch.tensor([1.0, 0.1, 0.1]).expand(2, 3))


def test_teapot_shape():
    m = data.teapot(6)
    v = m.verts_packed()
    nf = int(m.num_faces_per_mesh())
    assert 2000 < nf < 3500
    lo, hi = v.min(0).values, v.max(0).values
    # the extents of the tutorials' teapot: x in [-0.96, 1.09], y in [0, 1], z in [-0.64, 0.64]
    assert lo[1].item() == pytest.approx(0.0, abs=1e-6) and hi[1].item() == pytest.approx(1.0, abs=1e-6)
    assert hi[0].item() == pytest.approx(1.09, abs=0.04) and lo[0].item() == pytest.approx(-0.96, abs=0.04)
    assert hi[2].item() == pytest.approx(0.635, abs=0.01)
    # no duplicate vertices and no degenerate faces after welding
    assert torch.unique(v, dim=0).shape[0] == v.shape[0]
    assert (m.faces_areas_packed() > 0).all()
    # the revolution part (body) is oriented outward: normals away from the Y axis at mid height
    vn = m.verts_normals_packed()
    mid = (v[:, 1] > 0.25) & (v[:, 1] < 0.38) & (v[:, 0].abs() < 0.3)
    radial = v[mid] * torch.tensor([1.0, 0.0, 1.0])
    assert ((vn[mid] * radial).sum(1) > 0).all()
    finer = data.teapot(10)
    assert int(finer.num_faces_per_mesh()) > nf
    n = data.teapot(3, normalize=True).verts_packed()
    assert (n.max(0).values - n.min(0).values).max().item() == pytest.approx(2.0)


def test_checker_texture_orientation():
    img = data.uv_checker_texture(64)
    assert img.shape == (64, 64, 3) and 0 <= img.min() and img.max() <= 1
    # red grows to the right (u), green grows upward (v), allowing for the checker shading
    assert img[:, -1, 0].mean() > img[:, 0, 0].mean()
    assert img[0, :, 1].mean() > img[-1, :, 1].mean()


def test_point_clouds_are_deterministic_and_on_the_surface():
    s = data.ico_sphere(3)
    a = data.noisy_point_cloud(s, 500, 0.0, seed=3)
    b = data.noisy_point_cloud(s, 500, 0.0, seed=3)
    assert torch.equal(a.points_packed(), b.points_packed())
    r = a.points_packed().norm(dim=1)
    assert (r <= 1 + 1e-6).all() and (r > 0.98).all()
    noisy = data.noisy_point_cloud(s, 2000, 0.05, seed=3)
    assert 0.03 < (noisy.points_packed().norm(dim=1) - 1).std() < 0.07
    fig = data.figure_point_cloud(1000)
    box = fig.get_bounding_boxes()[0]
    assert 1.6 < box[1, 1] - box[1, 0] < 2.0  # about 1.8 tall, +Y up


def test_sample_points_uniform_by_area_and_differentiable():
    # Two faces, one three times the area of the other
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [3, 0, 1], [0, 1, 1]], requires_grad=True)
    f = torch.tensor([[0, 1, 2], [3, 4, 5]])
    m = Meshes([v], [f])
    g = torch.Generator().manual_seed(0)
    pts, normals = sample_points_from_meshes(m, 20000, return_normals=True, generator=g)
    frac_top = (pts[0, :, 2] > 0.5).float().mean().item()
    assert frac_top == pytest.approx(0.75, abs=0.015)
    assert torch.allclose(normals[0, :, 2], torch.ones(20000))
    pts.sum().backward()
    assert v.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="empty"):
        sample_points_from_meshes(Meshes([torch.zeros(0, 3)], [torch.zeros(0, 3, dtype=torch.long)]))


def test_sample_points_textures():
    m = data.colored_cube()
    pts, cols = sample_points_from_meshes(m, 500, return_textures=True, generator=torch.Generator().manual_seed(1))
    red = (cols[0, :, 0] > 0.9) & (cols[0, :, 1] < 0.2) & (cols[0, :, 2] < 0.2)
    assert red.sum() > 30
    assert (pts[0, red, 0] > 0.999).all()  # red points lie on the +X face
