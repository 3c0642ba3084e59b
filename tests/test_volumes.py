import math

import numpy as np
import pytest
import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.pixels import pixel_centres
from p3dlab.renderer import (
    AbsorptionOnlyRaymarcher,
    EmissionAbsorptionRaymarcher,
    FoVOrthographicCameras,
    FoVPerspectiveCameras,
    GridRaysampler,
    ImplicitRenderer,
    MonteCarloRaysampler,
    MultinomialRaysampler,
    NDCMultinomialRaysampler,
    QuadratureRaymarcher,
    VolumeRenderer,
    VolumeSampler,
    look_at_view_transform,
    near_far_from_sphere,
    ray_bundle_to_ray_points,
)
from p3dlab.renderer.raysampling import RayBundle
from p3dlab.structures import Volumes

D = torch.float64


def test_volume_world_extents_and_the_translation_sign():
    vol = Volumes(torch.zeros(1, 1, 64, 64, 64), voxel_size=0.1)
    grid = vol.get_coord_grid()
    assert grid[..., 0].min().item() == pytest.approx(-3.15) and grid[..., 0].max().item() == pytest.approx(3.15)
    moved = Volumes(torch.zeros(1, 1, 5, 5, 5), voxel_size=1.0, volume_translation=(1.0, 2.0, 3.0))
    centre = moved.get_coord_grid()[0, 2, 2, 2]
    assert torch.allclose(centre, torch.tensor([-1.0, -2.0, -3.0]))  # the centre sits at -translation
    p = torch.rand(1, 10, 3)
    assert torch.allclose(moved.world_to_local_coords(moved.local_to_world_coords(p)), p, atol=1e-6)
    # x follows W, y follows H, z follows D
    aniso = Volumes(torch.zeros(1, 1, 3, 5, 9), voxel_size=1.0).get_coord_grid()
    assert aniso[..., 0].max() == 4.0 and aniso[..., 1].max() == 2.0 and aniso[..., 2].max() == 1.0


