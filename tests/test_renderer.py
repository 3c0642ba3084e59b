import math

import pytest
import torch

from p3dlab import data
from p3dlab.ops.pixels import pixel_centres
from p3dlab.renderer import (
    BlendParams,
    DirectionalLights,
    FoVOrthographicCameras,
    FoVPerspectiveCameras,
    HardDepthShader,
    HardFlatShader,
    HardGouraudShader,
    HardPhongShader,
    Materials,
    MeshRasterizer,
    MeshRenderer,
    PerspectiveCameras,
    PointLights,
    RasterizationSettings,
    SoftPhongShader,
    SoftSilhouetteShader,
    look_at_view_transform,
)
from p3dlab.structures import Meshes, TexturesUV, TexturesVertex, join_meshes_as_scene


def _square(x0, x1, y0, y1, z=2.0):
    v = torch.tensor([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]])
    return Meshes([v], [torch.tensor([[0, 1, 2], [0, 2, 3]])])


def test_square_area_in_pixels():
    # FoVOrthographicCameras with the default volume maps view (X, Y) to NDC (X, Y) exactly.
    H, W = 48, 64
    x0, x1, y0, y1 = -0.53, 0.41, -0.37, 0.62
    frags = MeshRasterizer(FoVOrthographicCameras(), RasterizationSettings(image_size=(H, W)))(_square(x0, x1, y0, y1))
    covered = frags.pix_to_face[0, ..., 0] >= 0
    px, py = pixel_centres(H, W)
    expected = (px > x0) & (px < x1) & (py > y0) & (py < y1)
    assert covered.sum() > 500
    assert torch.equal(covered, expected)


def test_sphere_silhouette_radius():
    d, fov, S = 3.0, 60.0, 128
    R, T = look_at_view_transform(d, 0.0, 0.0)
    cam = FoVPerspectiveCameras(fov=fov, R=R, T=T)
    frags = MeshRasterizer(cam, RasterizationSettings(image_size=S))(data.ico_sphere(5))
    area = (frags.pix_to_face[0, ..., 0] >= 0).sum().item()
    r_ndc = math.tan(math.asin(1.0 / d)) / math.tan(math.radians(fov / 2))
    expected = math.pi * (r_ndc * S / 2) ** 2
    assert area == pytest.approx(expected, rel=0.01)


def test_depth_of_a_tilted_plane():
    # view-space plane Z = 3 + 0.5 X seen by an identity FoV camera
    g = torch.linspace(-2, 2, 9)
    X, Y = torch.meshgrid(g, g, indexing="xy")
    verts = torch.stack([X.flatten(), Y.flatten(), 3 + 0.5 * X.flatten()], 1)
    faces = []
    for i in range(8):
        for j in range(8):
            a = i * 9 + j
            faces += [[a, a + 1, a + 10], [a, a + 10, a + 9]]
    plane = Meshes([verts], [torch.tensor(faces)])
    cam = FoVPerspectiveCameras(fov=60.0)
    frags = MeshRasterizer(cam, RasterizationSettings(image_size=32))(plane)
    valid = frags.pix_to_face[0, ..., 0] >= 0
    px, _ = pixel_centres(32, 32, torch.float32)
    t = math.tan(math.radians(30))
    expected = 3.0 / (1 - 0.5 * px * t)  # X = x_ndc t Z
    assert valid.sum() > 500
    assert torch.allclose(frags.zbuf[0, ..., 0][valid], expected[valid], rtol=1e-5)


def test_barycentrics_sum_to_one_and_reproduce_the_pixel_centre():
    m = data.teapot(3, normalize=True)
    R, T = look_at_view_transform(3.0, 20.0, 40.0)
    cam = FoVPerspectiveCameras(R=R, T=T)
    frags = MeshRasterizer(cam, RasterizationSettings(image_size=40, perspective_correct=True))(m)
    valid = frags.pix_to_face >= 0
    assert torch.allclose(frags.bary_coords[valid].sum(-1), torch.ones(1), atol=1e-5)
    # perspective-correct barycentrics blend the view-space vertices into a point on the pixel's ray
    view = cam.get_world_to_view_transform().transform_points(m.verts_packed())
    fv = view[m.faces_packed()][frags.pix_to_face[valid]]  # (P, 3, 3)
    point = (frags.bary_coords[valid][..., None] * fv).sum(1)
    ndc = cam.transform_points(cam.get_world_to_view_transform().inverse().transform_points(point[None]))[0]
    px, py = pixel_centres(40, 40, torch.float32)
    centres = torch.stack([px, py], -1)[valid[0, ..., 0]]
    assert torch.allclose(ndc[:, :2], centres, atol=1e-4)


