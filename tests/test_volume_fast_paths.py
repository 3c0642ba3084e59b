"""The CPU's fast paths of the volume kernels (``kernels/volume_fast.py``) against the core they
optimise (``kernels/volume_math.py``): the public kernels of ``volume_cpu`` against the core built
here with ``numba.njit`` (a reference build), on random grids and rays.

The reference build uses ``volume_cpu``'s compiler flags (the same fastmath subset), so that where
a fast path does the core's arithmetic (every layout but density + RGB, and density + RGB with ray
gradients, which fall back to the core) the results are equal bit for bit. Where the arithmetic
differs, the tolerance is the tightest that holds, and each is explained where it is set."""

import numpy as np
import pytest
from numba import njit

from p3dlab.kernels import volume_cpu, volume_math
from p3dlab.kernels.volume_fast import CHUNK

_FLAGS = {k: v for k, v in volume_cpu._JIT.items() if k != "cache"}


def _add(buf, index, v):
    buf[index] += v


_core = volume_math.build(njit(**_FLAGS), njit(inline="always", **_FLAGS)(_add), njit(inline="always", **_FLAGS))
_core_march_ray = _core.march_ray
_core_march_ray_backward = _core.march_ray_backward


@njit(**_FLAGS)
def _core_forward(grid, layout, ray_vol, rays, lengths, mode, eps, t_min, align, last_inf, f, o, z, used, samples):
    for r in range(rays.shape[0]):
        _core_march_ray(grid, layout, ray_vol[r], rays, lengths, r, mode, eps, t_min, align, last_inf, f, o, z, used,
                        samples)  # fmt: skip


@njit(**_FLAGS)
def _core_backward(
    grid, layout, ray_vol, rays, lengths, mode, eps, align, last_inf, S, T_P, G, g_o, g_z, used, ray_grad, samples,
    buf, grad_rays,
):  # fmt: skip
    scratch = np.empty((max(lengths.shape[1], 1), 2))
    for r in range(rays.shape[0]):
        _core_march_ray_backward(
            grid, layout, ray_vol[r], rays, lengths, r, mode, eps, align, last_inf, S, T_P, G, g_o, g_z, used,
            ray_grad, samples, scratch, buf, grad_rays,
        )  # fmt: skip


LAYOUTS = {  # name: (K, F0, C)
    "density": (1, 0, 1),  # no features: the density is the feature
    "C=2": (3, 1, 2),
    "rgb": (4, 1, 3),  # the 4-channel fast paths
}


def _case(layout_name, dtype, seed=0, R=24, P=2 * CHUNK + 7):
    """Two 5x6x7 volumes and R rays from z = -2 towards +z (the first samples lie before the grid,
    as in a render), 3 of which miss the grid; densities partly negative (quadrature's max(σ, 0))."""
    K, F0, C = LAYOUTS[layout_name]
    rng = np.random.default_rng(seed)
    D, H, W = 5, 6, 7
    grid = rng.uniform(0.0, 1.0, (2, D, H, W, K))
    grid[..., 0] = rng.uniform(-0.1, 0.35, (2, D, H, W))
    layout = np.array([D, H, W, K, F0, C], np.int64)
    rays = np.zeros((R, 7))
    rays[:, :2] = rng.uniform(-0.9, 0.9, (R, 2))
    rays[:, 2] = -2.0
    rays[:, 3:5] = rng.uniform(-0.15, 0.15, (R, 2))
    rays[:, 5] = 1.0
    rays[:3, 0] = 2.5  # these miss the grid
    rays[:3, 3] = 0.0
    rays[:, 6] = np.linalg.norm(rays[:, 3:6], axis=1) * 3.0  # |d_world|: quadrature rays terminate too
    lengths = np.sort(rng.uniform(0.0, 4.0, (R, P)), axis=1)
    cast = [a.astype(dtype) for a in (grid.ravel(), rays, lengths)]
    return cast[0], layout, np.arange(R) % 2, cast[1], cast[2], C


def _forward(kernel, case, mode, t_min, keep, **kw):
    grid, layout, ray_vol, rays, lengths, C = case
    R, P = lengths.shape
    dt = grid.dtype
    f, o, z, used = np.zeros((R, C), dt), np.zeros(R, dt), np.zeros(R, dt), np.zeros(R, np.int64)
    samples = np.full((R, P, 1 + C), np.nan, dt) if keep else np.zeros((0, 1, 1 + C), dt)
    kernel(grid, layout, ray_vol, rays, lengths, mode, 1e-3, t_min, True, False, f, o, z, used, samples, **kw)
    return f, o, z, used, samples


