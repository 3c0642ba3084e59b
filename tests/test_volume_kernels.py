"""The Numba volume kernels (docs/kernels.md#volume-sampler, docs/kernels.md#ray-marchers,
docs/kernels.md#testing-the-kernels): the trilinear sampler and the fused sampler + marcher,
against float64 torch references (grid_sample + the torch marchers), gradcheck, invariants and bad
input."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from p3dlab.errors import P3DLabValueError
from p3dlab.ops import march_volumes, sample_grid
from p3dlab.renderer import (
    EmissionAbsorptionRaymarcher,
    FoVPerspectiveCameras,
    NDCMultinomialRaysampler,
    QuadratureRaymarcher,
    VolumeRenderer,
    VolumeSampler,
    look_at_view_transform,
)
from p3dlab.renderer.raysampling import RayBundle
from p3dlab.structures import Volumes

D = torch.float64


def _grid_sample_ref(grid, pts, align):
    n = pts.shape[0]
    g = grid.expand(n, *grid.shape[1:]) if grid.shape[0] == 1 else grid
    out = F.grid_sample(g, pts[:, None, None], mode="bilinear", padding_mode="zeros", align_corners=align)
    return out.reshape(n, grid.shape[1], -1).transpose(1, 2)


def _away_from_integers(pts, grid, align, margin=1e-3):
    """Drop points whose unnormalised coordinate is within ``margin`` of an integer (kinks)."""
    keep = torch.ones(pts.shape[:-1], dtype=torch.bool)
    for axis, size in zip(range(3), (grid.shape[4], grid.shape[3], grid.shape[2])):
        x = pts[..., axis]
        u = (x + 1) * (size - 1) / 2 if align else ((x + 1) * size - 1) / 2
        keep &= (u - u.round()).abs() > margin
    return keep


@pytest.mark.parametrize("align", [True, False])
def test_sample_grid_matches_grid_sample_inside_border_and_outside(align):
    g = torch.Generator().manual_seed(0)
    grid = torch.randn(2, 3, 4, 5, 6, dtype=D, generator=g)
    pts = torch.rand(2, 400, 3, dtype=D, generator=g) * 3.0 - 1.5  # inside, the border band and outside
    out = sample_grid(grid, pts, align)
    assert torch.allclose(out, _grid_sample_ref(grid, pts, align), atol=1e-13)
    # one grid broadcast over several point sets
    assert torch.allclose(sample_grid(grid[:1], pts, align), _grid_sample_ref(grid[:1], pts, align), atol=1e-13)


@pytest.mark.parametrize("align", [True, False])
def test_sample_grid_gradcheck(align):
    g = torch.Generator().manual_seed(1)
    grid = torch.randn(1, 2, 4, 5, 6, dtype=D, generator=g).requires_grad_()
    pts = torch.rand(1, 40, 3, dtype=D, generator=g) * 2.6 - 1.3
    pts = pts[:, _away_from_integers(pts, grid, align)[0]][:, :7].clone().requires_grad_()
    assert pts.shape[1] == 7
    assert torch.autograd.gradcheck(lambda a, b: sample_grid(a, b, align), (grid, pts), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_sample_grid_backward_matches_grid_sample_autograd():
    g = torch.Generator().manual_seed(2)
    grid = torch.randn(2, 3, 5, 6, 7, dtype=D, generator=g).requires_grad_()
    pts = (torch.rand(2, 300, 3, dtype=D, generator=g) * 2.4 - 1.2).requires_grad_()
    w = torch.randn(2, 300, 3, dtype=D, generator=g)
    ours = torch.autograd.grad((sample_grid(grid, pts) * w).sum(), (grid, pts))
    ref = torch.autograd.grad((_grid_sample_ref(grid, pts, True) * w).sum(), (grid, pts))
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=1e-12)


def test_sample_grid_invariants_voxel_centres_affine_fields_and_far_points():
    vol = Volumes(torch.zeros(1, 1, 4, 5, 6, dtype=D))
    centres = vol.get_coord_grid(world_coordinates=False).reshape(1, -1, 3)
    grid = torch.randn(1, 2, 4, 5, 6, dtype=D)
    assert torch.equal(sample_grid(grid, centres)[0].T.reshape(2, 4, 5, 6), grid[0])
    # an affine field is reproduced exactly inside the grid
    z, y, x = torch.meshgrid(*(torch.linspace(-1, 1, n, dtype=D) for n in (4, 5, 6)), indexing="ij")
    affine = (0.3 + 2 * x - y + 0.5 * z)[None, None]
    p = torch.rand(1, 100, 3, dtype=D) * 2 - 1
    assert torch.allclose(sample_grid(affine, p)[0, :, 0], 0.3 + 2 * p[0, :, 0] - p[0, :, 1] + 0.5 * p[0, :, 2])
    # zero farther than one voxel outside; NaN and infinite points sample zero with zero gradient
    far = torch.tensor([[[1.5, 0, 0], [0, -1.6, 0], [float("nan"), 0, 0], [float("inf"), 0, 0]]], dtype=D)
    far.requires_grad_()
    out = sample_grid(grid, far)
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert torch.equal(far.grad, torch.zeros_like(far))


def test_sample_grid_rejects_bad_input():
    with pytest.raises(P3DLabValueError, match="N, C, D, H, W"):
        sample_grid(torch.zeros(2, 3, 4), torch.zeros(1, 1, 3))
    with pytest.raises(P3DLabValueError, match="points"):
        sample_grid(torch.zeros(1, 1, 2, 2, 2), torch.zeros(1, 3))
    with pytest.raises(P3DLabValueError, match="3 grids for 2"):
        sample_grid(torch.zeros(3, 1, 2, 2, 2), torch.zeros(2, 1, 3))
    with pytest.raises(P3DLabValueError, match="empty axis"):
        sample_grid(torch.zeros(1, 1, 0, 2, 2), torch.zeros(1, 1, 3))


# ----------------------------------------------------------------------------------------- fused


def _scene(dtype=D, n=2, features=3, seed=0, density_scale=0.5, size=(6, 7, 8), H=8, W=9, P=20, ray_grad=True):
    """Volumes with ``features`` feature channels (0: none) and a ray bundle whose origins and
    directions need gradients (``ray_grad``: then the backward reads the grid again, even with
    ``keep_samples``) or not."""
    g = torch.Generator().manual_seed(seed)
    R, T = look_at_view_transform(
        dist=torch.tensor([3.0, 2.5][:n]), elev=torch.tensor([10.0, 30.0][:n]), azim=torch.tensor([20.0, -40.0][:n])
    )
    cams = FoVPerspectiveCameras(R=R.to(dtype), T=T.to(dtype))
    dens = (torch.rand(n, 1, *size, dtype=dtype, generator=g) * density_scale).requires_grad_()
    feats = torch.rand(n, features, *size, dtype=dtype, generator=g).requires_grad_() if features else None
    vol = Volumes(dens, feats, voxel_size=0.3, volume_translation=(0.1, -0.2, 0.05))
    torch.manual_seed(seed)
    b = NDCMultinomialRaysampler(W, H, P, 1.0, 4.5, stratified_sampling=True)(cams)
    bundle = RayBundle(
        b.origins.clone().requires_grad_(ray_grad), b.directions.clone().requires_grad_(ray_grad), b.lengths, b.xys
    )
    return vol, bundle


# the backward's three ways: ray gradients (reads the grid), no ray gradients (reads the grid, keeping
# each ray's samples between its two passes), kept samples (reads what the forward kept)
PATHS = [(True, False), (False, False), (False, True)]  # (ray_grad, keep_samples)


def _reference(vol, bundle, marcher):
    dens, feats = VolumeSampler(vol)(bundle)
    if isinstance(marcher, QuadratureRaymarcher):
        result = marcher.march(dens, feats, lengths=bundle.lengths, directions=bundle.directions)
        return torch.cat([result.features, result.opacity], -1), result.depth
    return marcher(dens, feats, lengths=bundle.lengths, directions=bundle.directions), None


@pytest.mark.parametrize(
    "mode, marcher",
    [
        ("ea", EmissionAbsorptionRaymarcher()),
        ("quadrature", QuadratureRaymarcher()),
        ("quadrature", QuadratureRaymarcher(last_delta="inf")),
    ],
)
# 3 features: density + RGB, read 4 channels at a time (``value4``/``splat4``); 0 and 2: the general path
@pytest.mark.parametrize("features", [3, 0, 2])
@pytest.mark.parametrize("ray_grad, keep", PATHS)
def test_fused_march_matches_sampler_plus_marcher_forward_and_backward(mode, marcher, features, ray_grad, keep):
    vol, bundle = _scene(features=features, ray_grad=ray_grad)
    ref, ref_depth = _reference(vol, bundle, marcher)
    last = getattr(marcher, "last_delta", "interval")
    f, o, z, used = march_volumes(vol, bundle, mode, last_delta=last, keep_samples=keep)
    out = torch.cat([f, o], -1)
    assert out.shape == ref.shape == (2, 8, 9, f.shape[-1] + 1)
    assert 0.1 < o.mean() < 0.9  # a scene with partial opacity everywhere tests every branch
    assert torch.allclose(out, ref, atol=1e-13)
    assert (used == 20).all()
    if ref_depth is not None:
        assert torch.allclose(z, ref_depth, atol=1e-12)
    g = torch.Generator().manual_seed(5)
    w = torch.randn(out.shape, dtype=D, generator=g)
    wz = torch.randn(z.shape, dtype=D, generator=g)
    inputs = [vol.densities()] + ([bundle.origins, bundle.directions] if ray_grad else [])
    inputs += [vol.features()] if features else []
    loss_ref = (ref * w).sum() + ((ref_depth * wz).sum() if ref_depth is not None else 0)
    loss = (out * w).sum() + ((z * wz).sum() if ref_depth is not None else 0)
    for a, b in zip(torch.autograd.grad(loss, inputs), torch.autograd.grad(loss_ref, inputs)):
        assert torch.allclose(a, b, atol=1e-11), (a - b).abs().max()


def _tiny(seed, density_scale):
    g = torch.Generator().manual_seed(seed)
    dens = (torch.rand(1, 1, 3, 4, 5, dtype=D, generator=g) * density_scale + 0.05).requires_grad_()
    feats = torch.rand(1, 3, 3, 4, 5, dtype=D, generator=g).requires_grad_()
    o = torch.tensor([[[0.13, -0.07, -2.0], [-0.21, 0.11, -2.0]]], dtype=D, requires_grad=True)
    d = torch.tensor([[[0.03, 0.02, 1.0], [0.05, -0.04, 1.0]]], dtype=D, requires_grad=True)
    lengths = torch.linspace(0.9, 3.1, 8, dtype=D).expand(1, 2, 8).contiguous()
    lengths = lengths + 0.011 * torch.rand(1, 2, 8, dtype=D, generator=g)
    return dens, feats, o, d, lengths


@pytest.mark.parametrize(
    "mode, eps, density_scale, last",
    [
        ("ea", 0.0, 0.9, "interval"),
        ("ea", 1e-3, 0.9, "interval"),
        ("quadrature", 0.0, 3.0, "interval"),
        ("quadrature", 0.0, 3.0, "inf"),
    ],
)
@pytest.mark.parametrize("ray_grad, keep", PATHS)
def test_fused_march_gradcheck(mode, eps, density_scale, last, ray_grad, keep):
    dens, feats, o, d, lengths = _tiny(3, density_scale)

    def run(dens_, feats_, o_=None, d_=None):
        o_ = o.detach() if o_ is None else o_
        d_ = d.detach() if d_ is None else d_
        vol = Volumes(dens_, feats_, voxel_size=0.5)
        bundle = RayBundle(o_, d_, lengths, o_[..., :2])
        f, op, z, _ = march_volumes(vol, bundle, mode, eps=eps, last_delta=last, keep_samples=keep)
        return f, op, z

    inputs = (dens, feats, o, d) if ray_grad else (dens, feats)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)


def test_renderer_uses_the_fused_kernel_and_agrees_with_the_reference_path():
    vol, bundle = _scene(n=1)
    cams = FoVPerspectiveCameras(
        R=look_at_view_transform(2.7, 15.0, 30.0)[0].to(D), T=torch.tensor([[0, 0, 2.7]], dtype=D)
    )
    for marcher in (EmissionAbsorptionRaymarcher(), QuadratureRaymarcher(background=(0.2, 0.4, 0.6))):
        sampler = NDCMultinomialRaysampler(10, 8, 32, 1.0, 4.5)
        fused = VolumeRenderer(sampler, marcher).render(cams, vol)
        ref = VolumeRenderer(sampler, marcher, fused=False).render(cams, vol)
        assert torch.allclose(fused.images, ref.images, atol=1e-12)
        assert torch.equal(VolumeRenderer(sampler, marcher)(cams, vol)[0], fused.images)  # forward = render
        assert fused.weights is None  # the fused kernel never holds every sample's weight
        if isinstance(marcher, QuadratureRaymarcher):
            assert fused.depth.shape == (1, 8, 10, 1) and ref.weights.shape == (1, 8, 10, 32)
            assert torch.allclose(fused.depth, ref.depth, atol=1e-12)
            assert torch.allclose(ref.weights.sum(-1, keepdim=True), ref.images[..., 3:], atol=1e-12)
        else:
            assert fused.depth is None and ref.depth is None
        assert not {"last_depth", "last_weights"} & set(vars(marcher))  # no side channels
    assert (
        VolumeRenderer(sampler, EmissionAbsorptionRaymarcher(surface_thickness=2))._fused_mode(fused.ray_bundle) is None
    )


def test_constant_slab_opacity_is_independent_of_the_sample_count_for_quadrature():
    sigma, L = 1.7, 1.2
    dens = torch.full((1, 1, 4, 4, 4), sigma, dtype=D)
    vol = Volumes(dens, voxel_size=2.0 / 3.0)  # spans [-1, 1] in world units
    o = torch.tensor([[[0.1, -0.2, -0.6]]], dtype=D)
    d = torch.tensor([[[0.0, 0.0, 2.0]]], dtype=D)  # |d| = 2: lengths in units of half the path
    for P in (2, 7, 64, 301):
        t = torch.linspace(0.0, L / 2, P, dtype=D).expand(1, 1, P)
        f, op, z, _ = march_volumes(vol, RayBundle(o, d, t, o[..., :2]), "quadrature")
        # the last interval repeats the previous one, so the marched length is L (P - 1 + 1)/(P - 1)
        marched = L * P / (P - 1)
        assert op.item() == pytest.approx(1 - math.exp(-sigma * marched), abs=1e-12)


def test_ea_weights_sum_to_opacity_and_nothing_flows_behind_an_opaque_sample():
    dens = torch.zeros(1, 1, 2, 2, 9, dtype=D)
    dens[..., 4] = 1.0
    dens.requires_grad_()
    feats = torch.rand(1, 3, 1, 1, 9, dtype=D).expand(1, 3, 2, 2, 9).clone().requires_grad_()
    vol = Volumes(dens, feats, voxel_size=0.25)  # voxel centres at x = -1 ... 1 in steps of 0.25
    o = torch.tensor([[[-1.0, 0.0, 0.0]]], dtype=D)
    d = torch.tensor([[[1.0, 0.0, 0.0]]], dtype=D)
    t = torch.arange(9, dtype=D)[None, None] * 0.25
    f, op, z, _ = march_volumes(vol, RayBundle(o, d, t, o[..., :2]), "ea", eps=0.0)
    assert op.item() == 1.0 and torch.allclose(f[0, 0], feats[0, :, 0, 0, 4])
    f.sum().backward()
    assert torch.equal(dens.grad[..., 5:], torch.zeros_like(dens.grad[..., 5:]))
    assert torch.equal(feats.grad[..., 5:], torch.zeros_like(feats.grad[..., 5:]))


@pytest.mark.parametrize("mode", ["ea", "quadrature"])
# keep: the backward reads the kept samples (no ray gradients); 40 samples stop inside the CPU
# marcher's chunks of 16 (``march_rgb_phased``)
@pytest.mark.parametrize("keep", [False, True])
def test_early_termination_matches_the_torch_marchers_and_stays_within_the_threshold(mode, keep):
    vol, bundle = _scene(n=1, density_scale=0.9 if mode == "ea" else 6.0, P=40, ray_grad=not keep)
    thr = 1e-2
    marcher = (
        EmissionAbsorptionRaymarcher(termination_threshold=thr)
        if mode == "ea"
        else QuadratureRaymarcher(termination_threshold=thr)
    )
    full = march_volumes(vol, bundle, mode)
    early = march_volumes(vol, bundle, mode, termination_threshold=thr, keep_samples=keep)
    assert (early[3] < 40).float().mean() > 0.2  # many rays stop early
    assert (early[3] % 16 != 0).float().mean() > 0.2  # most of them inside a chunk
    assert (early[0] - full[0]).abs().max() <= thr * 1.0 + 1e-12  # features in [0, 1]
    ref, _ = _reference(vol, bundle, marcher)
    out = torch.cat(early[:2], -1)
    assert torch.allclose(out, ref, atol=1e-12)
    w = torch.randn(out.shape, dtype=D)
    inputs = [vol.densities(), vol.features()] + ([] if keep else [bundle.origins])
    for a, b in zip(torch.autograd.grad((out * w).sum(), inputs), torch.autograd.grad((ref * w).sum(), inputs)):
        assert torch.allclose(a, b, atol=1e-11)


def test_rays_that_miss_zero_length_rays_and_bad_input():
    dens = torch.rand(1, 1, 4, 4, 4, dtype=D)
    vol = Volumes(dens, voxel_size=0.5)
    o = torch.tensor([[[5.0, 5.0, -3.0], [0.1, 0.2, 0.3], [0.0, 0.0, -3.0]]], dtype=D)
    d = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]], dtype=D)
    t = torch.linspace(0.5, 6.0, 16, dtype=D).expand(1, 3, 16)
    f, op, z, _ = march_volumes(vol, RayBundle(o, d, t, o[..., :2]), "quadrature")
    assert op[0, 0].item() == 0.0 and f[0, 0].abs().sum() == 0  # the miss is empty
    assert op[0, 1].item() == 0.0  # a zero-length ray has zero step length: nothing absorbs
    assert 0 < op[0, 2].item() < 1
    ea_f, ea_o, _, _ = march_volumes(vol, RayBundle(o, d, t, o[..., :2]), "ea")
    assert 0 < ea_o[0, 1].item() < 1  # EA ignores step lengths: a point ray still sees its voxel
    with pytest.raises(P3DLabValueError, match="NaN"):
        Volumes(torch.full((1, 1, 2, 2, 2), float("nan")))
    with pytest.raises(P3DLabValueError, match="voxel_size"):
        Volumes(torch.zeros(1, 1, 2, 2, 2), voxel_size=0.0)
    bad = d.clone()
    bad[0, 2, 0] = float("nan")
    with pytest.raises(P3DLabValueError, match="not finite"):
        march_volumes(vol, RayBundle(o, bad, t, o[..., :2]), "quadrature")
    for bad_t in (float("inf"), float("nan")):
        bad_lengths = t.clone()
        bad_lengths[0, 1, 3] = bad_t
        with pytest.raises(P3DLabValueError, match="not finite"):
            march_volumes(vol, RayBundle(o, d, bad_lengths, o[..., :2]), "ea")
    huge = torch.full((1, 3, 16), 1e308, dtype=D)  # finite, but their sum overflows
    _, far_o, _, _ = march_volumes(vol, RayBundle(o, d, huge, o[..., :2]), "quadrature")
    assert (far_o == 0).all()  # accepted: samples far outside the volume absorb nothing
    with pytest.raises(P3DLabValueError, match="mode"):
        march_volumes(vol, RayBundle(o, d, t, o[..., :2]), "mip")
    with pytest.raises(P3DLabValueError, match="shapes disagree"):
        march_volumes(vol, RayBundle(o, d[:, :2], t, o[..., :2]), "ea")
    with pytest.raises(P3DLabValueError, match="2 volumes for 1"):
        march_volumes(Volumes(torch.rand(2, 1, 2, 2, 2)), RayBundle(o, d, t, o[..., :2]), "ea")
    with pytest.raises(P3DLabValueError, match="termination_threshold"):
        march_volumes(vol, RayBundle(o, d, t, o[..., :2]), "ea", termination_threshold=1.0)
    with pytest.warns(UserWarning, match="outside"):
        march_volumes(Volumes(dens * 3, voxel_size=0.5), RayBundle(o[:, :1], d[:, :1], t[:, :1], o[:, :1, :2]), "ea")


def test_float32_fused_render_and_gradients_are_close_to_float64():
    vol, bundle = _scene(n=1, ray_grad=False)
    dens32 = vol.densities().detach().float().requires_grad_()
    feats32 = vol.features().detach().float().requires_grad_()
    vol32 = Volumes(dens32, feats32, voxel_size=0.3, volume_translation=(0.1, -0.2, 0.05))
    b32 = RayBundle(bundle.origins.float(), bundle.directions.float(), bundle.lengths.float(), bundle.xys.float())
    for mode in ("ea", "quadrature"):
        a = torch.cat(march_volumes(vol, bundle, mode, keep_samples=True)[:2], -1)
        b = torch.cat(march_volumes(vol32, b32, mode, keep_samples=True)[:2], -1)
        assert b.dtype == torch.float32 and torch.allclose(a.float(), b, atol=1e-5)
        w = torch.linspace(-1.0, 1.0, a.numel(), dtype=D).reshape(a.shape)
        ga = torch.autograd.grad((a * w).sum(), [vol.densities(), vol.features()])
        gb = torch.autograd.grad((b * w.float()).sum(), [dens32, feats32])
        for x, y in zip(ga, gb):
            assert y.dtype == torch.float32 and x.abs().max() > 0.01
            assert torch.allclose(x.float(), y, atol=2e-5, rtol=1e-4), (x.float() - y).abs().max()


def test_buffers_serve_the_next_step_and_unused_ones_stay_within_a_quarter_of_the_budget(monkeypatch):
    """The packed grid, the task buffers, the kept samples and the gradients of a training step
    (``recycled``, through ``volume_scratch.reused_empty``) serve the next step: after the first, the pool neither
    grows nor changes, and the gradients are the same. With a budget of 0 nothing unused is kept."""
    import p3dlab.runtime.recycled as rc
    import p3dlab.runtime.volume_scratch as scratch

    monkeypatch.setattr(rc, "_POOL", [])
    vol, bundle = _scene(n=1, ray_grad=False)
    dens, feats = vol.densities(), vol.features()

    def step():
        dens.grad = feats.grad = None
        f, o, _, _ = march_volumes(vol, bundle, "ea", keep_samples=True)
        (f.sum() + o.sum()).backward()
        return dens.grad.clone(), feats.grad.clone()

    first = step()
    pooled, nbytes = {id(a) for a in rc._POOL}, rc.pooled_bytes()
    assert len(pooled) == 5  # the packed grid, the task buffers, the kept samples, 2 gradients
    for _ in range(2):
        again = step()
        assert {id(a) for a in rc._POOL} == pooled and rc.pooled_bytes() == nbytes
        assert all(torch.equal(x, y) for x, y in zip(first, again))

    monkeypatch.setattr(scratch, "BUFFER_BYTES", 0)
    again = step()  # one task buffer: the sums in another order
    assert all(torch.allclose(x, y, atol=1e-12) for x, y in zip(first, again))
    probe = rc.empty((1,), D, 0)  # drops everything unused: only the gradients and the probe are left
    assert rc.pooled_bytes() == (dens.numel() + feats.numel()) * 8 + probe.numel() * 8


@pytest.mark.parametrize("mode", ["ea", "quadrature"])
def test_gradient_buffers_and_kept_samples_respect_the_memory_budget(monkeypatch, mode):
    """With a budget below one grid copy, the backward uses a single buffer and the forward keeps no
    samples even when asked (the backward reads the grid again); the gradients agree with the
    default budget's. Without ``keep_samples`` nothing is kept."""
    import p3dlab.ops.volume_sampling as vs
    import p3dlab.runtime.volume_scratch as scratch

    kept = []
    real = vs._kept_samples
    monkeypatch.setattr(vs, "_kept_samples", lambda *a: kept.append(real(*a)) or kept[-1])
    vol, bundle = _scene(n=1, ray_grad=False, density_scale=2.0 if mode == "quadrature" else 0.5)
    grads = []
    for budget in (scratch.BUFFER_BYTES, 1):
        monkeypatch.setattr(scratch, "BUFFER_BYTES", budget)
        assert scratch.n_tasks(10**6, torch.device("cpu")) == (
            1 if budget == 1 else scratch.n_tasks(10**6, torch.device("cpu"))
        )
        f, o, z, _ = march_volumes(vol, bundle, mode, keep_samples=True)
        grads.append(torch.autograd.grad(f.sum() + o.sum() + z.sum(), [vol.densities(), vol.features()]))
    f, o, z, _ = march_volumes(vol, bundle, mode)
    grads.append(torch.autograd.grad(f.sum() + o.sum() + z.sum(), [vol.densities(), vol.features()]))
    assert [tuple(k.shape) for k in kept] == [(8 * 9, 20, 4), (0, 1, 4), (0, 1, 4)]
    for a, b, c in zip(*grads):
        assert torch.allclose(a, b, atol=1e-12) and torch.allclose(a, c, atol=1e-12)
    with pytest.raises(P3DLabValueError, match="grid_size"):
        from p3dlab.volumes import VoxelRadianceField

        VoxelRadianceField(grid_size=512)  # 512³ x 4 channels x Adam state would need ~6 GB