def _l_shape():
    """An L in the XY plane: vertical bar up along +Y, foot towards +X."""
    v = torch.tensor(
        [[0, 0, 0], [0.3, 0, 0], [0.3, 1, 0], [0, 1, 0], [0.3, 0, 0], [0.8, 0, 0], [0.8, 0.3, 0], [0.3, 0.3, 0]],
        dtype=torch.float32,
    )
    v = v - torch.tensor([0.4, 0.5, 0.0])
    f = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    return Meshes([v], [f])


def test_handedness_l_and_red_face():
    """+X left in view space: a camera on +Z sees world +X on the right, +Y at the top."""
    R, T = look_at_view_transform(2.7, 0.0, 0.0)
    frags = MeshRasterizer(FoVPerspectiveCameras(R=R, T=T), RasterizationSettings(image_size=64))(_l_shape())
    mask = frags.pix_to_face[0, ..., 0] >= 0
    foot = frags.pix_to_face[0, ..., 0] >= 2  # faces 2, 3 are the foot (towards +X)
    cols = torch.arange(64).expand(64, 64)
    rows = torch.arange(64)[:, None].expand(64, 64)
    assert cols[foot].float().mean() > cols[mask].float().mean()  # the foot is on the right
    assert rows[foot].float().mean() > rows[mask].float().mean()  # and at the bottom
    # colored cube seen from a camera turned towards +X: the red (+X) face is on the right half
    R, T = look_at_view_transform(5.0, 10.0, 40.0)
    renderer = MeshRenderer(
        MeshRasterizer(FoVPerspectiveCameras(R=R, T=T), RasterizationSettings(image_size=64)),
        HardFlatShader(
            lights=DirectionalLights(
                ambient_color=((1.0, 1.0, 1.0),), diffuse_color=((0.0,) * 3,), specular_color=((0.0,) * 3,)
            )
        ),
    )
    img = renderer(data.colored_cube())[0]
    red = (img[..., 0] > 0.9) & (img[..., 1] < 0.2) & (img[..., 2] < 0.2)
    blue = (img[..., 2] > 0.9) & (img[..., 0] < 0.2)
    assert red.sum() > 50 and blue.sum() > 50
    assert cols[red].float().mean() > cols[blue].float().mean()


def test_every_frame_of_an_orbit_contains_the_object():
    m = data.ico_sphere(2)
    R, T = look_at_view_transform(3.0, 15.0, torch.linspace(0, 360, 50))
    renderer = MeshRasterizer(FoVPerspectiveCameras(R=R, T=T), RasterizationSettings(image_size=32))
    frags = renderer(m.extend(50))
    assert ((frags.pix_to_face[..., 0] >= 0).sum(dim=(1, 2)) > 100).all()


def _phong_by_hand(point, normal, cam_pos, light_pos, color, mat, light):
    n = normal / normal.norm()
    l_dir = (light_pos - point) / (light_pos - point).norm()
    v = (cam_pos - point) / (cam_pos - point).norm()
    cos = float(n @ l_dir)
    r = 2 * cos * n - l_dir
    spec = (max(float(v @ r), 0.0) * (cos > 0)) ** mat["p"]
    return (mat["ka"] * light["a"] + mat["kd"] * light["d"] * max(cos, 0.0)) * color + mat["ks"] * light["s"] * spec


