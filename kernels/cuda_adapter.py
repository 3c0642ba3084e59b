"""Everything CUDA-specific in one thin layer: which CUDA target compiles the kernels, device
arrays, launches. The only module of p3dlab that imports a CUDA package (a test checks it).

What each thread computes is plain Python in ``gpu_threads`` (compiled here with
``cuda.jit(device=True)``, and with ``numba.njit`` by the tests), on top of the per-pixel and
per-ray math the CPU kernels share; a kernel below only reads its thread number, allocates
per-thread scratch and calls its body.

The CUDA target, in order of preference (``choose_target``):
- ``numba-cuda``, NVIDIA's CUDA target for Numba (``pip install 'p3dlab[cuda]'``). Installed, it
  takes over ``numba.cuda`` (a path hook it installs), so ``from numba import cuda`` is it;
- ``numba-cuda-mlir``, its successor, when only it is installed (it has no simulator);
- Numba's built-in ``numba.cuda``, deprecated and broken on current drivers: used only for the
  simulator, never on a GPU.

Under the simulator (``NUMBA_ENABLE_CUDASIM=1``) kernels take NumPy arrays, so tests run the CUDA
kernels on CPU data; ``cuda.is_available()`` is True there, which is why dispatch is on the
tensor's device (``p3dlab.ops.dispatch``), never on availability.
"""

from __future__ import annotations

import importlib.util

import numba

from p3dlab.kernels import gaussian_splat as _gs
from p3dlab.kernels import gpu_threads
from p3dlab.kernels import volume_math as _vm

INSTALL_HINT = (
    "install NVIDIA's CUDA target for Numba with pip install 'p3dlab[cuda]' (CUDA 13 drivers, r580 or "
    "newer) or 'p3dlab[cuda12]' (CUDA 12 drivers)"
)


class CudaUnavailable(ImportError):
    """No CUDA target that can run p3dlab's kernels is installed."""


def simulator_enabled() -> bool:
    return bool(numba.config.ENABLE_CUDASIM)


def choose_target(has_numba_cuda: bool, has_numba_cuda_mlir: bool, simulator: bool) -> str:
    """Which CUDA target to use: "numba-cuda", "numba-cuda-mlir" or "numba-builtin" (simulator
    only). Raises ``CudaUnavailable`` when none of them can run here."""
    if has_numba_cuda:
        return "numba-cuda"
    if simulator:
        return "numba-builtin"  # numba-cuda-mlir has no simulator; numba's own still has one
    if has_numba_cuda_mlir:
        return "numba-cuda-mlir"
    raise CudaUnavailable(f"p3dlab's CUDA kernels need a CUDA target for Numba: {INSTALL_HINT}")


def _import_target():
    name = choose_target(
        importlib.util.find_spec("numba_cuda") is not None,
        importlib.util.find_spec("numba_cuda_mlir") is not None,
        simulator_enabled(),
    )
    if name == "numba-cuda-mlir":
        from numba_cuda_mlir import cuda as target
    else:
        from numba import cuda as target  # numba-cuda when installed (its path hook), else numba's own
    return name, target


TARGET, cuda = _import_target()


def require_gpu():
    """Raise ``CudaUnavailable`` unless CUDA kernels can run on this machine now."""
    if simulator_enabled():
        return
    try:
        usable = cuda.is_available()
    except Exception as error:  # a broken driver or toolkit raises instead of answering
        raise CudaUnavailable(
            f"CUDA tensors were given but CUDA does not work here ({error}); {INSTALL_HINT}"
        ) from error
    if not usable:
        raise CudaUnavailable(
            f"CUDA tensors were given but {TARGET} finds no usable GPU (driver or CUDA runtime missing); "
            f"{INSTALL_HINT}, or move the tensors to the CPU with .cpu()"
        )


def as_array(x):
    """A kernel argument from a torch tensor: a CUDA device array view (zero copy) on a GPU, the
    NumPy view of a CPU tensor under the simulator. NumPy arrays pass through."""
    if hasattr(x, "__cuda_array_interface__") and not simulator_enabled():
        return cuda.as_cuda_array(x)
    if hasattr(x, "numpy"):
        return x.detach().numpy()
    return x