def _upstream(case, f, o, z):
    """Random upstream gradients and the per-ray sums the backward takes."""
    rng = np.random.default_rng(1)
    dt = f.dtype
    R, C = f.shape
    G, g_o, g_z = rng.normal(size=(R, C)).astype(dt), rng.normal(size=R).astype(dt), rng.normal(size=R).astype(dt)
    return (f * G).sum(1) + z * g_z, 1 - o, G, g_o, g_z


def _backward_fast(case, mode, up, used, ray_grad, samples):
    grid, layout, ray_vol, rays, lengths, _ = case
    R = rays.shape[0]
    # one task, rays in order: the core's order of summation into the grid gradient
    buffers, grad_rays = np.zeros((1, grid.size), grid.dtype), np.zeros((R, 7), grid.dtype)
    order = np.arange(R)
    volume_cpu.march_volume_backward_cpu(
        grid, layout, ray_vol, rays, lengths, mode, 1e-3, True, False, *up, used, ray_grad, samples, buffers,
        grad_rays, order,
    )  # fmt: skip
    return buffers.sum(0), grad_rays


def _backward_core(case, mode, up, used, ray_grad, samples):
    grid, layout, ray_vol, rays, lengths, _ = case
    buf, grad_rays = np.zeros(grid.size, grid.dtype), np.zeros((rays.shape[0], 7), grid.dtype)
    _core_backward(
        grid, layout, ray_vol, rays, lengths, mode, 1e-3, True, False, *up, used, ray_grad, samples, buf, grad_rays
    )
    return buf, grad_rays


def _tolerance(layout_name, dtype, mode):
    """0 (bit for bit) where the fast path is the core's arithmetic; otherwise relative to the
    largest value compared:
    - density + RGB, float64: ``value4`` sums the 8 corners one by one where the core's ``blend``
      factors the sum axis by axis, and quadrature's ``exp_neg`` is within 2.5 ulp of libm's exp:
      a few ulps, accumulated over a ray's samples;
    - density + RGB, float32: ``value4`` computes in float32 (like ``grid_sample``), the core in
      float64 rounded to float32 when stored: a few float32 ulps, accumulated likewise."""
    if layout_name != "rgb":
        return 0.0
    return 1e-13 if dtype == np.float64 else 2e-6


def _assert_close(fast, core, tol, what):
    fast, core = np.asarray(fast, np.float64), np.asarray(core, np.float64)
    if tol == 0.0:
        assert np.array_equal(fast, core, equal_nan=True), f"{what}: not bit for bit"
        return
    scale = max(np.abs(np.nan_to_num(core)).max(initial=0.0), 1e-30)  # NaN: samples not marched
    np.testing.assert_allclose(fast, core, rtol=0, atol=tol * scale, err_msg=what)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout_name", list(LAYOUTS))
