import math

import pytest
import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.nerf import HarmonicEmbedding, NeuralRadianceField, huber, load_checkpoint, psnr, save_checkpoint
from p3dlab.renderer import (
    FoVPerspectiveCameras,
    ImplicitRenderer,
    MonteCarloRaysampler,
    QuadratureRaymarcher,
    look_at_view_transform,
    ray_bundle_to_ray_points,
)


def test_harmonic_embedding_values_and_dimensions():
    emb = HarmonicEmbedding(3, omega_0=0.5)
    x = torch.tensor([[0.3, -1.0]])
    out = emb(x)
    assert out.shape == (1, 2 * (2 * 3 + 1)) and emb.get_output_dim(2) == 14
    freqs = torch.tensor([0.5, 1.0, 2.0])
    expected = torch.cat(
        [torch.sin(x[..., None] * freqs).reshape(1, -1), torch.cos(x[..., None] * freqs).reshape(1, -1), x], -1
    )
    assert torch.allclose(out, expected)
    book = HarmonicEmbedding(60, omega_0=0.1, append_input=False)
    assert book(torch.zeros(5, 3)).shape == (5, 360)
    lin = HarmonicEmbedding(4, logspace=False)
    assert torch.allclose(lin._frequencies, torch.tensor([1.0, 1 + 7 / 3, 1 + 14 / 3, 8.0]))


def test_psnr_and_huber():
    a = torch.zeros(10)
    assert psnr(a + 0.1, a).item() == pytest.approx(20.0)
    assert huber(torch.tensor([0.001]), torch.tensor([0.0])).item() == pytest.approx(0.5 * 0.001**2, rel=1e-2)
    assert huber(torch.tensor([10.0]), torch.tensor([0.0])).item() == pytest.approx(0.1 * 10 - 0.01, rel=1e-3)


def _ball_scene(ray_bundle, **kwargs):
    pts = ray_bundle_to_ray_points(ray_bundle)
    inside = (pts.norm(dim=-1, keepdim=True) < 0.5).float()
    colour = torch.stack(
        [
            0.5 + 0.5 * torch.tanh(3 * pts[..., 0]),
            0.5 + 0.5 * torch.tanh(3 * pts[..., 1]),
            torch.full_like(pts[..., 0], 0.3),
        ],
        -1,
    )
    return 8.0 * inside, colour