def test_bad_volumes():
    with pytest.raises(ValueError, match="voxel_size"):
        Volumes(torch.zeros(1, 1, 2, 2, 2), voxel_size=0.0)
    with pytest.raises(ValueError, match="NaN"):
        Volumes(torch.full((1, 1, 2, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="densities"):
        Volumes(torch.zeros(1, 2, 2, 2))


def test_sampling_at_voxel_centres_reproduces_the_grid():
    g = torch.Generator().manual_seed(0)
    dens = torch.rand(1, 1, 4, 5, 6, generator=g, dtype=D)
    feats = torch.rand(1, 3, 4, 5, 6, generator=g, dtype=D)
    vol = Volumes(dens, feats, voxel_size=0.3, volume_translation=(0.2, -0.1, 0.4))
    centres = vol.get_coord_grid().reshape(1, -1, 3)
    bundle = RayBundle(
        centres,
        torch.zeros_like(centres),
        torch.zeros(1, centres.shape[1], 1, dtype=D),
        torch.zeros(1, centres.shape[1], 2, dtype=D),
    )
    d, f = VolumeSampler(vol)(bundle)
    assert torch.allclose(d[:, :, 0, 0], dens.reshape(1, -1), atol=1e-12)
    assert torch.allclose(f[:, :, 0], feats.reshape(1, 3, -1).transpose(1, 2), atol=1e-12)


def test_grid_rays_go_through_the_pixel_centres():
    R, T = look_at_view_transform(3.0, 20.0, 30.0)
    cam = FoVPerspectiveCameras(R=R, T=T)
    sampler = NDCMultinomialRaysampler(image_width=4, image_height=2, n_pts_per_ray=5, min_depth=1.0, max_depth=4.0)
    b = sampler(cam)
    x, y = pixel_centres(2, 4)
    assert torch.allclose(b.xys[0, ..., 0].double(), x) and torch.allclose(b.xys[0, ..., 1].double(), y)
    assert b.xys[0, 0, :, 0].tolist() == [1.5, 0.5, -0.5, -1.5] and b.xys[0, :, 0, 1].tolist() == [0.5, -0.5]
    assert torch.allclose(b.origins[0], cam.get_camera_center()[0].expand(2, 4, 3), atol=1e-5)
    pts = ray_bundle_to_ray_points(b)[0]  # (2, 4, 5, 3)
    proj = cam.transform_points(pts.reshape(-1, 3)).reshape(2, 4, 5, 3)
    assert torch.allclose(proj[..., :2], b.xys[0][:, :, None, :].expand(2, 4, 5, 2), atol=1e-5)
    view_z = cam.get_world_to_view_transform().transform_points(pts.reshape(-1, 3))[:, 2].reshape(2, 4, 5)
    assert torch.allclose(view_z, b.lengths[0], atol=1e-5)  # lengths are view depths
    sub = NDCMultinomialRaysampler(4, 2, 5, 1.0, 4.0, n_rays_per_image=3)(
        cam, generator=torch.Generator().manual_seed(0)
    )
    assert sub.origins.shape == (1, 3, 3)
    strat = NDCMultinomialRaysampler(4, 2, 5, 1.0, 4.0, stratified_sampling=True)(
        cam, generator=torch.Generator().manual_seed(0)
    )
    assert (strat.lengths >= 1.0).all() and (strat.lengths <= 4.0).all() and (strat.lengths.diff(dim=-1) >= 0).all()
    mc = MonteCarloRaysampler(-1, 1, -0.5, 0.5, 7, 4, 1.0, 2.0)(cam, generator=torch.Generator().manual_seed(1))
    assert mc.xys.shape == (1, 7, 2) and (mc.xys[..., 1].abs() <= 0.5).all()
    near, far = near_far_from_sphere(cam, radius=1.0)
    assert near == pytest.approx(2.0) and far == pytest.approx(4.0)


def test_a_multinomial_grid_of_ndc_points_gives_rays_through_them():
    R, T = look_at_view_transform(3.0, 20.0, 30.0)
    cam = FoVPerspectiveCameras(R=R.double(), T=T.double())
    # PyTorch3D's argument names and order; the NDC sampler's ranges give its rays (5 x 3 image, not square)
    grid = MultinomialRaysampler(
        min_x=4 / 3, max_x=-4 / 3, min_y=2 / 3, max_y=-2 / 3, image_width=5, image_height=3, n_pts_per_ray=6,
        min_depth=1.0, max_depth=4.0,
    )(cam)  # fmt: skip
    ndc = NDCMultinomialRaysampler(5, 3, 6, 1.0, 4.0)(cam)
    for a, b in zip(
        (grid.origins, grid.directions, grid.lengths, grid.xys), (ndc.origins, ndc.directions, ndc.lengths, ndc.xys)
    ):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=0, atol=1e-12)
    # a sub-window: column j at linspace(min_x, max_x, W)[j], row i at linspace(min_y, max_y, H)[i]
    sub = GridRaysampler(0.5, -0.5, 0.25, -0.25, 3, 2, 4, 1.0, 4.0)(cam)
    assert GridRaysampler is MultinomialRaysampler
    assert sub.xys[0, 0, :, 0].tolist() == [0.5, 0.0, -0.5] and sub.xys[0, :, 0, 1].tolist() == [0.25, -0.25]
    proj = cam.transform_points(ray_bundle_to_ray_points(sub).reshape(-1, 3)).reshape(2, 3, 4, 3)
    assert torch.allclose(proj[..., :2], sub.xys[0][:, :, None].expand(2, 3, 4, 2), atol=1e-12)
    # n_rays_per_image: distinct grid points per camera, decided by the generator
    cams = FoVPerspectiveCameras(R=R.double().expand(2, 3, 3), T=T.double().expand(2, 3))
    pick = MultinomialRaysampler(1.0, -1.0, 1.0, -1.0, 4, 4, 3, 1.0, 2.0, n_rays_per_image=16)
    a = pick(cams, generator=torch.Generator().manual_seed(3))
    b = pick(cams, generator=torch.Generator().manual_seed(3))
    assert a.xys.shape == (2, 16, 2) and torch.equal(a.xys, b.xys)
    full = MultinomialRaysampler(1.0, -1.0, 1.0, -1.0, 4, 4, 3, 1.0, 2.0)(cams).xys.reshape(2, 16, 2)
    for k in range(2):  # every grid point exactly once
        assert sorted(map(tuple, a.xys[k].tolist())) == sorted(map(tuple, full[k].tolist()))
    assert MultinomialRaysampler(1, -1, 1, -1, np.int64(2), torch.tensor(2), 3, 1, 2)(cam).xys.shape == (1, 2, 2, 2)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: MultinomialRaysampler(1, -1, 1, -1, 0, 4, 8, 1.0, 2.0), "image_width must be an integer >= 1"),
        (lambda: MultinomialRaysampler(1, -1, 1, -1, 4, 4, 2.5, 1.0, 2.0), "n_pts_per_ray must be an integer"),
        (lambda: MultinomialRaysampler(float("nan"), -1, 1, -1, 4, 4, 8, 1.0, 2.0), "finite"),
        (lambda: MultinomialRaysampler(1, -1, 1, -1, 4, 4, 8, 3.0, 2.0), "min_depth <= max_depth"),
        (lambda: MultinomialRaysampler(1, -1, 1, -1, 4, 4, 8, 1.0, 2.0, n_rays_per_image=17), r"in \[1, 16\]"),
        (lambda: NDCMultinomialRaysampler(4, -2, 8, 1.0, 2.0), "NDCMultinomialRaysampler: image_height"),
        (lambda: NDCMultinomialRaysampler(4, 4, 0, 1.0, 2.0), "n_pts_per_ray"),
        (lambda: MonteCarloRaysampler(-1, 1, -1, 1, 0, 8, 1.0, 2.0), "MonteCarloRaysampler: n_rays_per_image"),
        (lambda: MonteCarloRaysampler(-1, 1, -1, "a", 5, 8, 1.0, 2.0), "finite"),
        (lambda: MonteCarloRaysampler(-1, 1, -1, 1, 5, 8, -1.0, 2.0), "min_depth"),
    ],
)
def test_raysamplers_refuse_settings_that_cannot_give_rays_when_built(make, message):
    with pytest.raises(P3DLabValueError, match=message):
        make()


