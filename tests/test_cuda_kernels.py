"""The CUDA kernels must equal the CPU kernels, run two ways: under Numba's CUDA simulator
(``make cudasim``: the real launchers of ``cuda_adapter``) and serially, with their per-thread
bodies compiled by ``numba.njit`` (``gpu_serial``: no CUDA package needed)."""

import numpy as np
import pytest
from raster_scenes import random_projected_meshes

from benchmarks.gpu_check import rays_through_the_grid


def _raster_outputs(N, H, W, K, dtype):
    return [
        np.full((N, H, W, K), -1, np.int64),
        np.full((N, H, W, K), -1, dtype),
        np.full((N, H, W, K, 3), -1, dtype),
        np.full((N, H, W, K), -1, dtype),
    ]


@pytest.mark.parametrize(
    "K, blur, persp, clip, cull",
    [(1, 0.0, False, False, False), (3, 0.05, True, True, False), (2, 0.02, True, False, True)],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mesh_raster_cuda_equals_cpu(K, blur, persp, clip, cull, dtype, gpu):
    rasterize_meshes_cuda = gpu.rasterize_meshes_cuda
    from p3dlab.kernels.mesh_raster_cpu import rasterize_meshes_cpu

    meshes = random_projected_meshes(n_meshes=2, n_faces=(5, 4), seed=11)
    fv = meshes.verts_packed()[meshes.faces_packed()].numpy().astype(dtype)
    first = meshes.mesh_to_faces_packed_first_idx().numpy()
    count = meshes.num_faces_per_mesh().numpy()
    sib = np.full(fv.shape[0], -1, np.int64)
    sib[0], sib[1] = 1, 0  # exercise the z-clip sibling rule too
    H, W = 6, 7
    cpu = _raster_outputs(2, H, W, K, dtype)
    on_gpu = _raster_outputs(2, H, W, K, dtype)
    rasterize_meshes_cpu(fv, sib, first, count, H, W, K, blur, persp, clip, cull, *cpu)
    rasterize_meshes_cuda(fv, sib, first, count, H, W, K, blur, persp, clip, cull, *on_gpu)
    assert (cpu[0] >= 0).sum() > 5
    assert np.array_equal(cpu[0], on_gpu[0])
    # float64 is bit-identical; float32 differs by rounding order (the simulator evaluates in
    # NumPy scalars, a GPU fuses multiply-adds), so allow a few ulps
    tol = 0.0 if dtype == np.float64 else 1e-5
    for a, b in zip(cpu[1:], on_gpu[1:]):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("persp, clip, blur", [(False, False, 0.0), (True, True, 0.05)])
def test_mesh_raster_backward_cuda_equals_cpu(persp, clip, blur, gpu):
    rasterize_meshes_backward_cuda = gpu.rasterize_meshes_backward_cuda
    from p3dlab.kernels.mesh_raster_cpu import rasterize_meshes_backward_cpu, rasterize_meshes_cpu

    meshes = random_projected_meshes(n_meshes=1, n_faces=(4,), seed=4)
    fv = meshes.verts_packed()[meshes.faces_packed()].numpy()
    H, W, K = 6, 5, 2
    out = _raster_outputs(1, H, W, K, np.float64)
    sib = np.full(fv.shape[0], -1, np.int64)
    rasterize_meshes_cpu(fv, sib, np.array([0]), np.array([4]), H, W, K, blur, persp, clip, False, *out)
    rng = np.random.default_rng(0)
    gz, gb, gd = rng.normal(size=out[1].shape), rng.normal(size=out[2].shape), rng.normal(size=out[3].shape)
    cpu = np.zeros_like(fv)
    on_gpu = np.zeros_like(fv)
    rasterize_meshes_backward_cpu(fv, out[0], gz, gb, gd, H, W, blur, persp, clip, cpu, 2)
    rasterize_meshes_backward_cuda(fv, out[0], gz, gb, gd, H, W, blur, persp, clip, on_gpu)
    assert np.abs(cpu).sum() > 0
    np.testing.assert_allclose(cpu, on_gpu, rtol=1e-12, atol=1e-12)


def test_point_raster_cuda_equals_cpu(gpu):
    import torch

    rasterize_points_backward_cuda = gpu.rasterize_points_backward_cuda
    rasterize_points_cuda = gpu.rasterize_points_cuda
    from p3dlab.kernels.point_raster import rasterize_points_backward_cpu, rasterize_points_cpu

    g = torch.Generator().manual_seed(0)
    pts = torch.cat(
        [
            torch.rand(12, 2, generator=g, dtype=torch.float64) * 2 - 1,
            torch.rand(12, 1, generator=g, dtype=torch.float64) + 0.5,
        ],
        1,
    ).numpy()
    radius = np.full(12, 0.4)
    H, W, K = 5, 6, 3
    outs = []
    for fn in (rasterize_points_cpu, rasterize_points_cuda):
        o = [np.full((1, H, W, K), -1, np.int32), np.full((1, H, W, K), -1.0), np.full((1, H, W, K), -1.0)]
        fn(pts, radius, np.array([0]), np.array([12]), H, W, K, *o)
        outs.append(o)
    for a, b in zip(*outs):
        assert np.array_equal(a, b)
    gz, gd = np.random.default_rng(1).normal(size=(2, 1, H, W, K))
    grads = [np.zeros_like(pts), np.zeros_like(pts)]
    rasterize_points_backward_cpu(pts, outs[0][0], gz, gd, H, W, grads[0], 2)
    rasterize_points_backward_cuda(pts, outs[0][0], gz, gd, H, W, grads[1])
    assert np.abs(grads[0]).sum() > 0
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12, atol=1e-12)