@pytest.mark.parametrize("mode", [volume_math.EA, volume_math.QUADRATURE])
@pytest.mark.parametrize("t_min", [0.0, 0.5])
@pytest.mark.parametrize("keep", [False, True])
def test_fast_paths_equal_the_core(dtype, layout_name, mode, t_min, keep):
    """Forward (features, opacity, depth, samples used, kept samples), then the backward with and
    without ray gradients, from the same upstream gradients and kept samples."""
    case = _case(layout_name, dtype)
    R = case[3].shape[0]
    order = np.random.default_rng(4).permutation(R)
    fast = _forward(volume_cpu.march_volume_cpu, case, mode, t_min, keep, order=order, n_tasks=2)
    core = _forward(_core_forward, case, mode, t_min, keep)
    tol = _tolerance(layout_name, dtype, mode)
    assert fast[1][3:].min() > 0.05 and not fast[1][:3].any()  # rays that hit, and 3 that miss
    if t_min:
        assert fast[3].min() < case[4].shape[1]  # early termination happened
    assert np.array_equal(fast[3], core[3])  # samples used
    if keep:  # only the samples marched are kept (the fast paths also zero those after the grid)
        for samples in (fast[4], core[4]):
            for r in range(R):
                samples[r, fast[3][r] :] = np.nan
    for name, a, b in zip(("features", "opacity", "depth", "samples"), fast[:3] + fast[4:], core[:3] + core[4:]):
        _assert_close(a, b, tol, name)
    up = _upstream(case, *fast[:3])
    for ray_grad in (False, True):
        # both read the fast forward's kept samples; with ray gradients, the grid
        got = _backward_fast(case, mode, up, fast[3], ray_grad, fast[4])
        want = _backward_core(case, mode, up, fast[3], ray_grad, fast[4])
        btol = 0.0 if ray_grad else tol  # with ray gradients, density + RGB falls back to the core
        _assert_close(got[0], want[0], btol, f"grid gradient (ray_grad={ray_grad})")
        _assert_close(got[1], want[1], btol, f"ray gradient (ray_grad={ray_grad})")
        assert ray_grad or not got[1].any()  # no ray gradient unless asked for
        assert np.abs(want[0]).max() > 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_mse_equals_the_core_forward_and_backward(dtype):
    """``march_volume_mse_cpu`` (render, loss and gradient in one pass) against the core's quadrature
    forward and backward with the loss's upstream gradients G = scale_f (F - F*), g_O = scale_o
    (O - O*), g_Z = 0, on density + RGB grids (``pack_rgb_work``'s 8-channel layout)."""
    grid, layout, ray_vol, rays, lengths, C = _case("rgb", dtype)
    R = rays.shape[0]
    rng = np.random.default_rng(7)
    target_f, target_o = rng.uniform(0, 1, (R, 3)), rng.uniform(0, 1, R)
    scale_f, scale_o = 2.0 / (3 * R), 2.0 / R
    V, (D, H, W) = 2, layout[:3]
    density = grid.reshape(V, D, H, W, 4)[..., 0].copy().ravel()
    rgb = np.ascontiguousarray(np.moveaxis(grid.reshape(V, D, H, W, 4)[..., 1:], -1, 1)).ravel()
    work = np.zeros((2, V * D * H * W * 8), dtype)
    volume_cpu.pack_rgb_work(density, rgb, work, V)
    dt = dtype
    f, o, z, used, err = np.zeros((R, 3), dt), np.zeros(R, dt), np.zeros(R, dt), np.zeros(R, np.int64), np.zeros((R, 2))
    order = np.random.default_rng(4).permutation(R)
    volume_cpu.march_volume_mse_cpu(
        work, np.array([D, H, W, 8, 1, 3]), ray_vol, rays, lengths, 1e-3, True, False, target_f, target_o, scale_f,
        scale_o, f, o, z, used, err, order,
    )  # fmt: skip
    cf, co, cz, cused, _ = _forward(_core_forward, (grid, layout, ray_vol, rays, lengths, C), 1, 0.0, False)
    tol = _tolerance("rgb", dtype, 1)
    for name, a, b in (("features", f, cf), ("opacity", o, co), ("depth", z, cz)):
        _assert_close(a, b, tol, name)
    assert np.array_equal(used, cused)
    d_f, d_o = f.astype(np.float64) - target_f, o.astype(np.float64) - target_o
    # the kernel's squared errors: the same sums, contracted into fused multiply-adds (1 ulp)
    np.testing.assert_allclose(err, np.stack([(d_f**2).sum(1), d_o**2], 1), rtol=1e-15, atol=0)
    G, g_o = (scale_f * d_f).astype(dt), (scale_o * d_o).astype(dt)
    up = ((f * G).sum(1), 1 - o, G, g_o, np.zeros(R, dt))
    buf, _ = _backward_core((grid, layout, ray_vol, rays, lengths, C), 1, up, used, False, np.zeros((0, 1, 4), dt))
    got = work.reshape(2, V * D * H * W, 8)[..., 4:].sum(0).ravel()
    _assert_close(got, buf, tol, "grid gradient")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sampler_is_the_core(dtype):
    """The standalone sampler has no fast path: ``volume_cpu`` runs the core's, bit for bit."""
    rng = np.random.default_rng(3)
    flat = rng.normal(size=2 * 3 * 4 * 5 * 2).astype(dtype)
    layout = np.array([3, 4, 5, 2, 0, 2], np.int64)
    pts = rng.uniform(-1.3, 1.3, (2, 9, 3)).astype(dtype)
    out = np.zeros((2, 9, 2), dtype)
    volume_cpu.sample_volume_cpu(flat, layout, pts, False, out)
    want = np.zeros_like(out)
    for n in range(2):
        for m in range(9):
            _core.sample_point(flat, layout, n, pts[n, m, 0], pts[n, m, 1], pts[n, m, 2], False, want[n], m)
    assert np.array_equal(out, want)
