"""The same inputs give bitwise the same gradients from run to run at a given thread count.

Advanced indexing (``verts[faces]``) accumulates its gradient in an order that depends on the
threads; p3dlab gathers with ``p3dlab.ops.gather.gather_rows`` instead. Each case runs its backward
several times with two threads and compares the gradients bit for bit."""

import pytest
import torch

from p3dlab import data
from p3dlab.ops.gather import gather_rows
from p3dlab.renderer import (
    FoVPerspectiveCameras,
    HardFlatShader,
    HardPhongShader,
    MeshRasterizer,
    MeshRenderer,
    PointLights,
    RasterizationSettings,
    SoftGouraudShader,
    SoftPhongShader,
    SoftSilhouetteShader,
    look_at_view_transform,
)
from p3dlab.structures import Meshes, TexturesUV, TexturesVertex

RUNS = 6


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _camera():
    R, T = look_at_view_transform(2.7, 10.0, 20.0)
    return FoVPerspectiveCameras(R=R, T=T)


def _shader(name, cam):
    lights = PointLights(location=((2.0, 2.0, 3.0),))
    return {
        "soft phong": lambda: SoftPhongShader(cameras=cam, lights=lights),
        "hard phong": lambda: HardPhongShader(cameras=cam, lights=lights),
        "hard flat": lambda: HardFlatShader(cameras=cam, lights=lights),
        "soft gouraud": lambda: SoftGouraudShader(cameras=cam, lights=lights),
        "soft silhouette": lambda: SoftSilhouetteShader(),
    }[name]()


def _mesh(verts, faces, textured):
    if textured:
        uv = (verts[:, :2].detach() * 0.5 + 0.5).clamp(0, 1)
        tex = TexturesUV([data.uv_checker_texture(8)], [faces], [uv])
        return Meshes([verts], [faces], tex)
    return Meshes([verts], [faces], TexturesVertex([torch.ones_like(verts) * 0.7]))


def _gradients(shader_name, textured=False):
    sphere = data.ico_sphere(4)
    cam = _camera()
    settings = RasterizationSettings(image_size=128, blur_radius=1e-4, faces_per_pixel=8)
    renderer = MeshRenderer(MeshRasterizer(cam, settings), _shader(shader_name, cam))
    grads = []
    for _ in range(RUNS):
        verts = sphere.verts_packed().clone().requires_grad_(True)
        image = renderer(_mesh(verts, sphere.faces_packed(), textured))
        (image * torch.linspace(0.5, 1.5, image.shape[-1])).pow(2).sum().backward()
        grads.append(verts.grad)
    return grads


@pytest.mark.parametrize("shader", ["soft phong", "hard phong", "hard flat", "soft gouraud", "soft silhouette"])
def test_mesh_renderer_gradients_repeat_bitwise(shader, two_threads):
    grads = _gradients(shader)
    assert grads[0].abs().sum() > 0
    for g in grads[1:]:
        assert torch.equal(g, grads[0]), f"{shader}: gradients differ by {float((g - grads[0]).abs().max()):.3g}"


def test_textured_mesh_gradients_repeat_bitwise(two_threads):
    grads = _gradients("soft phong", textured=True)
    assert all(torch.equal(g, grads[0]) for g in grads[1:])


def test_gather_rows_is_advanced_indexing():
    values = torch.randn(7, 3, 2, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, 7, (4, 5, 3))
    assert torch.equal(gather_rows(values, index), values[index])
    assert torch.autograd.gradcheck(lambda v: gather_rows(v, index), (values,))


def _repeat(fn):
    """Gradients of ``fn(verts)`` over RUNS runs, with a fresh leaf each run."""
    base = data.ico_sphere(5).verts_packed()  # 10,242 vertices: the gathers are large enough to split
    grads = []
    for _ in range(RUNS):
        verts = base.clone().requires_grad_(True)
        fn(verts).backward()
        grads.append(verts.grad)
    return grads


def test_losses_sampling_and_graph_conv_gradients_repeat_bitwise(two_threads):
    from p3dlab.loss import mesh_edge_loss, mesh_laplacian_smoothing, mesh_normal_consistency
    from p3dlab.ops import GraphConv, sample_points_from_meshes

    sphere = data.ico_sphere(5)
    faces = sphere.faces_packed()
    torch.manual_seed(0)
    conv = GraphConv(3, 8)

    def mesh(v):
        return Meshes([v * torch.linspace(0.9, 1.1, v.shape[0])[:, None]], [faces])

    cases = {
        "mesh_edge_loss": lambda v: mesh_edge_loss(mesh(v)),
        "mesh_normal_consistency": lambda v: mesh_normal_consistency(mesh(v)),
        "mesh_laplacian_smoothing (cot)": lambda v: mesh_laplacian_smoothing(mesh(v), method="cot"),
        "faces_normals_packed": lambda v: mesh(v).faces_normals_packed().pow(2).sum(),
        "sample_points_from_meshes": lambda v: (
            sample_points_from_meshes(mesh(v), 50_000, generator=torch.Generator().manual_seed(0)).pow(2).sum()
        ),
        "GraphConv": lambda v: conv(v, mesh(v).edges_packed()).pow(2).sum(),
    }
    for name, fn in cases.items():
        grads = _repeat(fn)
        assert grads[0].abs().sum() > 0, name
        assert all(torch.equal(g, grads[0]) for g in grads[1:]), f"{name}: gradients differ between runs"