def test_one_pixel_of_phong_shading_by_hand():
    sq = _square(-1, 1, -1, 1, 0.0)
    col = torch.tensor([0.8, 0.5, 0.2])
    sq.textures = TexturesVertex([col.expand(4, 3)])
    R, T = look_at_view_transform(3.0, 0.0, 0.0)  # camera at (0, 0, 3), the square faces it
    cam = FoVPerspectiveCameras(R=R, T=T)
    light_pos = torch.tensor([0.7, 0.9, 2.0])
    lights = PointLights(
        ambient_color=((0.3, 0.2, 0.1),),
        diffuse_color=((0.6, 0.6, 0.5),),
        specular_color=((0.4, 0.4, 0.4),),
        location=(light_pos.tolist(),),
    )
    mats = Materials(
        ambient_color=((1.0, 0.9, 0.8),),
        diffuse_color=((0.9, 1.0, 1.0),),
        specular_color=((1.0, 1.0, 0.5),),
        shininess=10,
    )
    renderer = MeshRenderer(
        MeshRasterizer(cam, RasterizationSettings(image_size=16)), HardPhongShader(lights=lights, materials=mats)
    )
    img = renderer(sq)[0]
    frags = renderer.rasterizer(sq)
    i, j = 5, 9
    bary = frags.bary_coords[0, i, j, 0]
    fv = sq.verts_packed()[sq.faces_packed()[frags.pix_to_face[0, i, j, 0]]]
    point = (bary[:, None] * fv).sum(0)
    mat = dict(ka=mats.ambient_color[0], kd=mats.diffuse_color[0], ks=mats.specular_color[0], p=10.0)
    light = dict(a=lights.ambient_color[0], d=lights.diffuse_color[0], s=lights.specular_color[0])
    expected = _phong_by_hand(
        point, torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, 3.0]), light_pos, col, mat, light
    )
    assert torch.allclose(img[i, j, :3], expected, atol=1e-3)


def test_shininess_zero_adds_specular_everywhere():
    """docs/errata.md#e21: p = 0 does not switch highlights off; (r.v)^0 = 1 adds k_s L_s to every pixel."""
    sq = _square(-1, 1, -1, 1, 0.0)
    sq.textures = TexturesVertex([torch.full((4, 3), 0.5)])
    R, T = look_at_view_transform(3.0, 0.0, 0.0)
    base = dict(ambient_color=((0.2,) * 3,), diffuse_color=((0.0,) * 3,), location=((0.0, 5.0, -5.0),))  # light behind
    rast = MeshRasterizer(FoVPerspectiveCameras(R=R, T=T), RasterizationSettings(image_size=16))
    off = MeshRenderer(rast, HardPhongShader(lights=PointLights(specular_color=((0.0,) * 3,), **base)))(sq)
    p0 = MeshRenderer(
        rast,
        HardPhongShader(lights=PointLights(specular_color=((0.3,) * 3,), **base), materials=Materials(shininess=0)),
    )(sq)
    mask = off[0, ..., 3] > 0
    assert torch.allclose(
        p0[0, ..., :3][mask] - off[0, ..., :3][mask], torch.full((int(mask.sum()), 3), 0.3), atol=1e-6
    )


def test_shaders_run_and_gouraud_flat_phong_agree_on_a_flat_face():
    sq = _square(-1, 1, -1, 1, 0.0)
    sq.textures = TexturesVertex([torch.full((4, 3), 0.7)])
    R, T = look_at_view_transform(3.0, 0.0, 0.0)
    cam = FoVPerspectiveCameras(R=R, T=T)
    lights = DirectionalLights(direction=((0.0, 0.0, 1.0),))
    rast = MeshRasterizer(cam, RasterizationSettings(image_size=16))
    out = {
        S.__name__: MeshRenderer(rast, S(lights=lights, materials=Materials(specular_color=((0.0,) * 3,))))(sq)
        for S in (HardPhongShader, HardGouraudShader, HardFlatShader)
    }
    mask = out["HardPhongShader"][0, ..., 3] > 0
    for k in ("HardGouraudShader", "HardFlatShader"):
        assert torch.allclose(out[k][0][mask], out["HardPhongShader"][0][mask], atol=1e-5)
    depth = MeshRenderer(rast, HardDepthShader())(sq)
    assert torch.allclose(depth[0, ..., 0][mask], torch.full((int(mask.sum()),), 3.0), atol=1e-5)
    assert (depth[0, ..., 0][~mask] == 100.0).all()


def test_soft_shaders_alpha_and_background():
    m = data.ico_sphere(3)
    R, T = look_at_view_transform(3.0, 0.0, 0.0)
    cam = FoVPerspectiveCameras(R=R, T=T)
    sigma = 1e-4
    rs = RasterizationSettings(image_size=64, blur_radius=math.log(1 / 1e-4 - 1) * sigma, faces_per_pixel=20)
    sil = MeshRenderer(MeshRasterizer(cam, rs), SoftSilhouetteShader(BlendParams(sigma=sigma)))(m)
    alpha = sil[0, ..., 3]
    assert (alpha >= 0).all() and (alpha <= 1).all() and (sil[0, ..., :3] == 1).all()
    soft_edge = (alpha > 0.01) & (alpha < 0.99)
    assert soft_edge.sum() > 20
    # K = 1, blur 0: RGB is hard but alpha < 1 on edge pixels (docs/conventions.md#blending)
    m.textures = TexturesVertex([torch.ones(m.verts_packed().shape[0], 3) * 0.5])
    img = MeshRenderer(MeshRasterizer(cam, RasterizationSettings(image_size=64)), SoftPhongShader())(m)
    covered = img[0, ..., 3] > 0
    assert (img[0, ..., 3][covered] < 1).any() and img[0, 0, 0, :3].tolist() == [1.0, 1.0, 1.0]