def test_grids_beyond_the_memory_available_raise_before_anything_is_allocated(monkeypatch):
    """A grid whose scratch (its channels-last copy, and a gradient buffer when it needs gradients)
    exceeds the memory available raises a clear error before the kernels allocate it; the same grid
    renders when it fits. Three values expanded to a 2048³ grid (128 GB of scratch) raise at once,
    on any machine, instead of the process being killed."""
    import p3dlab.runtime.volume_scratch as scratch
    from p3dlab.ops import march_volumes_mse
    from p3dlab.runtime import memory_limit

    vol, bundle = _scene(n=1, ray_grad=False)
    grid_bytes = vol.densities().numel() * 4 * 8  # density + RGB, float64
    monkeypatch.setattr(scratch, "FITS_ANYWHERE", 0)
    monkeypatch.setattr(memory_limit, "available_bytes", lambda: grid_bytes + 1)
    for mode in ("ea", "quadrature"):
        with pytest.raises(P3DLabValueError, match="march_volumes: the grid needs .* and a gradient buffer"):
            march_volumes(vol, bundle, mode)
    with pytest.raises(P3DLabValueError, match="march_volumes_mse: the grid needs"):
        march_volumes_mse(vol, bundle, torch.zeros(*bundle.lengths.shape[:-1], 3, dtype=D),
                             torch.zeros(bundle.lengths.shape[:-1], dtype=D))  # fmt: skip
    with torch.no_grad():  # no gradient buffer: the copy alone fits
        f, o, _, _ = march_volumes(vol, bundle, "ea")
    assert o.max() > 0
    points = torch.rand(1, 5, 3, dtype=D) * 2 - 1
    grid = torch.rand(1, 4, 6, 7, 8, dtype=D, requires_grad=True)
    monkeypatch.setattr(memory_limit, "available_bytes", lambda: grid.numel() * 8 + 1)
    with pytest.raises(P3DLabValueError, match="sample_grid: the grid needs"):
        sample_grid(grid, points)
    expected = F.grid_sample(grid.detach(), points.reshape(1, 1, 1, 5, 3), align_corners=True).reshape(4, 5).T
    assert torch.allclose(sample_grid(grid.detach(), points)[0], expected)  # fits without a gradient buffer

    monkeypatch.undo()  # the real bound
    n = 2048
    expanded = Volumes(
        torch.zeros(1, 1, 1, 1, 1).expand(1, 1, n, n, n), torch.zeros(1, 3, 1, 1, 1).expand(1, 3, n, n, n)
    )
    with pytest.raises(P3DLabValueError, match="131072.0 MB of scratch"):
        march_volumes(expanded, bundle, "ea")


