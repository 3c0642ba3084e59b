"""Trilinear volume sampling and the fused sample-and-march kernel as torch operations
(docs/kernels.md#volume-sampler, docs/kernels.md#ray-marchers; kernels in
``p3dlab.kernels.volume_cpu`` and ``cuda_adapter``).

``sample_grid(grid, points)`` is ``grid_sample(mode="bilinear", padding_mode="zeros")`` for 3-D
grids, differentiable in the grid values and the point coordinates, without grid_sample's slow
CPU backward.

``march_volumes(volumes, ray_bundle, ...)`` samples and composites every ray in one pass and, by
default, builds no (rays × samples) intermediate: its backward samples the grid again. With
``keep_samples=True`` the forward keeps the sampled values (rays × samples × (1 + C)) and the
backward reads them instead, about 1.5x faster (128² rays × 150 samples, 128³ RGB grid), at that memory cost.
It is differentiable in the densities, features, ray origins and directions (so camera poses can be
fitted), not in the sample lengths.

``march_volumes_mse(volumes, ray_bundle, target_features, target_opacity)`` is the quadrature render
fused with the multi-view fitting loss (MSE of colour and opacity): on the CPU it scatters the loss's
gradient ray by ray, right after marching each ray, so nothing is kept between forward and backward.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Optional

import numba
import torch
from torch.autograd.function import once_differentiable

from p3dlab.config import volume_buffer_bytes
from p3dlab.errors import P3DLabValueError
from p3dlab.ops import memory_limit, recycled
from p3dlab.ops.dispatch import cuda_kernels

EA, QUADRATURE = 0, 1
_BUFFER_BYTES = volume_buffer_bytes()


def _n_tasks(grid_bytes: int, device) -> int:
    """Per-task gradient buffers on CPU: as many as there are threads, within the buffer budget
    (``P3DLAB_VOLUME_BUFFER_MB``, default 1024); CUDA uses one buffer and atomics."""
    if device.type == "cuda":
        return 1
    return int(max(1, min(numba.get_num_threads(), _BUFFER_BYTES // max(grid_bytes, 1))))


def _np(t):
    return t.detach().numpy()


def _check_grid(grid: torch.Tensor, name: str):
    if not torch.is_tensor(grid) or grid.ndim != 5 or not grid.is_floating_point():
        raise P3DLabValueError(f"{name} must be a floating (N, C, D, H, W) tensor, got {getattr(grid, 'shape', grid)}")
    if min(grid.shape[2:]) < 1 or grid.shape[1] < 1:
        raise P3DLabValueError(f"{name} has an empty axis: {tuple(grid.shape)}")


_FITS_ANYWHERE = 64 * 2**20  # scratch that needs no check: a 128³ RGB grid and its gradient buffer


def _check_scratch(name: str, grid_bytes: int, needs_grad: bool):
    """Refuse, before anything of that size is allocated, a grid of ``grid_bytes`` (its densities
    and features) whose kernels' scratch would not fit in the memory this process can still take
    (``memory_limit.available_bytes``): at least its channels-last copy and, when it needs
    gradients, one gradient buffer of the same size (more buffers only within the budget,
    ``_n_tasks``). A few values expanded to a huge grid (stride 0) are caught here too, not by the
    operating system killing the process."""
    need = grid_bytes * (2 if needs_grad else 1)
    if need <= _FITS_ANYWHERE:  # no files to read in a training step's hot path
        return
    available = memory_limit.available_bytes()
    if available is not None and need > available:
        what = "a channels-last copy and a gradient buffer" if needs_grad else "a channels-last copy"
        raise P3DLabValueError(
            f"{name}: the grid needs {need / 2**20:.1f} MB of scratch ({what}), more than the "
            f"{available / 2**20:.1f} MB of memory available; use a smaller grid"
        )


def _channels_last(grids, empty=None) -> torch.Tensor:
    """Pack (V, C_i, D, H, W) grids (same V, D, H, W and dtype) into one contiguous (V, D, H, W,
    ΣC_i) tensor, the kernels' layout (``volume_math``); a single grid that is already
    channels-last in memory (``torch.channels_last_3d``) is used in place. ``empty(shape, dtype,
    device)`` allocates the output on the CPU (default ``torch.empty``)."""
    g0 = grids[0]
    V, _, D, H, W = g0.shape
    K = sum(g.shape[1] for g in grids)
    if len(grids) == 1 and g0.permute(0, 2, 3, 4, 1).is_contiguous():
        return g0.detach().permute(0, 2, 3, 4, 1)
    if g0.device.type != "cpu":
        return _channels_last_torch(grids)
    from p3dlab.kernels.volume_cpu import pack_channels_last, pack_rgb

    out = (empty or _empty)((V, D, H, W, K), g0.dtype, g0.device)
    if [g.shape[1] for g in grids] == [1, 3]:  # density + RGB
        pack_rgb(_np(g0.contiguous()).reshape(-1), _np(grids[1].contiguous()).reshape(-1), _np(out).reshape(-1), V)
        return out
    first = 0
    for g in grids:
        pack_channels_last(_np(g.contiguous()).reshape(-1), V, g.shape[1], _np(out).reshape(-1), K, first)
        first += g.shape[1]
    return out


def _pack_grid(dens: torch.Tensor, feats) -> torch.Tensor:
    """The fused kernels' channels-last grid of densities (V, 1, D, H, W) and features (V, C, D, H,
    W) or None, on CPU in the memory of a grid a finished call let go of (``_reused_empty``): a fresh
    34 MB grid (128³, RGB) costs 4-8 ms of page faults."""
    grids = [dens] if feats is None else [dens, feats.to(dens.dtype)]
    return _channels_last(grids, _reused_empty)


def _channels_last_torch(grids) -> torch.Tensor:
    """``_channels_last`` in torch ops (CUDA tensors)."""
    return torch.cat([g.detach() for g in grids], 1).permute(0, 2, 3, 4, 1).contiguous()


def _empty(shape, dtype, device) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device=device)


def _reused_empty(shape, dtype, device) -> torch.Tensor:
    """``torch.empty(shape)``; on the CPU, in the memory of an earlier tensor of this shape that
    nothing refers to any more (``recycled``): packed grids, task buffers and kept samples once
    their call is done, gradients once the caller has let go of them (``zero_grad()``). Fresh pages
    cost more to fault in than to overwrite (15-20 ms for 64 MB), and glibc hands freed blocks back
    to the system at unforeseen ``free`` calls (8-24 ms of kernel time). Unused memory is kept up to
    a quarter of the buffer budget; new buffers of 2 MB or more go on huge pages (fewer TLB misses
    in the kernels' scattered reads and writes)."""
    if device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    return recycled.empty(shape, dtype, _BUFFER_BYTES // 4)


def _task_buffers(grid: torch.Tensor) -> torch.Tensor:
    """Gradient buffers for the backward kernels, (n_tasks, grid.numel()): uninitialised on the CPU
    (each task zeroes its own), zeros for the single atomic buffer on CUDA."""
    n_tasks = _n_tasks(grid.numel() * grid.element_size(), grid.device)
    if grid.device.type == "cuda":
        return torch.zeros((n_tasks, grid.numel()), dtype=grid.dtype, device=grid.device)
    return _reused_empty((n_tasks, grid.numel()), grid.dtype, grid.device)


def _unpack_sum(buffers: torch.Tensor, grid_shape, split: int):
    """The summed channels-last ``buffers`` as (V, C, D, H, W) tensors: channels 0 … split - 1, and
    the rest (None when split is the channel count K); ``grid_shape`` = (V, D, H, W, K)."""
    V, D, H, W, K = grid_shape
    if buffers.device.type != "cpu":
        return _unpack_sum_torch(buffers, grid_shape, split)
    from p3dlab.kernels.volume_cpu import unpack_channels_sum, unpack_rgb_sum

    first = _reused_empty((V, split, D, H, W), buffers.dtype, buffers.device)
    second = _reused_empty((V, K - split, D, H, W), buffers.dtype, buffers.device)
    if K == 4 and split == 1:  # density + RGB
        unpack_rgb_sum(_np(buffers), _np(first).reshape(-1), _np(second).reshape(-1), V)
    else:
        unpack_channels_sum(_np(buffers), K, split, _np(first).reshape(-1), _np(second).reshape(-1), V)
    return first, second if split < K else None


def _unpack_sum_torch(buffers: torch.Tensor, grid_shape, split: int):
    """``_unpack_sum`` in torch ops (CUDA tensors)."""
    V, D, H, W, K = grid_shape
    total = buffers.sum(0).view(V, D, H, W, K).permute(0, 4, 1, 2, 3)
    return total[:, :split].contiguous(), total[:, split:].contiguous() if split < K else None


def _layout(grid: torch.Tensor, first: int, C: int) -> torch.Tensor:
    """The kernels' (D, H, W, K, F0, C) for a (V, D, H, W, K) channels-last grid."""
    _, D, H, W, K = grid.shape
    return torch.tensor([D, H, W, K, first, C], dtype=torch.int64, device=grid.device)


def _all_finite(x: torch.Tensor) -> bool:
    """Whether every element of ``x`` is finite: a finite sum proves it (a NaN or an infinity makes
    the sum NaN or infinite) in one reduction, without an element-wise mask; an overflowing sum falls
    back to the exact test."""
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def _kernel_args(args):
    return [_np(a) if torch.is_tensor(a) else a for a in args]


_PREFETCH_AHEAD = 4  # rays
_PREFETCH_MIN_BYTES = 4 * 2**20


def _prefetch_ahead(task_grid: torch.Tensor) -> int:
    """How many rays ahead ``march_volume_mse_cpu`` and ``march_volume_backward_cpu`` prefetch the
    lines of a task's grid or gradient buffer ``task_grid`` (``prefetch_ray``): ``_PREFETCH_AHEAD``
    for buffers of ``_PREFETCH_MIN_BYTES`` or more, which do not fit in a core's own caches, 0
    (none) for smaller ones. Measured (alternating calls, medians of 2-3 runs):
    - the fit bench's kernel (4 views × 64² rays × 64 samples): 64³ grid (8 MB a task) 5-12 %
      faster, 96³ and 128³ 1-3 % faster, 48³ the same; 8³ and 32³, whose grids stay in cache,
      1.0-1.3 ms (10 %) slower, hence the threshold. Looking further ahead (2 image rows, 128 rays)
      gained 10 % at 64³ but lost 10 % at 128³: the prefetched lines left the cache before their
      ray came;
    - the EA bench's backward kernel (128³, 128² rays × 150 samples): 13-15 % faster."""
    return _PREFETCH_AHEAD if task_grid.numel() * task_grid.element_size() >= _PREFETCH_MIN_BYTES else 0


class _SampleGrid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grid, points, align):
        packed = _channels_last([grid])
        flat, C = packed.reshape(-1), grid.shape[1]
        layout = _layout(packed, 0, C)
        pts = points.detach().to(grid.dtype).contiguous()
        out = torch.zeros(pts.shape[0], pts.shape[1], C, dtype=grid.dtype, device=grid.device)
        if pts.numel():
            gpu = cuda_kernels(grid, "sample_grid")
            if gpu:
                gpu.sample_volume_cuda(flat, layout, pts, align, out)
            else:
                from p3dlab.kernels.volume_cpu import sample_volume_cpu

                sample_volume_cpu(*_kernel_args((flat, layout, pts, align, out)))
        ctx.save_for_backward(flat, layout, pts)
        ctx.align, ctx.packed_shape = align, packed.shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        flat, layout, pts = ctx.saved_tensors
        buffers = _task_buffers(flat)
        grad_pts = torch.zeros_like(pts)
        g = grad_out.to(flat.dtype).contiguous()
        C = ctx.packed_shape[-1]
        gpu = cuda_kernels(flat, "sample_grid (backward)")
        if not pts.numel():
            buffers.zero_()
        elif gpu:
            gpu.sample_volume_backward_cuda(flat, layout, pts, ctx.align, g, buffers, grad_pts)
        else:
            from p3dlab.kernels.volume_cpu import sample_volume_backward_cpu

            sample_volume_backward_cpu(*_kernel_args((flat, layout, pts, ctx.align, g, buffers, grad_pts)))
        grad, _ = _unpack_sum(buffers, ctx.packed_shape, C)
        return grad, grad_pts, None


def sample_grid(grid: torch.Tensor, points: torch.Tensor, align_corners: bool = True) -> torch.Tensor:
    """Trilinear samples (N, M, C) of ``grid`` (N or 1, C, D, H, W) at local points (N, M, 3)
    (x ↔ W, y ↔ H, z ↔ D; corners outside the grid count as 0). Points that are not finite
    sample 0 and get zero gradient."""
    _check_grid(grid, "sample_grid: grid")
    if points.ndim != 3 or points.shape[-1] != 3:
        raise P3DLabValueError(f"sample_grid: points must be (N, M, 3), got {tuple(points.shape)}")
    if grid.shape[0] not in (1, points.shape[0]):
        raise P3DLabValueError(f"sample_grid: {grid.shape[0]} grids for {points.shape[0]} point sets")
    if points.device != grid.device:
        raise P3DLabValueError("sample_grid: grid and points on different devices")
    _check_scratch("sample_grid", grid.numel() * grid.element_size(), grid.requires_grad and torch.is_grad_enabled())
    return _SampleGrid.apply(grid, points, bool(align_corners))


def _kept_samples(ctx, R: int, P: int, K: int, dtype, device) -> torch.Tensor:
    """Where the forward kernel keeps every sample's density and features for the backward, (R, P,
    K), when
    - the caller asked for it with grad mode on (``ctx.keep_samples``; inside ``forward`` grad mode
      is always off, and ``needs_input_grad`` ignores it),
    - the grids need gradients and the rays do not (ray gradients need the corners, so that
      backward reads the grid anyway),
    - and the array fits half the buffer budget (``P3DLAB_VOLUME_BUFFER_MB``).
    Otherwise an empty (0, 1, K) array: the backward samples the grid again."""
    needed = ctx.keep_samples and any(ctx.needs_input_grad[:2]) and not ctx.needs_input_grad[2]
    fits = R * P * K * torch.empty((), dtype=dtype).element_size() <= _BUFFER_BYTES // 2
    if needed and fits:
        return _reused_empty((R, P, K), dtype, device)
    return torch.empty((0, 1, K), dtype=dtype, device=device)


class _MarchVolumes(torch.autograd.Function):
    """Inputs: densities (V, 1, D, H, W), features (V, C, D, H, W) or None (the densities are the
    features), rays (R, 7), lengths (R, P), ray_vol (R,), the CPU kernels' ray order (``_ray_order``),
    the settings, whether to keep the samples for the backward and whether grad mode was on (inside
    ``forward`` it is always off)."""

    @staticmethod
    def forward(
        ctx, dens, feats, rays, lengths, ray_vol, order, mode, eps, t_min, align, last_inf, keep_samples, grad_on
    ):  # fmt: skip
        ctx.keep_samples = keep_samples
        dt, dev = dens.dtype, dens.device
        grid = _pack_grid(dens, feats)
        C = 1 if feats is None else feats.shape[1]
        layout = _layout(grid, 0 if feats is None else 1, C)
        flat = grid.reshape(-1)
        rays_c, len_c = rays.detach().to(dt).contiguous(), lengths.detach().to(dt).contiguous()
        R = rays.shape[0]
        out_f = torch.zeros(R, C, dtype=dt, device=dev)
        out_o = torch.zeros(R, dtype=dt, device=dev)
        out_z = torch.zeros(R, dtype=dt, device=dev)
        n_used = torch.zeros(R, dtype=torch.int64, device=dev)
        samples = _kept_samples(ctx, R, len_c.shape[1], 1 + C, dt, dev)
        args = (flat, layout, ray_vol, rays_c, len_c, mode, eps, t_min, align, last_inf, out_f, out_o, out_z, n_used)
        args = (*args, samples, order)
        if R:
            gpu = cuda_kernels(flat, "march_volumes")
            if gpu:
                gpu.march_volume_cuda(*args)
            else:
                from p3dlab.kernels.volume_cpu import march_volume_cpu

                march_volume_cpu(*_kernel_args(args), numba.get_num_threads())
        ctx.save_for_backward(dens, feats, layout, ray_vol, rays_c, len_c, out_f, out_o, out_z, n_used)
        # not saved tensors: the backward lets go of them, for the next forward to reuse their memory
        # (``_reused_empty``); a second backward through a retained graph packs the grid again and
        # samples it again
        no_backward = not (grad_on and any(ctx.needs_input_grad[:3]))
        ctx.grid = None if no_backward else grid
        ctx.samples = samples
        ctx.order = order
        ctx.settings = (mode, eps, align, last_inf)
        ctx.packed_shape = grid.shape
        ctx.mark_non_differentiable(n_used)
        return out_f, out_o, out_z, n_used

    @staticmethod
    @once_differentiable
    def backward(ctx, g_f, g_o, g_z, _g_used):
        dens, feats, layout, ray_vol, rays, lengths, out_f, out_o, out_z, n_used = ctx.saved_tensors
        # a second backward through a retained graph packs and samples the grid again: the first one
        # let go of the packed grid and the kept samples, for the next forward
        grid, ctx.grid = ctx.grid, None
        if grid is None:
            grid = _pack_grid(dens, feats)
        flat = grid.reshape(-1)
        samples, ctx.samples = ctx.samples, None
        if samples is None:
            samples = torch.empty((0, 1, 1 + out_f.shape[1]), dtype=flat.dtype, device=flat.device)
        mode, eps, align, last_inf = ctx.settings
        dt, dev = flat.dtype, flat.device
        R = rays.shape[0]
        zeros = lambda *s: torch.zeros(*s, dtype=dt, device=dev)
        g_f = zeros(R, out_f.shape[1]) if g_f is None else g_f.to(dt).contiguous()
        g_o = zeros(R) if g_o is None else g_o.to(dt).contiguous()
        g_z = zeros(R) if g_z is None else g_z.to(dt).contiguous()
        S_total = ((out_f * g_f).sum(-1) + out_z * g_z).contiguous()
        T_P = (1.0 - out_o).contiguous()
        buffers = _task_buffers(flat)
        grad_rays = zeros(R, 7)
        ray_grad = bool(ctx.needs_input_grad[2])  # ray gradients only when the rays need them
        args = (flat, layout, ray_vol, rays, lengths, mode, eps, align, last_inf, S_total, T_P, g_f, g_o, g_z)
        args = (*args, n_used, ray_grad, samples, buffers, grad_rays, ctx.order)
        gpu = cuda_kernels(flat, "march_volumes (backward)")
        if not R:
            buffers.zero_()
        elif gpu:
            gpu.march_volume_backward_cuda(*args)
        else:
            from p3dlab.kernels.volume_cpu import march_volume_backward_cpu

            march_volume_backward_cpu(*_kernel_args(args), _prefetch_ahead(buffers[0]))
        grad_dens, grad_feats = _unpack_sum(buffers, ctx.packed_shape, 1)
        return grad_dens, grad_feats, grad_rays, None, None, None, None, None, None, None, None, None, None


_TILE_BYTES = 8 * 2**20  # grids from this size on are marched in 2 x 2 tiles of image rays


_BAND_ROWS = 4  # image rows per band of the fused loss kernel's ray order (_band_order)


@functools.lru_cache(maxsize=16)
def _ray_order_cached(shape: tuple, kind: str) -> torch.Tensor:
    """``kind``: "rows" (the bundle's order), "tiles" (2 × 2 pixels, tiles row-major) or "bands"
    (bands of ``_BAND_ROWS`` rows, column by column): image bundles (N, H, W) only."""
    R = math.prod(shape)
    if len(shape) != 3 or kind == "rows":
        return torch.arange(R)
    n, h, w = shape
    b, y, x = torch.arange(n)[:, None, None], torch.arange(h)[:, None], torch.arange(w)
    if kind == "tiles":
        key = ((b * ((h + 1) // 2) + y // 2) * ((w + 1) // 2) + x // 2) * 4 + (y % 2) * 2 + x % 2
    else:
        B = _BAND_ROWS
        key = ((b * ((h + B - 1) // B) + y // B) * w + x) * B + y % B
    return torch.argsort(key.reshape(-1))


def _band_order(shape) -> torch.Tensor:
    """The fused loss kernel's ray order (``march_volume_mse_cpu``) for a bundle of ray shape
    ``shape``: image rays (N, H, W) in bands of ``_BAND_ROWS`` rows, each band column by column, so
    a ray's neighbours above and below follow it at once and those to its left came 4 rays before
    (other shapes keep their order; read-only, cached). Measured against row order, the fit bench's
    kernel alone (4 views × 64² rays × 64 samples, alternating calls, 2 runs): 64³ 13.5-13.6 →
    12.9-13.0 ms, 96³ 19.4 → 18.6 ms, 32³ the same (10.4 ms). 2 × 2 tiles were no better than rows
    (13.6 ms), 8 × 8 tiles like bands at 64³ and slower at 96³ (19.9 ms)."""
    return _ray_order_cached(tuple(int(s) for s in shape), "bands")


def _grid_bytes(dens: torch.Tensor, feats) -> int:
    """Bytes of the kernels' packed grid of ``dens`` and ``feats`` (or None)."""
    channels = 1 + (0 if feats is None else feats.shape[1])
    return dens.numel() * channels * dens.element_size()


def _ray_order(shape, grid_bytes: int) -> torch.Tensor:
    """The order in which the CPU kernels march the rays of a bundle of ray shape ``shape`` (N, ...)
    through a grid of ``grid_bytes`` (its densities and features): a permutation of 0 … R - 1,
    R = prod(shape), read-only (cached).

    Image rays (N, H, W) through a grid of ``_TILE_BYTES`` or more go 2 × 2 pixels at a time
    (row-major tiles; odd edges give smaller tiles): a ray's neighbours below it follow it at once
    instead of a row later, while the voxels they share are still in cache. Measured against the
    same rays in row order (alternating): the 128³ EA render at 128² with 150 samples, forward
    kernel 13.6-14.7 → 12.5-13.5 ms and forward + backward 55-60 → 54-56 ms (3 runs); 96³ at 96²,
    27.7 → 27.0 ms. Smaller grids stay in cache either way and keep row order: at 64³ the EA render
    took the same time, the fit's fused kernel (``march_volumes_mse``, 4 views × 64²) 15.1 against
    15.6-15.7 ms in tiles. Other bundle shapes keep their order."""
    return _ray_order_cached(tuple(int(s) for s in shape), "tiles" if grid_bytes >= _TILE_BYTES else "rows")


def _volume_rays(volumes, ray_bundle, name: str):
    """``volumes``' densities and features and ``ray_bundle``'s rays as the kernels take them, after
    checking they fit together: ``((densities, features or None, rays (R, 7): local origin, local
    direction, world direction norm, lengths (R, P), ray_vol (R,): each ray's volume, the CPU
    kernels' ray order (``_ray_order``)), the bundle's ray shape)``: the first tuple is what the
    fused autograd functions take first."""
    dens = volumes.densities()
    feats = volumes.features()
    _check_grid(dens, f"{name}: densities")
    needs_grad = dens.requires_grad or (feats is not None and feats.requires_grad)
    _check_scratch(name, _grid_bytes(dens, feats), needs_grad and torch.is_grad_enabled())
    o, d, t = ray_bundle.origins, ray_bundle.directions, ray_bundle.lengths
    n = o.shape[0]
    if d.shape != o.shape or t.shape[:-1] != o.shape[:-1] or o.shape[-1] != 3:
        raise P3DLabValueError(
            f"{name}: ray bundle shapes disagree: origins {tuple(o.shape)}, directions "
            f"{tuple(d.shape)}, lengths {tuple(t.shape)}"
        )
    if len(volumes) not in (1, n):
        raise P3DLabValueError(f"{name}: {len(volumes)} volumes for {n} ray batches")
    if o.device != dens.device:
        raise P3DLabValueError(f"{name}: rays and volumes on different devices")
    if not (_all_finite(o) and _all_finite(d) and _all_finite(t)):
        raise P3DLabValueError(f"{name}: ray origins, directions or lengths are not finite")
    P = t.shape[-1]
    if P < 1:
        raise P3DLabValueError(f"{name}: rays need at least one sample")
    if t.requires_grad:
        warnings.warn(f"{name}: no gradient flows to the sample lengths", stacklevel=3)
    dt = dens.dtype
    R0 = o[..., 0].numel() // max(n, 1)
    scale = volumes.get_local_to_world_scale().to(dt)  # (V, 3) world units per local unit
    trans = volumes.get_volume_translation().to(dt)
    if len(volumes) == 1:
        scale, trans = scale.expand(n, 3), trans.expand(n, 3)
    o_f, d_f = o.reshape(n, R0, 3).to(dt), d.reshape(n, R0, 3).to(dt)
    o_loc = (o_f + trans[:, None]) / scale[:, None]
    d_loc = d_f / scale[:, None]
    rays = torch.cat([o_loc, d_loc, d_f.norm(dim=-1, keepdim=True)], -1).reshape(n * R0, 7)
    ray_vol = (
        torch.arange(n, device=dens.device).repeat_interleave(R0)
        if len(volumes) == n
        else torch.zeros(n * R0, dtype=torch.int64, device=dens.device)
    )
    shape = o.shape[:-1]
    return (dens, feats, rays, t.reshape(n * R0, P), ray_vol, _ray_order(shape, _grid_bytes(dens, feats))), shape


def march_volumes(
    volumes,
    ray_bundle,
    mode: str = "ea",
    eps: float = 1e-10,
    termination_threshold: float = 0.0,
    last_delta: str = "interval",
    keep_samples: bool = False,
):
    """Sample ``volumes`` along the rays of ``ray_bundle`` and composite them in one fused kernel.

    Args:
        volumes: ``Volumes`` (1 or N, the bundle's batch size).
        ray_bundle: ``RayBundle`` with origins/directions (N, ..., 3) and lengths (N, ..., P).
        mode: "ea" — PyTorch3D's ``EmissionAbsorptionRaymarcher`` (densities are per-sample
            opacities in [0, 1]); "quadrature" — ``QuadratureRaymarcher`` (densities are extinction
            coefficients, steps ``(t_{i+1} - t_i)|d|``).
        eps: EA's ε in ``T_i = Π (1 + ε - a_j)``.
        termination_threshold: stop a ray once its transmittance falls below this (0: never).
            Samples after the stop contribute nothing and get zero gradient (exact gradients of the
            truncated sum, at most ``threshold`` × the remaining colour away from the full one).
        last_delta: quadrature's last step, "interval" or "inf".
        keep_samples: trade memory for speed: the forward keeps each sample's density and features,
            rays × samples × (1 + C) values (16 MB for 4 views × 64² rays × 64 samples × RGB in
            float32), and the backward reads them instead of the grid (about 1.5x faster). Only when
            the densities or features need gradients, the rays do not, and the array fits half of
            ``P3DLAB_VOLUME_BUFFER_MB``. Off by default: no (rays × samples) intermediate.

    Returns ``(features (N, ..., C), opacity (N, ..., 1), depth (N, ..., 1), n_used (N, ...))``:
    features without background, expected depth ``Σ w_i t_i`` and the samples marched per ray.
    Volumes without features use their densities as the single feature channel. A grid whose
    channels-last copy (and gradient buffer) would not fit in the memory available raises
    ``P3DLabValueError`` before anything is allocated (``_check_scratch``).
    """
    if mode not in ("ea", "quadrature"):
        raise P3DLabValueError(f"march_volumes: mode must be 'ea' or 'quadrature', got {mode!r}")
    if last_delta not in ("interval", "inf"):
        raise P3DLabValueError("march_volumes: last_delta must be 'interval' or 'inf'")
    if not 0.0 <= termination_threshold < 1.0:
        raise P3DLabValueError("march_volumes: termination_threshold must be in [0, 1)")
    inputs, shape = _volume_rays(volumes, ray_bundle, "march_volumes")
    dens = inputs[0]
    if mode == "ea":
        lo, hi = (float(v) for v in torch.aminmax(dens.detach()))
        if lo < 0 or hi > 1:
            warnings.warn(f"march_volumes: EA densities outside [0, 1] (min {lo:.3g}, max {hi:.3g})", stacklevel=2)
    out_f, out_o, out_z, n_used = _MarchVolumes.apply(
        *inputs,
        EA if mode == "ea" else QUADRATURE,
        float(eps),
        float(termination_threshold),
        bool(volumes.align_corners),
        last_delta == "inf",
        bool(keep_samples) and torch.is_grad_enabled(),
        torch.is_grad_enabled(),
    )
    return (
        out_f.reshape(*shape, out_f.shape[-1]),
        out_o.reshape(*shape, 1),
        out_z.reshape(*shape, 1),
        n_used.reshape(shape),
    )


class _MarchVolumesMSE(torch.autograd.Function):
    """The fused quadrature render + squared-error loss of ``march_volumes_mse`` (CPU, density + RGB
    grids, no ray gradients). Its forward also computes the loss's gradient in the densities and
    features (``march_volume_mse_cpu``); the backward scales it by the loss's upstream gradient.
    Inputs: densities, features (V, 3, D, H, W), rays (R, 7), lengths (R, P), ray_vol (R,), the ray
    order (``_band_order``), the targets (R, 3) and (R,), eps, align, last_inf, and ``raw_scale``:
    0, or the density scale s of raw parameters (``march_volumes_mse``'s ``raw_density_scale``),
    whose activations the packing applies and whose derivatives the unpacking applies."""

    @staticmethod
    def forward(ctx, dens, feats, rays, lengths, ray_vol, order, target_f, target_o, eps, align, last_inf, raw_scale):
        from p3dlab.kernels import volume_cpu as vc

        dt = dens.dtype
        V, _, D, H, W = dens.shape
        # a copy of the grid per task, each voxel's values next to its gradient accumulators
        n_tasks = _n_tasks(dens.numel() * 8 * dens.element_size(), dens.device)
        work = _reused_empty((n_tasks, V * D * H * W * 8), dt, dens.device)
        flat_dens = _np(dens.contiguous()).reshape(-1)
        flat_feats = _np(feats.to(dt).contiguous()).reshape(-1)
        if raw_scale:  # float32 grids
            sig_dens = _reused_empty((V * D * H * W,), dt, dens.device)
            vc.pack_rgb_work_activated(flat_dens, flat_feats, raw_scale, _np(work), _np(sig_dens), V)
        else:
            vc.pack_rgb_work(flat_dens, flat_feats, _np(work), V)
        layout = torch.tensor([D, H, W, 8, 1, 3], dtype=torch.int64)
        R = rays.shape[0]
        out_f = torch.zeros(R, 3, dtype=dt)
        out_o = torch.zeros(R, dtype=dt)
        out_z = torch.zeros(R, dtype=dt)
        n_used = torch.zeros(R, dtype=torch.int64)
        err = torch.zeros(R, 2, dtype=torch.float64)
        args = (work, layout, ray_vol, rays.detach().to(dt).contiguous(), lengths.detach().to(dt).contiguous())
        targets = (target_f.detach().to(torch.float64).contiguous(), target_o.detach().to(torch.float64).contiguous())
        args = (*args, eps, align, last_inf, *targets, 2.0 / (3 * R), 2.0 / R, out_f, out_o, out_z, n_used, err, order)
        vc.march_volume_mse_cpu(*_kernel_args(args), _prefetch_ahead(work[0]))
        grad_dens = _reused_empty((V, 1, D, H, W), dt, dens.device)
        grad_feats = _reused_empty((V, 3, D, H, W), dt, dens.device)
        flat_grads = (_np(grad_dens).reshape(-1), _np(grad_feats).reshape(-1))
        if raw_scale:
            vc.unpack_rgb_work_sum_activated(_np(work), _np(sig_dens), raw_scale, *flat_grads, V)
        else:
            vc.unpack_rgb_work_sum(_np(work), *flat_grads, V)
        # saved, not an attribute of ctx: autograd frees saved tensors once the backward has run (unless
        # the graph is retained), so a leaf's ``.grad`` takes these tensors instead of a copy
        ctx.save_for_backward(grad_dens, grad_feats)
        loss = (err[:, 0].sum() / (3 * R) + err[:, 1].sum() / R).to(dt)
        ctx.mark_non_differentiable(out_f, out_o)
        return loss, out_f, out_o

    @staticmethod
    @once_differentiable
    def backward(ctx, g_loss, _g_f, _g_o):
        grad_dens, grad_feats = ctx.saved_tensors  # a retained graph keeps them for another backward
        if not bool(g_loss == 1.0):  # ``loss.backward()`` passes 1: the gradients as they are (0.3 ms at 64³)
            grad_dens, grad_feats = grad_dens * g_loss, grad_feats * g_loss
        # autograd does not write into the gradients it is given: it copies them before accumulating
        # into a leaf's ``.grad`` while anything else (a retained graph) still holds them
        return grad_dens, grad_feats, None, None, None, None, None, None, None, None, None, None


def _activated(raw_volumes, density_scale: float):
    """The volumes ``march_volumes_mse`` renders from raw parameters, in torch ops."""
    dens = density_scale * torch.nn.functional.softplus(raw_volumes.densities())
    return raw_volumes.update_padded(dens, torch.sigmoid(raw_volumes.features()))


def march_volumes_mse(
    volumes,
    ray_bundle,
    target_features,
    target_opacity,
    eps: float = 1e-10,
    last_delta="interval",
    raw_density_scale: Optional[float] = None,
):
    """Render ``volumes`` along ``ray_bundle`` with the quadrature marcher and return ``(loss,
    features (N, ..., C), opacity (N, ..., 1))`` with

        loss = mse(features, target_features) + mse(opacity[..., 0], target_opacity)

    (``F.mse_loss``'s means), the loss of multi-view fitting (``fit_volume``). The images come
    without gradient; the loss carries it, to the densities and features.

    On the CPU, for density + RGB volumes whose rays need no gradient, one fused kernel marches
    each ray forward and, while its samples and cells are still in cache, scatters the loss's
    gradient back: no kept samples and no second pass over the grid (``march_volume_mse_cpu``).
    Each thread works on its own copy of the grid with a gradient accumulator next to every value
    (threads × 8 channels × the grid: 16 MB for a 64³ grid on 2 threads, within
    ``P3DLAB_VOLUME_BUFFER_MB``). The gradient is computed with the forward, whenever grad mode is
    on and the volumes need it.
    Otherwise (CUDA, other channel counts, rays or targets that need gradients) it is
    ``march_volumes(mode="quadrature")`` followed by the two ``F.mse_loss``: the same values.

    ``raw_density_scale`` = s (a positive number): ``volumes`` holds raw parameters (any real
    values, RGB features required), and what is rendered is densities ``s · softplus(densities)``
    and features ``sigmoid(features)``, ``VoxelRadianceField``'s parametrisation; the gradients
    are the raw parameters'. The fused kernel applies the activations while it packs the grid and
    their derivatives while it sums the gradients (float32 grids; ``kernels.activations``);
    elsewhere, and for other dtypes, they are torch's.
    """
    if last_delta not in ("interval", "inf"):
        raise P3DLabValueError("march_volumes_mse: last_delta must be 'interval' or 'inf'")
    if raw_density_scale is not None:
        if volumes.features() is None or not (isinstance(raw_density_scale, (int, float)) and raw_density_scale > 0):
            raise P3DLabValueError(
                "march_volumes_mse: raw_density_scale must be a positive number, for volumes with features"
            )
        raw_density_scale = float(raw_density_scale)
        if not math.isfinite(raw_density_scale):
            raise P3DLabValueError("march_volumes_mse: raw_density_scale must be finite")
        if volumes.densities().dtype != torch.float32:  # the kernels' activations are float32's
            volumes, raw_density_scale = _activated(volumes, raw_density_scale), None
    inputs, shape = _volume_rays(volumes, ray_bundle, "march_volumes_mse")
    dens, feats, rays = inputs[:3]
    C = dens.shape[1] if feats is None else feats.shape[1]
    if tuple(target_features.shape) != (*shape, C) or tuple(target_opacity.shape) != tuple(shape):
        raise P3DLabValueError(
            f"march_volumes_mse: targets {tuple(target_features.shape)} and {tuple(target_opacity.shape)} do not match "
            f"rays {tuple(shape)} with {C} features"
        )
    if not rays.shape[0]:
        raise P3DLabValueError("march_volumes_mse: no rays")
    o, d = ray_bundle.origins, ray_bundle.directions
    grids_need_grad = dens.requires_grad or (feats is not None and feats.requires_grad)
    fused = (
        dens.device.type == "cpu"
        and feats is not None
        and C == 3
        and torch.is_grad_enabled()
        and grids_need_grad
        and not (o.requires_grad or d.requires_grad or target_features.requires_grad or target_opacity.requires_grad)
    )
    if not fused:
        if raw_density_scale is not None:
            volumes = _activated(volumes, raw_density_scale)
        f, opacity, _, _ = march_volumes(volumes, ray_bundle, "quadrature", eps=eps, last_delta=last_delta)
        loss = torch.nn.functional.mse_loss(f, target_features) + torch.nn.functional.mse_loss(
            opacity[..., 0], target_opacity
        )
        return loss, f.detach(), opacity.detach()
    loss, out_f, out_o = _MarchVolumesMSE.apply(
        *inputs[:5],
        _band_order(shape),
        target_features.reshape(-1, 3),
        target_opacity.reshape(-1),
        float(eps),
        bool(volumes.align_corners),
        last_delta == "inf",
        raw_density_scale or 0.0,
    )
    return loss, out_f.reshape(*shape, 3), out_o.reshape(*shape, 1)