def test_orthographic_rays_are_parallel():
    b = NDCMultinomialRaysampler(3, 3, 4, 0.0, 2.0)(FoVOrthographicCameras(T=torch.tensor([[0.0, 0.0, 3.0]])))
    d = b.directions.reshape(-1, 3)
    assert torch.allclose(d, d[:1].expand_as(d))


def test_emission_absorption_semantics():
    g = torch.Generator().manual_seed(2)
    a = torch.rand(5, 8, 1, generator=g, dtype=D)
    f = torch.rand(5, 8, 3, generator=g, dtype=D)
    out = EmissionAbsorptionRaymarcher()(a, f, eps=0.0)
    T = torch.cumprod(torch.cat([torch.ones(5, 1, dtype=D), 1 - a[:, :-1, 0]], 1), 1)
    w = a[..., 0] * T
    assert torch.allclose(out[..., :3], (w[..., None] * f).sum(1))
    assert torch.allclose(w.sum(1), out[..., 3])  # weights sum to the opacity when eps = 0
    const = torch.full((1, 90, 1), 0.018, dtype=D)
    assert EmissionAbsorptionRaymarcher()(const, torch.ones(1, 90, 1, dtype=D))[0, 1].item() == pytest.approx(
        1 - (1 - 0.018) ** 90
    )
    assert 0.79 < 1 - (1 - 0.018) ** 90 < 0.81
    assert torch.allclose(AbsorptionOnlyRaymarcher()(a)[..., 0], out[..., 3])
    # zero gradient behind an opaque sample
    a2 = torch.tensor([[[0.3], [1.0], [0.4], [0.5]]], dtype=D, requires_grad=True)
    f2 = torch.rand(1, 4, 3, dtype=D, requires_grad=True)
    EmissionAbsorptionRaymarcher()(a2, f2, eps=0.0)[..., :3].sum().backward()
    assert (f2.grad[0, 2:] == 0).all()
    two = EmissionAbsorptionRaymarcher(surface_thickness=2)(a, f)
    assert two.shape == out.shape
    with pytest.raises(ValueError, match="NaN"):
        EmissionAbsorptionRaymarcher()(torch.full((1, 3, 1), float("nan")), torch.ones(1, 3, 2))


