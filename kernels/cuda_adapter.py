"""Everything CUDA-specific in one thin layer: device arrays, kernels' thread mapping, launches.

NVIDIA's numba CUDA target is in maintenance mode; if it has to be replaced, only this module
changes. The per-pixel math comes from the same plain-Python sources as the CPU kernels.

Under the simulator (``NUMBA_ENABLE_CUDASIM=1``) kernels take NumPy arrays, so tests run the CUDA
path on CPU tensors; ``cuda.is_available()`` is True there, which is why dispatch is on the
tensor's device (``p3dlab.ops``), never on availability.
"""

from __future__ import annotations

import numba
from numba import cuda

from p3dlab.kernels import mesh_raster_math as rm

_dev = rm.build(lambda fn: cuda.jit(device=True)(fn))
rasterize_pixel = _dev.rasterize_pixel
slot_backward = _dev.slot_backward
pixel_ndc = _dev.pixel_ndc
THREADS = 128


def simulator_enabled() -> bool:
    return bool(numba.config.ENABLE_CUDASIM)


def as_array(x):
    """A kernel argument from a torch tensor: a CUDA device array view (zero copy) on a GPU, the
    NumPy view of a CPU tensor under the simulator. NumPy arrays pass through."""
    if hasattr(x, "__cuda_array_interface__") and not simulator_enabled():
        return cuda.as_cuda_array(x)
    if hasattr(x, "numpy"):
        return x.detach().numpy()
    return x