def test_a_tiny_nerf_learns_and_checkpoints_round_trip(tmp_path):
    torch.manual_seed(0)
    R, T = look_at_view_transform(2.5, torch.tensor([10.0, 30.0, -20.0, 0.0]), torch.tensor([0.0, 90.0, 180.0, 270.0]))
    cams = FoVPerspectiveCameras(R=R, T=T)
    sampler = MonteCarloRaysampler(-1, 1, -1, 1, 128, 24, 1.5, 3.5)
    renderer = ImplicitRenderer(sampler, QuadratureRaymarcher())
    field = NeuralRadianceField(n_hidden=32, n_layers=3, skips=(2,))
    opt = torch.optim.Adam(field.parameters(), lr=5e-3)
    losses = []
    for step in range(25):
        g = torch.Generator().manual_seed(step)
        target, _ = renderer(cams, _ball_scene, generator=g)
        pred, _ = renderer(cams, field, generator=torch.Generator().manual_seed(step))
        loss = ((pred - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    path = tmp_path / "nerf.pt"
    save_checkpoint(path, field, opt, step=25)
    other = NeuralRadianceField(n_hidden=32, n_layers=3, skips=(2,))
    assert load_checkpoint(path, other)["step"] == 25
    a, _ = renderer(cams, field, generator=torch.Generator().manual_seed(99))
    b, _ = renderer(cams, other, generator=torch.Generator().manual_seed(99))
    assert torch.equal(a, b)
    assert math.isfinite(losses[-1])


# ------------------------------------------------------------------ hierarchical sampling, rendering, training
from p3dlab.data import multiview_dataset  # noqa: E402
from p3dlab.nerf import (  # noqa: E402
    HybridRadianceField,
    fit_nerf,
    importance_resample,
    interval_edges,
    render_image,
    render_rays,
    sample_pdf,
)
from p3dlab.renderer import NDCMultinomialRaysampler  # noqa: E402
from p3dlab.renderer.raysampling import RayBundle  # noqa: E402


def test_sample_pdf_draws_samples_in_proportion_to_the_weights():
    g = torch.Generator().manual_seed(0)
    bins = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)[None]
    weights = torch.tensor([[0.0, 1, 0, 0, 8, 1, 0, 0, 0, 0]], dtype=torch.float64)
    n = 20000
    s = sample_pdf(bins, weights, n, eps=0.0, generator=g)
    assert s.shape == (1, n) and bool((s[:, 1:] >= s[:, :-1]).all())
    counts = torch.histc(s[0], bins=10, min=0.0, max=1.0)
    p = weights[0] / weights.sum()
    expected = n * p
    sd = (n * p * (1 - p)).sqrt()
    assert bool(((counts - expected).abs() <= 5 * sd + 1e-9).all()), (counts, expected)
    assert counts[4] > 7 * counts[1]  # the heavy bin gets ~8x the samples of a light one
    assert counts[0] == 0 and counts[9] == 0  # no mass, no samples
    # no mass anywhere -> uniform; deterministic sampling hits evenly spaced CDF values
    uniform = sample_pdf(bins, torch.zeros(1, 10, dtype=torch.float64), 10, deterministic=True)
    assert torch.allclose(uniform, torch.linspace(0.05, 0.95, 10, dtype=torch.float64)[None], atol=1e-4)
    with pytest.raises(Exception, match="one more"):
        sample_pdf(bins, weights[:, :5], 3)


def test_importance_resampling_concentrates_samples_at_a_surface():
    lengths = torch.linspace(1.0, 3.0, 33)[None].expand(4, 33).contiguous()
    weights = torch.exp(-(((lengths - 2.2) / 0.05) ** 2))
    bundle = RayBundle(torch.zeros(4, 3), torch.tensor([[0.0, 0.0, 1.0]]).expand(4, 3), lengths, torch.zeros(4, 2))
    fine = importance_resample(bundle, weights, 64, generator=torch.Generator().manual_seed(1))
    assert fine.lengths.shape == (4, 97)
    assert bool((fine.lengths[:, 1:] >= fine.lengths[:, :-1]).all())
    near_surface = ((fine.lengths - 2.2).abs() < 0.15).float().sum(-1)
    assert bool((near_surface >= 50).all())  # most of the 64 new samples land within 0.15 of the surface
    assert torch.allclose(interval_edges(lengths)[0, [0, 1, -1]], torch.tensor([1.0, 1.03125, 3.0]))


def _fog_ball(sigma, radius):
    def field(ray_bundle, **kwargs):
        pts = ray_bundle_to_ray_points(ray_bundle)
        inside = (pts.norm(dim=-1, keepdim=True) < radius).to(pts.dtype)
        return sigma * inside, torch.ones(*pts.shape[:-1], 3, dtype=pts.dtype)

    return field


def test_constant_density_ball_matches_the_closed_form_transmittance():
    sigma, radius = 1.5, 0.8
    R, T = look_at_view_transform(3.0, 0.0, 0.0)
    cams = FoVPerspectiveCameras(R=R.double(), T=T.double())
    bundle = NDCMultinomialRaysampler(9, 9, 4000, 1.5, 4.5)(cams)
    _, opacity, _, _ = render_rays(_fog_ball(sigma, radius), bundle)
    # closed form: chord of the ray through the ball
    o, d = bundle.origins[0].reshape(-1, 3), bundle.directions[0].reshape(-1, 3)
    dn = d / d.norm(dim=-1, keepdim=True)
    b = (o * dn).sum(-1)
    disc = (b**2 - (o * o).sum(-1) + radius**2).clamp(min=0)
    chord = 2 * disc.sqrt()
    expected = 1 - torch.exp(-sigma * chord)
    assert (chord > 0).sum() >= 9 and (chord == 0).sum() >= 4  # rays through and beside the ball
    assert torch.allclose(opacity[0].reshape(-1), expected, atol=2e-3)
    # hierarchical sampling with few coarse samples still gets it right where the coarse pass saw the ball
    coarse = NDCMultinomialRaysampler(9, 9, 24, 1.5, 4.5)(cams)
    _, op_fine, _, _ = render_rays(_fog_ball(sigma, radius), coarse, n_fine=256, stratified_fine=False)
    _, op_coarse, _, _ = render_rays(_fog_ball(sigma, radius), coarse)
    err_fine = (op_fine[0].reshape(-1) - expected).abs().max()
    err_coarse = (op_coarse[0].reshape(-1) - expected).abs().max()
    assert err_fine < err_coarse and err_fine < 0.03


def test_render_image_chunks_by_field_evaluations(monkeypatch):
    """The default chunk holds POINTS_PER_CHUNK field evaluations, coarse and fine passes counted."""
    from p3dlab.nerf import training

    _, test = multiview_dataset(n_views=2, n_test=1, image_size=16)
    field = HybridRadianceField(grid_size=8, n_features=4, n_hidden=8)
    seen = []

    def counting(ray_bundle, **kwargs):
        seen.append(ray_bundle.lengths.shape[:-1].numel() * ray_bundle.lengths.shape[-1])
        return field(ray_bundle=ray_bundle, **kwargs)

    monkeypatch.setattr(training, "POINTS_PER_CHUNK", 1000)
    chunked = render_image(counting, test.cameras, (16, 16), 1.5, 3.9, n_coarse=10, n_fine=5)
    # a ray costs 10 coarse + (10 + 5) fine evaluations: 40 rays a chunk, 7 chunks for 256 rays
    assert len(seen) == 2 * 7 and max(seen[0], seen[1]) <= 1000 and seen[0] == 40 * 10
    whole = render_image(field, test.cameras, (16, 16), 1.5, 3.9, n_coarse=10, n_fine=5, chunk=256)
    assert torch.allclose(chunked, whole, atol=1e-6)


def test_render_image_is_independent_of_the_chunk_size_and_hybrid_field_learns():
    train, test = multiview_dataset(n_views=6, n_test=2, image_size=16)
    field = HybridRadianceField(grid_size=16, n_features=4, n_hidden=16)
    a = render_image(field, test.cameras, (16, 16), 1.5, 3.9, n_coarse=16, chunk=100)
    b = render_image(field, test.cameras, (16, 16), 1.5, 3.9, n_coarse=16, chunk=4096)
    assert a.shape == (2, 16, 16, 4) and torch.allclose(a, b, atol=1e-6)
    with pytest.raises(P3DLabValueError, match="chunk"):
        render_image(field, test.cameras, (16, 16), 1.5, 3.9, n_coarse=16, chunk=0)
    hist = fit_nerf(field, train, test, iterations=60, rays_per_step=256, n_coarse=24, n_fine=8, eval_every=30)
    assert hist.loss[-1] < 0.3 * hist.loss[0]
    assert hist.test_psnr[-1] > hist.test_psnr[0] + 1.0
    with pytest.raises(Exception, match="loss"):
        fit_nerf(field, train, iterations=1, loss="l1")
