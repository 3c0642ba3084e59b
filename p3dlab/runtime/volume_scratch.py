"""The volume kernels' memory and scheduling policy: how many per-thread gradient buffers, where
their memory comes from, whether a grid's scratch fits, and the order in which the CPU kernels march
the rays. Policy only: the operations that use it are in ``p3dlab.ops.volume_sampling``; why each
choice was made, with its measurements, is in docs/performance.md#volume-kernels.
"""

from __future__ import annotations

import functools
import math

import numba
import torch

from p3dlab.config import volume_buffer_bytes
from p3dlab.errors import P3DLabValueError
from p3dlab.runtime import memory_limit, recycled

BUFFER_BYTES = volume_buffer_bytes()


def n_tasks(grid_bytes: int, device) -> int:
    """Per-task gradient buffers on CPU: as many as there are threads, within the buffer budget
    (``P3DLAB_VOLUME_BUFFER_MB``, default 1024); CUDA uses one buffer and atomics."""
    if device.type == "cuda":
        return 1
    return int(max(1, min(numba.get_num_threads(), BUFFER_BYTES // max(grid_bytes, 1))))


FITS_ANYWHERE = 64 * 2**20  # scratch that needs no check: a 128³ RGB grid and its gradient buffer


def check_scratch(name: str, grid_bytes: int, needs_grad: bool):
    """Refuse, before anything of that size is allocated, a grid of ``grid_bytes`` (its densities
    and features) whose kernels' scratch would not fit in the memory this process can still take
    (``memory_limit.available_bytes``): at least its channels-last copy and, when it needs
    gradients, one gradient buffer of the same size (more buffers only within the budget,
    ``n_tasks``). A few values expanded to a huge grid (stride 0) are caught here too, not by the
    operating system killing the process."""
    need = grid_bytes * (2 if needs_grad else 1)
    if need <= FITS_ANYWHERE:  # no files to read in a training step's hot path
        return
    available = memory_limit.available_bytes()
    if available is not None and need > available:
        what = "a channels-last copy and a gradient buffer" if needs_grad else "a channels-last copy"
        raise P3DLabValueError(
            f"{name}: the grid needs {need / 2**20:.1f} MB of scratch ({what}), more than the "
            f"{available / 2**20:.1f} MB of memory available; use a smaller grid"
        )


def reused_empty(shape, dtype, device) -> torch.Tensor:
    """``torch.empty(shape)``; on the CPU, in the memory of an earlier tensor of this shape that
    nothing refers to any more (``recycled``): packed grids, task buffers and kept samples once
    their call is done, gradients once the caller has let go of them (``zero_grad()``): fresh pages
    cost more to fault in than to overwrite. Unused memory is kept up to a quarter of the buffer
    budget; new buffers of 2 MB or more go on huge pages (fewer TLB misses in the kernels' scattered
    reads and writes)."""
    if device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    return recycled.empty(shape, dtype, BUFFER_BYTES // 4)


def task_buffers(grid: torch.Tensor) -> torch.Tensor:
    """Gradient buffers for the backward kernels, (n_tasks, grid.numel()): uninitialised on the CPU
    (each task zeroes its own), zeros for the single atomic buffer on CUDA."""
    tasks = n_tasks(grid.numel() * grid.element_size(), grid.device)
    if grid.device.type == "cuda":
        return torch.zeros((tasks, grid.numel()), dtype=grid.dtype, device=grid.device)
    return reused_empty((tasks, grid.numel()), grid.dtype, grid.device)


PREFETCH_AHEAD = 4  # rays
PREFETCH_MIN_BYTES = 4 * 2**20


def prefetch_ahead(task_grid: torch.Tensor) -> int:
    """How many rays ahead ``march_volume_mse_cpu`` and ``march_volume_backward_cpu`` prefetch the
    lines of a task's grid or gradient buffer ``task_grid`` (``prefetch_ray``): ``PREFETCH_AHEAD``
    for buffers of ``PREFETCH_MIN_BYTES`` or more, which do not fit in a core's own caches, 0
    (none) for smaller ones, whose lines stay in cache anyway."""
    return PREFETCH_AHEAD if task_grid.numel() * task_grid.element_size() >= PREFETCH_MIN_BYTES else 0


TILE_BYTES = 8 * 2**20  # grids from this size on are marched in 2 x 2 tiles of image rays
BAND_ROWS = 4  # image rows per band of the fused loss kernel's ray order (band_order)


@functools.lru_cache(maxsize=16)
def ray_order_cached(shape: tuple, kind: str) -> torch.Tensor:
    """``kind``: "rows" (the bundle's order), "tiles" (2 × 2 pixels, tiles row-major) or "bands"
    (bands of ``BAND_ROWS`` rows, column by column): image bundles (N, H, W) only."""
    R = math.prod(shape)
    if len(shape) != 3 or kind == "rows":
        return torch.arange(R)
    n, h, w = shape
    b, y, x = torch.arange(n)[:, None, None], torch.arange(h)[:, None], torch.arange(w)
    if kind == "tiles":
        key = ((b * ((h + 1) // 2) + y // 2) * ((w + 1) // 2) + x // 2) * 4 + (y % 2) * 2 + x % 2
    else:
        B = BAND_ROWS
        key = ((b * ((h + B - 1) // B) + y // B) * w + x) * B + y % B
    return torch.argsort(key.reshape(-1))


def band_order(shape) -> torch.Tensor:
    """The fused loss kernel's ray order (``march_volume_mse_cpu``) for a bundle of ray shape
    ``shape``: image rays (N, H, W) in bands of ``BAND_ROWS`` rows, each band column by column, so
    a ray's neighbours above and below follow it at once and those to its left came 4 rays before
    (other shapes keep their order; read-only, cached)."""
    return ray_order_cached(tuple(int(s) for s in shape), "bands")


def grid_bytes(dens: torch.Tensor, feats) -> int:
    """Bytes of the kernels' packed grid of ``dens`` and ``feats`` (or None)."""
    channels = 1 + (0 if feats is None else feats.shape[1])
    return dens.numel() * channels * dens.element_size()


def ray_order(shape, grid_bytes: int) -> torch.Tensor:
    """The order in which the CPU kernels march the rays of a bundle of ray shape ``shape`` (N, ...)
    through a grid of ``grid_bytes`` (its densities and features): a permutation of 0 … R - 1,
    R = prod(shape), read-only (cached).

    Image rays (N, H, W) through a grid of ``TILE_BYTES`` or more go 2 × 2 pixels at a time
    (row-major tiles; odd edges give smaller tiles): a ray's neighbours below it follow it at once
    instead of a row later, while the voxels they share are still in cache. Smaller grids stay in
    cache either way and keep row order; other bundle shapes keep their order."""
    return ray_order_cached(tuple(int(s) for s in shape), "tiles" if grid_bytes >= TILE_BYTES else "rows")
