"""Small end-to-end optimisations through the soft rasterizer: they must converge, in seconds,
and never produce NaN (docs/errata.md#e43)."""

import math
import warnings

import torch

from p3dlab import data
from p3dlab.loss import mesh_edge_loss, mesh_laplacian_smoothing, mesh_normal_consistency
from p3dlab.ops.rasterize_meshes import rasterize_meshes
from p3dlab.renderer import (
    BlendParams,
    FoVOrthographicCameras,
    FoVPerspectiveCameras,
    MeshRasterizer,
    MeshRenderer,
    PointLights,
    RasterizationSettings,
    SoftPhongShader,
    SoftSilhouetteShader,
    look_at_rotation,
    look_at_view_transform,
)
from p3dlab.structures import Meshes, TexturesVertex

SIGMA = 1e-4


def _silhouette(size, K=30, cameras=None, sigma=SIGMA):
    rs = RasterizationSettings(image_size=size, blur_radius=math.log(1 / 1e-4 - 1) * sigma, faces_per_pixel=K)
    return MeshRenderer(
        MeshRasterizer(cameras or FoVPerspectiveCameras(), rs), SoftSilhouetteShader(BlendParams(sigma=sigma))
    )


def test_teapot_camera_error_falls_tenfold():
    teapot = data.teapot(3)
    renderer = _silhouette(64)
    R_ref, T_ref = look_at_view_transform(3.0, 50.0, 0.0)
    C_ref = -(T_ref[:, None] @ R_ref.transpose(1, 2))[:, 0]
    ref = renderer(teapot, R=R_ref, T=T_ref)[..., 3].detach()
    C = torch.tensor([[3.0, 6.9, 2.5]], requires_grad=True)
    opt = torch.optim.Adam([C], lr=0.05)
    start = (C.detach() - C_ref).norm().item()
    for _ in range(150):
        opt.zero_grad()
        R = look_at_rotation(C)
        loss = ((renderer(teapot, R=R, T=-(C[:, None] @ R)[:, 0])[..., 3] - ref) ** 2).mean()
        loss.backward()
        opt.step()
        assert torch.isfinite(C).all()
        if (C.detach() - C_ref).norm().item() < start / 10:
            break
    assert (C.detach() - C_ref).norm().item() < start / 10


def test_vertex_fit_to_a_square_silhouette_reaches_iou_095():
    """NMR example 2 in small: deform a sphere until its silhouette is a square (with regularisers)."""
    sphere = data.ico_sphere(2)
    cams = FoVOrthographicCameras(
        R=torch.eye(3)[None], T=torch.tensor([[0.0, 0.0, 3.0]]), min_x=-1.5, max_x=1.5, min_y=-1.5, max_y=1.5
    )
    renderer = _silhouette(48, K=20, cameras=cams, sigma=1e-3)
    target = torch.zeros(1, 48, 48)
    target[:, 12:36, 12:36] = 1.0  # a square of side 1 in world units
    offsets = torch.zeros_like(sphere.verts_packed(), requires_grad=True)
    opt = torch.optim.Adam([offsets], lr=0.02)
    for _ in range(250):
        opt.zero_grad()
        mesh = sphere.offset_verts(offsets)
        alpha = renderer(mesh)[..., 3]
        loss = (
            ((alpha - target) ** 2).mean()
            + 0.1 * mesh_laplacian_smoothing(mesh)
            + 0.01 * mesh_normal_consistency(mesh)
            + 0.1 * mesh_edge_loss(mesh)
        )
        loss.backward()
        opt.step()
    alpha = renderer(sphere.offset_verts(offsets.detach()))[..., 3]
    iou = ((alpha > 0.5) & (target > 0.5)).sum() / ((alpha > 0.5) | (target > 0.5)).sum()
    assert iou >= 0.95, f"IoU {iou:.3f}"


def test_cow_style_textured_fit_stays_finite():
    """The book's cow run diverged to NaN at iteration 55 (docs/errata.md#e43): a blurred, perspective-
    corrected textured soft pass plus a silhouette pass, Adam(0.05) from far away. Here on a coloured
    procedural mesh at 48^2: every step must stay finite."""
    mesh = data.colored_cube(size=1.0)
    tex_renderer = MeshRenderer(
        MeshRasterizer(
            FoVPerspectiveCameras(),
            RasterizationSettings(image_size=48, blur_radius=math.log(1 / 1e-4 - 1) * SIGMA, faces_per_pixel=20),
        ),
        SoftPhongShader(),
    )
    sil = _silhouette(48, K=20)
    R_ref, T_ref = look_at_view_transform(3.0, 50.0, 0.0)
    ref_rgb = tex_renderer(mesh, R=R_ref, T=T_ref).detach()
    ref_sil = sil(mesh, R=R_ref, T=T_ref)[..., 3].detach()
    C = torch.tensor([[3.0, 6.9, 2.5]], requires_grad=True)
    opt = torch.optim.Adam([C], lr=0.05)
    for _ in range(70):
        opt.zero_grad()
        R = look_at_rotation(C)
        T = -(C[:, None] @ R)[:, 0]
        rgb = tex_renderer(mesh, R=R, T=T)
        loss = ((sil(mesh, R=R, T=T)[..., 3] - ref_sil) ** 2).mean() + 0.1 * (
            (rgb[..., :3] - ref_rgb[..., :3]) ** 2
        ).mean()
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(C.grad).all()
        opt.step()