def _blocks(n: int) -> int:
    return max((n + THREADS - 1) // THREADS, 1)


@cuda.jit
def _rasterize_meshes_kernel(
    fv, sibling, face_first, face_count, H, W, K, blur, persp, clip, cull, p2f, zbuf, bary, dists
):
    t = cuda.grid(1)
    N = face_first.shape[0]
    if t >= N * H * W:
        return
    n = t // (H * W)
    i = (t // W) % H
    j = t % W
    rasterize_pixel(
        fv, sibling, face_first[n], face_count[n], n, i, j, H, W, K, blur, persp, clip, cull, p2f, zbuf, bary, dists
    )


def rasterize_meshes_cuda(
    fv, sibling, face_first, face_count, H, W, K, blur, persp, clip, cull, p2f, zbuf, bary, dists
):
    """Launch one thread per (mesh, pixel); arguments as for ``mesh_raster_cpu.rasterize_meshes_cpu``."""
    args = [as_array(a) for a in (fv, sibling, face_first, face_count)]
    outs = [as_array(a) for a in (p2f, zbuf, bary, dists)]
    n = face_first.shape[0] * H * W
    _rasterize_meshes_kernel[_blocks(n), THREADS](*args, H, W, K, blur, persp, clip, cull, *outs)


@cuda.jit
def _rasterize_meshes_backward_kernel(fv, p2f, grad_zbuf, grad_bary, grad_dists, H, W, blur, persp, clip, grad_fv):
    t = cuda.grid(1)
    N, _, _, K = p2f.shape
    if t >= N * H * W * K:
        return
    k = t % K
    j = (t // K) % W
    i = (t // (K * W)) % H
    n = t // (K * W * H)
    f = p2f[n, i, j, k]
    if f < 0:
        return
    s = float(min(H, W))
    gz = grad_zbuf[n, i, j, k] if grad_zbuf.size > 0 else 0.0
    gb0 = grad_bary[n, i, j, k, 0] if grad_bary.size > 0 else 0.0
    gb1 = grad_bary[n, i, j, k, 1] if grad_bary.size > 0 else 0.0
    gb2 = grad_bary[n, i, j, k, 2] if grad_bary.size > 0 else 0.0
    gd = grad_dists[n, i, j, k] if grad_dists.size > 0 else 0.0
    g = slot_backward(fv, f, pixel_ndc(j, W, s), pixel_ndc(i, H, s), blur, persp, clip, gz, gb0, gb1, gb2, gd)
    for v in range(3):
        for c in range(3):
            cuda.atomic.add(grad_fv, (f, v, c), g[3 * v + c])


def rasterize_meshes_backward_cuda(fv, p2f, grad_zbuf, grad_bary, grad_dists, H, W, blur, persp, clip, grad_fv):
    """One thread per fragment slot, atomically adding into ``grad_fv`` (zeroed by the caller)."""
    args = [as_array(a) for a in (fv, p2f, grad_zbuf, grad_bary, grad_dists)]
    n = p2f.shape[0] * p2f.shape[1] * p2f.shape[2] * p2f.shape[3]
    _rasterize_meshes_backward_kernel[_blocks(n), THREADS](*args, H, W, blur, persp, clip, as_array(grad_fv))


# ----------------------------------------------------------------------------- points
from p3dlab.kernels import point_raster as _pr  # noqa: E402

_pdev = _pr.build(lambda fn: cuda.jit(device=True)(fn))
rasterize_points_pixel = _pdev.rasterize_pixel


@cuda.jit
def _rasterize_points_kernel(pts, radius, first_idx, counts, H, W, K, idx, zbuf, dists):
    t = cuda.grid(1)
    N = first_idx.shape[0]
    if t >= N * H * W:
        return
    n = t // (H * W)
    rasterize_points_pixel(pts, radius, first_idx[n], counts[n], n, (t // W) % H, t % W, H, W, K, idx, zbuf, dists)


def rasterize_points_cuda(pts, radius, first_idx, counts, H, W, K, idx, zbuf, dists):
    """One thread per (cloud, pixel); arguments as for ``point_raster.rasterize_points_cpu``."""
    args = [as_array(a) for a in (pts, radius, first_idx, counts)]
    outs = [as_array(a) for a in (idx, zbuf, dists)]
    n = first_idx.shape[0] * H * W
    _rasterize_points_kernel[_blocks(n), THREADS](*args, H, W, K, *outs)


@cuda.jit
def _rasterize_points_backward_kernel(pts, idx, grad_zbuf, grad_dists, H, W, grad_pts):
    t = cuda.grid(1)
    N, _, _, K = idx.shape
    if t >= N * H * W * K:
        return
    k = t % K
    j = (t // K) % W
    i = (t // (K * W)) % H
    n = t // (K * W * H)
    p = idx[n, i, j, k]
    if p < 0:
        return
    s = float(min(H, W))
    gd = grad_dists[n, i, j, k] if grad_dists.size > 0 else 0.0
    cuda.atomic.add(grad_pts, (p, 0), 2.0 * (pts[p, 0] - pixel_ndc(j, W, s)) * gd)
    cuda.atomic.add(grad_pts, (p, 1), 2.0 * (pts[p, 1] - pixel_ndc(i, H, s)) * gd)
    if grad_zbuf.size > 0:
        cuda.atomic.add(grad_pts, (p, 2), grad_zbuf[n, i, j, k])


def rasterize_points_backward_cuda(pts, idx, grad_zbuf, grad_dists, H, W, grad_pts):
    args = [as_array(a) for a in (pts, idx, grad_zbuf, grad_dists)]
    n = idx.shape[0] * idx.shape[1] * idx.shape[2] * idx.shape[3]
    _rasterize_points_backward_kernel[_blocks(n), THREADS](*args, H, W, as_array(grad_pts))


# ----------------------------------------------------------------------------- volumes
from p3dlab.kernels import volume_math as _vm  # noqa: E402


@cuda.jit(device=True)
def _atomic_add(buf, index, v):
    cuda.atomic.add(buf, index, v)


_vdev = _vm.build(lambda fn: cuda.jit(device=True)(fn), _atomic_add, keep_samples=False)
sample_point = _vdev.sample_point
sample_point_backward = _vdev.sample_point_backward
march_ray = _vdev.march_ray
march_ray_backward = _vdev.march_ray_backward


@cuda.jit(device=True)
def _volume_of(n, flat, shape):
    return 0 if flat.size == shape[0] * shape[1] * shape[2] * shape[3] else n


@cuda.jit
def _sample_volume_kernel(flat, shape, points, align, out):
    t = cuda.grid(1)
    N, M, _ = points.shape
    if t >= N * M:
        return
    n = t // M
    m = t % M
    sample_point(
        flat, shape, _volume_of(n, flat, shape), points[n, m, 0], points[n, m, 1], points[n, m, 2], align, out[n], m
    )


def sample_volume_cuda(flat, shape, points, align, out):
    """One thread per point; arguments as for ``volume_cpu.sample_volume_cpu``."""
    n = points.shape[0] * points.shape[1]
    _sample_volume_kernel[_blocks(n), THREADS](as_array(flat), as_array(shape), as_array(points), align, as_array(out))


@cuda.jit
def _sample_volume_backward_kernel(flat, shape, points, align, grad_out, buf, grad_points):
    t = cuda.grid(1)
    N, M, _ = points.shape
    if t >= N * M:
        return
    n = t // M
    m = t % M
    b = _volume_of(n, flat, shape)
    gx, gy, gz = sample_point_backward(
        flat, shape, b, points[n, m, 0], points[n, m, 1], points[n, m, 2], align, grad_out[n], m, buf
    )
    grad_points[n, m, 0] = gx
    grad_points[n, m, 1] = gy
    grad_points[n, m, 2] = gz


def sample_volume_backward_cuda(flat, shape, points, align, grad_out, buffers, grad_points):
    """Atomic scatter into ``buffers[0]`` (zeroed by the caller); arguments as for
    ``volume_cpu.sample_volume_backward_cpu``."""
    n = points.shape[0] * points.shape[1]
    args = [as_array(a) for a in (flat, shape, points)]
    _sample_volume_backward_kernel[_blocks(n), THREADS](
        *args, align, as_array(grad_out), as_array(buffers[0]), as_array(grad_points)
    )


@cuda.jit
def _march_volume_kernel(
    grid, layout, ray_vol, rays, lengths, mode, eps, t_min, align, last_inf, out_f, out_o, out_z, n_used, samples
):
    r = cuda.grid(1)
    if r >= rays.shape[0]:
        return
    # no per-thread scratch (att: 1-element placeholders): this build marches sample by sample (built
    # without keep_samples)
    att = cuda.local.array(1, numba.float64)
    march_ray(
        grid, layout, ray_vol[r], rays, lengths, r, mode, eps, t_min, align, last_inf, out_f, out_o, out_z, n_used,
        samples, samples, att, att, att,
    )  # fmt: skip


def march_volume_cuda(
    grid, layout, ray_vol, rays, lengths, mode, eps, t_min, align, last_inf, out_f, out_o, out_z, n_used, samples,
    order=None, n_tasks=1,
):  # fmt: skip
    """One thread per ray; arguments as for ``volume_cpu.march_volume_cpu`` (``order`` and ``n_tasks``
    are unused)."""
    arrays = [as_array(a) for a in (grid, layout, ray_vol, rays, lengths)]
    outs = [as_array(a) for a in (out_f, out_o, out_z, n_used, samples)]
    _march_volume_kernel[_blocks(rays.shape[0]), THREADS](*arrays, mode, eps, t_min, align, last_inf, *outs)


@cuda.jit
def _march_volume_backward_kernel(
    grid, layout, ray_vol, rays, lengths, mode, eps, align, last_inf, S_total, T_P, G_f, g_o, g_z, n_used,
    ray_grad, samples, buf, grad_rays,
):  # fmt: skip
    r = cuda.grid(1)
    if r >= rays.shape[0]:
        return
    # EA scan only: T and Π(1 - a) per sample; the reverse pass reads the forward's samples or
    # samples again (no per-sample record of cells, which would take ~90 KB of local memory per thread)
    scratch = cuda.local.array((_vm.MAX_CUDA_SAMPLES, 2), numba.float64)
    cells = cuda.local.array((1, 7), numba.int64)
    att = cuda.local.array(1, numba.float64)  # unused: attenuations and cells are computed sample by sample
    march_ray_backward(
        grid, layout, ray_vol[r], rays, lengths, r, mode, eps, align, last_inf, S_total, T_P, G_f, g_o, g_z,
        n_used, ray_grad, samples, scratch, scratch, cells, att, buf, grad_rays, att, att,
    )  # fmt: skip


def march_volume_backward_cuda(
    grid, layout, ray_vol, rays, lengths, mode, eps, align, last_inf, S_total, T_P, G_f, g_o, g_z, n_used,
    ray_grad, samples, buffers, grad_rays, order=None,
):  # fmt: skip
    """One thread per ray, atomic scatter into ``buffers[0]`` (zeroed by the caller); EA needs
    P <= MAX_CUDA_SAMPLES. ``order`` is unused (``volume_cpu.march_volume_backward_cpu`` takes it)."""
    if mode == _vm.EA and lengths.shape[1] > _vm.MAX_CUDA_SAMPLES:
        raise ValueError(f"CUDA EA backward supports at most {_vm.MAX_CUDA_SAMPLES} samples per ray")
    arrays = [as_array(a) for a in (grid, layout, ray_vol, rays, lengths)]
    grads = [as_array(a) for a in (S_total, T_P, G_f, g_o, g_z, n_used)]
    _march_volume_backward_kernel[_blocks(rays.shape[0]), THREADS](
        *arrays,
        mode,
        eps,
        align,
        last_inf,
        *grads,
        ray_grad,
        as_array(samples),
        as_array(buffers[0]),
        as_array(grad_rays),
    )


# ----------------------------------------------------------------------------- stratified jitter
from p3dlab.kernels import stratified as _st  # noqa: E402

_jitter_ray = _st.build(lambda fn: cuda.jit(device=True)(fn)).jitter_ray


@cuda.jit
def _stratified_jitter_kernel(lengths, seed, out):
    r = cuda.grid(1)
    if r < lengths.shape[0]:
        _jitter_ray(lengths, seed, r, out)


def stratified_jitter_cuda(lengths, seed, out):
    """One thread per ray; arguments as for ``stratified.stratified_jitter_cpu``."""
    _stratified_jitter_kernel[_blocks(lengths.shape[0]), THREADS](as_array(lengths), seed, as_array(out))
