"""The soft silhouette's alpha kernel (kernels/silhouette.py, p3dlab.ops.silhouette_alpha) against the
plain torch expression, float64 references and gradcheck."""

import pytest
import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.ops import silhouette_alpha
from p3dlab.ops.silhouette import silhouette_alpha_torch


def _fragments(dtype, seed=0, shape=(2, 5, 7, 6)):
    g = torch.Generator().manual_seed(seed)
    dists = torch.randn(shape, generator=g, dtype=torch.float64) * 3e-4
    dists.view(-1)[:4] = torch.tensor([0.0, -1.0, 1.0, 5e-2])  # on an edge, deep inside, far outside
    pix_to_face = torch.randint(0, 50, shape, generator=g)
    pix_to_face[..., 4:] = -1  # trailing empty slots
    pix_to_face[0, 0, 0, 1] = -1  # and an empty slot between valid ones
    pix_to_face[-1, 2] = -1  # empty pixels
    return pix_to_face, dists.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_alpha_matches_the_torch_expression_and_a_float64_product(dtype):
    pix_to_face, dists = _fragments(dtype)
    sigma = 1e-4
    alpha = silhouette_alpha(pix_to_face, dists, sigma)
    assert alpha.dtype == dtype and alpha.shape == dists.shape[:-1]
    ref = silhouette_alpha_torch(pix_to_face, dists.double(), sigma)
    # the product form, in float64: 1 - prod over valid slots of (1 - sigmoid(-d / sigma))
    p = torch.sigmoid(-dists.double() / sigma) * (pix_to_face >= 0)
    product = 1 - (1 - p).prod(-1)
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    assert torch.allclose(alpha.double(), ref, atol=tol, rtol=0)
    assert torch.allclose(alpha.double(), product, atol=tol, rtol=0)
    assert (alpha[-1, 2] == 0).all()  # no valid slot: transparent


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradient_matches_autograd_of_the_torch_expression(dtype):
    pix_to_face, dists = _fragments(dtype, seed=1)
    dists.requires_grad_(True)
    g = torch.randn(dists.shape[:-1], generator=torch.Generator().manual_seed(2), dtype=dtype)
    (got,) = torch.autograd.grad((silhouette_alpha(pix_to_face, dists, 2e-4) * g).sum(), dists)
    (want,) = torch.autograd.grad((silhouette_alpha_torch(pix_to_face, dists, 2e-4) * g).sum(), dists)
    scale = float(want.abs().max())
    assert torch.allclose(got, want, atol=(1e-5 if dtype == torch.float32 else 1e-12) * scale, rtol=0)
    assert (got[pix_to_face < 0] == 0).all()


def test_gradcheck():
    pix_to_face, dists = _fragments(torch.float64, seed=3, shape=(1, 3, 4, 5))
    dists = (dists * 3).requires_grad_(True)  # distances of a few sigma: gradients that matter
    assert torch.autograd.gradcheck(lambda d: silhouette_alpha(pix_to_face, d, 1e-3), (dists,), eps=1e-7)


def test_extreme_distances_stay_finite():
    dists = torch.tensor([[1e30, -1e30, 0.0], [1e-30, -1e-30, float("inf")]], requires_grad=True)
    pix_to_face = torch.zeros(2, 3, dtype=torch.int64)
    alpha = silhouette_alpha(pix_to_face, dists, 1e-4)
    assert torch.equal(alpha.detach(), torch.tensor([1.0, 0.75]))  # 1 - (1 - 1); 1 - 0.5 * 0.5 * 1
    alpha.sum().backward()
    assert torch.isfinite(dists.grad).all()


def test_the_soft_silhouette_shader_takes_it_without_bands(monkeypatch):
    """On the CPU the shader computes a render past the banding threshold in one pass, and equals the
    banded torch expression, values and gradients."""
    import p3dlab.renderer.shader as shader
    from p3dlab.renderer import (
        BlendParams,
        FoVPerspectiveCameras,
        MeshRasterizer,
        MeshRenderer,
        RasterizationSettings,
        SoftSilhouetteShader,
        look_at_view_transform,
    )
    from p3dlab.utils import ico_sphere

    monkeypatch.setattr(shader, "SHADE_SLOTS_AT_ONCE", 2**12)  # the 32 x 32 x 20 render is past it
    monkeypatch.setattr(shader, "SHADE_SLOTS_PER_BAND", 2**11)
    real_shade_in_bands = shader.shade_in_bands
    calls = []
    monkeypatch.setattr(shader, "shade_in_bands", lambda shade, f: calls.append(1) or real_shade_in_bands(shade, f))

    sphere = ico_sphere(2)
    verts = sphere.verts_packed().clone().requires_grad_(True)
    R, T = look_at_view_transform(2.7, 10.0, 20.0)
    settings = RasterizationSettings(image_size=32, blur_radius=1e-3, faces_per_pixel=20)
    rasterizer = MeshRasterizer(FoVPerspectiveCameras(R=R, T=T), settings)
    renderer = MeshRenderer(rasterizer, SoftSilhouetteShader(BlendParams(sigma=1e-4)))
    weights = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(4))

    image = renderer(sphere.update_padded(verts[None]))[..., 3]
    (grad,) = torch.autograd.grad((image * weights).sum(), verts)
    assert not calls

    fragments = rasterizer(sphere.update_padded(verts[None]))
    image_ref = real_shade_in_bands(
        lambda part: silhouette_alpha_torch(part.pix_to_face, part.dists, 1e-4)[..., None], fragments
    )[..., 0]
    (grad_ref,) = torch.autograd.grad((image_ref * weights).sum(), verts)
    assert torch.allclose(image, image_ref.detach(), atol=1e-6)
    assert torch.allclose(grad, grad_ref, atol=1e-5 * float(grad_ref.abs().max()))
    assert float(grad.abs().max()) > 0 and 0.05 < float(image.detach().mean()) < 0.95


def test_bad_input_is_refused():
    p2f = torch.zeros(2, 3, dtype=torch.int64)
    with pytest.raises(P3DLabValueError, match="same shape"):
        silhouette_alpha(p2f, torch.zeros(2, 4), 1e-4)
    with pytest.raises(P3DLabValueError, match="integer"):
        silhouette_alpha(p2f.float(), torch.zeros(2, 3), 1e-4)
    with pytest.raises(P3DLabValueError, match="sigma"):
        silhouette_alpha(p2f, torch.zeros(2, 3), 0.0)
    with pytest.raises(P3DLabValueError, match="sigma"):
        silhouette_alpha(p2f, torch.zeros(2, 3), float("nan"))
    # half precision takes the torch expression
    assert silhouette_alpha(p2f, torch.zeros(2, 3, dtype=torch.bfloat16), 1e-4).dtype == torch.bfloat16
