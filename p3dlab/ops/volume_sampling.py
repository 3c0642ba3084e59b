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

The quadrature render fused with ``VoxelRadianceField``'s fitting loss is ``volume_fit_loss``; the
memory and scheduling policy of these kernels is ``p3dlab.runtime.volume_scratch``.
"""

from __future__ import annotations

import warnings

import numba
import torch
from torch.autograd.function import once_differentiable

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.checks import check_finite_number
from p3dlab.ops.dispatch import cuda_kernels
from p3dlab.runtime import volume_scratch as scratch

EA, QUADRATURE = 0, 1


def _np(t):
    return t.detach().numpy()


def _check_grid(grid: torch.Tensor, name: str):
    if not torch.is_tensor(grid) or grid.ndim != 5 or not grid.is_floating_point():
        raise P3DLabValueError(f"{name} must be a floating (N, C, D, H, W) tensor, got {getattr(grid, 'shape', grid)}")
    if min(grid.shape[2:]) < 1 or grid.shape[1] < 1:
        raise P3DLabValueError(f"{name} has an empty axis: {tuple(grid.shape)}")


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
    W) or None, on CPU in the memory of a grid a finished call let go of (``scratch.reused_empty``):
    a fresh grid costs milliseconds of page faults."""
    grids = [dens] if feats is None else [dens, feats.to(dens.dtype)]
    return _channels_last(grids, scratch.reused_empty)


def _channels_last_torch(grids) -> torch.Tensor:
    """``_channels_last`` in torch ops (CUDA tensors)."""
    return torch.cat([g.detach() for g in grids], 1).permute(0, 2, 3, 4, 1).contiguous()


def _empty(shape, dtype, device) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device=device)


def _unpack_sum(buffers: torch.Tensor, grid_shape, split: int):
    """The summed channels-last ``buffers`` as (V, C, D, H, W) tensors: channels 0 … split - 1, and
    the rest (None when split is the channel count K); ``grid_shape`` = (V, D, H, W, K)."""
    V, D, H, W, K = grid_shape
    if buffers.device.type != "cpu":
        return _unpack_sum_torch(buffers, grid_shape, split)
    from p3dlab.kernels.volume_cpu import unpack_channels_sum, unpack_rgb_sum

    first = scratch.reused_empty((V, split, D, H, W), buffers.dtype, buffers.device)
    second = scratch.reused_empty((V, K - split, D, H, W), buffers.dtype, buffers.device)
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
        buffers = scratch.task_buffers(flat)
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
    scratch.check_scratch(
        "sample_grid", grid.numel() * grid.element_size(), grid.requires_grad and torch.is_grad_enabled()
    )
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
    fits = R * P * K * torch.empty((), dtype=dtype).element_size() <= scratch.BUFFER_BYTES // 2
    if needed and fits:
        return scratch.reused_empty((R, P, K), dtype, device)
    return torch.empty((0, 1, K), dtype=dtype, device=device)


class _MarchVolumes(torch.autograd.Function):
    """Inputs: densities (V, 1, D, H, W), features (V, C, D, H, W) or None (the densities are the
    features), rays (R, 7), lengths (R, P), ray_vol (R,), the CPU kernels' ray order (``scratch.ray_order``),
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
        # (``scratch.reused_empty``); a second backward through a retained graph packs the grid again and
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
        buffers = scratch.task_buffers(flat)
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

            march_volume_backward_cpu(*_kernel_args(args), scratch.prefetch_ahead(buffers[0]))
        grad_dens, grad_feats = _unpack_sum(buffers, ctx.packed_shape, 1)
        return grad_dens, grad_feats, grad_rays, None, None, None, None, None, None, None, None, None, None


def _volume_rays(volumes, ray_bundle, name: str):
    """``volumes``' densities and features and ``ray_bundle``'s rays as the kernels take them, after
    checking they fit together: ``((densities, features or None, rays (R, 7): local origin, local
    direction, world direction norm, lengths (R, P), ray_vol (R,): each ray's volume, the CPU
    kernels' ray order (``scratch.ray_order``)), the bundle's ray shape)``: the first tuple is what the
    fused autograd functions take first."""
    dens = volumes.densities()
    feats = volumes.features()
    _check_grid(dens, f"{name}: densities")
    needs_grad = dens.requires_grad or (feats is not None and feats.requires_grad)
    scratch.check_scratch(name, scratch.grid_bytes(dens, feats), needs_grad and torch.is_grad_enabled())
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
    for field, values in (("origins", o), ("directions", d), ("lengths", t)):
        if not _all_finite(values):
            raise P3DLabValueError(f"{name}: ray_bundle.{field} is not finite (it holds a NaN or an infinity)")
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
    return (
        dens,
        feats,
        rays,
        t.reshape(n * R0, P),
        ray_vol,
        scratch.ray_order(shape, scratch.grid_bytes(dens, feats)),
    ), shape


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
        eps: EA's ε in ``T_i = Π (1 + ε - a_j)``: a finite number >= 0 (NaN would make every
            pixel NaN).
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
    ``P3DLabValueError`` before anything is allocated (``scratch.check_scratch``).
    """
    if mode not in ("ea", "quadrature"):
        raise P3DLabValueError(f"march_volumes: mode must be 'ea' or 'quadrature', got {mode!r}")
    if last_delta not in ("interval", "inf"):
        raise P3DLabValueError("march_volumes: last_delta must be 'interval' or 'inf'")
    if not 0.0 <= termination_threshold < 1.0:
        raise P3DLabValueError("march_volumes: termination_threshold must be in [0, 1)")
    eps = check_finite_number(eps, "eps", "march_volumes", minimum=0.0)
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
