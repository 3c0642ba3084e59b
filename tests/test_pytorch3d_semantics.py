"""Issue 27, deliverable 2: behaviours that differed from PyTorch3D, each reproduced and now matching
(or, for the perspective-correct blur band, the documented difference; see docs/pytorch3d-differences.md).

Every expected value comes from PyTorch3D's documented behaviour or its source (0.7.8/0.7.9), named in
each test's docstring; PyTorch3D itself cannot be installed here.
"""

import math
import struct

import numpy as np
import pytest
import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.io import load_obj, load_ply
from p3dlab.loss import chamfer_distance
from p3dlab.renderer import (
    FoVPerspectiveCameras,
    MeshRasterizer,
    NDCMultinomialRaysampler,
    RasterizationSettings,
    RayBundle,
    ray_bundle_to_ray_points,
)
from p3dlab.structures import Meshes, Pointclouds, TexturesAtlas, TexturesVertex
from p3dlab.transforms import Rotate, RotateAxisAngle, Scale, Transform3d, Translate

D = torch.float64
X0 = torch.tensor([[[0.0, 0.0, 0.0]]])
Y0 = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 3.0, 0.0]]])


# ---------------------------------------------------------------------------------------- chamfer
def test_chamfer_max_combines_the_directions_with_max():
    """pytorch3d/loss/chamfer.py (0.7.8+): "max" reduces each direction to its largest distance, then
    ``loss = torch.maximum(cham_x, cham_y)`` (the issue's case: 9.0 in PyTorch3D, 10.0 before)."""
    assert chamfer_distance(X0, Y0, point_reduction="max")[0].item() == 9.0
    assert chamfer_distance(X0, Y0, point_reduction="max", single_directional=True)[0].item() == 1.0
    # per cloud, then the batch reduction over the clouds
    x = torch.cat([X0, X0])
    y = torch.cat([Y0, Y0 * 2])
    per_cloud, normals = chamfer_distance(x, y, point_reduction="max", batch_reduction=None)
    assert per_cloud.tolist() == [9.0, 36.0] and normals is None
    assert chamfer_distance(x, y, point_reduction="max", batch_reduction="sum")[0].item() == 45.0
    assert chamfer_distance(x, y, point_reduction="max", norm=1)[0].item() == pytest.approx((3.0 + 6.0) / 2)


def test_chamfer_max_refuses_normals():
    """PyTorch3D raises ``ValueError('Normals must be None if point_reduction is "max"')`` (and an
    assertion for normals carried by a Pointclouds); p3dlab raises its ValueError in both cases."""
    n = torch.tensor([[[0.0, 0.0, 1.0]]])
    m = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
    with pytest.raises(P3DLabValueError, match="max"):
        chamfer_distance(X0, Y0, x_normals=n, y_normals=m, point_reduction="max")
    with pytest.raises(P3DLabValueError, match="max"):
        chamfer_distance(Pointclouds(X0, normals=n), Pointclouds(Y0, normals=m), point_reduction="max")
    # the other reductions keep the normal term
    assert chamfer_distance(X0, Y0, x_normals=n, y_normals=m, point_reduction="sum")[1] is not None


