"""View synthesis by splatting (p3dlab.synsin, docs/synsin.md): scenes, unprojection, splatting,
compositors, the model's training, determinism and bad input."""

import math

import pytest
import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.loss import psnr
from p3dlab.synsin import (
    SplatFragments,
    SynSin,
    composite,
    evaluate,
    fit_synsin,
    relative_motion,
    rgbd_pairs,
    sequential_views,
    splat,
    splat_fragments,
    synsin_alphas,
    unproject_depth,
)


@pytest.fixture(scope="module")
def pairs():
    return rgbd_pairs(4, seed=3, image_size=32)


def test_unproject_is_the_inverse_pinhole_projection():
    gen = torch.Generator().manual_seed(0)
    depth = 1 + 3 * torch.rand(2, 5, 7, generator=gen, dtype=torch.float64)
    f = 1.7
    pts = unproject_depth(depth, f)
    assert pts.shape == (2, 35, 3) and pts.dtype == torch.float64
    j, i = torch.meshgrid(torch.arange(7.0, dtype=torch.float64), torch.arange(5.0, dtype=torch.float64), indexing="xy")
    x_ndc, y_ndc = (7 - 2 * j - 1) / 5, (5 - 2 * i - 1) / 5  # +X left, +Y up, short side spans [-1, 1]
    expected = torch.stack([x_ndc * depth / f, y_ndc * depth / f, depth], -1).reshape(2, 35, 3)
    torch.testing.assert_close(pts, expected, atol=1e-5, rtol=1e-5)  # the camera works in float32
    # and projecting back gives the pixel centres
    torch.testing.assert_close(f * pts[..., 0] / pts[..., 2], x_ndc.reshape(-1).expand(2, 35), atol=1e-5, rtol=0)


def test_identity_splat_reproduces_the_input(pairs):
    """Splatted back with the identity motion nothing is occluded and every pixel gets its own point.
    With a radius under one pixel that point is alone: the normalised weighted sum returns the image
    exactly (PSNR >= 60 dB) and alpha compositing returns it times the point's opacity at distance 0,
    1 - sqrt(1e-3). With SynSin-like soft splats (1.5 px) the neighbours blur it, PSNR still >= 25 dB at 32²."""
    N = len(pairs)
    R, T = relative_motion(torch.zeros(N), torch.zeros(N), torch.zeros(N))
    exact = splat(pairs.images, pairs.depths, R, T, pairs.focal, "norm_weighted_sum", radius_px=0.9)
    assert float(psnr(exact, pairs.images)) >= 60.0
    torch.testing.assert_close(exact, pairs.images, atol=1e-5, rtol=0)
    dimmed = splat(pairs.images, pairs.depths, R, T, pairs.focal, "alpha", radius_px=0.9)
    torch.testing.assert_close(dimmed, pairs.images * (1 - math.sqrt(1e-3)), atol=1e-5, rtol=0)
    soft = splat(pairs.images, pairs.depths, R, T, pairs.focal, "alpha", radius_px=1.5)
    assert float(psnr(soft, pairs.images)) >= 25.0


def test_moved_points_land_on_the_target_surface(pairs):
    """The scene's target camera is the source camera moved by (R, T): the nearest splatted point of a
    covered target pixel has the depth the target render measured there (up to splat size at edges)."""
    points = unproject_depth(pairs.depths, pairs.focal)
    frags = splat_fragments(points, pairs.R, pairs.T, pairs.focal, 32, radius_px=0.7, points_per_pixel=1)
    z, covered = frags.zbuf[:, 0], frags.idx[:, 0] >= 0
    assert covered.float().mean() > 0.6
    rel = ((z - pairs.target_depths).abs() / pairs.target_depths)[covered]
    assert float(rel.median()) < 0.01


def test_compositors_on_one_pixel_by_hand():
    """One pixel, three points at increasing depth with opacities 0.5, 0.25, 0.8 and colours 1, 2, 4."""
    idx = torch.tensor([0, 1, 2]).view(1, 3, 1, 1)
    alphas = torch.tensor([0.5, 0.25, 0.8]).view(1, 3, 1, 1)
    frags = SplatFragments(idx, alphas, torch.ones(1, 3, 1, 1))
    feats = torch.tensor([1.0, 2.0, 4.0]).view(1, 3, 1)
    alpha = 0.5 * 1 + 0.25 * 0.5 * 2 + 0.8 * 0.5 * 0.75 * 4
    assert composite(frags, feats, "alpha").item() == pytest.approx(alpha)
    assert composite(frags, feats, "weighted_sum").item() == pytest.approx(0.5 + 0.5 + 3.2)
    assert composite(frags, feats, "norm_weighted_sum").item() == pytest.approx(4.2 / 1.55)