def test_stale_camera_is_impossible():
    """docs/errata.md#e89: replacing only the rasterizer's cameras must also move the shader's view."""
    m = data.ico_sphere(2)
    m.textures = TexturesVertex([torch.ones(m.verts_packed().shape[0], 3)])
    R1, T1 = look_at_view_transform(3.0, 0.0, 0.0)
    R2, T2 = look_at_view_transform(3.0, 40.0, 120.0)
    lights = PointLights(location=((2.0, 2.0, 2.0),))
    renderer = MeshRenderer(
        MeshRasterizer(FoVPerspectiveCameras(R=R1, T=T1), RasterizationSettings(image_size=32)),
        HardPhongShader(cameras=FoVPerspectiveCameras(R=R1, T=T1), lights=lights),
    )
    renderer.rasterizer.cameras = FoVPerspectiveCameras(R=R2, T=T2)
    stale = renderer(m)
    fresh = MeshRenderer(
        MeshRasterizer(FoVPerspectiveCameras(R=R2, T=T2), RasterizationSettings(image_size=32)),
        HardPhongShader(lights=lights),
    )(m)
    assert torch.allclose(stale, fresh)
    by_kwargs = renderer(m, R=R1, T=T1)
    first = MeshRenderer(
        MeshRasterizer(FoVPerspectiveCameras(R=R1, T=T1), RasterizationSettings(image_size=32)),
        HardPhongShader(lights=lights),
    )(m)
    assert torch.allclose(by_kwargs, first)


def test_uv_texture_orientation_on_a_quad():
    img = data.uv_checker_texture(32)
    sq = _square(-1, 1, -1, 1, 0.0)
    uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    sq.textures = TexturesUV([img], [sq.faces_packed()], [uvs])
    R, T = look_at_view_transform(2.5, 0.0, 0.0)
    amb = PointLights(ambient_color=((1.0,) * 3,), diffuse_color=((0.0,) * 3,), specular_color=((0.0,) * 3,))
    out = MeshRenderer(
        MeshRasterizer(FoVPerspectiveCameras(R=R, T=T), RasterizationSettings(image_size=64)),
        HardPhongShader(lights=amb),
    )(sq)[0]
    mask = out[..., 3] > 0
    cols = torch.arange(64).expand(64, 64).float()
    rows = torch.arange(64)[:, None].expand(64, 64).float()
    # red grows with u (world +X, the right of the image); green grows with v (world +Y, the top)
    red, green = out[..., 0], out[..., 1]
    assert torch.corrcoef(torch.stack([red[mask], cols[mask]]))[0, 1] > 0.5
    assert torch.corrcoef(torch.stack([green[mask], rows[mask]]))[0, 1] < -0.5


def test_batch_mismatch_and_missing_textures():
    m = data.ico_sphere(1).extend(3)
    cams = FoVPerspectiveCameras(R=torch.eye(3).expand(2, 3, 3), T=torch.tensor([[0.0, 0, 3]] * 2))
    with pytest.raises(ValueError, match="2 cameras for 3 meshes"):
        MeshRasterizer(cams)(m)
    with pytest.raises(ValueError, match="textures"):
        R, T = look_at_view_transform(3.0, 0, 0)
        MeshRenderer(MeshRasterizer(FoVPerspectiveCameras(R=R, T=T)), HardPhongShader())(data.ico_sphere(1))
    with pytest.raises(ValueError, match="sigma"):
        BlendParams(sigma=0.0)


