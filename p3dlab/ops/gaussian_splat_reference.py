"""Gaussian splatting's compositing in plain torch, dense: every Gaussian against every pixel, no tiles
(docs/kernels.md#gaussian-splatting). The reference the kernels are tested against, and the renderer's
``backend="reference"``; autograd differentiates it.

It applies the kernels' rules as functions of each (pixel, Gaussian) pair, never of the tiles: a
Gaussian counts at a pixel where ``q = d^T conic d <= 9`` and ``alpha >= alpha_min``, and a pixel uses
its depth-sorted Gaussians while the transmittance after them stays ``>= transmittance_min``. Since
the transmittance only falls along the list, that is the prefix the kernels composite before they
stop, so both give the same image.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from p3dlab.ops.gaussian_splat import (
    ALPHA_MAX,
    CUTOFF,
    check_screen_gaussians,
    check_thresholds,
    draw_order,
)
from p3dlab.runtime import memory_budget

__all__ = ["rasterize_gaussians_reference"]


def rasterize_gaussians_reference(
    means2d: torch.Tensor,
    conics: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    depths: torch.Tensor,
    radii: torch.Tensor,
    image_size: Tuple[int, int],
    alpha_min: float = 1.0 / 255.0,
    transmittance_min: float = 1e-4,
    max_pairs: Optional[int] = None,
):
    """``rasterize_gaussians``' result, computed densely in torch: ``(color (H, W, 3), T (H, W))``.

    For the pixels of a chunk (at most ``max_pairs`` (pixel, Gaussian) pairs at a time, default
    2^22) and the visible Gaussians sorted by depth:

        alpha_pk = min(0.99, o_k exp(-q_pk / 2)) where q_pk <= 9 and that is >= alpha_min, else 0
        T_pk     = prod_{m <= k} (1 - alpha_pm)             (cumulative product)
        used_pk  = T_pk >= transmittance_min
        C_p      = sum_k used_pk alpha_pk T_p(k-1) c_k,     T_p = prod_k (1 - used_pk alpha_pk)
    """
    op = "rasterize_gaussians_reference"
    H, W = check_screen_gaussians(means2d, conics, opacities, colors, depths, radii, image_size, op)
    a_min, t_min = check_thresholds(alpha_min, transmittance_min, op)
    order = draw_order(depths, radii)
    dt, dev = means2d.dtype, means2d.device
    m, cn, o, c = means2d[order], conics[order], opacities[order], colors[order]
    n = order.shape[0]
    rows, cols = torch.meshgrid(
        torch.arange(H, dtype=dt, device=dev), torch.arange(W, dtype=dt, device=dev), indexing="ij"
    )
    py, px = rows.reshape(-1), cols.reshape(-1)
    chunk = max(1, (max_pairs or 2**22) // max(n, 1))
    # autograd keeps about ten (pixel, Gaussian) tensors of every chunk for the backward
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (means2d, conics, opacities, colors))
    pairs = H * W * n if needs_grad else min(chunk, H * W) * n
    memory_budget.check_fits(
        op, 10 * pairs * means2d.element_size(), f"{H} x {W} pixels x {n} Gaussians, densely", "image_size"
    )
    colors_out, t_out = [], []
    for p0 in range(0, H * W, chunk):
        dx = m[None, :, 0] - px[p0 : p0 + chunk, None]  # (P, N)
        dy = m[None, :, 1] - py[p0 : p0 + chunk, None]
        q = cn[None, :, 0] * dx * dx + 2.0 * cn[None, :, 1] * dx * dy + cn[None, :, 2] * dy * dy
        alpha = torch.clamp_max(o[None, :] * torch.exp(-0.5 * q), ALPHA_MAX)
        keep = (q <= CUTOFF) & (alpha >= a_min)
        alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
        t_after = torch.cumprod(1.0 - alpha, dim=1)
        t_before = torch.cat([torch.ones_like(t_after[:, :1]), t_after[:, :-1]], 1)
        used = t_after >= t_min
        weights = torch.where(used, alpha * t_before, torch.zeros_like(alpha))
        colors_out.append(weights @ c)
        t_out.append(torch.where(used, 1.0 - alpha, torch.ones_like(alpha)).prod(1))
    if not colors_out:  # no pixels cannot happen (H, W >= 1); no Gaussians gives empty products
        return torch.zeros((H, W, 3), dtype=dt, device=dev), torch.ones((H, W), dtype=dt, device=dev)
    return torch.cat(colors_out).reshape(H, W, 3), torch.cat(t_out).reshape(H, W)
