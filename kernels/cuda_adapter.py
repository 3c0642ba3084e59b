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