def test_vertices_behind_the_camera_are_clipped_without_nan():
    # a large ground plane passing under and behind the camera
    plane = Meshes(
        [torch.tensor([[-50.0, -1, -50], [50, -1, -50], [50, -1, 50], [-50, -1, 50]])],
        [torch.tensor([[0, 2, 1], [0, 3, 2]])],
    )
    plane.textures = TexturesVertex([torch.ones(4, 3)])
    R, T = look_at_view_transform(2.0, 5.0, 0.0)
    verts = plane.verts_packed().clone().requires_grad_(True)
    p = Meshes([verts], plane.faces_list(), plane.textures)
    img = MeshRenderer(
        MeshRasterizer(FoVPerspectiveCameras(R=R, T=T), RasterizationSettings(image_size=32)), HardPhongShader()
    )(p)
    assert torch.isfinite(img).all() and (img[0, ..., 3] > 0).sum() > 100
    img[..., :3].sum().backward()
    assert torch.isfinite(verts.grad).all()


def test_screen_space_camera_renders_like_its_ndc_twin():
    m = data.ico_sphere(2)
    R, T = look_at_view_transform(3.0, 10.0, 20.0)
    ndc = PerspectiveCameras(focal_length=1.5, principal_point=((0.1, -0.05),), R=R, T=T)
    s = 16.0  # image 32 x 48: s = 16
    screen = PerspectiveCameras(
        focal_length=1.5 * s,
        principal_point=((24 - 0.1 * s, 16 + 0.05 * s),),
        R=R,
        T=T,
        in_ndc=False,
        image_size=((32, 48),),
    )
    a = MeshRasterizer(ndc, RasterizationSettings(image_size=(32, 48)))(m)
    b = MeshRasterizer(screen, RasterizationSettings(image_size=(32, 48)))(m)
    assert torch.equal(a.pix_to_face, b.pix_to_face)


def test_join_scene_renders_both_objects():
    a = data.ico_sphere(2).offset_verts(torch.tensor([-1.2, 0.0, 0.0]))
    b = data.cube(size=1.0).offset_verts(torch.tensor([1.2, 0.0, 0.0]))
    scene = join_meshes_as_scene([a, b])
    R, T = look_at_view_transform(5.0, 0.0, 0.0)
    frags = MeshRasterizer(FoVPerspectiveCameras(R=R, T=T), RasterizationSettings(image_size=48))(scene)
    faces = frags.pix_to_face[0, ..., 0]
    n_sphere = a.faces_packed().shape[0]
    assert ((faces >= 0) & (faces < n_sphere)).sum() > 30 and (faces >= n_sphere).sum() > 30


def test_textured_cow_renders_with_its_uv_texture(testdata):
    from p3dlab.io import load_objs_as_meshes

    cow = load_objs_as_meshes([testdata / "pytorch3d/cow_mesh/cow.obj"])
    R, T = look_at_view_transform(2.7, 0.0, 180.0)
    lights = PointLights(ambient_color=((1.0,) * 3,), diffuse_color=((0.0,) * 3,), specular_color=((0.0,) * 3,))
    img = MeshRenderer(
        MeshRasterizer(FoVPerspectiveCameras(R=R, T=T), RasterizationSettings(image_size=128)),
        HardPhongShader(lights=lights),
    )(cow)[0]
    mask = img[..., 3] > 0
    assert 1500 < mask.sum() < 8000
    rgb = img[..., :3][mask]
    # with ambient-only light the pixels are texels: the cow's white, black spots and pink nose
    texture = cow.textures.maps_list()[0].reshape(-1, 3)
    assert rgb.min() >= texture.min() - 1e-5 and rgb.max() <= texture.max() + 1e-5
    dark = (rgb.max(-1).values < 0.25).float().mean()
    pinkish = ((rgb[:, 0] > 0.6) & (rgb[:, 0] - rgb[:, 2] > 0.2)).float().mean()
    assert dark > 0.02 and pinkish > 0.02


def test_teapot_is_wound_outward_seen_from_eight_views():
    """Back-face culling must not change the silhouette of an outward-wound surface (spec 15.1)."""
    teapot = data.teapot(4)
    R, T = look_at_view_transform(3.0, torch.tensor([20.0, -15.0] * 4), torch.arange(8) * 45.0, at=((0.0, 0.45, 0.0),))
    cams = FoVPerspectiveCameras(R=R, T=T)
    batch = teapot.extend(8)
    plain = MeshRasterizer(cams, RasterizationSettings(image_size=64))(batch).pix_to_face[..., 0] >= 0
    culled = (
        MeshRasterizer(cams, RasterizationSettings(image_size=64, cull_backfaces=True))(batch).pix_to_face[..., 0] >= 0
    )
    assert plain.sum() > 8 * 300
    # the open spout tip and the lid gap show a few inner (back) faces; nothing else may differ
    assert (plain != culled).float().mean() < 0.003