def test_blurred_perspective_pass_never_returns_inf_behind_the_camera():
    """A face whose plane passes behind the camera: with blur and perspective correction, PyTorch3D
    divides by 1e-8 there (huge barycentrics); p3dlab skips such candidates."""
    v = torch.tensor([[0.9, 0.9, 0.05], [-0.9, 0.9, 8.0], [0.0, -0.9, 8.0]], dtype=torch.float64)
    m = Meshes([v], [torch.tensor([[0, 1, 2]])])
    p2f, z, bary, d = rasterize_meshes(m, image_size=32, blur_radius=0.05, faces_per_pixel=2, perspective_correct=True)
    valid = p2f >= 0
    assert valid.sum() > 50
    assert torch.isfinite(z[valid]).all() and torch.isfinite(bary[valid]).all()
    assert bary[valid].abs().max() < 1e6
    verts = v.clone().requires_grad_(True)
    out = rasterize_meshes(
        Meshes([verts], [torch.tensor([[0, 1, 2]])]),
        image_size=32,
        blur_radius=0.05,
        faces_per_pixel=2,
        perspective_correct=True,
    )
    (out[1] * valid).sum().backward()
    assert torch.isfinite(verts.grad).all()


def test_degenerate_inputs_give_finite_values_and_gradients():
    """Zero-area faces, sigma -> 0 and a look-at eye exactly on the up axis: nothing becomes NaN."""
    teapot = data.teapot(2)
    v = teapot.verts_packed().clone()
    f = torch.cat([teapot.faces_packed(), torch.tensor([[0, 0, 1], [2, 2, 2]])])  # two degenerate faces
    verts = v.requires_grad_(True)
    mesh = Meshes([verts], [f])
    for sigma in (1e-4, 1e-12):
        renderer = _silhouette(32, K=10, sigma=sigma)
        R, T = look_at_view_transform(3.0, 30.0, 20.0, at=((0.0, 0.45, 0.0),))
        alpha = renderer(mesh, R=R, T=T)[..., 3]
        alpha.sum().backward()
        assert torch.isfinite(alpha).all() and torch.isfinite(verts.grad).all()
        verts.grad = None
    C = torch.tensor([[0.0, 3.0, 0.0]], requires_grad=True)  # on the +Y axis above the object
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        R = look_at_rotation(C)
    T = -(C[:, None] @ R)[:, 0]
    alpha = _silhouette(32, K=10)(teapot, R=R, T=T)[..., 3]
    alpha.sum().backward()
    assert torch.isfinite(alpha).all() and torch.isfinite(C.grad).all()


def test_the_real_cow_textured_fit_stays_finite(testdata):
    """docs/errata.md#e43 on the book's own cow: silhouette + textured soft pass from (3, 6.9, 2.5)."""
    from p3dlab.io import load_objs_as_meshes

    cow = load_objs_as_meshes([testdata / "pytorch3d/cow_mesh/cow.obj"])
    tex_renderer = MeshRenderer(
        MeshRasterizer(
            FoVPerspectiveCameras(),
            RasterizationSettings(image_size=40, blur_radius=math.log(1 / 1e-4 - 1) * SIGMA, faces_per_pixel=10),
        ),
        SoftPhongShader(),
    )
    sil = _silhouette(40, K=10)
    R_ref, T_ref = look_at_view_transform(2.7, 0.0, 180.0)
    ref_rgb = tex_renderer(cow, R=R_ref, T=T_ref)[..., :3].detach()
    ref_sil = sil(cow, R=R_ref, T=T_ref)[..., 3].detach()
    C = torch.tensor([[3.0, 6.9, 2.5]], requires_grad=True)
    opt = torch.optim.Adam([C], lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        R = look_at_rotation(C)
        T = -(C[:, None] @ R)[:, 0]
        loss = ((sil(cow, R=R, T=T)[..., 3] - ref_sil) ** 2).mean() + 0.1 * (
            (tex_renderer(cow, R=R, T=T)[..., :3] - ref_rgb) ** 2
        ).mean()
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(C.grad).all()
        opt.step()


def test_gradients_reach_textures_lights_fov_and_pose():
    teapot = data.teapot(2)
    colours = torch.full_like(teapot.verts_packed(), 0.6, requires_grad=True)
    teapot.textures = TexturesVertex([colours])
    light = torch.tensor([[2.0, 2.0, 2.0]], requires_grad=True)
    fov = torch.tensor([55.0], requires_grad=True)
    C = torch.tensor([[0.5, 1.5, 2.5]], requires_grad=True)
    R = look_at_rotation(C)
    T = -(C[:, None] @ R)[:, 0]
    rs = RasterizationSettings(image_size=32, blur_radius=math.log(1 / 1e-4 - 1) * SIGMA, faces_per_pixel=5)
    renderer = MeshRenderer(MeshRasterizer(FoVPerspectiveCameras(), rs), SoftPhongShader())
    img = renderer(teapot, cameras=FoVPerspectiveCameras(fov=fov, R=R, T=T), lights=PointLights(location=light))
    (img[..., :3] * torch.linspace(0, 1, 32)[None, :, None, None]).sum().backward()
    for name, t in (("vertex colours", colours), ("light", light), ("fov", fov), ("camera position", C)):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0, name
