"""Compositional feature fields (p3dlab.giraffe): the composition operator, box transforms, the
model's rendering and training (docs/giraffe.md)."""

from __future__ import annotations

import math

import pytest
import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.giraffe import (
    GiraffeModel,
    composite_fields,
    fit_giraffe,
    object_to_world,
    rotation_y,
    two_object_scenes,
    world_to_object,
)
from p3dlab.ops.pixels import pixel_centres
from p3dlab.renderer import FoVOrthographicCameras, FoVPerspectiveCameras, look_at_view_transform
from p3dlab.renderer.raymarching import QuadratureRaymarcher
from p3dlab.renderer.raysampling import ray_bundle_to_ray_points, rays_from_xy


@pytest.fixture(scope="module")
def tiny_scenes():
    return two_object_scenes(n_scenes=2, n_views=2, n_test_views=1, image_size=32, seed=3)


# ---------------------------------------------------------------- the composition operator


def test_density_weighted_mean_by_hand():
    # three fields at two points; at the second point no field has density
    densities = torch.tensor([[[1.0], [0.0]], [[3.0], [0.0]], [[0.0], [0.0]]], dtype=torch.float64)
    features = torch.tensor(
        [[[2.0, 0.0], [5.0, 5.0]], [[6.0, 4.0], [7.0, 7.0]], [[9.0, 9.0], [1.0, 1.0]]], dtype=torch.float64
    )
    sigma, f = composite_fields(densities, features)
    # σ = 1 + 3 + 0 = 4; f = (1·(2, 0) + 3·(6, 4) + 0·(9, 9)) / 4 = (20, 12) / 4 = (5, 3)
    assert torch.equal(sigma, torch.tensor([[4.0], [0.0]], dtype=torch.float64))
    assert torch.allclose(f, torch.tensor([[5.0, 3.0], [0.0, 0.0]], dtype=torch.float64))