def test_chamfer_empty_cloud_gives_a_value():
    """PyTorch3D: a cloud of length 0 contributes 0 (its padding is masked, "mean" divides by
    ``lengths.clamp(min=1)``), and a point whose target cloud is empty gets distance 0 from
    ``knn_points`` and a zero neighbour normal from ``knn_gather`` (cosine 0: normal term 1)."""
    loss, _ = chamfer_distance(X0, Y0, x_lengths=torch.tensor([0]))
    assert loss.item() == 0.0
    n = torch.tensor([[[0.0, 0.0, 1.0]]])
    m = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
    loss, ln = chamfer_distance(X0, Y0, y_lengths=torch.tensor([0]), x_normals=n, y_normals=m)
    assert loss.item() == 0.0 and ln.item() == 1.0
    # in a batch, the empty cloud's value is 0 and the others are unchanged
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(4, 3, generator=g), torch.rand(5, 3, generator=g)
    per, _ = chamfer_distance(
        Pointclouds([a, torch.zeros(0, 3)]), Pointclouds([b, b]), batch_reduction=None, point_reduction="sum"
    )
    d = ((a[:, None] - b[None]) ** 2).sum(-1)
    assert per[1].item() == 0.0
    assert per[0].item() == pytest.approx((d.min(1).values.sum() + d.min(0).values.sum()).item(), rel=1e-6)
    for reduction in ("mean", "sum", "max"):  # every reduction returns a finite value
        assert torch.isfinite(chamfer_distance(X0, Y0, x_lengths=torch.tensor([0]), point_reduction=reduction)[0])


def test_chamfer_all_zero_weights_give_zero_terms():
    """PyTorch3D returns ``(x.sum((1, 2)) * weights) * 0.0`` for both terms when ``weights.sum() == 0``,
    so the normal term is ``tensor(0.)``, not None, even without normals (except for "max" in both
    directions, whose normal term is None); the zeros stay connected to x's graph."""
    x = X0.clone().requires_grad_(True)
    loss, ln = chamfer_distance(x, Y0, weights=torch.zeros(1))
    assert loss.item() == 0.0 and ln is not None and ln.item() == 0.0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert chamfer_distance(X0, Y0, weights=torch.zeros(1), point_reduction="max")[1] is None
    per, per_n = chamfer_distance(X0, Y0, weights=torch.zeros(1), batch_reduction=None)
    assert per.shape == (1,) and per_n.shape == (1,)