def test_memory_available_is_the_smallest_of_meminfo_and_the_cgroup_limit(tmp_path):
    from p3dlab.runtime.memory_limit import available_bytes

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:    8000000 kB\n")
    v2, v1 = tmp_path / "v2", tmp_path / "v1"
    v2.mkdir()
    (v1 / "memory").mkdir(parents=True)
    (v2 / "memory.max").write_text("2147483648\n")  # a free Binder instance: 2 GB
    (v2 / "memory.current").write_text("536870912\n")
    assert available_bytes(v2, meminfo) == 2147483648 - 536870912
    (v2 / "memory.max").write_text("max\n")  # no limit: the system's memory
    assert available_bytes(v2, meminfo) == 8000000 * 1024
    (v1 / "memory" / "memory.limit_in_bytes").write_text("1073741824\n")
    (v1 / "memory" / "memory.usage_in_bytes").write_text("2147483648\n")  # over its limit
    assert available_bytes(v1, meminfo) == 0
    assert available_bytes(tmp_path / "none", tmp_path / "no-meminfo") is None


def test_channels_last_grids_are_read_in_place_and_agree():
    """A grid already channels-last in memory is not packed again; results and gradients do not
    depend on the memory format of the inputs."""
    import p3dlab.ops.volume_sampling as vs

    g = torch.Generator().manual_seed(5)
    grid = torch.randn(2, 3, 4, 5, 6, dtype=D, generator=g)
    grid_cl = grid.contiguous(memory_format=torch.channels_last_3d)
    assert vs._channels_last([grid_cl]).data_ptr() == grid_cl.data_ptr()
    pts = torch.rand(2, 50, 3, dtype=D, generator=g) * 2.4 - 1.2
    w = torch.randn(2, 50, 3, dtype=D, generator=g)
    grads = []
    for gr in (grid, grid_cl):
        gr = gr.clone(memory_format=torch.preserve_format).requires_grad_()
        out = sample_grid(gr, pts)
        assert torch.allclose(out, _grid_sample_ref(grid, pts, True), atol=1e-13)
        grads.append(torch.autograd.grad((out * w).sum(), gr)[0])
    assert torch.allclose(grads[0], grads[1], atol=1e-13)
    vol, bundle = _scene(n=1)
    dens_cl = vol.densities().detach().contiguous(memory_format=torch.channels_last_3d).requires_grad_()
    feats_cl = vol.features().detach().contiguous(memory_format=torch.channels_last_3d).requires_grad_()
    vol_cl = Volumes(dens_cl, feats_cl, voxel_size=0.3, volume_translation=(0.1, -0.2, 0.05))
    f, o, _, _ = march_volumes(vol, bundle, "ea")
    f_cl, o_cl, _, _ = march_volumes(vol_cl, bundle, "ea")
    assert torch.allclose(f, f_cl, atol=1e-13) and torch.allclose(o, o_cl, atol=1e-13)
    ref = torch.autograd.grad(f.sum() + o.sum(), [vol.densities(), vol.features()])
    got = torch.autograd.grad(f_cl.sum() + o_cl.sum(), [dens_cl, feats_cl])
    for a, b in zip(ref, got):
        assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("ray_grad, keep", PATHS)