def test_composition_of_one_field_is_the_field_and_gradients_are_finite():
    g = torch.Generator().manual_seed(0)
    d = torch.rand(1, 5, 7, 1, generator=g, dtype=torch.float64)
    d[0, 0, :3] = 0.0
    f = torch.randn(1, 5, 7, 3, generator=g, dtype=torch.float64)
    sigma, feat = composite_fields(d, f)
    assert torch.equal(sigma, d[0])
    occupied = d[0] > 0
    assert torch.allclose(feat[occupied.expand_as(feat)], f[0][occupied.expand_as(feat)])
    # gradients reach every field and stay finite where σ = 0
    d2 = torch.rand(2, 4, 1, generator=g, dtype=torch.float64)
    d2[:, 0] = 0.0
    d2.requires_grad_(True)
    f2 = torch.randn(2, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    s, ff = composite_fields(d2, f2)
    (s.sum() + ff.pow(2).sum()).backward()
    assert torch.isfinite(d2.grad).all() and torch.isfinite(f2.grad).all()
    assert (f2.grad[:, 1:].abs().sum(-1) > 0).all()
    assert torch.autograd.gradcheck(
        lambda a, b: composite_fields(a, b),
        (d2.detach()[:, 1:].requires_grad_(True), f2.detach()[:, 1:].requires_grad_(True)),
    )


def _sphere_field(points, centre, radius, feature, density=5.0):
    inside = (points - torch.tensor(centre, dtype=points.dtype)).norm(dim=-1, keepdim=True) < radius
    sigma = torch.where(inside, density, 0.0).to(points.dtype)
    return sigma, torch.tensor(feature, dtype=points.dtype).expand(*points.shape[:-1], len(feature))


def test_fields_with_disjoint_support_render_exactly_as_each_alone():
    R, T = look_at_view_transform(4.0, 10.0, 0.0)
    cams = FoVPerspectiveCameras(R=R.double(), T=T.double(), fov=40.0)
    x, y = pixel_centres(24, 24, torch.float64)
    bundle = rays_from_xy(cams, torch.stack([x, y], -1)[None], 48, 2.0, 6.0)
    pts = ray_bundle_to_ray_points(bundle)
    a = _sphere_field(pts, (0.7, 0.0, 0.0), 0.5, (1.0, 0.2, 0.3, 0.4))
    b = _sphere_field(pts, (-0.7, 0.1, 0.0), 0.4, (0.1, 0.9, 0.5, 0.0))
    marcher = QuadratureRaymarcher()

    def render(*fields):
        sigma, f = composite_fields(torch.stack([s for s, _ in fields]), torch.stack([f for _, f in fields]))
        out = marcher.march(sigma, f, lengths=bundle.lengths, directions=bundle.directions)
        return out.features.reshape(-1, 4), out.opacity.reshape(-1, 1)

    fa, oa = render(a)
    fb, ob = render(b)
    fab, oab = render(a, b)
    assert (oa > 0.5).sum() > 10 and (ob > 0.5).sum() > 10 and not ((oa > 0) & (ob > 0)).any()
    assert torch.allclose(fab, fa + fb, atol=1e-12, rtol=0) and torch.allclose(oab, oa + ob, atol=1e-12, rtol=0)
    # along one ray, disjoint in depth: the front object, then the back one seen through it
    thin = _sphere_field(pts, (0.7, 0.0, 0.0), 0.5, (1.0, 0.2, 0.3, 0.4), density=1.0)
    c = _sphere_field(pts, (0.7, 0.0, -1.5), 0.6, (0.0, 0.0, 1.0, 1.0))
    ft, ot = render(thin)
    fc, _ = render(c)
    fac, _ = render(thin, c)
    rays = ((ot[:, 0] > 0.1) & (fc[:, 2] > 0.1)).nonzero()[:, 0]
    assert len(rays) > 5
    expected = ft[rays] + (1.0 - ot[rays]) * fc[rays]
    assert torch.allclose(fac[rays], expected, atol=1e-10)


# ---------------------------------------------------------------- box transforms


def test_box_transform_round_trip_and_rotation_sense():
    g = torch.Generator().manual_seed(1)
    u = torch.rand(4, 10, 3, generator=g, dtype=torch.float64) * 2 - 1
    angle = torch.rand(4, generator=g, dtype=torch.float64) * 6
    t = torch.randn(4, 3, generator=g, dtype=torch.float64)
    s = torch.rand(4, 3, generator=g, dtype=torch.float64) + 0.2
    x = object_to_world(u, angle, t, s)
    assert torch.allclose(world_to_object(x, angle, t, s), u, atol=1e-12)
    # x = t + R_y(θ)(s ⊙ u): a quarter turn takes +X to -Z
    one = torch.tensor([[[1.0, 0.0, 0.0]]], dtype=torch.float64)
    quarter = torch.tensor([math.pi / 2], dtype=torch.float64)
    moved = object_to_world(one, quarter, torch.zeros(1, 3, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64))
    assert torch.allclose(moved, torch.tensor([[[0.0, 0.0, -1.0]]], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(rotation_y(quarter)[0] @ rotation_y(quarter)[0].T, torch.eye(3, dtype=torch.float64))


def test_box_transform_moves_the_render_by_the_expected_pixels():
    model = GiraffeModel(n_scenes=1, n_objects=1, feature_size=16, n_upsample=0, n_samples=64, seed=0)
    with torch.no_grad():
        model.object_field.density.bias.fill_(3.0)  # a solid box-filling object
    R, T = look_at_view_transform(4.0, 0.0, 0.0)
    cams = FoVOrthographicCameras(R=R, T=T, min_x=-1.5, max_x=1.5, min_y=-1.5, max_y=1.5)
    pixel = 3.0 / 16  # world units per pixel of this orthographic camera

    def render(tx):
        out = model.render(
            cams,
            model.shape_codes,
            model.appearance_codes,
            torch.tensor([[0.3]]),
            torch.tensor([[[tx, 0.0, 0.0]]]),
            torch.tensor([[[0.3, 0.4, 0.3]]]),
        )
        return out.object_opacity[0]

    before, after = render(-0.2), render(-0.2 + 3 * pixel)
    # where the projection says the box centre goes, in columns (NDC +X is to the left)
    centres = cams.transform_points(torch.tensor([[[-0.2, 0.0, 0.0], [-0.2 + 3 * pixel, 0.0, 0.0]]]))[0, :, 0]
    shift = round(float(-(centres[1] - centres[0]) * 16 / 2.0))  # NDC spans 2 over 16 columns
    assert abs(shift) == 3 and before.sum() > 5
    assert torch.allclose(torch.roll(before, shift, dims=1), after, atol=1e-5)


# ---------------------------------------------------------------- data, training, determinism


def test_scenes_are_deterministic_and_shaped(tiny_scenes):
    train, test = tiny_scenes
    assert train.images.shape == (2, 2, 32, 32, 3) and test.images.shape == (2, 1, 32, 32, 3)
    assert train.masks.shape == (2, 2, 32, 32) and 0.02 < float(train.masks.mean()) < 0.6
    again, _ = two_object_scenes(n_scenes=2, n_views=2, n_test_views=1, image_size=32, seed=3)
    assert torch.equal(again.images, train.images)
    other, _ = two_object_scenes(n_scenes=2, n_views=2, n_test_views=1, image_size=32, seed=4)
    assert not torch.equal(other.images, train.images)


def _train(scenes, iterations, seed=0):
    train, test = scenes
    model = GiraffeModel(n_scenes=2, feature_size=8, n_upsample=2, n_samples=12, seed=seed)
    hist = fit_giraffe(
        model, train, test, iterations=iterations, scenes_per_step=4, lr=1e-2, eval_every=iterations, seed=seed
    )
    return model, hist


def test_loss_falls_on_a_tiny_dataset(tiny_scenes):
    _, hist = _train(tiny_scenes, 8)
    first, last = sum(hist.loss[:2]) / 2, sum(hist.loss[-3:]) / 3
    assert last < 0.75 * first, hist.loss
    assert len(hist.test_psnr) == 1 and math.isfinite(hist.test_psnr[0])


def test_fixed_seeds_give_identical_results(tiny_scenes):
    a, ha = _train(tiny_scenes, 2)
    b, hb = _train(tiny_scenes, 2)
    assert ha.loss == hb.loss
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


# ---------------------------------------------------------------- bad input


def test_bad_input_raises_clear_errors(tiny_scenes):
    train, _ = tiny_scenes
    with pytest.raises(P3DLabValueError, match="densities must be"):
        composite_fields(torch.ones(2, 3), torch.ones(2, 3, 4))
    with pytest.raises(P3DLabValueError, match="must match"):
        composite_fields(torch.ones(2, 3, 1), torch.ones(2, 4, 4))
    with pytest.raises(P3DLabValueError, match=">= 0"):
        composite_fields(-torch.ones(2, 3, 1), torch.ones(2, 3, 4))
    with pytest.raises(P3DLabValueError, match="positive"):
        world_to_object(torch.zeros(1, 4, 3), torch.zeros(1), torch.zeros(1, 3), torch.zeros(1, 3))
    with pytest.raises(P3DLabValueError, match="same boxes"):
        world_to_object(torch.zeros(1, 4, 3), torch.zeros(2), torch.zeros(1, 3), torch.ones(1, 3))
    with pytest.raises(P3DLabValueError, match="n_scenes"):
        two_object_scenes(n_scenes=0)
    with pytest.raises(P3DLabValueError, match="image_size"):
        two_object_scenes(n_scenes=1, image_size=100000)
    model = GiraffeModel(n_scenes=2, feature_size=8, n_upsample=2)
    cams = FoVPerspectiveCameras()
    with pytest.raises(P3DLabValueError, match="translations"):
        model.render(
            cams,
            model.shape_codes[:1],
            model.appearance_codes[:1],
            torch.zeros(1, 2),
            torch.zeros(1, 3),
            torch.ones(1, 2, 3),
        )
    with pytest.raises(P3DLabValueError, match="renders"):
        fit_giraffe(GiraffeModel(n_scenes=2, feature_size=16, n_upsample=2), train, iterations=1)
    with pytest.raises(P3DLabValueError, match="codes"):
        fit_giraffe(GiraffeModel(n_scenes=3, feature_size=8, n_upsample=2), train, iterations=1)
    with pytest.raises(P3DLabValueError, match="iterations"):
        fit_giraffe(model, train, iterations=0)


def test_neural_renderer_and_sky_shapes():
    from p3dlab.giraffe import BackgroundFeatureField, NeuralRenderer

    rgb = NeuralRenderer(n_features=5, n_hidden=16, n_upsample=2)(torch.randn(2, 5, 4, 6))
    assert rgb.shape == (2, 3, 16, 24) and bool(((rgb > 0) & (rgb < 1)).all())
    sky = BackgroundFeatureField(n_features=3, radius=2.0)
    points = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, 3.0]]])  # one ray, two samples
    sigma, f = sky(points, torch.tensor([[0.0, 0.0, 1.0]]))
    assert sigma.shape == (1, 2, 1) and f.shape == (1, 2, 3)
    assert float(sigma[0, 0, 0]) == 0.0 and float(sigma[0, 1, 0]) == sky.sky_density
    assert torch.equal(f[0, 0], f[0, 1])  # the sky's features depend on the direction only
    with pytest.raises(P3DLabValueError, match="n_upsample"):
        NeuralRenderer(n_upsample=9)