def test_chamfer_weights_and_gradients():
    """Weights multiply each cloud's term and "mean" divides by their sum (PyTorch3D's
    ``div = weights.sum()``); gradients of every reduction pass gradcheck on tiny float64 clouds."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 4, 3, dtype=D, generator=g)
    y = torch.rand(2, 5, 3, dtype=D, generator=g)
    w = torch.tensor([0.25, 2.0], dtype=D)
    per, _ = chamfer_distance(x, y, batch_reduction=None)
    weighted, _ = chamfer_distance(x, y, weights=w)
    assert weighted.item() == pytest.approx(((per * w).sum() / w.sum()).item(), rel=1e-12)
    xs = x.clone().requires_grad_(True)
    nx = torch.rand(2, 4, 3, dtype=D, generator=g)
    ny = torch.rand(2, 5, 3, dtype=D, generator=g)
    for kw in (
        dict(point_reduction="max"),
        dict(point_reduction="max", single_directional=True),
        dict(point_reduction="mean", weights=w),
        dict(point_reduction="sum", norm=1),
        dict(point_reduction="mean", x_lengths=torch.tensor([2, 4]), y_lengths=torch.tensor([5, 0])),
    ):
        assert torch.autograd.gradcheck(lambda a, kw=kw: chamfer_distance(a, y, **kw)[0], (xs,)), kw
    assert torch.autograd.gradcheck(lambda a: chamfer_distance(a, y, x_normals=nx, y_normals=ny)[1], (xs,))


# ---------------------------------------------------------------------------------------- OBJ / PLY
def _write(path, text):
    path.write_text(text)
    return path


TRI_OBJ = "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nf 1 2 3\nf 2 4 3\n"


def test_obj_without_usemtl_uses_the_only_material(tmp_path):
    """pytorch3d/io/obj_io.py: with no ``usemtl`` and an MTL file defining one material, that material
    is used and ``materials_idx`` is clamped from -1 to 0; ``material_colors`` has the keys
    ambient_color, diffuse_color, specular_color, shininess only (mtl_io ``_parse_mtl``), and
    ``texture_images`` is ``{}`` when the material has no ``map_Kd``."""
    _write(tmp_path / "m.mtl", "newmtl only\nKa 0.1 0.2 0.3\nKd 1 0 0\nKs 0 0 0\nNs 10\nd 0.5\nillum 2\nNi 1.5\nTr 0\n")
    _, faces, aux = load_obj(_write(tmp_path / "a.obj", "mtllib m.mtl\n" + TRI_OBJ))
    assert faces.materials_idx.tolist() == [0, 0]
    assert list(aux.material_colors) == ["only"]
    assert sorted(aux.material_colors["only"]) == ["ambient_color", "diffuse_color", "shininess", "specular_color"]
    assert aux.material_colors["only"]["shininess"].tolist() == [10.0]
    assert aux.texture_images == {} and len(aux.texture_images) == 0


def test_obj_material_data_is_none_without_an_mtl_file_and_faces_keep_minus_one(tmp_path):
    """PyTorch3D: without ``mtllib`` (or with ``load_textures=False``) ``material_colors`` and
    ``texture_images`` are None and faces without ``usemtl`` keep index -1 (test_io_obj.py,
    test_load_mtl_fail and test_load_mtl_noload)."""
    _, faces, aux = load_obj(_write(tmp_path / "b.obj", TRI_OBJ))
    assert faces.materials_idx.tolist() == [-1, -1]
    assert aux.material_colors is None and aux.texture_images is None
    _write(tmp_path / "m.mtl", "newmtl only\nKd 1 0 0\n")
    _, faces, aux = load_obj(_write(tmp_path / "c.obj", "mtllib m.mtl\n" + TRI_OBJ), load_textures=False)
    assert faces.materials_idx.tolist() == [-1, -1]
    assert aux.material_colors is None and aux.texture_images is None


def test_obj_keeps_only_the_materials_it_uses(tmp_path):
    """mtl_io ``_load_texture_images``: only the materials named by ``usemtl`` are returned, in order of
    first use; faces before the first ``usemtl`` keep -1. Several materials without any ``usemtl`` are
    an error, as PyTorch3D's "Multiple materials but no usemtl declarations in the obj file"."""
    _write(tmp_path / "m.mtl", "newmtl red\nKd 1 0 0\nnewmtl green\nKd 0 1 0\nnewmtl blue\nKd 0 0 1\n")
    text = "mtllib m.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\nusemtl blue\nf 1 2 3\nusemtl red\nf 1 2 3\n"
    _, faces, aux = load_obj(_write(tmp_path / "d.obj", text))
    assert faces.materials_idx.tolist() == [-1, 0, 1]
    assert list(aux.material_colors) == ["blue", "red"]
    with pytest.raises(ValueError, match="no usemtl"):
        load_obj(_write(tmp_path / "e.obj", "mtllib m.mtl\n" + TRI_OBJ))