def _volume_case(seed=0, P=6, R=5, C=3):
    """Two 3x4x5 volumes (density + C features) as a flat channels-last grid, and R rays."""
    rng = np.random.default_rng(seed)
    grid = np.concatenate([rng.uniform(0.05, 0.9, (2, 3, 4, 5, 1)), rng.uniform(0, 1, (2, 3, 4, 5, C))], -1).ravel()
    layout = np.array([3, 4, 5, 1 + C, 1, C], np.int64)
    rays, lengths = rays_through_the_grid(rng, R, P)
    ray_vol = np.arange(R) % 2
    return grid, layout, ray_vol, rays, lengths


@pytest.mark.parametrize(
    "mode, t_min, keep, C, P",
    [
        (0, 0.0, False, 3, 6),
        (0, 0.3, False, 3, 6),
        (0, 0.3, True, 3, 6),
        (1, 0.0, False, 3, 6),
        (1, 0.9, True, 3, 6),
        (0, 0.3, True, 2, 6),
        (1, 0.0, False, 2, 6),
        (1, 0.0, True, 3, 37),
        (1, 0.5, True, 3, 37),
    ],
)
def test_volume_march_cuda_equals_cpu_forward_and_backward(mode, t_min, keep, C, P, gpu):
    """``keep``: the forward keeps its samples and the backward reads them (no ray gradients);
    otherwise the backward reads the grid again and also returns ray gradients. C = 3 features take
    the 4-channel path (``value4``/``splat4``), C = 2 the general one. P = 37 samples span three of
    the CPU's chunks (``march_rgb_phased``: vectorised attenuations, against CUDA's libm exp). The
    CPU marches the rays in a shuffled order (``order``), which must not change any ray's result."""
    march_volume_backward_cuda = gpu.march_volume_backward_cuda
    march_volume_cuda = gpu.march_volume_cuda
    from p3dlab.kernels.volume_cpu import march_volume_backward_cpu, march_volume_cpu

    grid, layout, ray_vol, rays, lengths = _volume_case(C=C, P=P)
    R = rays.shape[0]
    order = np.random.default_rng(5).permutation(R)
    outs = {}
    kernels = {
        "cpu": (march_volume_cpu, march_volume_backward_cpu),
        "gpu": (march_volume_cuda, march_volume_backward_cuda),
    }
    for name, (fwd, bwd) in kernels.items():
        f, o, z, used = np.zeros((R, C)), np.zeros(R), np.zeros(R), np.zeros(R, np.int64)
        samples = np.full((R, lengths.shape[1], 1 + C), np.nan) if keep else np.zeros((0, 1, 1 + C))
        fwd(grid, layout, ray_vol, rays, lengths, mode, 1e-3, t_min, True, False, f, o, z, used, samples, order, 2)
        rng = np.random.default_rng(1)
        G, g_o, g_z = rng.normal(size=(R, C)), rng.normal(size=R), rng.normal(size=R)
        S = (f * G).sum(1) + z * g_z
        buf, grays = np.zeros((1, grid.size)), np.zeros((R, 7))
        args = (grid, layout, ray_vol, rays, lengths, mode, 1e-3, True, False, S, 1 - o, G, g_o, g_z, used)
        bwd(*args, not keep, samples, buf, grays, order)
        outs[name] = (f, o, z, used, buf, grays)
        if keep:  # the backward read no sample the forward did not write
            assert all(np.isfinite(samples[r, : used[r]]).all() for r in range(R))
            no_samples = np.zeros((0, 1, 1 + C))
            buf_again, grays_again = np.zeros((1, grid.size)), np.zeros((R, 7))
            bwd(*args, False, no_samples, buf_again, grays_again, order)  # the same backward reading the grid
            np.testing.assert_allclose(buf, buf_again, rtol=1e-12, atol=1e-12)
            assert not grays[:, :6].any()  # no origin/direction gradients without ray_grad
    assert outs["cpu"][1].min() > 0.05
    if t_min:
        assert outs["cpu"][3].min() < lengths.shape[1]  # early termination happened
    for a, b in zip(outs["cpu"], outs["gpu"]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_volume_sampler_cuda_equals_cpu(gpu):
    sample_volume_backward_cuda = gpu.sample_volume_backward_cuda
    sample_volume_cuda = gpu.sample_volume_cuda
    from p3dlab.kernels.volume_cpu import sample_volume_backward_cpu, sample_volume_cpu

    rng = np.random.default_rng(3)
    flat = rng.normal(size=2 * 3 * 4 * 5 * 2)
    shape = np.array([3, 4, 5, 2, 0, 2], np.int64)  # channels-last (2, 3, 4, 5, 2)
    pts = rng.uniform(-1.3, 1.3, (2, 9, 3))
    g = rng.normal(size=(2, 9, 2))
    res = []
    for fwd, bwd in (
        (sample_volume_cpu, sample_volume_backward_cpu),
        (sample_volume_cuda, sample_volume_backward_cuda),
    ):
        out = np.zeros((2, 9, 2))
        fwd(flat, shape, pts, False, out)
        buf, gp = np.zeros((1, flat.size)), np.zeros_like(pts)
        bwd(flat, shape, pts, False, g, buf, gp)
        res.append((out, buf, gp))
    assert np.abs(res[0][0]).sum() > 0
    for a, b in zip(*res):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_stratified_jitter_cuda_equals_cpu_bit_for_bit(gpu):
    stratified_jitter_cuda = gpu.stratified_jitter_cuda
    from p3dlab.kernels.stratified import stratified_jitter_cpu

    lengths = np.linspace(0.5, 3.0, 5)[:, None] + 0.1 * np.arange(6)[None]
    outs = []
    for fn in (stratified_jitter_cpu, stratified_jitter_cuda):
        out = np.full_like(lengths, np.nan)
        fn(lengths, 4_000_000_000, out)
        outs.append(out)
    assert np.isfinite(outs[0]).all() and not np.array_equal(outs[0], lengths)
    np.testing.assert_array_equal(outs[0], outs[1])
