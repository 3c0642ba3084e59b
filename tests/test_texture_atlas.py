"""Per-face texture atlases from OBJ files (``load_obj(create_texture_atlas=True)``) and their
agreement with ``TexturesAtlas`` lookups and with ``TexturesUV`` renders."""

import warnings

import pytest
import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.io import load_obj, load_objs_as_meshes, save_obj
from p3dlab.io.texture_atlas import atlas_barycentrics
from p3dlab.renderer import FoVPerspectiveCameras, MeshRasterizer, RasterizationSettings, look_at_view_transform
from p3dlab.structures import TexturesAtlas


class _Frag:
    def __init__(self, p2f, bary):
        self.pix_to_face, self.bary_coords = p2f, bary


def _gradient_image(n=256):
    """R = u and G = v exactly at every pixel centre (column u·255, row (1 - v)·255), B = 0.25; all
    8-bit exact, so bilinear reads of it are linear in uv."""
    u = torch.arange(n, dtype=torch.float32) / (n - 1)
    img = torch.empty(n, n, 3)
    img[..., 0] = u[None, :]
    img[..., 1] = u.flip(0)[:, None]
    img[..., 2] = 64 / 255
    return img


def _quad(tmp_path, uvs, name="quad.obj"):
    verts = torch.tensor([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    path = tmp_path / name
    save_obj(path, verts, faces, verts_uvs=uvs, faces_uvs=faces, texture_map=_gradient_image())
    return path


@pytest.mark.parametrize("R", [1, 2, 3, 6])
def test_each_atlas_entry_is_read_at_the_centroid_it_was_made_for(R):
    atlas = torch.arange(R * R, dtype=torch.float32).view(1, R, R, 1)
    bary = atlas_barycentrics(R)
    assert (bary >= 0).all() and torch.allclose(bary.sum(-1), torch.ones(R, R))
    frag = _Frag(torch.zeros(1, R * R, 1, 1, dtype=torch.int64), bary.view(1, R * R, 1, 1, 3))
    read = TexturesAtlas([atlas]).sample_textures(frag).view(R, R)
    assert torch.equal(read, atlas[0, ..., 0])


def test_atlas_colours_are_the_texture_at_each_small_triangles_centroid(tmp_path):
    uvs = torch.tensor([[0.1, 0.2], [0.9, 0.15], [0.8, 0.95], [0.05, 0.7]])
    R = 3
    _, faces, aux = load_obj(_quad(tmp_path, uvs), create_texture_atlas=True, texture_atlas_size=R)
    atlas = aux.texture_atlas
    assert atlas.shape == (2, R, R, 3) and atlas.dtype == torch.float32
    bary = atlas_barycentrics(R)
    for f in range(2):
        expected_uv = torch.einsum("rsk,kc->rsc", bary, uvs[faces.textures_idx[f]])
        assert torch.allclose(atlas[f, ..., :2], expected_uv, atol=1e-5), f
        assert torch.allclose(atlas[f, ..., 2], torch.full((R, R), 64 / 255), atol=1e-6)


@pytest.mark.parametrize("wrap, expected_u", [("repeat", lambda u: u - 1.0), ("clamp", lambda u: torch.ones_like(u))])
def test_texture_wrap_repeat_and_clamp(tmp_path, wrap, expected_u):
    uvs = torch.tensor([[1.1, 0.2], [1.4, 0.2], [1.4, 0.6], [1.1, 0.6]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, faces, aux = load_obj(_quad(tmp_path, uvs), create_texture_atlas=True, texture_wrap=wrap)
    # only "repeat" warns, once, that it repeats the texture
    assert [str(w.message).endswith("repeat the texture") for w in caught] == ([True] if wrap == "repeat" else [])
    uv = torch.einsum("rsk,kc->rsc", atlas_barycentrics(4), uvs[faces.textures_idx[0]])
    assert torch.allclose(aux.texture_atlas[0, ..., 0], expected_u(uv[..., 0]), atol=1e-5)
    assert torch.allclose(aux.texture_atlas[0, ..., 1], uv[..., 1], atol=1e-5)


def test_faces_without_image_take_the_diffuse_colour_and_without_material_white(tmp_path):
    (tmp_path / "m.mtl").write_text("newmtl red\nKd 1 0 0\nnewmtl plain\nKa 0.1 0.1 0.1\n")
    (tmp_path / "m.obj").write_text(
        "mtllib m.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nf 1 2 3\nusemtl red\nf 2 4 3\nusemtl plain\nf 1 2 4\n"
    )
    _, faces, aux = load_obj(tmp_path / "m.obj", create_texture_atlas=True, texture_atlas_size=2)
    assert faces.materials_idx.tolist() == [-1, 0, 1]
    assert (aux.texture_atlas[0] == 1).all()  # no material: white
    assert torch.equal(aux.texture_atlas[1], torch.tensor([1.0, 0, 0]).expand(2, 2, 3))  # Kd
    assert (aux.texture_atlas[2] == 1).all()  # a material without Kd: white


def test_bad_atlas_settings_are_clear_errors(tmp_path):
    path = _quad(tmp_path, torch.rand(4, 2))
    for kwargs, match in (
        (dict(texture_atlas_size=0), "texture_atlas_size"),
        (dict(texture_atlas_size=65), "texture_atlas_size"),
        (dict(texture_atlas_size=2.0), "texture_atlas_size"),
        (dict(texture_wrap="mirror"), "texture_wrap"),
    ):
        with pytest.raises(P3DLabValueError, match=match):
            load_obj(path, create_texture_atlas=True, **kwargs)


def test_atlas_render_converges_to_the_uv_render(tmp_path):
    """Rendered texels of the same quad with TexturesUV and with loaded atlases: the atlas is
    piecewise constant over R² small triangles, so the error shrinks like 1/R."""
    path = _quad(tmp_path, torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]))
    R_, T_ = look_at_view_transform(3.0, 0.0, 180.0)
    raster = MeshRasterizer(FoVPerspectiveCameras(R=R_, T=T_), RasterizationSettings(image_size=64))
    uv_mesh = load_objs_as_meshes([path])
    fragments = raster(uv_mesh)
    covered = fragments.pix_to_face[..., 0] >= 0
    assert covered.float().mean() > 0.3
    reference = uv_mesh.sample_textures(fragments)[..., 0, :][covered]
    errors = []
    for R in (2, 8, 32):
        atlas_mesh = load_objs_as_meshes([path], create_texture_atlas=True, texture_atlas_size=R)
        assert type(atlas_mesh.textures).__name__ == "TexturesAtlas"
        texels = atlas_mesh.sample_textures(fragments)[..., 0, :][covered]
        errors.append(float((texels - reference).abs().mean()))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.01, errors
    assert errors[0] / errors[1] > 3.0 and errors[1] / errors[2] > 3.0, errors


def test_textured_cow_atlas_renders_like_its_uv_texture(testdata):
    path = testdata / "pytorch3d/cow_mesh/cow.obj"
    uv_mesh = load_objs_as_meshes([path])
    with pytest.warns(UserWarning, match="outside"):  # a few of the cow's uvs exceed 1: repeated
        atlas_mesh = load_objs_as_meshes([path], create_texture_atlas=True, texture_atlas_size=4)
    atlas = atlas_mesh.textures.atlas_list()[0]
    assert atlas.shape == (5856, 4, 4, 3) and 0 <= atlas.min() and atlas.max() <= 1
    R_, T_ = look_at_view_transform(2.7, 10.0, 150.0)
    fragments = MeshRasterizer(FoVPerspectiveCameras(R=R_, T=T_), RasterizationSettings(image_size=96))(uv_mesh)
    covered = fragments.pix_to_face[..., 0] >= 0
    assert covered.float().mean() > 0.1
    a = atlas_mesh.sample_textures(fragments)[..., 0, :][covered]
    b = uv_mesh.sample_textures(fragments)[..., 0, :][covered]
    assert float((a - b).abs().mean()) < 0.02, float((a - b).abs().mean())