def _ply(path, faces, binary):
    """A PLY with 8 vertices and the given polygons (lists of vertex indices)."""
    verts = np.arange(24, dtype=np.float32).reshape(8, 3)
    fmt = "binary_little_endian" if binary else "ascii"
    head = (
        f"ply\nformat {fmt} 1.0\nelement vertex 8\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    if binary:
        body = verts.tobytes() + b"".join(struct.pack(f"<B{len(p)}i", len(p), *p) for p in faces)
        path.write_bytes(head.encode() + body)
    else:
        lines = [" ".join(map(str, v)) for v in verts.tolist()] + [" ".join(map(str, [len(p), *p])) for p in faces]
        path.write_text(head + "\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("binary", [False, True])
def test_ply_polygons_are_triangulated_in_pytorch3ds_order(tmp_path, binary):
    """pytorch3d/io/ply_io.py: polygons of one size k give ``np.vstack([face[:, [0, i + 1, i + 2]] for i in
    range(k - 2)])`` (every first fan triangle, then every second, ...); mixed sizes are fanned polygon
    by polygon."""
    _, f = load_ply(_ply(tmp_path / "q.ply", [[0, 1, 2, 3], [4, 5, 6, 7]], binary))
    assert f.tolist() == [[0, 1, 2], [4, 5, 6], [0, 2, 3], [4, 6, 7]]
    _, f = load_ply(_ply(tmp_path / "p.ply", [[0, 1, 2, 3, 4], [3, 4, 5, 6, 7]], binary))
    assert f.tolist() == [[0, 1, 2], [3, 4, 5], [0, 2, 3], [3, 5, 6], [0, 3, 4], [3, 6, 7]]
    _, f = load_ply(_ply(tmp_path / "m.ply", [[0, 1, 2, 3], [4, 5, 6]], binary))
    assert f.tolist() == [[0, 1, 2], [0, 2, 3], [4, 5, 6]]


# ---------------------------------------------------------------------------------------- Meshes
def _two_meshes():
    v0 = torch.rand(7, 3, generator=torch.Generator().manual_seed(0))
    f0 = torch.tensor([[0, 6, 4], [0, 2, 6], [1, 3, 5], [2, 4, 6]])
    v1 = torch.rand(4, 3, generator=torch.Generator().manual_seed(1))
    f1 = torch.tensor([[0, 1, 2], [1, 3, 2]])
    return Meshes([v0, v1], [f0, f1])


def test_get_mesh_verts_faces():
    """PyTorch3D's ``Meshes.get_mesh_verts_faces(index)``: the list-view tensors of one mesh; an index
    that is not an int, or is outside [0, N), is a ValueError."""
    m = _two_meshes()
    v, f = m.get_mesh_verts_faces(1)
    assert v is m.verts_list()[1] and f is m.faces_list()[1]
    for bad in (2, -1, 0.0, torch.tensor(0)):
        with pytest.raises(ValueError):
            m.get_mesh_verts_faces(bad)


def test_has_verts_normals():
    """PyTorch3D's ``Meshes.has_verts_normals()``: True once vertex normals are there (given to the
    constructor, or computed by ``verts_normals_packed()``), False before."""
    m = _two_meshes()
    assert m.has_verts_normals() is False
    m.verts_normals_packed()
    assert m.has_verts_normals() is True
    given = Meshes(m.verts_list(), m.faces_list(), verts_normals=[torch.ones(7, 3), torch.ones(4, 3)])
    assert given.has_verts_normals() is True


def test_submeshes_follow_pytorch3ds_rules():
    """PyTorch3D's ``Meshes.submeshes(face_indices)`` docstring: one entry per mesh (a list of index
    tensors, possibly empty), result of length ``sum(len(ids))``; kept vertices are the sorted unique
    ones and faces are renumbered by rank (its example: faces [[0, 6, 4], [0, 2, 6]] keep vertices
    [0, 2, 4, 6] and become [[0, 3, 2], [0, 1, 3]]); TexturesVertex follows."""
    m = _two_meshes()
    feats = [torch.arange(7.0)[:, None].expand(7, 3), torch.arange(4.0)[:, None].expand(4, 3)]
    m.textures = TexturesVertex([f.clone() for f in feats])
    sub = m.submeshes([[torch.tensor([0, 1]), torch.tensor([2])], [torch.tensor([1])]])
    assert len(sub) == 3
    assert sub.faces_list()[0].tolist() == [[0, 3, 2], [0, 1, 3]]
    assert torch.equal(sub.verts_list()[0], m.verts_list()[0][[0, 2, 4, 6]])
    assert sub.faces_list()[1].tolist() == [[0, 1, 2]] and torch.equal(
        sub.verts_list()[1], m.verts_list()[0][[1, 3, 5]]
    )
    assert torch.equal(sub.verts_list()[2], m.verts_list()[1][[1, 2, 3]])
    assert sub.textures.verts_features_list()[0][:, 0].tolist() == [0.0, 2.0, 4.0, 6.0]
    assert sub.textures.verts_features_list()[2][:, 0].tolist() == [1.0, 2.0, 3.0]
    # the (N, S, F') tensor form and an empty list of submeshes
    m.textures = None
    both = m.submeshes(torch.tensor([[[0, 1]], [[0, 1]]]))
    assert len(both) == 2 and both.faces_list()[1].tolist() == [[0, 1, 2], [1, 3, 2]]
    assert len(m.submeshes([[], [torch.tensor([0])]])) == 1
    # an empty selection is an empty submesh; a boolean mask over the faces selects like its indices
    masked = m.submeshes([[torch.tensor([]), torch.tensor([True, False, False, True])], []])
    assert masked.num_faces_per_mesh().tolist() == [0, 2]
    assert masked.faces_list()[1].tolist() == [[0, 3, 2], [1, 2, 3]]
    with pytest.raises(ValueError, match="one set of submeshes per mesh"):
        m.submeshes([[torch.tensor([0])]])
    with pytest.raises(ValueError, match="outside"):
        m.submeshes([[torch.tensor([4])], []])


def test_submeshes_of_an_atlas_keep_each_faces_atlas():
    """TexturesAtlas is per face, so a submesh keeps the atlas rows of its faces."""
    m = _two_meshes()
    m.textures = TexturesAtlas([torch.arange(4.0).reshape(4, 1, 1, 1).expand(4, 2, 2, 3), torch.zeros(2, 2, 2, 3)])
    sub = m.submeshes([[torch.tensor([3, 1])], []])
    assert sub.textures.atlas_list()[0][:, 0, 0, 0].tolist() == [3.0, 1.0]


# ---------------------------------------------------------------------------------------- transforms
def test_float64_rotation_gives_a_float32_transform():
    """pytorch3d/transforms/transform3d.py: ``Rotate``, ``Translate``, ``Scale`` and ``RotateAxisAngle``
    cast their input to ``dtype`` (float32 by default), so a float64 matrix from SciPy/NumPy works on
    float32 points and the result is float32 (the issue's "expected scalar type Float but found
    Double")."""
    c, s = math.cos(0.3), math.sin(0.3)
    R64 = torch.from_numpy(np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]))
    pts = torch.rand(5, 3)
    out = Rotate(R64).transform_points(pts)
    assert out.dtype == torch.float32 and torch.allclose(out, pts @ R64.float(), atol=1e-6)
    assert Transform3d().rotate(R64).transform_points(pts).dtype == torch.float32
    assert Translate(torch.ones(1, 3, dtype=D)).dtype == torch.float32
    assert Scale(torch.tensor(2.0, dtype=D)).dtype == torch.float32
    assert RotateAxisAngle(torch.tensor(30.0, dtype=D), "Y").dtype == torch.float32
    # and the other way round: parts added to a float64 transform are cast to float64
    t64 = Transform3d(dtype=D).rotate(R64.float()).translate(torch.ones(1, 3))
    assert t64.get_matrix().dtype == D and t64.transform_points(pts.double()).dtype == D
    assert Rotate(R64, dtype=D).dtype == D