@pytest.mark.parametrize("n_pts", [2, 8, 64, 513])
def test_quadrature_slab_opacity_is_independent_of_the_sample_count(n_pts):
    sigma, L = 1.7, 0.8
    lengths = torch.linspace(0.0, L, n_pts, dtype=D)[None]
    dens = torch.full((1, n_pts, 1), sigma, dtype=D)
    dens[:, -1] = 0.0  # the slab is [0, L]: the last sample (at L) starts the empty space behind it
    out = QuadratureRaymarcher()(
        dens, torch.ones(1, n_pts, 1, dtype=D), lengths=lengths, directions=torch.tensor([[0.0, 0.0, 1.0]], dtype=D)
    )
    assert out[0, 1].item() == pytest.approx(1 - math.exp(-sigma * L), abs=1e-12)


def test_quadrature_equals_ea_with_alpha_and_has_background_and_depth():
    g = torch.Generator().manual_seed(3)
    sigma = torch.rand(4, 8, 1, generator=g, dtype=D) * 3
    lengths = torch.sort(torch.rand(4, 8, generator=g, dtype=D) * 2, dim=1).values
    dirs = torch.randn(4, 3, generator=g, dtype=D)
    c = torch.rand(4, 8, 3, generator=g, dtype=D)
    q = QuadratureRaymarcher()
    out = q(sigma, c, lengths=lengths, directions=dirs)
    delta = torch.cat([lengths.diff(dim=1), lengths.diff(dim=1)[:, -1:]], 1) * dirs.norm(dim=1, keepdim=True)
    alpha = 1 - torch.exp(-sigma[..., 0] * delta)
    ea = EmissionAbsorptionRaymarcher()(alpha[..., None], c, eps=0.0)
    assert torch.allclose(out, ea, atol=1e-14)
    w = alpha * torch.cumprod(torch.cat([torch.ones(4, 1, dtype=D), 1 - alpha[:, :-1]], 1), 1)
    result = q.march(sigma, c, lengths=lengths, directions=dirs)
    assert torch.allclose(result.depth[..., 0], (w * lengths).sum(1))
    assert torch.allclose(result.weights, w) and torch.equal(torch.cat([result.features, result.opacity], -1), out)
    bg = QuadratureRaymarcher(background=(1.0, 0.5, 0.0))(sigma, c, lengths=lengths, directions=dirs)
    assert torch.allclose(bg[..., :3] - out[..., :3], (1 - out[..., 3:]) * torch.tensor([1.0, 0.5, 0.0], dtype=D))
    sig = sigma.clone().requires_grad_(True)
    col = c.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda s_, c_: QuadratureRaymarcher()(s_, c_, lengths=lengths, directions=dirs), (sig, col)
    )