def test_reused_backward_buffers_start_from_zero(ray_grad, keep):
    """The CPU backward keeps its buffers for the next call; a second, different backward must not
    see the first one's gradients. With kept samples the second backward through the retained
    graph reads the grid again (the first gave the kept samples away) and must agree bit for bit
    with a fresh backward that reads the kept samples."""
    vol, bundle = _scene(n=1, ray_grad=ray_grad)
    f, o, _, _ = march_volumes(vol, bundle, "ea", keep_samples=keep)
    first = torch.autograd.grad(3.0 * f.sum() + o.sum(), vol.densities(), retain_graph=True)[0]
    second = torch.autograd.grad(o.sum(), vol.densities())[0]
    f2, o2, _, _ = march_volumes(vol, bundle, "ea", keep_samples=keep)
    fresh = torch.autograd.grad(o2.sum(), vol.densities())[0]
    assert not torch.allclose(first, second)
    assert torch.equal(second, fresh)


@pytest.mark.parametrize("mode", ["ea", "quadrature"])
@pytest.mark.parametrize("keep", [True, False])
def test_buffers_handed_to_the_next_forward_do_not_change_a_retained_graph(monkeypatch, mode, keep):
    """After a backward, the packed grid and the kept samples serve the next forward (no fresh pages
    to fault in). A retained graph that is differentiated again afterwards must not read them: it
    packs and samples the grid again."""
    import p3dlab.ops.volume_sampling as vs

    kept, packed = [], []  # (numel, data_ptr): holding the tensors would keep their memory from reuse

    def recorded(real, log):
        def call(*a):
            t = real(*a)
            log.append((t.numel(), t.data_ptr()))
            return t

        return call

    monkeypatch.setattr(vs, "_kept_samples", recorded(vs._kept_samples, kept))
    monkeypatch.setattr(vs, "_pack_grid", recorded(vs._pack_grid, packed))
    vol, bundle = _scene(n=1, ray_grad=False)
    other, _ = _scene(n=1, ray_grad=False, seed=7)
    inputs = [vol.densities(), vol.features()]
    f, o, z, _ = march_volumes(vol, bundle, mode, keep_samples=keep)
    loss = (f * torch.linspace(0.5, 2.0, 3, dtype=D)).sum() + o.sum() - z.sum()
    first = torch.autograd.grad(loss, inputs, retain_graph=True)
    f2, o2, _, _ = march_volumes(other, bundle, mode, keep_samples=keep)  # takes the buffers over
    torch.autograd.grad(f2.sum() + o2.sum(), [other.densities(), other.features()])
    assert len(packed) == 2 and packed[1] == packed[0]
    if keep:
        assert len(kept) == 2 and kept[0][0] and kept[1] == kept[0]
    again = torch.autograd.grad(loss, inputs)
    assert len(packed) == 3  # the second backward packed the grid again
    for a, b in zip(first, again):
        assert torch.allclose(a, b, atol=1e-13)
    with torch.no_grad():  # no backward will come: the grid is handed on at once
        f3, _, _, _ = march_volumes(vol, bundle, mode)
        f4, _, _, _ = march_volumes(vol, bundle, mode)
    assert packed[4] == packed[3]
    assert torch.equal(f3, f4) and torch.allclose(f3, f.detach(), atol=1e-13)


