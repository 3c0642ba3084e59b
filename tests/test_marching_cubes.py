import math

import pytest
import torch

from p3dlab.data import signed_volume
from p3dlab.errors import P3DLabValueError
from p3dlab.ops import marching_cubes
from p3dlab.structures import Meshes, Volumes
from p3dlab.volumes import isosurface


def _ball(S, r=0.6, centre=(0.0, 0.0, 0.0)):
    g = torch.linspace(-1, 1, S, dtype=torch.float64)
    Z, Y, X = torch.meshgrid(g, g, g, indexing="ij")
    return r - torch.sqrt((X - centre[0]) ** 2 + (Y - centre[1]) ** 2 + (Z - centre[2]) ** 2)


def _closed(m):
    f = m.faces_packed()
    directed = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    n = m.verts_packed().shape[0]
    key, rev = directed[:, 0] * n + directed[:, 1], directed[:, 1] * n + directed[:, 0]
    return key.unique().numel() == key.numel() and bool(torch.isin(rev, key).all())


def test_sphere_is_closed_outward_and_converges_to_the_analytic_area_and_volume():
    r = 0.6
    errors = []
    for S in (12, 24, 48):
        verts, faces = marching_cubes(_ball(S, r)[None], 0.0)
        m = Meshes(verts, faces)
        assert _closed(m)
        v, e, f = m.verts_packed().shape[0], m.edges_packed().shape[0], m.faces_packed().shape[0]
        assert v - e + f == 2
        vol = signed_volume(m.verts_packed(), m.faces_packed()).item()
        assert vol > 0
        area = m.faces_areas_packed().sum().item()
        errors.append((abs(area - 4 * math.pi * r**2), abs(vol - 4 / 3 * math.pi * r**3)))
    assert errors[0][0] > errors[1][0] > errors[2][0] and errors[2][0] / (4 * math.pi * r**2) < 0.005
    assert errors[0][1] > errors[1][1] > errors[2][1] and errors[2][1] / (4 / 3 * math.pi * r**3) < 0.005


def test_axes_follow_the_volume_convention_and_world_coordinates():
    # a ball off-centre along x (the W axis): the mesh must move along +x
    verts, _ = marching_cubes(_ball(24, 0.3, centre=(0.4, 0.0, 0.0))[None], 0.0)
    c = verts[0].mean(0)
    assert c[0].item() == pytest.approx(0.4, abs=0.02) and abs(c[1].item()) < 0.02 and abs(c[2].item()) < 0.02
    vol = Volumes(_ball(24, 0.3)[None, None].float(), voxel_size=0.1, volume_translation=(1.0, 0.0, 0.0))
    wv, _ = marching_cubes(vol, 0.0)
    assert wv[0].mean(0)[0].item() == pytest.approx(-1.0, abs=0.02)  # the centre sits at -translation
    assert (wv[0].max(0).values - wv[0].min(0).values).max().item() == pytest.approx(0.3 * 23 * 0.1, rel=0.05)


def test_empty_and_full_grids_and_bad_input():
    v, f = marching_cubes(torch.zeros(2, 4, 4, 4), 0.5)
    assert v[0].shape == (0, 3) and f[1].shape == (0, 3)
    with pytest.raises(ValueError):
        marching_cubes(torch.zeros(4, 4, 4))


def _coloured_ball(S=20, translation=(0.5, 0.0, -0.25)):
    """A ball of density (inside: > 0) with colours linear in the local coordinates, which trilinear
    sampling reproduces exactly: (r, g, b) = (0.5 + 0.4 x, 0.5 + 0.4 y, 0.5 + 0.4 z)."""
    g = torch.linspace(-1, 1, S, dtype=torch.float64)
    Z, Y, X = torch.meshgrid(g, g, g, indexing="ij")
    colours = torch.stack([0.5 + 0.4 * X, 0.5 + 0.4 * Y, 0.5 + 0.4 * Z])[None]
    return Volumes(_ball(S, 0.6)[None, None], colours, voxel_size=0.1, volume_translation=translation)


def test_isosurface_gives_the_marching_cubes_mesh_with_the_features_sampled_at_its_vertices():
    vol = _coloured_ball()
    mesh = isosurface(vol, 0.0)
    verts, faces = marching_cubes(vol, 0.0)
    assert torch.equal(mesh.verts_list()[0], verts[0]) and torch.equal(mesh.faces_list()[0], faces[0])
    assert _closed(mesh) and signed_volume(mesh.verts_packed(), mesh.faces_packed()).item() > 0
    local = vol.world_to_local_coords(verts[0][None])[0]
    colours = mesh.textures.verts_features_list()[0]
    assert colours.shape == (len(verts[0]), 3)
    assert torch.allclose(colours, 0.5 + 0.4 * local, rtol=0, atol=1e-12)  # linear colours: exact
    # gradients reach the features (each vertex's colour is a convex combination of 8 voxels')
    feats = vol.features().clone().requires_grad_()
    isosurface(Volumes(vol.densities(), feats, voxel_size=0.1), 0.0).textures.verts_features_packed().sum().backward()
    assert feats.grad.sum().item() == pytest.approx(3 * len(verts[0]), rel=1e-9)


def test_isosurface_batches_an_empty_volume_and_refuses_colours_it_cannot_give():
    ball = _coloured_ball(12, (0.0, 0.0, 0.0))
    empty = torch.full_like(ball.densities(), -1.0)  # no surface at level 0
    both = Volumes(torch.cat([ball.densities(), empty]), torch.cat([ball.features()] * 2), voxel_size=0.1)
    mesh = isosurface(both, 0.0)
    assert mesh.num_verts_per_mesh().tolist()[1] == 0 and mesh.num_verts_per_mesh().tolist()[0] > 0
    assert mesh.textures.verts_features_list()[1].shape == (0, 3)
    plain = Volumes(ball.densities(), voxel_size=0.1)
    assert isosurface(plain, 0.0).textures is None  # no features: no colours by default
    with pytest.raises(P3DLabValueError, match="3 feature channels, got none"):
        isosurface(plain, 0.0, colours=True)
    with pytest.raises(P3DLabValueError, match="got 2 channels"):
        isosurface(Volumes(ball.densities(), ball.features()[:, :2], voxel_size=0.1), 0.0, colours=True)
    with pytest.raises(P3DLabValueError, match="expected a Volumes"):
        isosurface(ball.densities()[:, 0], 0.0)