def test_implicit_renderer_on_an_analytic_sphere():
    """A constant-density ball of radius r seen through its centre: opacity 1 - exp(-sigma 2r)."""
    sigma, r = 1.3, 0.5
    R, T = look_at_view_transform(3.0, 0.0, 0.0)
    cam = FoVPerspectiveCameras(R=R.double(), T=T.double())

    def ball(ray_bundle, **kwargs):
        pts = ray_bundle_to_ray_points(ray_bundle)
        inside = (pts.norm(dim=-1, keepdim=True) < r).to(pts.dtype)
        return sigma * inside, torch.ones_like(pts)

    renderer = ImplicitRenderer(NDCMultinomialRaysampler(5, 5, 4000, 2.0, 4.0), QuadratureRaymarcher())
    images, _ = renderer(cam, ball)
    assert images[0, 2, 2, 3].item() == pytest.approx(1 - math.exp(-sigma * 2 * r), abs=2e-3)
    assert images[0, 0, 0, 3].item() == 0.0  # corner rays miss the ball


def test_volume_renderer_shapes_and_gradients():
    dens = torch.full((1, 1, 6, 6, 6), 0.05, requires_grad=True)
    feats = torch.rand(1, 3, 6, 6, 6, requires_grad=True)
    vol = Volumes(dens, feats, voxel_size=0.3)
    R, T = look_at_view_transform(3.0, 10.0, 20.0)
    images, bundle = VolumeRenderer(NDCMultinomialRaysampler(7, 5, 32, 1.5, 4.5), EmissionAbsorptionRaymarcher())(
        FoVPerspectiveCameras(R=R, T=T), vol
    )
    assert images.shape == (1, 5, 7, 4)
    images.sum().backward()
    assert dens.grad.abs().sum() > 0 and feats.grad.abs().sum() > 0


def test_ray_aabb_intersection_and_clipping():
    from p3dlab.renderer import clip_ray_bundle_to_aabb, ray_aabb_intersection

    o = torch.tensor([[0.0, 0.0, -5.0], [3.0, 3.0, -5.0], [0.5, 0.0, -5.0], [0.0, 0.0, 0.0]], dtype=D)
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 2.0], [1.0, 0.0, 0.0]], dtype=D)
    near, far, hit = ray_aabb_intersection(o, d, (-1, -1, -1), (1, 1, 1))
    assert hit.tolist() == [True, False, True, True]
    assert near.tolist() == [4.0, 0.0, 2.0, 0.0] and far.tolist() == [6.0, 0.0, 3.0, 1.0]  # inside: starts at 0
    R, T = look_at_view_transform(3.0, 20.0, 30.0)
    b = NDCMultinomialRaysampler(6, 6, 16, 0.1, 10.0)(FoVPerspectiveCameras(R=R.double(), T=T.double()))
    clipped = clip_ray_bundle_to_aabb(b, (-0.5, -0.5, -0.5), (0.5, 0.5, 0.5))
    pts = ray_bundle_to_ray_points(clipped)
    _, _, h = ray_aabb_intersection(b.origins, b.directions, (-0.5,) * 3, (0.5,) * 3)
    assert h.any() and (~h).any()
    assert (pts[h].abs() <= 0.5 + 1e-9).all()  # every sample of a hitting ray lies in the box
    with pytest.raises(ValueError, match="box_max"):
        ray_aabb_intersection(o, d, (1, 1, 1), (0, 0, 0))


def test_nan_check_is_exact_when_the_sum_is_nan_without_a_nan():
    """+inf and -inf sum to NaN: the one-reduction check must not refuse such densities; a single
    NaN anywhere is refused."""
    d = torch.zeros(1, 1, 2, 2, 2)
    d[0, 0, 0, 0, 0], d[0, 0, 1, 1, 1] = float("inf"), float("-inf")
    assert len(Volumes(d)) == 1
    d[0, 0, 1, 0, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        Volumes(d)
    e = torch.rand(1, 1, 3, 4, 5, requires_grad=True)
    with torch.no_grad():
        e[0, 0, 2, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        Volumes(e)