@pytest.mark.parametrize("channels", [(1,), (1, 3), (4,)])
def test_layout_copies_agree_with_their_torch_versions_used_on_cuda(channels):
    """The Numba pack / unpack-and-sum kernels against the torch ops the CUDA path uses."""
    import p3dlab.ops.volume_sampling as vs

    g = torch.Generator().manual_seed(7)
    grids = [torch.randn(2, c, 3, 4, 5, dtype=D, generator=g) for c in channels]
    packed = vs._channels_last(grids)
    assert torch.equal(packed, vs._channels_last_torch(grids))
    if channels == (1, 3):  # density + RGB take pack_rgb: the same as the general kernel
        from p3dlab.kernels.volume_cpu import pack_channels_last

        general = torch.empty_like(packed)
        for first, grid in zip((0, 1), grids):
            pack_channels_last(grid.numpy().reshape(-1), 2, grid.shape[1], general.numpy().reshape(-1), 4, first)
        assert torch.equal(general, packed)
    assert torch.equal(packed[..., : channels[0]], grids[0].permute(0, 2, 3, 4, 1))
    for n_tasks in (1, 2, 3):
        buffers = torch.randn(n_tasks, packed.numel(), dtype=D, generator=g)
        ours = vs._unpack_sum(buffers, packed.shape, channels[0])
        ref = vs._unpack_sum_torch(buffers, packed.shape, channels[0])
        assert (ours[1] is None) == (ref[1] is None) == (len(channels) == 1)
        for a, b in zip(ours, ref):
            if a is not None:
                assert torch.allclose(a, b, atol=1e-14)
        if channels == (1, 3):  # density + RGB take unpack_rgb_sum: the general kernel's bits exactly
            from p3dlab.kernels.volume_cpu import unpack_channels_sum

            first, second = torch.empty_like(ours[0]), torch.empty_like(ours[1])
            unpack_channels_sum(buffers.numpy(), 4, 1, first.numpy().reshape(-1), second.numpy().reshape(-1), 2)
            assert torch.equal(first, ours[0]) and torch.equal(second, ours[1])


