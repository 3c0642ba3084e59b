"""The quadrature render fused with the multi-view fitting loss of ``VoxelRadianceField``
(``p3dlab.volumes.reconstruction``), and the activations of its raw parameters: one model's fast
path, kept apart from the general volume operations (``volume_sampling``) it builds on.

``march_volumes_mse(volumes, ray_bundle, target_features, target_opacity)`` returns the MSE of colour
and opacity; on the CPU it scatters the loss's gradient ray by ray, right after marching each ray, so
nothing is kept between forward and backward (``p3dlab.kernels.volume_cpu.march_volume_mse_cpu``).
Elsewhere it is ``march_volumes`` followed by ``F.mse_loss``, the same values.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch.autograd.function import once_differentiable

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.checks import check_finite_number
from p3dlab.ops.volume_sampling import _kernel_args, _np, _volume_rays, march_volumes
from p3dlab.runtime import volume_scratch as scratch
from p3dlab.runtime.fork_safety import check_cpu_kernels


class _MarchVolumesMSE(torch.autograd.Function):
    """The fused quadrature render + squared-error loss of ``march_volumes_mse`` (CPU, density + RGB
    grids, no ray gradients). Its forward also computes the loss's gradient in the densities and
    features (``march_volume_mse_cpu``); the backward scales it by the loss's upstream gradient.
    Inputs: densities, features (V, 3, D, H, W), rays (R, 7), lengths (R, P), ray_vol (R,), the ray
    order (``scratch.band_order``), the targets (R, 3) and (R,), eps, align, last_inf, and ``raw_scale``:
    0, or the density scale s of raw parameters (``march_volumes_mse``'s ``raw_density_scale``),
    whose activations the packing applies and whose derivatives the unpacking applies."""

    @staticmethod
    def forward(ctx, dens, feats, rays, lengths, ray_vol, order, target_f, target_o, eps, align, last_inf, raw_scale):
        from p3dlab.kernels import volume_cpu as vc

        check_cpu_kernels("march_volumes_mse")

        dt = dens.dtype
        V, _, D, H, W = dens.shape
        # a copy of the grid per task, each voxel's values next to its gradient accumulators
        n_tasks = scratch.n_tasks(dens.numel() * 8 * dens.element_size(), dens.device)
        work = scratch.reused_empty((n_tasks, V * D * H * W * 8), dt, dens.device)
        flat_dens = _np(dens.contiguous()).reshape(-1)
        flat_feats = _np(feats.to(dt).contiguous()).reshape(-1)
        if raw_scale:  # float32 grids
            sig_dens = scratch.reused_empty((V * D * H * W,), dt, dens.device)
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
        vc.march_volume_mse_cpu(*_kernel_args(args), scratch.prefetch_ahead(work[0]))
        grad_dens = scratch.reused_empty((V, 1, D, H, W), dt, dens.device)
        grad_feats = scratch.reused_empty((V, 3, D, H, W), dt, dens.device)
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
    eps = check_finite_number(eps, "eps", "march_volumes_mse", minimum=0.0)
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
        scratch.band_order(shape),
        target_features.reshape(-1, 3),
        target_opacity.reshape(-1),
        float(eps),
        bool(volumes.align_corners),
        last_delta == "inf",
        raw_density_scale or 0.0,
    )
    return loss, out_f.reshape(*shape, 3), out_o.reshape(*shape, 1)
