"""Gaussian splatting (docs/kernels.md#gaussian-splatting): the Numba kernels against a dense float64
torch reference and a per-pixel Python loop, gradcheck of every parameter, the CUDA kernels (simulator
and serial) against the CPU ones, an analytic Gaussian, early termination, culling and bad input."""

import math
import re

import gpu_serial
import numpy as np
import pytest
import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.kernels import gaussian_splat as gs
from p3dlab.ops.gaussian_splat import (
    SH_C0,
    bin_gaussians_torch,
    draw_order,
    rasterize_gaussians,
    tile_rects,
)
from p3dlab.ops.gaussian_splat_reference import rasterize_gaussians_reference
from p3dlab.renderer import FoVPerspectiveCameras, PerspectiveCameras, look_at_view_transform, render_gaussians
from p3dlab.structures import GaussianSplats

DT = torch.float64


def _camera(dist=3.0, elev=20.0, azim=30.0, dtype=DT):
    R, T = look_at_view_transform(dist, elev, azim)
    return FoVPerspectiveCameras(R=R.to(dtype), T=T.to(dtype))


def _splats(n=40, seed=0, degree=1, spread=1.5, size=(0.02, 0.12), dtype=DT, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * spread
    scales = torch.rand(n, 3, generator=g, dtype=dtype) * (size[1] - size[0]) + size[0]
    rotations = torch.randn(n, 4, generator=g, dtype=dtype)
    opacities = torch.rand(n, generator=g, dtype=dtype) * 0.9 + 0.05
    sh = torch.randn(n, (degree + 1) ** 2, 3, generator=g, dtype=dtype) * 0.6
    params = [means, scales, rotations, opacities, sh]
    for p in params:
        p.requires_grad_(requires_grad)
    return params


def _screen_scene(n=60, H=37, W=45, seed=0, dtype=DT):
    """Random screen-space Gaussians: (means2d, conics, opacities, colors, depths, radii)."""
    g = torch.Generator().manual_seed(seed)
    means2d = torch.rand(n, 2, generator=g, dtype=dtype) * torch.tensor([W + 10.0, H + 10.0], dtype=dtype) - 5.0
    L = torch.randn(n, 2, 2, generator=g, dtype=dtype) * 3.0
    cov = L @ L.transpose(1, 2) + 0.3 * torch.eye(2, dtype=dtype)
    inv = torch.linalg.inv(cov)
    conics = torch.stack([inv[:, 0, 0], inv[:, 0, 1], inv[:, 1, 1]], -1)
    lam = torch.linalg.eigvalsh(cov)[:, 1]
    radii = torch.ceil(3 * lam.sqrt()).to(torch.int64)
    radii[::7] = 0  # some culled
    opacities = torch.rand(n, generator=g, dtype=dtype)
    colors = torch.rand(n, 3, generator=g, dtype=dtype)
    depths = torch.rand(n, generator=g, dtype=dtype) * 5.0
    depths[1] = depths[2]  # a tie: drawn by index
    return means2d, conics, opacities, colors, depths, radii


def _loop_reference(means2d, conics, opacities, colors, depths, radii, H, W, alpha_min, t_min):
    """The compositing rule written as a plain loop per pixel (tiny scenes only)."""
    means2d, conics, opacities, colors = (t.tolist() for t in (means2d, conics, opacities, colors))
    order = sorted((float(depths[n]), n) for n in range(len(depths)) if radii[n] > 0)
    color = torch.zeros(H, W, 3, dtype=DT)
    trans = torch.ones(H, W, dtype=DT)
    for i in range(H):
        for j in range(W):
            T = 1.0
            c = [0.0, 0.0, 0.0]
            for _, n in order:
                dx, dy = means2d[n][0] - j, means2d[n][1] - i
                a, b, cc = conics[n]
                q = a * dx * dx + 2 * b * dx * dy + cc * dy * dy
                if q > 9:
                    continue
                alpha = min(0.99, opacities[n] * math.exp(-0.5 * q))
                if alpha < alpha_min:
                    continue
                if T * (1 - alpha) < t_min:
                    break
                c = [c[k] + alpha * T * colors[n][k] for k in range(3)]
                T *= 1 - alpha
            color[i, j], trans[i, j] = torch.tensor(c, dtype=DT), T
    return color, trans


# ----------------------------------------------------------------------------- forward
def test_dense_reference_equals_a_per_pixel_loop():
    scene = _screen_scene(n=12, H=9, W=11, seed=3)
    ref = rasterize_gaussians_reference(*scene, (9, 11), 1 / 255, 0.05)
    loop = _loop_reference(*scene, 9, 11, 1 / 255, 0.05)
    assert (loop[1] < 0.999).sum() > 20
    torch.testing.assert_close(ref[0], loop[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(ref[1], loop[1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kernel_forward_equals_dense_reference(seed):
    H, W = 37, 45  # not a multiple of the tile size
    scene = _screen_scene(n=80, H=H, W=W, seed=seed)
    color, trans = rasterize_gaussians(*scene, (H, W))
    ref_color, ref_trans = rasterize_gaussians_reference(*scene, (H, W), max_pairs=5000)  # chunked
    assert (trans < 0.5).sum() > 50 and (trans > 0.9).sum() > 20
    torch.testing.assert_close(color, ref_color, rtol=0, atol=1e-6)
    torch.testing.assert_close(trans, ref_trans, rtol=0, atol=1e-6)
    assert (color - ref_color).abs().max() < 1e-12  # in fact equal to rounding


@pytest.mark.parametrize("seed, degree", [(0, 0), (1, 2), (2, 3)])
def test_render_kernel_equals_reference_backend(seed, degree):
    splats = GaussianSplats(*_splats(n=60, seed=seed, degree=degree))
    bg = torch.tensor([0.2, 0.3, 0.1], dtype=DT)
    a = render_gaussians(splats, _camera(), (33, 40), background=bg)
    b = render_gaussians(splats, _camera(), (33, 40), background=bg, backend="reference")
    assert (a.alpha > 0.1).sum() > 50
    torch.testing.assert_close(a.image, b.image, rtol=0, atol=1e-6)
    torch.testing.assert_close(a.alpha, b.alpha, rtol=0, atol=1e-6)


def test_float32_kernel_close_to_float64_reference():
    params = _splats(n=60, seed=4)
    a = render_gaussians(GaussianSplats(*[p.float() for p in params]), _camera(dtype=torch.float32), (32, 32))
    b = render_gaussians(GaussianSplats(*params), _camera(), (32, 32), backend="reference")
    assert a.image.dtype == torch.float32
    torch.testing.assert_close(a.image.double(), b.image, rtol=0, atol=2e-4)


def test_single_isotropic_gaussian_is_the_analytic_2d_gaussian():
    """A sphere of std sigma at distance z on the optical axis of a 60-degree camera projects to a
    Gaussian of std ``sigma f / z`` pixels, f = (S / 2) / tan(30 deg), centred on the image centre."""
    S, sigma, z, o = 31, 0.15, 3.0, 0.8
    splats = GaussianSplats(
        torch.zeros(1, 3, dtype=DT),
        torch.full((1, 3), sigma, dtype=DT),
        torch.tensor([[1.0, 0, 0, 0]], dtype=DT),
        torch.tensor([o], dtype=DT),
        torch.full((1, 1, 3), (0.7 - 0.5) / SH_C0, dtype=DT),  # colour 0.7
    )
    r = render_gaussians(splats, _camera(z, 0.0, 0.0), (S, S), low_pass=0.0, alpha_min=0.0)
    f = (S / 2) / math.tan(math.radians(30))
    std = sigma * f / z
    c = (S - 1) / 2
    torch.testing.assert_close(r.means2d.detach(), torch.tensor([[c, c]], dtype=DT))
    i, j = torch.meshgrid(torch.arange(S, dtype=DT), torch.arange(S, dtype=DT), indexing="ij")
    q = ((i - c) ** 2 + (j - c) ** 2) / std**2
    expected = torch.where(q <= 9, o * torch.exp(-0.5 * q), torch.zeros_like(q))
    torch.testing.assert_close(r.alpha, expected, rtol=0, atol=1e-9)
    torch.testing.assert_close(r.image, 0.7 * expected[..., None].expand(S, S, 3), rtol=0, atol=1e-9)
    assert int(r.radii[0]) == math.ceil(3 * std)


def test_early_termination_changes_nothing_above_the_threshold():
    scene = _screen_scene(n=150, seed=5)
    scene[2][:] = scene[2].clamp_min(0.8)  # opaque enough for many pixels to terminate
    t_min = 1e-2
    color, trans = rasterize_gaussians(*scene, (37, 45), transmittance_min=t_min)
    full_color, full_trans = rasterize_gaussians(*scene, (37, 45), transmittance_min=0.0)
    above = full_trans >= t_min
    assert (~above).sum() > 20 and above.sum() > 20
    assert torch.equal(color[above], full_color[above]) and torch.equal(trans[above], full_trans[above])
    # where it stopped, what was left out is at most the light that still came through (colours <= 1)
    assert bool(((color - full_color)[~above].abs() <= trans[~above][:, None] + 1e-12).all())
    assert bool((trans[~above] >= t_min).all())


def test_gaussians_behind_the_camera_or_off_screen_contribute_nothing():
    means, scales, rotations, opacities, sh = _splats(n=20, seed=6)
    cam = _camera(3.0, 0.0, 0.0)
    centre = cam.get_camera_center()[0]
    extra = torch.stack(
        [
            centre * 1.5,  # behind the camera
            centre,  # at the camera centre
            centre * 0.999,  # just in front, inside the near plane
            torch.tensor([40.0, 0.0, 0.0], dtype=DT),  # far outside the frustum
            torch.tensor([0.0, -30.0, 0.5], dtype=DT),
        ]
    )
    k = extra.shape[0]
    more = [
        torch.cat([means, extra]),
        torch.cat([scales, torch.full((k, 3), 0.5, dtype=DT)]),
        torch.cat([rotations, torch.randn(k, 4, dtype=DT)]),
        torch.cat([opacities, torch.full((k,), 0.9, dtype=DT)]),
        torch.cat([sh, torch.ones(k, sh.shape[1], 3, dtype=DT)]),
    ]
    for p in more:
        p.requires_grad_(True)
    base = render_gaussians(GaussianSplats(means, scales, rotations, opacities, sh), cam, (24, 24))
    r = render_gaussians(GaussianSplats(*more), cam, (24, 24))
    assert r.radii[-k:].tolist() == [0] * k and bool((r.radii[:-k] > 0).any())
    assert torch.equal(r.image, base.image)
    (r.image.sum() + r.alpha.sum()).backward()
    for p in more:
        assert bool(torch.isfinite(p.grad).all())
        assert float(p.grad[-k:].abs().max()) == 0.0


def test_nothing_visible_renders_the_background():
    splats = GaussianSplats(*_splats(n=5, seed=7))
    cam = _camera(3.0, 0.0, 180.0)
    far = GaussianSplats(splats.means + 5.0 * cam.get_camera_center()[0], *[
        getattr(splats, n) for n in ("scales", "rotations", "opacities", "sh")
    ])  # fmt: skip
    bg = torch.tensor([0.1, 0.2, 0.3], dtype=DT)
    r = render_gaussians(far, cam, (8, 8), background=bg)
    assert torch.equal(r.image, bg.expand(8, 8, 3)) and float(r.alpha.abs().max()) == 0.0
    empty = splats[torch.zeros(5, dtype=torch.bool)]
    r = render_gaussians(empty, cam, (8, 8), background=bg)
    assert empty.num_gaussians == 0 and torch.equal(r.image, bg.expand(8, 8, 3))


# ----------------------------------------------------------------------------- gradients
def test_gradcheck_every_parameter():
    params = _splats(n=6, seed=8, degree=1, spread=0.8, size=(0.1, 0.3), requires_grad=True)
    bg = torch.tensor([0.3, 0.1, 0.2], dtype=DT, requires_grad=True)
    cam = _camera(2.5, 10.0, 20.0)

    def render(means, scales, rotations, opacities, sh, background):
        r = render_gaussians(GaussianSplats(means, scales, rotations, opacities, sh), cam, (12, 14), background)
        return r.image, r.alpha

    out = render(*params, bg)
    assert (out[1] > 0.05).sum() > 30
    assert torch.autograd.gradcheck(render, (*params, bg), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_kernel_backward_equals_reference_autograd():
    scene = [t.clone().requires_grad_(i < 4) for i, t in enumerate(_screen_scene(n=50, seed=9))]
    g = torch.Generator().manual_seed(1)
    w_color, w_trans = torch.randn(37, 45, 3, generator=g, dtype=DT), torch.randn(37, 45, generator=g, dtype=DT)
    grads = []
    for raster in (rasterize_gaussians, rasterize_gaussians_reference):
        color, trans = raster(*scene, (37, 45))
        grads.append(torch.autograd.grad((color * w_color).sum() + (trans * w_trans).sum(), scene[:4]))
    for a, b in zip(*grads):
        assert float(b.abs().max()) > 0
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_gradcheck_screen_space_kernel():
    scene = _screen_scene(n=8, H=16, W=16, seed=10)
    inputs = [t.clone().requires_grad_(True) for t in scene[:4]]

    def raster(means2d, conics, opacities, colors):
        return rasterize_gaussians(means2d, conics, opacities, colors, scene[4], scene[5], (16, 16), 0.0, 1e-3)

    assert torch.autograd.gradcheck(raster, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_means2d_gradient_is_retained_and_deterministic():
    params = _splats(n=30, seed=11, requires_grad=True)
    grads = []
    for _ in range(2):
        r = render_gaussians(GaussianSplats(*params), _camera(), (20, 20))
        r.image.sum().backward()
        grads.append((r.means2d.grad.clone(), params[0].grad.clone()))
        for p in params:
            p.grad = None
    assert float(grads[0][0].abs().max()) > 0
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    assert bool((grads[0][0][r.radii == 0] == 0).all())


# ----------------------------------------------------------------------------- CUDA kernels
def test_torch_binning_equals_cpu_binning():
    means2d, conics, opacities, colors, depths, radii = _screen_scene(n=70, H=50, W=70, seed=12)
    order = draw_order(depths, radii)
    rects = tile_rects(means2d, radii, 50, 70)
    starts, ids = gs.bin_gaussians_cpu(order.numpy(), rects.numpy(), 4 * 5, 5)
    t_starts, t_ids = bin_gaussians_torch(order, rects, 50, 70)
    assert ids.size > 70 and np.array_equal(starts, t_starts.numpy()) and np.array_equal(ids, t_ids.numpy())
    for t in range(20):  # each tile's list is in drawing order
        d = depths[ids[starts[t] : starts[t + 1]]]
        assert bool((d[1:] >= d[:-1]).all())


def _kernel_inputs(H, W, n, seed, dtype):
    means2d, conics, opacities, colors, depths, radii = _screen_scene(n=n, H=H, W=W, seed=seed)
    t_starts, t_ids = bin_gaussians_torch(draw_order(depths, radii), tile_rects(means2d, radii, H, W), H, W)
    arrays = [np.ascontiguousarray(t.numpy().astype(dtype)) for t in (means2d, conics, opacities, colors)]
    return t_starts.numpy(), t_ids.numpy(), arrays


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_per_gaussian_cpu_kernels_equal_the_per_pixel_loop(dtype):
    """The CPU kernels' loop order (Gaussian by Gaussian over its ellipse's pixels) against the
    per-pixel loop of the math: the forward equal bit for bit, the backward to rounding."""
    H, W, n = 40, 50, 150
    starts, ids, arrays = _kernel_inputs(H, W, n, 21, dtype)
    arrays[2][:] = np.maximum(arrays[2], 0.5)  # some pixels stop early
    outs = []
    for fast in (True, False):
        color, trans, last = np.zeros((H, W, 3), dtype), np.ones((H, W), dtype), np.zeros((H, W), np.int64)
        outputs = (color, trans, last)
        if fast:
            gs.composite_cpu(starts, ids, *arrays, H, W, 1 / 255, 1e-2, *outputs, 3)
        else:
            gs.composite_per_pixel_cpu(starts, ids, *arrays, H, W, 1 / 255, 1e-2, *outputs)
        outs.append(outputs)
    for a, b in zip(*outs):
        assert np.array_equal(a, b)
    trans, last = outs[0][1], outs[0][2]
    assert (trans < 0.02).sum() > 20
    rng = np.random.default_rng(1)
    gc, gt = rng.standard_normal((H, W, 3)).astype(dtype), rng.standard_normal((H, W)).astype(dtype)
    grads = []
    for launch in (gs.composite_backward_cpu, gs.composite_backward_per_pixel_cpu):
        g = np.zeros((n, 9), dtype)
        launch(starts, ids, *arrays, H, W, 1 / 255, trans, last, gc, gt, g, 3)
        grads.append(g)
    tol = 1e-10 if dtype == np.float64 else 2e-3
    np.testing.assert_allclose(grads[0], grads[1], rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_composite_equals_cpu_forward_and_backward(dtype, gpu):
    if gpu is gpu_serial and dtype == np.float32:
        pytest.skip("float32 runs on the simulator; the serial bodies' float64 build covers the mapping")
    H, W = 21, 35
    starts, ids, arrays = _kernel_inputs(H, W, 50, 13, dtype)
    outs = {}
    for name in ("cpu", "gpu"):
        color, trans, last = np.zeros((H, W, 3), dtype), np.ones((H, W), dtype), np.zeros((H, W), np.int64)
        if name == "cpu":
            gs.composite_cpu(starts, ids, *arrays, H, W, 1 / 255, 1e-3, color, trans, last, 2)
        else:
            gpu.composite_gaussians_cuda(starts, ids, *arrays, H, W, 1 / 255, 1e-3, color, trans, last)
        outs[name] = (color, trans, last)
    assert np.array_equal(outs["cpu"][2], outs["gpu"][2])
    tol = 0.0 if dtype == np.float64 else 1e-5
    for a, b in zip(outs["cpu"][:2], outs["gpu"][:2]):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    rng = np.random.default_rng(0)
    gc, gt = rng.standard_normal((H, W, 3)).astype(dtype), rng.standard_normal((H, W)).astype(dtype)
    color, trans, last = outs["cpu"]
    g_cpu, g_gpu = np.zeros((50, 9), dtype), np.zeros((50, 9), dtype)
    gs.composite_backward_cpu(starts, ids, *arrays, H, W, 1 / 255, trans, last, gc, gt, g_cpu, 2)
    gpu.composite_gaussians_backward_cuda(starts, ids, *arrays, H, W, 1 / 255, trans, last, gc, gt, g_gpu)
    assert np.abs(g_cpu).max() > 0
    tol = 1e-10 if dtype == np.float64 else 1e-3  # sums in another order
    np.testing.assert_allclose(g_cpu, g_gpu, rtol=tol, atol=tol)


def test_the_cuda_branch_of_the_operation_equals_the_cpu_one(gpu, monkeypatch):
    """``render_gaussians`` through the operation's CUDA branch (torch binning, the CUDA launchers)
    on CPU tensors, forward and backward, against the CPU kernels."""
    from p3dlab.ops import gaussian_splat as op

    params = _splats(n=40, seed=22, requires_grad=True)
    cam = _camera()
    results = []
    for branch in ("cpu", "gpu"):
        if branch == "gpu":
            monkeypatch.setattr(op, "cuda_kernels", lambda tensor, name: gpu)
        r = render_gaussians(GaussianSplats(*params), cam, (20, 24))
        grads = torch.autograd.grad((r.image * torch.linspace(0, 1, 3, dtype=DT)).sum() + r.alpha.sum(), params)
        results.append((r.image.detach(), r.alpha.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=1e-12)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=1e-12)
    for a, b in zip(results[0][2], results[1][2]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


# ----------------------------------------------------------------------------- the structure and bad input
def test_covariances_and_quaternion_normalisation():
    means, scales, rotations, opacities, sh = _splats(n=10, seed=14)
    splats = GaussianSplats(means, scales, rotations, opacities, sh)
    cov = splats.covariances()
    torch.testing.assert_close(torch.linalg.eigvalsh(cov), (scales**2).sort(1).values)
    R = splats.rotation_matrices()
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=DT).expand(10, 3, 3))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(10, dtype=DT))
    scaled = GaussianSplats(means, scales, rotations * 3.7, opacities, sh)  # a non-unit quaternion: normalised
    torch.testing.assert_close(scaled.covariances(), cov)
    a = render_gaussians(splats, _camera(), (16, 16)).image
    torch.testing.assert_close(render_gaussians(scaled, _camera(), (16, 16)).image, a, rtol=0, atol=1e-12)


def test_structure_helpers():
    splats = GaussianSplats(*_splats(n=10, seed=15, degree=2))
    assert splats.num_gaussians == 10 and splats.sh_degree == 2 and len(splats) == 10
    mask = torch.arange(10) % 3 == 0
    sub = splats[mask]
    assert sub.num_gaussians == 4 and torch.equal(sub.means, splats.means[mask])
    assert splats[2].num_gaussians == 1 and splats[[1, 2]].num_gaussians == 2
    assert splats.detach().to("cpu").means.requires_grad is False


def test_sh_degree_uses_the_first_coefficients():
    params = _splats(n=20, seed=16, degree=2)
    full = GaussianSplats(*params)
    low = GaussianSplats(*params[:4], params[4][:, :1].contiguous())
    a = render_gaussians(full, _camera(), (16, 16), sh_degree=0).image
    torch.testing.assert_close(a, render_gaussians(low, _camera(), (16, 16)).image, rtol=0, atol=0)
    assert not torch.allclose(a, render_gaussians(full, _camera(), (16, 16)).image)


def test_means2d_are_the_rasterizers_pixel_centres():
    """means2d (column, row) = the kit's screen coordinates minus half a pixel (pixel (i, j) is centred
    at (j, i)), for FoV and screen-space cameras."""
    means = _splats(n=10, seed=17, spread=1.0)[0]
    cam = _camera()
    r = render_gaussians(GaussianSplats(*_splats(n=10, seed=17, spread=1.0)), cam, (20, 30))
    screen = cam.transform_points_screen(means, image_size=((20, 30),))[:, :2] - 0.5
    torch.testing.assert_close(r.means2d.detach(), screen)
    R, T = look_at_view_transform(3.0, 10.0, 40.0)
    pc = PerspectiveCameras(
        focal_length=((25.0, 25.0),), principal_point=((14.0, 11.0),), in_ndc=False, image_size=((20, 30),),
        R=R.to(DT), T=T.to(DT),
    )  # fmt: skip
    r = render_gaussians(GaussianSplats(*_splats(n=10, seed=17, spread=1.0)), pc, (20, 30))
    torch.testing.assert_close(r.means2d.detach(), pc.transform_points_screen(means)[:, :2] - 0.5)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("rotations", lambda r: torch.cat([torch.zeros(1, 4, dtype=DT), r[1:]]), "quaternion of Gaussian 0 is zero"),
        ("scales", lambda s: torch.cat([s[:2], -s[2:3], s[3:]]), "scales must be > 0"),
        ("scales", lambda s: torch.cat([s[:2], 0 * s[2:3], s[3:]]), "scales must be > 0"),
        ("means", lambda m: torch.cat([m[:3], torch.full((1, 3), float("nan"), dtype=DT), m[4:]]), "not finite"),
        ("sh", lambda s: s.clone().fill_(float("inf")), "not finite"),
        ("opacities", lambda o: o + 1.0, "opacities must be in"),
        ("sh", lambda s: s[:, :, :2], "shape"),
        ("sh", lambda s: torch.cat([s, s[:, :1]], 1), "(d + 1)^2"),
        ("means", lambda m: m[:, :2], "shape"),
        ("means", lambda m: m.float(), "float32"),
        ("opacities", lambda o: o[:4], "4 rows for 6 means"),
    ],
)
def test_bad_gaussians_get_a_clear_error(field, value, message):
    fields = dict(zip(("means", "scales", "rotations", "opacities", "sh"), _splats(n=6, seed=18)))
    fields[field] = value(fields[field])
    with pytest.raises(P3DLabValueError, match=re.escape(message)):
        GaussianSplats(**fields)


def test_bad_render_arguments_get_a_clear_error():
    splats = GaussianSplats(*_splats(n=6, seed=19))
    cam = _camera()
    with pytest.raises(P3DLabValueError, match="backend"):
        render_gaussians(splats, cam, (8, 8), backend="cuda")
    with pytest.raises(P3DLabValueError, match="image_size"):
        render_gaussians(splats, cam, (0, 8))
    with pytest.raises(P3DLabValueError, match="sh_degree"):
        render_gaussians(splats, cam, (8, 8), sh_degree=2)
    with pytest.raises(P3DLabValueError, match="background"):
        render_gaussians(splats, cam, (8, 8), background=torch.zeros(4, dtype=DT))
    with pytest.raises(P3DLabValueError, match="transmittance_min"):
        render_gaussians(splats, cam, (8, 8), transmittance_min=1.0)
    with pytest.raises(P3DLabValueError, match="alpha_min"):
        render_gaussians(splats, cam, (8, 8), alpha_min=float("nan"))
    with pytest.raises(P3DLabValueError, match="one camera"):
        R, T = look_at_view_transform(3.0, 0.0, torch.tensor([0.0, 90.0]))
        render_gaussians(splats, FoVPerspectiveCameras(R=R.to(DT), T=T.to(DT)), (8, 8))
    splats.means.data[0, 0] = float("nan")  # changed in place after it was built
    with pytest.raises(P3DLabValueError, match="NaN"):
        render_gaussians(splats, cam, (8, 8))


def test_bad_screen_space_input_gets_a_clear_error():
    scene = list(_screen_scene(n=10, seed=20))
    with pytest.raises(P3DLabValueError, match="conics must have shape"):
        rasterize_gaussians(scene[0], scene[1][:5], *scene[2:], (37, 45))
    bad = scene[1].clone()
    bad[3, 0] = float("nan")
    with pytest.raises(P3DLabValueError, match="conics of visible Gaussian 3"):
        rasterize_gaussians(scene[0], bad, *scene[2:], (37, 45))
    flat = scene[1].clone()
    flat[4] = torch.tensor([1.0, 1.0, 1.0], dtype=DT)  # a c - b^2 = 0
    with pytest.raises(P3DLabValueError, match="conic of visible Gaussian 4"):
        rasterize_gaussians(scene[0], flat, *scene[2:], (37, 45))
    with pytest.raises(P3DLabValueError, match="radii must be an integer"):
        rasterize_gaussians(*scene[:5], scene[5].double(), (37, 45))
    with pytest.raises(P3DLabValueError, match="float16"):
        rasterize_gaussians(*[t.half() for t in scene[:5]], scene[5], (37, 45))