@pytest.mark.parametrize("shape", [(1, 4, 4), (2, 5, 3), (1, 1, 7), (3, 9), (2, 3, 4, 2)])
def test_ray_order_is_a_permutation_in_2x2_tiles_for_images(shape):
    from p3dlab.runtime.volume_scratch import ray_order

    R = math.prod(shape)
    assert torch.equal(ray_order(shape, 2**20), torch.arange(R))  # small grids: row order
    order = ray_order(shape, 2**30)
    assert order.dtype == torch.int64 and torch.equal(order.sort().values, torch.arange(R))
    if shape == (1, 4, 4):  # row-major 2 x 2 tiles: (0, 1, 4, 5), (2, 3, 6, 7), ...
        assert order.tolist() == [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]
    if len(shape) == 3:  # the rays of each 2 x 2 square (smaller at odd edges) follow each other, squares row-major
        n, h, w = shape
        b, y, x = order // (h * w), order // w % h, order % w
        tile = (b * ((h + 1) // 2) + y // 2) * ((w + 1) // 2) + x // 2
        assert bool((tile[1:] >= tile[:-1]).all())
    else:
        assert torch.equal(order, torch.arange(R))


@pytest.mark.parametrize("mode, keep", [("ea", False), ("ea", True), ("quadrature", False)])
def test_image_rays_marched_in_tiles_give_the_results_of_the_flat_order(monkeypatch, mode, keep):
    """An image bundle (N, H, W) is marched 2 x 2 pixels at a time, the same rays as a flat bundle
    (N, H·W) in row order: bit-identical outputs, gradients equal up to the summation order."""
    monkeypatch.setattr("p3dlab.runtime.volume_scratch.TILE_BYTES", 0)  # tiles for this small grid too
    g = torch.Generator().manual_seed(7)
    dens = (torch.rand(2, 1, 6, 7, 8, dtype=D, generator=g) * 0.3).requires_grad_()
    feats = torch.rand(2, 3, 6, 7, 8, dtype=D, generator=g).requires_grad_()
    R, T = look_at_view_transform(torch.tensor([2.5, 2.7]), torch.tensor([10.0, -20.0]), torch.tensor([30.0, 80.0]))
    image = NDCMultinomialRaysampler(5, 6, 11, 1.0, 4.0)(FoVPerspectiveCameras(R=R.to(D), T=T.to(D)))
    flat = RayBundle(*(getattr(image, k).reshape(2, 30, -1) for k in ("origins", "directions", "lengths", "xys")))
    res = []
    for bundle in (image, flat):
        vol = Volumes(dens, feats, voxel_size=0.4)
        f, o, z, used = march_volumes(vol, bundle, mode, keep_samples=keep)
        w = torch.arange(f.numel(), dtype=D).reshape(f.shape).sin()
        grads = torch.autograd.grad((f * w).sum() + (o * z).sum(), (dens, feats))
        res.append((f.reshape(2, 30, 3), o.reshape(2, 30), z.reshape(2, 30), *grads))
    assert res[0][1].min() > 0.01 and res[0][1].max() < 0.99  # rays through the volume
    for a, b in zip(res[0][:3], res[1][:3]):
        assert torch.equal(a, b)
    for a, b in zip(res[0][3:], res[1][3:]):
        assert b.abs().max() > 0 and torch.allclose(a, b, rtol=1e-12, atol=1e-14)


def test_fused_mse_marches_image_rays_in_tiles_with_the_results_of_the_flat_order(monkeypatch):
    from p3dlab.ops import march_volumes_mse

    monkeypatch.setattr("p3dlab.runtime.volume_scratch.TILE_BYTES", 0)

    g = torch.Generator().manual_seed(8)
    dens = (torch.rand(1, 1, 6, 7, 8, dtype=D, generator=g) * 3).requires_grad_()
    feats = torch.rand(1, 3, 6, 7, 8, dtype=D, generator=g).requires_grad_()
    R, T = look_at_view_transform(2.6, 15.0, 40.0)
    image = NDCMultinomialRaysampler(6, 5, 9, 1.0, 4.0)(FoVPerspectiveCameras(R=R.to(D), T=T.to(D)))
    flat = RayBundle(*(getattr(image, k).reshape(1, 30, -1) for k in ("origins", "directions", "lengths", "xys")))
    target_f = torch.rand(1, 30, 3, dtype=D, generator=g)
    target_o = torch.rand(1, 30, dtype=D, generator=g)
    res = []
    for bundle, tf, to in (
        (image, target_f.reshape(1, 5, 6, 3), target_o.reshape(1, 5, 6)),
        (flat, target_f, target_o),
    ):
        loss, f, o = march_volumes_mse(Volumes(dens, feats, voxel_size=0.4), bundle, tf, to)
        res.append((loss, f.reshape(1, 30, 3), *torch.autograd.grad(loss, (dens, feats))))
    assert torch.equal(res[0][1], res[1][1])
    for a, b in zip(res[0][2:], res[1][2:]):
        assert b.abs().max() > 0 and torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    assert torch.allclose(res[0][0], res[1][0], rtol=1e-14, atol=0)


@pytest.mark.parametrize("shape", [(1, 8, 3), (2, 6, 5), (1, 1, 7), (3, 9), (2, 3, 4, 2)])
def test_band_order_is_a_permutation_in_bands_of_rows_for_images(shape):
    from p3dlab.runtime.volume_scratch import BAND_ROWS, band_order

    R = math.prod(shape)
    order = band_order(shape)
    assert order.dtype == torch.int64 and torch.equal(order.sort().values, torch.arange(R))
    if len(shape) != 3:
        assert torch.equal(order, torch.arange(R))
        return
    n, h, w = shape
    b, y, x = order // (h * w), order // w % h, order % w
    band = b * h + y // BAND_ROWS * BAND_ROWS  # bands in order, within a band column by column, then row
    key = (band * w + x) * BAND_ROWS + y % BAND_ROWS
    assert bool((key[1:] > key[:-1]).all())
    if shape == (1, 8, 3):  # 4-row bands, columns of 4: (0, 3, 6, 9), (1, 4, 7, 10), ...
        assert order[:8].tolist() == [0, 3, 6, 9, 1, 4, 7, 10]


@pytest.mark.parametrize(
    "mode, marcher", [("ea", EmissionAbsorptionRaymarcher()), ("quadrature", QuadratureRaymarcher())]
)
@pytest.mark.parametrize("keep", [False, True])
def test_samples_away_from_the_grid_are_skipped_with_the_same_results(mode, marcher, keep):
    """The density + RGB kernels march only a ray's span of samples near the grid (``touching_span``):
    with most samples before and after the grid, and (EA, which has no steps) lengths in random order
    so that samples far from the grid sit between near ones, the outputs and gradients still match
    the torch reference."""
    vol, bundle = _scene(n=2, P=64, ray_grad=False)
    sampler = NDCMultinomialRaysampler(9, 8, 64, 0.05, 9.0)  # the grid spans about 1/5 of each ray
    R, T = look_at_view_transform(dist=torch.tensor([3.0, 2.5]), elev=torch.tensor([10.0, 30.0]), azim=20.0)
    b = sampler(FoVPerspectiveCameras(R=R.to(D), T=T.to(D)))
    lengths = b.lengths
    if mode == "ea":  # shuffle the samples of every other ray
        g = torch.Generator().manual_seed(3)
        shuffled = torch.stack([row[torch.randperm(64, generator=g)] for row in lengths.reshape(-1, 64)])
        lengths = torch.where(
            (torch.arange(lengths[..., 0].numel()) % 2 == 0)[:, None], shuffled, lengths.reshape(-1, 64)
        )
        lengths = lengths.reshape(b.lengths.shape)
    bundle = RayBundle(b.origins, b.directions, lengths, b.xys)
    ref, _ = _reference(vol, bundle, marcher)
    f, o, _, used = march_volumes(vol, bundle, mode, keep_samples=keep)
    out = torch.cat([f, o], -1)
    assert 0.05 < o.mean() < 0.95 and (o == 0).any()  # some rays miss the grid, others cross it
    assert torch.allclose(out, ref, atol=1e-13) and (used == 64).all()
    w = torch.randn(out.shape, dtype=D, generator=torch.Generator().manual_seed(4))
    inputs = [vol.densities(), vol.features()]
    for a, c in zip(torch.autograd.grad((out * w).sum(), inputs), torch.autograd.grad((ref * w).sum(), inputs)):
        assert c.abs().max() > 1e-3 and torch.allclose(a, c, atol=1e-11), (a - c).abs().max()