def test_transform_dtype_mismatch_is_a_clear_error():
    """PyTorch3D's ``Transform3d(matrix=M)`` keeps M's dtype and fails (a torch error) on points of
    another dtype; p3dlab raises its ValueError naming both dtypes."""
    t = Transform3d(matrix=torch.eye(4, dtype=D))
    assert t.dtype == D
    with pytest.raises(P3DLabValueError, match="float32 input for a torch.float64 transform"):
        t.transform_points(torch.rand(3, 3))
    with pytest.raises(P3DLabValueError, match="dtypes"):
        t.compose(Translate(1.0, 2.0, 3.0)).get_matrix()


# ---------------------------------------------------------------------------------------- RayBundle
def test_ray_bundle_is_a_named_tuple():
    """pytorch3d/renderer/implicit/utils.py: ``class RayBundle(NamedTuple)`` with fields origins,
    directions, lengths, xys, so it unpacks, indexes and supports ``_replace``."""
    assert RayBundle._fields == ("origins", "directions", "lengths", "xys")
    sampler = NDCMultinomialRaysampler(image_width=4, image_height=3, n_pts_per_ray=5, min_depth=1.0, max_depth=2.0)
    bundle = sampler(FoVPerspectiveCameras())
    assert isinstance(bundle, RayBundle) and isinstance(bundle, tuple) and len(bundle) == 4
    origins, directions, lengths, xys = bundle
    assert origins is bundle.origins and bundle[2] is lengths and xys.shape == (1, 3, 4, 2)
    moved = bundle._replace(lengths=lengths * 2)
    assert torch.equal(moved.lengths, lengths * 2) and moved.origins is origins
    pts = ray_bundle_to_ray_points(moved)
    assert torch.allclose(pts, origins[..., None, :] + 2 * lengths[..., None] * directions[..., None, :])