THREADS = 128


def _blocks(n: int) -> int:
    return max((n + THREADS - 1) // THREADS, 1)


@cuda.jit(device=True)
def _atomic_add(buffer, index, value):
    cuda.atomic.add(buffer, index, value)


_thread = gpu_threads.build(lambda fn: cuda.jit(device=True)(fn), _atomic_add)


# ----------------------------------------------------------------------------- meshes
@cuda.jit
def _rasterize_meshes_kernel(
    fv, sibling, face_first, face_count, H, W, K, blur, persp, clip, cull, p2f, zbuf, bary, dists
):
    _thread.rasterize_meshes(
        cuda.grid(1), fv, sibling, face_first, face_count, H, W, K, blur, persp, clip, cull, p2f, zbuf, bary, dists
    )


def rasterize_meshes_cuda(
    fv, sibling, face_first, face_count, H, W, K, blur, persp, clip, cull, p2f, zbuf, bary, dists
):
    """One thread per (mesh, pixel); arguments as for ``mesh_raster_cpu.rasterize_meshes_cpu``."""
    args = [as_array(a) for a in (fv, sibling, face_first, face_count)]
    outs = [as_array(a) for a in (p2f, zbuf, bary, dists)]
    n = face_first.shape[0] * H * W
    _rasterize_meshes_kernel[_blocks(n), THREADS](*args, H, W, K, blur, persp, clip, cull, *outs)


@cuda.jit
def _rasterize_meshes_backward_kernel(fv, p2f, grad_zbuf, grad_bary, grad_dists, H, W, blur, persp, clip, grad_fv):
    _thread.rasterize_meshes_backward(
        cuda.grid(1), fv, p2f, grad_zbuf, grad_bary, grad_dists, H, W, blur, persp, clip, grad_fv
    )


def rasterize_meshes_backward_cuda(fv, p2f, grad_zbuf, grad_bary, grad_dists, H, W, blur, persp, clip, grad_fv):
    """One thread per fragment slot, atomically adding into ``grad_fv`` (zeroed by the caller)."""
    args = [as_array(a) for a in (fv, p2f, grad_zbuf, grad_bary, grad_dists)]
    n = p2f.shape[0] * p2f.shape[1] * p2f.shape[2] * p2f.shape[3]
    _rasterize_meshes_backward_kernel[_blocks(n), THREADS](*args, H, W, blur, persp, clip, as_array(grad_fv))


# ----------------------------------------------------------------------------- points
@cuda.jit
def _rasterize_points_kernel(pts, radius, first_idx, counts, H, W, K, idx, zbuf, dists):
    _thread.rasterize_points(cuda.grid(1), pts, radius, first_idx, counts, H, W, K, idx, zbuf, dists)


def rasterize_points_cuda(pts, radius, first_idx, counts, H, W, K, idx, zbuf, dists):
    """One thread per (cloud, pixel); arguments as for ``point_raster.rasterize_points_cpu``."""
    args = [as_array(a) for a in (pts, radius, first_idx, counts)]
    outs = [as_array(a) for a in (idx, zbuf, dists)]
    n = first_idx.shape[0] * H * W
    _rasterize_points_kernel[_blocks(n), THREADS](*args, H, W, K, *outs)


@cuda.jit
def _rasterize_points_backward_kernel(pts, idx, grad_zbuf, grad_dists, H, W, grad_pts):
    _thread.rasterize_points_backward(cuda.grid(1), pts, idx, grad_zbuf, grad_dists, H, W, grad_pts)


def rasterize_points_backward_cuda(pts, idx, grad_zbuf, grad_dists, H, W, grad_pts):
    """One thread per fragment slot, atomically adding into ``grad_pts`` (zeroed by the caller)."""
    args = [as_array(a) for a in (pts, idx, grad_zbuf, grad_dists)]
    n = idx.shape[0] * idx.shape[1] * idx.shape[2] * idx.shape[3]
    _rasterize_points_backward_kernel[_blocks(n), THREADS](*args, H, W, as_array(grad_pts))


# ----------------------------------------------------------------------------- volumes
@cuda.jit
def _sample_volume_kernel(flat, shape, points, align, out):
    _thread.sample_volume(cuda.grid(1), flat, shape, points, align, out)


def sample_volume_cuda(flat, shape, points, align, out):
    """One thread per point; arguments as for ``volume_cpu.sample_volume_cpu``."""
    n = points.shape[0] * points.shape[1]
    _sample_volume_kernel[_blocks(n), THREADS](as_array(flat), as_array(shape), as_array(points), align, as_array(out))


@cuda.jit
def _sample_volume_backward_kernel(flat, shape, points, align, grad_out, buf, grad_points):
    _thread.sample_volume_backward(cuda.grid(1), flat, shape, points, align, grad_out, buf, grad_points)


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
    _thread.march_volume(
        cuda.grid(1), grid, layout, ray_vol, rays, lengths, mode, eps, t_min, align, last_inf, out_f, out_o, out_z,
        n_used, samples,
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
    scratch = cuda.local.array((_vm.MAX_CUDA_SAMPLES, 2), numba.float64)
    _thread.march_volume_backward(
        cuda.grid(1), grid, layout, ray_vol, rays, lengths, mode, eps, align, last_inf, S_total, T_P, G_f, g_o, g_z,
        n_used, ray_grad, samples, buf, grad_rays, scratch,
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
        *arrays, mode, eps, align, last_inf, *grads, ray_grad, as_array(samples), as_array(buffers[0]),
        as_array(grad_rays),
    )  # fmt: skip


# ----------------------------------------------------------------------------- stratified jitter
@cuda.jit
def _stratified_jitter_kernel(lengths, seed, out):
    _thread.stratified_jitter(cuda.grid(1), lengths, seed, out)


def stratified_jitter_cuda(lengths, seed, out):
    """One thread per ray; arguments as for ``stratified.stratified_jitter_cpu``."""
    _stratified_jitter_kernel[_blocks(lengths.shape[0]), THREADS](as_array(lengths), seed, as_array(out))


# ----------------------------------------------------------------------------- Gaussian splatting
_splat = _gs.build(lambda fn: cuda.jit(device=True)(fn), _atomic_add)


@cuda.jit
def _composite_gaussians_kernel(
    tile_starts, ids, means2d, conics, opacities, colors, H, W, alpha_min, t_min, color_out, t_out, last_out
):
    _splat.composite_thread(
        cuda.grid(1), tile_starts, ids, means2d, conics, opacities, colors, H, W, alpha_min, t_min, color_out, t_out,
        last_out,
    )  # fmt: skip


def composite_gaussians_cuda(
    tile_starts, ids, means2d, conics, opacities, colors, H, W, alpha_min, t_min, color_out, t_out, last_out
):
    """One thread per pixel; arguments as for ``gaussian_splat.composite_cpu``."""
    args = [as_array(a) for a in (tile_starts, ids, means2d, conics, opacities, colors)]
    outs = [as_array(a) for a in (color_out, t_out, last_out)]
    _composite_gaussians_kernel[_blocks(H * W), THREADS](*args, H, W, alpha_min, t_min, *outs)


@cuda.jit
def _composite_gaussians_backward_kernel(
    tile_starts, ids, means2d, conics, opacities, colors, H, W, alpha_min, t_final, last, grad_color, grad_t, grads
):
    _splat.composite_backward_thread(
        cuda.grid(1), tile_starts, ids, means2d, conics, opacities, colors, H, W, alpha_min, t_final, last,
        grad_color, grad_t, grads,
    )  # fmt: skip


def composite_gaussians_backward_cuda(
    tile_starts, ids, means2d, conics, opacities, colors, H, W, alpha_min, t_final, last, grad_color, grad_t, grads
):
    """One thread per pixel, atomically adding into ``grads`` (N, 9), zeroed by the caller; arguments as
    for ``gaussian_splat.composite_backward_cpu`` (without ``n_threads``)."""
    args = [as_array(a) for a in (tile_starts, ids, means2d, conics, opacities, colors)]
    grads_in = [as_array(a) for a in (t_final, last, grad_color, grad_t, grads)]
    _composite_gaussians_backward_kernel[_blocks(H * W), THREADS](*args, H, W, alpha_min, *grads_in)


# ----------------------------------------------------------------------------- Gaussian projection
from p3dlab.kernels import gaussian_project as _gp  # noqa: E402  (appended section; the module is light)

_project = _gp.build(lambda fn: cuda.jit(device=True)(fn))


@cuda.jit
def _project_gaussians_kernel(means, covs, M, V, H, W, low_pass, near_plane, means2d, conics, depths, cov2d, radii):
    _project.project_thread(
        cuda.grid(1), means, covs, M, V, H, W, low_pass, near_plane, means2d, conics, depths, cov2d, radii
    )


def project_gaussians_cuda(means, covs, M, V, H, W, low_pass, near_plane, means2d, conics, depths, cov2d, radii):
    """One thread per Gaussian; arguments as for ``gaussian_project.project_gaussians_cpu``."""
    args = [as_array(a) for a in (means, covs, M, V)]
    outs = [as_array(a) for a in (means2d, conics, depths, cov2d, radii)]
    _project_gaussians_kernel[_blocks(means.shape[0]), THREADS](*args, H, W, low_pass, near_plane, *outs)


@cuda.jit
def _project_gaussians_backward_kernel(
    means, covs, M, V, H, W, low_pass, near_plane, grad_means2d, grad_conics, grad_depths, grad_cov2d, grad_means,
    grad_covs,
):  # fmt: skip
    _project.project_backward_thread(
        cuda.grid(1), means, covs, M, V, H, W, low_pass, near_plane, grad_means2d, grad_conics, grad_depths,
        grad_cov2d, grad_means, grad_covs,
    )  # fmt: skip


def project_gaussians_backward_cuda(
    means, covs, M, V, H, W, low_pass, near_plane, grad_means2d, grad_conics, grad_depths, grad_cov2d, grad_means,
    grad_covs,
):  # fmt: skip
    """One thread per Gaussian, each writing its own rows of ``grad_means`` and ``grad_covs``; arguments
    as for ``gaussian_project.project_gaussians_backward_cpu``."""
    args = [as_array(a) for a in (means, covs, M, V, grad_means2d, grad_conics, grad_depths, grad_cov2d)]
    _project_gaussians_backward_kernel[_blocks(means.shape[0]), THREADS](
        *args[:4], H, W, low_pass, near_plane, *args[4:], as_array(grad_means), as_array(grad_covs)
    )


@cuda.jit
def _sh_colors_kernel(sh, directions, n_basis, colors):
    _project.sh_color_thread(cuda.grid(1), sh, directions, n_basis, colors)


def sh_colors_cuda(sh, directions, n_basis, colors):
    """One thread per Gaussian; arguments as for ``gaussian_project.sh_colors_cpu``."""
    _sh_colors_kernel[_blocks(sh.shape[0]), THREADS](as_array(sh), as_array(directions), n_basis, as_array(colors))


@cuda.jit
def _sh_colors_backward_kernel(sh, directions, n_basis, grad_colors, grad_sh, grad_directions):
    _project.sh_color_backward_thread(cuda.grid(1), sh, directions, n_basis, grad_colors, grad_sh, grad_directions)


def sh_colors_backward_cuda(sh, directions, n_basis, grad_colors, grad_sh, grad_directions):
    """One thread per Gaussian; arguments as for ``gaussian_project.sh_colors_backward_cpu``."""
    args = [as_array(a) for a in (sh, directions)]
    outs = [as_array(a) for a in (grad_colors, grad_sh, grad_directions)]
    _sh_colors_backward_kernel[_blocks(sh.shape[0]), THREADS](*args, n_basis, *outs)
