"""Shading in bands of rows (``p3dlab.renderer.shader.shade_in_bands``) and hard shaders that shade
slot 0 only: the same images and gradients as shading every face-slot in one pass, in less memory."""

import ctypes
import ctypes.util
import platform

import pytest
import torch

import p3dlab.renderer.shader as shaders
from p3dlab import data
from p3dlab.renderer import (
    FoVPerspectiveCameras,
    HardFlatShader,
    HardGouraudShader,
    HardPhongShader,
    MeshRasterizer,
    MeshRenderer,
    PointLights,
    RasterizationSettings,
    SoftGouraudShader,
    SoftPhongShader,
    SoftSilhouetteShader,
    hard_rgb_blend,
    look_at_view_transform,
    phong_shading,
)
from p3dlab.runtime.heap import release_free_heap
from p3dlab.structures import Meshes, TexturesUV, TexturesVertex

SHADERS = [SoftPhongShader, SoftGouraudShader, SoftSilhouetteShader, HardPhongShader, HardGouraudShader, HardFlatShader]


def _scene(dtype=torch.float32, uv=False):
    sphere = data.ico_sphere(2)
    verts = sphere.verts_packed().to(dtype).clone().requires_grad_(True)
    faces = sphere.faces_packed()
    g = torch.Generator().manual_seed(0)
    if uv:
        colours = torch.rand(1, 8, 8, 3, generator=g, dtype=dtype).requires_grad_(True)
        uvs = torch.rand(verts.shape[0], 2, generator=g, dtype=dtype)
        textures = TexturesUV(colours, [faces], [uvs])
    else:
        colours = torch.rand(verts.shape[0], 3, generator=g, dtype=dtype).requires_grad_(True)
        textures = TexturesVertex([colours])
    R, T = look_at_view_transform(2.7, 10.0, 20.0)
    cameras = FoVPerspectiveCameras(R=R.to(dtype), T=T.to(dtype))
    return Meshes([verts], [faces], textures=textures), verts, colours, cameras


def _render(shader_class, banded, monkeypatch, dtype=torch.float32, uv=False, size=24, K=6, backward=True):
    # banded: every render takes bands of 100 face-slots (4 rows of 24 pixels at K = 1, 1 row at K = 6)
    monkeypatch.setattr(shaders, "SHADE_SLOTS_AT_ONCE", 0 if banded else 2**62)
    monkeypatch.setattr(shaders, "SHADE_SLOTS_PER_BAND", 100)
    mesh, verts, colours, cameras = _scene(dtype, uv)
    settings = RasterizationSettings(image_size=size, faces_per_pixel=K, blur_radius=1e-3)
    renderer = MeshRenderer(MeshRasterizer(cameras, settings), shader_class(cameras=cameras, lights=PointLights()))
    image = renderer(mesh)
    if not backward:
        return image, None, None
    weights = torch.linspace(0.5, 1.5, image.numel(), dtype=dtype).reshape(image.shape)  # every pixel counts
    (image * weights).sum().backward()
    return image.detach(), verts.grad, colours.grad


@pytest.mark.parametrize("shader_class", SHADERS, ids=lambda c: c.__name__)
def test_bands_give_the_image_of_one_pass_and_its_gradients(shader_class, monkeypatch):
    image, grad_verts, grad_colours = _render(shader_class, True, monkeypatch)
    image_1, grad_verts_1, grad_colours_1 = _render(shader_class, False, monkeypatch)
    assert torch.equal(image, image_1)  # per-pixel work: the same operations on the same numbers
    assert grad_verts.abs().sum() > 0
    # the vertices' gradient sums the bands' contributions in another order
    torch.testing.assert_close(grad_verts, grad_verts_1, rtol=1e-5, atol=1e-6)
    if grad_colours_1 is not None:
        torch.testing.assert_close(grad_colours, grad_colours_1, rtol=1e-5, atol=1e-6)


def test_bands_in_float64_with_a_uv_texture_agree_to_rounding(monkeypatch):
    image, grad_verts, grad_map = _render(SoftPhongShader, True, monkeypatch, dtype=torch.float64, uv=True)
    image_1, grad_verts_1, grad_map_1 = _render(SoftPhongShader, False, monkeypatch, dtype=torch.float64, uv=True)
    assert torch.equal(image, image_1)
    torch.testing.assert_close(grad_verts, grad_verts_1, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad_map, grad_map_1, rtol=1e-12, atol=1e-14)


def test_bands_without_autograd_give_the_same_image(monkeypatch):
    with torch.no_grad():
        image, _, _ = _render(SoftPhongShader, True, monkeypatch, backward=False)
        image_1, _, _ = _render(SoftPhongShader, False, monkeypatch, backward=False)
    assert torch.equal(image, image_1)


def test_a_second_backward_pass_through_the_bands_adds_the_same_gradient(monkeypatch):
    """The band gradients are gathered anew for every pass (``retain_graph=True``), and
    ``torch.autograd.grad`` through the bands gives what ``backward`` accumulates."""
    monkeypatch.setattr(shaders, "SHADE_SLOTS_AT_ONCE", 0)
    monkeypatch.setattr(shaders, "SHADE_SLOTS_PER_BAND", 100)
    mesh, verts, _, cameras = _scene()
    settings = RasterizationSettings(image_size=24, faces_per_pixel=6, blur_radius=1e-3)
    renderer = MeshRenderer(MeshRasterizer(cameras, settings), SoftPhongShader(cameras=cameras))
    loss = renderer(mesh).square().sum()
    (first,) = torch.autograd.grad(loss, [verts], retain_graph=True)
    loss.backward(retain_graph=True)
    loss.backward()
    assert first.abs().sum() > 0
    torch.testing.assert_close(verts.grad, 2 * first)


def test_a_hard_shader_shades_slot_0_only_and_matches_shading_every_slot(monkeypatch):
    """Hard blending reads slot 0: shading K slots and keeping one gives the same image and gradients."""
    mesh, verts, _, cameras = _scene()
    settings = RasterizationSettings(image_size=24, faces_per_pixel=6)
    rasterizer = MeshRasterizer(cameras, settings)
    lights, shader = PointLights(), HardPhongShader(cameras=cameras)
    fragments = rasterizer(mesh)
    every_slot = phong_shading(mesh, fragments, lights, cameras, shader.materials, mesh.sample_textures(fragments))
    assert every_slot.shape[3] == 6
    expected = hard_rgb_blend(every_slot, fragments, shader.blend_params)
    (expected_grad,) = torch.autograd.grad(expected.sum(), [verts])
    image = shader(rasterizer(mesh), mesh, lights=lights)
    (grad,) = torch.autograd.grad(image.sum(), [verts])
    assert torch.equal(image, expected)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_release_free_heap_gives_freed_heap_memory_back():
    """What the bands rely on: 40 MB of heap blocks freed between live ones (a band's temporaries
    between its kept results) stays resident until ``release_free_heap``."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def resident():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))

    release_free_heap()  # free holes given back first: the blocks below take pages that were not resident
    start = resident()
    blocks = [libc.malloc(64 * 1024) for _ in range(1280)]  # below the mmap threshold: from the heap
    for b in blocks:
        ctypes.memset(b, 1, 64 * 1024)  # resident
    assert resident() - start > 60 * 2**20  # 80 MB written
    for b in blocks[::2]:  # every other block: each freed one lies between two live ones
        libc.free(b)
    before = resident()
    assert release_free_heap()
    after = resident()
    for b in blocks[1::2]:
        libc.free(b)
    assert before - after > 30 * 2**20, (start, before, after)