def test_a_ray_bundle_stays_one_structure_in_the_views(monkeypatch):
    """A named tuple is a tuple: the views that accept lists of structures must still take a
    RayBundle whole (PyTorch3D's ``plot_batch_individually(ray_bundle)`` plots one subplot per camera)."""
    from p3dlab.vis import plot_batch_individually
    from p3dlab.widgets.threejs import _flatten

    monkeypatch.setenv("P3DLAB_WEBGL", "1")
    cams = FoVPerspectiveCameras(R=torch.eye(3).expand(2, 3, 3), T=torch.tensor([[0.0, 0, 3], [0, 0, 4]]))
    bundle = NDCMultinomialRaysampler(image_width=4, image_height=3, n_pts_per_ray=2, min_depth=1.0, max_depth=2.0)(
        cams
    )
    assert len(plot_batch_individually(bundle).subplots) == 2
    flat = _flatten([bundle, [cams]])
    assert len(flat) == 2 and flat[0] is bundle


# ---------------------------------------------------------------------------------------- blur band
def test_perspective_blur_band_skips_a_face_whose_plane_is_behind_the_pixel_ray():
    """Documented difference (docs/pytorch3d-differences.md): with ``perspective_correct=True`` and a
    blur radius, a pixel whose ray meets the face's plane behind the camera (perspective-correction
    denominator <= 1e-8) gets no fragment of that face here; PyTorch3D clamps the denominator to 1e-8
    and keeps it. Scene: a floor under the camera reaching z = 200, so its far edge lies within the blur
    band of the first pixel row above the horizon."""
    S, sigma = 64, 1e-4
    blur = math.log(1.0 / 1e-4 - 1.0) * sigma
    verts = torch.tensor([[-5.0, -1.0, 1.0], [5.0, -1.0, 1.0], [5.0, -1.0, 200.0], [-5.0, -1.0, 200.0]])
    floor = Meshes([verts], [torch.tensor([[0, 2, 1], [0, 3, 2]])])
    rasterizer = MeshRasterizer(FoVPerspectiveCameras(fov=60.0, znear=0.1, zfar=300.0))
    frags = {
        persp: rasterizer(
            floor,
            raster_settings=RasterizationSettings(
                image_size=S, blur_radius=blur, faces_per_pixel=4, perspective_correct=persp
            ),
        )
        for persp in (False, True)
    }
    above, below = S // 2 - 1, S // 2  # rows just above / below the horizon (NDC y = +-1/S)
    far_edge_y = -1.0 / 200.0 / math.tan(math.radians(30.0))
    assert (1.0 / S - far_edge_y) ** 2 < blur  # the row above the horizon is in the far edge's band
    # without perspective correction the band is drawn; with it, the faces behind that ray are skipped
    assert (frags[False].pix_to_face[0, above] >= 0).any()
    assert not (frags[True].pix_to_face[0, above] >= 0).any()
    assert (frags[True].pix_to_face[0, below] >= 0).any()