@pytest.mark.parametrize("compositor", ["alpha", "weighted_sum", "norm_weighted_sum"])
def test_compositor_gradcheck(compositor):
    """test_points.py gradchecks alpha compositing alone; here all three, through SynSin's opacities,
    in the distances and the features, with an empty slot."""
    gen = torch.Generator().manual_seed(1)
    idx = torch.tensor([[[[0, 2]], [[1, -1]], [[2, 0]]]])  # (N=1, K=3, H=1, W=2)
    radius = 0.5
    dists = (0.05 + 0.15 * torch.rand(1, 3, 1, 2, generator=gen, dtype=torch.float64)).requires_grad_()
    feats = torch.rand(1, 3, 2, generator=gen, dtype=torch.float64, requires_grad=True)  # (N, P, C)

    def f(d, x):
        frags = SplatFragments(idx, synsin_alphas(torch.where(idx >= 0, d, -torch.ones_like(d)), radius), d)
        return composite(frags, x, compositor)

    assert torch.autograd.gradcheck(f, (dists, feats))


def test_loss_falls_on_a_tiny_dataset(pairs):
    """The untrained model is the baseline splat (its last layer starts at zero); 20 steps on two pairs
    must improve on it by more than noise (a broken gradient path leaves the loss where it started)."""
    model = SynSin(feature_channels=4, widths=(8, 8, 8), seed=0)
    history = fit_synsin(model, pairs[[0, 1]], iterations=20, batch_size=2, lr=1e-2)
    first, last = sum(history.loss[:3]) / 3, sum(history.loss[-3:]) / 3
    assert last < 0.97 * first


def test_fixed_seeds_give_identical_results(pairs):
    again = rgbd_pairs(4, seed=3, image_size=32)
    assert torch.equal(again.images, pairs.images) and torch.equal(again.depths, pairs.depths)
    runs = []
    for _ in range(2):
        model = SynSin(feature_channels=2, widths=(4, 4, 4), seed=5)
        history = fit_synsin(model, pairs, pairs[[0, 1]], iterations=4, batch_size=2, eval_every=2, seed=7)
        runs.append((history.loss, history.test_psnr, [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][2], runs[1][2]))
    assert SynSin(seed=1).refine.enc1[0].weight.sum() != SynSin(seed=2).refine.enc1[0].weight.sum()


def test_untrained_model_is_the_baseline_and_sequential_views(pairs):
    model = SynSin(feature_channels=2, widths=(4, 4, 4))
    scores = evaluate(model, pairs)
    assert scores["psnr"] == pytest.approx(evaluate(model, pairs, refine=False)["psnr"], abs=0.5)
    frames = sequential_views(model, pairs.images[0], pairs.depths[0], pairs.focal, steps=2)
    assert frames.shape == (3, 32, 32, 3) and float(frames.min()) >= 0 and float(frames.max()) <= 1


def test_bad_input_errors(pairs):
    good = pairs.depths[:1]
    R, T = relative_motion(0.1, 0.0, 0.0)
    with pytest.raises(P3DLabValueError, match="> 0"):
        unproject_depth(-good, pairs.focal)
    with pytest.raises(P3DLabValueError, match="finite"):
        unproject_depth(good.masked_fill(good > 3, float("nan")), pairs.focal)
    with pytest.raises(P3DLabValueError, match=r"\(N, H, W\)"):
        unproject_depth(good[0], pairs.focal)
    with pytest.raises(P3DLabValueError, match="focal"):
        unproject_depth(good, -1.0)
    points = unproject_depth(good, pairs.focal)
    with pytest.raises(P3DLabValueError, match="radius_px"):
        splat_fragments(points, R, T, pairs.focal, 32, radius_px=0.0)
    with pytest.raises(P3DLabValueError, match="image_size"):
        splat_fragments(points, R, T, pairs.focal, 10**6)
    with pytest.raises(P3DLabValueError, match=r"R must be"):
        splat_fragments(points, R[0], T, pairs.focal, 32)
    with pytest.raises(P3DLabValueError, match="compositor"):
        splat(pairs.images[:1], good, R, T, pairs.focal, "max")
    with pytest.raises(P3DLabValueError, match="same length|one length"):
        relative_motion(torch.zeros(2), torch.zeros(3), 0.0)
    with pytest.raises(P3DLabValueError, match="n must"):
        rgbd_pairs(0)
    with pytest.raises(P3DLabValueError, match="multiple of 4"):
        SynSin()(pairs.images[:1, :30, :30], good[:, :30, :30], R, T, pairs.focal)
    with pytest.raises(P3DLabValueError, match="iterations"):
        fit_synsin(SynSin(), pairs, iterations=0)
    with pytest.raises(P3DLabValueError, match="RGBDPairs"):
        fit_synsin(SynSin(), pairs.images)
