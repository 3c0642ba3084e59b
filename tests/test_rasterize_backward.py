import itertools

import pytest
import torch
from raster_scenes import random_projected_meshes

from p3dlab.ops.rasterize_meshes import rasterize_meshes
from p3dlab.ops.rasterize_reference import rasterize_meshes_reference
from p3dlab.structures import Meshes


def _loss_fn(raster, faces, weights, **kw):
    """A scalar mixing zbuf, bary and dists with fixed random weights (masked to valid slots)."""

    def f(verts):
        p2f, z, b, d = raster(Meshes([verts], [faces]), **kw)
        valid = (p2f >= 0).to(verts.dtype)
        wz, wb, wd = weights
        return (z * wz * valid).sum() + (b * wb * valid[..., None]).sum() + (d * wd * valid).sum()

    return f


CASES = list(itertools.product([1, 3], [0.0, 0.05], [False, True], [False, True]))


@pytest.mark.parametrize("K, blur, persp, clip", CASES)
def test_gradcheck_tiny_scenes(K, blur, persp, clip):
    m = random_projected_meshes(1, (3,), seed=K + 7 * int(persp) + 3 * int(clip), dtype=torch.float64, xy=0.9)
    verts = m.verts_packed().clone().requires_grad_(True)
    kw = dict(
        image_size=(9, 11), faces_per_pixel=K, blur_radius=blur, perspective_correct=persp, clip_barycentric_coords=clip
    )
    p2f = rasterize_meshes(m, **kw)[0]
    g = torch.Generator().manual_seed(1)
    weights = [
        torch.randn(p2f.shape, generator=g, dtype=torch.float64),
        torch.randn(p2f.shape + (3,), generator=g, dtype=torch.float64),
        torch.randn(p2f.shape, generator=g, dtype=torch.float64),
    ]
    f = _loss_fn(rasterize_meshes, m.faces_packed(), weights, **kw)
    # small eps: finite differences must not move pixels across edges (piecewise-constant parts)
    assert torch.autograd.gradcheck(f, (verts,), eps=1e-7, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("K, blur, persp, clip", CASES)
def test_gradients_match_the_dense_autograd_reference(K, blur, persp, clip):
    m = random_projected_meshes(2, (8, 5), seed=3, dtype=torch.float64)
    kw = dict(
        image_size=(12, 10),
        faces_per_pixel=K,
        blur_radius=blur,
        perspective_correct=persp,
        clip_barycentric_coords=clip,
    )
    verts_list = [v.clone().requires_grad_(True) for v in m.verts_list()]
    verts_ref = [v.clone().requires_grad_(True) for v in m.verts_list()]
    out = rasterize_meshes(Meshes(verts_list, m.faces_list()), **kw)
    ref = rasterize_meshes_reference(Meshes(verts_ref, m.faces_list()), **kw)
    assert torch.equal(out[0], ref[0])
    g = torch.Generator().manual_seed(2)
    valid = (out[0] >= 0).double()
    wz, wd = (
        torch.randn(out[1].shape, generator=g, dtype=torch.float64),
        torch.randn(out[1].shape, generator=g, dtype=torch.float64),
    )
    wb = torch.randn(out[2].shape, generator=g, dtype=torch.float64)
    loss = lambda o: (o[1] * wz * valid).sum() + (o[2] * wb * valid[..., None]).sum() + (o[3] * wd * valid).sum()
    loss(out).backward()
    loss(ref).backward()
    for a, b in zip(verts_list, verts_ref):
        assert torch.allclose(a.grad, b.grad, atol=1e-9, rtol=1e-7)


def test_zclip_gradients_flow_to_vertices_behind_the_camera():
    v = torch.tensor([[0.5, 0.5, 2.0], [-0.5, 0.5, 2.0], [0.0, -0.5, -1.0]], dtype=torch.float64, requires_grad=True)
    m = Meshes([v], [torch.tensor([[0, 1, 2]])])
    p2f, z, b, d = rasterize_meshes(m, image_size=16, z_clip_value=0.5, perspective_correct=True)
    assert (p2f >= 0).sum() > 10
    assert torch.isfinite(z[p2f >= 0]).all()
    (z * (p2f >= 0)).sum().backward()
    assert torch.isfinite(v.grad).all() and v.grad[2].abs().sum() > 0


def test_silhouette_gradients_match_the_dense_reference():
    """A dists-only loss (soft silhouette): the kernels skip the missing zbuf/bary gradients."""
    from p3dlab.renderer import BlendParams
    from p3dlab.renderer.blending import sigmoid_alpha_blend
    from p3dlab.renderer.mesh_rasterizer import Fragments

    m = random_projected_meshes(1, (6,), seed=9, dtype=torch.float64)
    kw = dict(image_size=(12, 14), faces_per_pixel=4, blur_radius=0.02, clip_barycentric_coords=True)
    grads = []
    for raster in (rasterize_meshes, rasterize_meshes_reference):
        v = m.verts_packed().clone().requires_grad_(True)
        frags = Fragments(*raster(Meshes([v], m.faces_list()), **kw))
        ones = torch.ones(frags.dists.shape + (3,), dtype=torch.float64)
        alpha = sigmoid_alpha_blend(ones, frags, BlendParams(sigma=0.01))[..., 3]
        (alpha * torch.linspace(0, 1, alpha.numel(), dtype=torch.float64).view_as(alpha)).sum().backward()
        grads.append(v.grad)
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-9, rtol=1e-7)
