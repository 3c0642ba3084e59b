"""The CUDA kernels run serially on the CPU, with no CUDA package: the per-thread bodies of
``p3dlab.kernels.gpu_threads`` compiled by ``numba.njit``, and a loop over the thread numbers
standing in for the grid. Same names and arguments as the launchers of ``cuda_adapter``, so the
CUDA-equals-CPU tests run on the simulator and on this alike."""

import numba
import numpy as np

from p3dlab.kernels import gaussian_project as gp
from p3dlab.kernels import gaussian_splat as gs
from p3dlab.kernels import gpu_threads
from p3dlab.kernels import volume_math as vm

_jit = numba.njit(cache=True)
_thread = gpu_threads.build(_jit, _jit(gpu_threads._add_serial))
_gaussian = gs.build(_jit, _jit(gs._add_serial))
_projection = gp.build(_jit)


def _launch(body, n_threads, *args):
    for t in range(n_threads):
        body(t, *args)


def rasterize_meshes_cuda(
    fv, sibling, face_first, face_count, H, W, K, blur, persp, clip, cull, p2f, zbuf, bary, dists
):
    n = face_first.shape[0] * H * W
    _launch(
        _thread.rasterize_meshes, n, fv, sibling, face_first, face_count, H, W, K, blur, persp, clip, cull,
        p2f, zbuf, bary, dists,
    )  # fmt: skip


def rasterize_meshes_backward_cuda(fv, p2f, grad_zbuf, grad_bary, grad_dists, H, W, blur, persp, clip, grad_fv):
    _launch(
        _thread.rasterize_meshes_backward, p2f.size, fv, p2f, grad_zbuf, grad_bary, grad_dists, H, W, blur, persp,
        clip, grad_fv,
    )  # fmt: skip


def rasterize_points_cuda(pts, radius, first_idx, counts, H, W, K, idx, zbuf, dists):
    n = first_idx.shape[0] * H * W
    _launch(_thread.rasterize_points, n, pts, radius, first_idx, counts, H, W, K, idx, zbuf, dists)


def rasterize_points_backward_cuda(pts, idx, grad_zbuf, grad_dists, H, W, grad_pts):
    _launch(_thread.rasterize_points_backward, idx.size, pts, idx, grad_zbuf, grad_dists, H, W, grad_pts)


def sample_volume_cuda(flat, shape, points, align, out):
    _launch(_thread.sample_volume, points.shape[0] * points.shape[1], flat, shape, points, align, out)


def sample_volume_backward_cuda(flat, shape, points, align, grad_out, buffers, grad_points):
    n = points.shape[0] * points.shape[1]
    _launch(_thread.sample_volume_backward, n, flat, shape, points, align, grad_out, buffers[0], grad_points)


def march_volume_cuda(
    grid, layout, ray_vol, rays, lengths, mode, eps, t_min, align, last_inf, out_f, out_o, out_z, n_used, samples,
    order=None, n_tasks=1,
):  # fmt: skip
    for r in range(rays.shape[0]):
        _thread.march_volume(
            r, grid, layout, ray_vol, rays, lengths, mode, eps, t_min, align, last_inf, out_f, out_o, out_z, n_used,
            samples,
        )  # fmt: skip


def march_volume_backward_cuda(
    grid, layout, ray_vol, rays, lengths, mode, eps, align, last_inf, S_total, T_P, G_f, g_o, g_z, n_used,
    ray_grad, samples, buffers, grad_rays, order=None,
):  # fmt: skip
    for r in range(rays.shape[0]):
        scratch = np.empty((vm.MAX_CUDA_SAMPLES, 2))  # each thread's local memory
        _thread.march_volume_backward(
            r, grid, layout, ray_vol, rays, lengths, mode, eps, align, last_inf, S_total, T_P, G_f, g_o, g_z,
            n_used, ray_grad, samples, buffers[0], grad_rays, scratch,
        )  # fmt: skip


def stratified_jitter_cuda(lengths, seed, out):
    _launch(_thread.stratified_jitter, lengths.shape[0], lengths, seed, out)


def _arrays(args):
    """Tensors as their NumPy views, as the adapter's ``as_array`` takes them under the simulator."""
    return [a.detach().numpy() if hasattr(a, "detach") else a for a in args]


def composite_gaussians_cuda(*args):
    args = _arrays(args)
    H, W = args[6], args[7]
    _launch(_gaussian.composite_thread, H * W, *args)


def composite_gaussians_backward_cuda(*args):
    args = _arrays(args)
    H, W = args[6], args[7]
    _launch(_gaussian.composite_backward_thread, H * W, *args)


def _per_gaussian(body, args):
    args = _arrays(args)
    _launch(body, args[0].shape[0] + 3, *args)  # a partly-filled last block: threads past N do nothing


def project_gaussians_cuda(*args):
    _per_gaussian(_projection.project_thread, args)


def project_gaussians_backward_cuda(*args):
    _per_gaussian(_projection.project_backward_thread, args)


def sh_colors_cuda(*args):
    _per_gaussian(_projection.sh_color_thread, args)


def sh_colors_backward_cuda(*args):
    _per_gaussian(_projection.sh_color_backward_thread, args)
