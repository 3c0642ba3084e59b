"""Turning K fragments per pixel into RGBA (docs/conventions.md#blending), all differentiable: torch
ops, and the silhouette's alpha as one operation (``p3dlab.ops.silhouette_alpha``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.silhouette import silhouette_alpha

_EPS = 1e-10


@dataclass
class BlendParams:
    """``sigma``: width of the sigmoid of the edge distance (edge softness). ``gamma``: softness of
    the depth blend in ``softmax_rgb_blend`` (how much hidden faces show). Note the book has these
    two reversed (docs/errata.md#e73)."""

    sigma: float = 1e-4
    gamma: float = 1e-4
    background_color: Sequence[float] = (1.0, 1.0, 1.0)

    def __post_init__(self):
        for name in ("sigma", "gamma"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise P3DLabValueError(f"BlendParams.{name} must be a finite number > 0, got {v!r}")


def _background(blend_params: BlendParams, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(blend_params.background_color, dtype=like.dtype, device=like.device)


def hard_rgb_blend(colors: torch.Tensor, fragments, blend_params: BlendParams) -> torch.Tensor:
    """RGB of slot 0 (background where empty); alpha 1 on the object, 0 elsewhere. (N, H, W, 4)."""
    empty = fragments.pix_to_face[..., 0] < 0
    rgb = torch.where(empty[..., None], _background(blend_params, colors), colors[..., 0, :])
    return torch.cat([rgb, (~empty)[..., None].to(colors.dtype)], -1)


def sigmoid_alpha_blend(colors: torch.Tensor, fragments, blend_params: BlendParams) -> torch.Tensor:
    """Silhouette: ``A = 1 - prod_k (1 - sigmoid(-d_k / sigma))`` over valid slots (computed in log
    space, stable for any sigma; ``p3dlab.ops.silhouette_alpha``, a kernel on the CPU); RGB = colour
    of slot 0. (N, H, W, 4)."""
    alpha = silhouette_alpha(fragments.pix_to_face, fragments.dists, blend_params.sigma)
    return torch.cat([colors[..., 0, :], alpha[..., None].to(colors.dtype)], -1)


def softmax_rgb_blend(
    colors: torch.Tensor, fragments, blend_params: BlendParams, znear=1.0, zfar=100.0
) -> torch.Tensor:
    """Soft rasterizer blend (SoftRas / PyTorch3D): per slot ``p_k = sigmoid(-d_k/sigma)``,
    reversed depth ``z_k = (zfar - Z_k)/(zfar - znear)``, weights ``w_k = p_k exp((z_k - M)/gamma)``
    with ``M = max(max_k z_k, 1e-10)``, background weight ``max(exp((1e-10 - M)/gamma), 1e-10)``;
    ``A = 1 - prod (1 - p_k)``. (N, H, W, 4)."""
    valid = fragments.pix_to_face >= 0
    m = valid.to(colors.dtype)
    prob = torch.sigmoid(-fragments.dists / blend_params.sigma) * m
    alpha = silhouette_alpha(fragments.pix_to_face, fragments.dists, blend_params.sigma).to(colors.dtype)
    znear = torch.as_tensor(znear, dtype=colors.dtype, device=colors.device)
    zfar = torch.as_tensor(zfar, dtype=colors.dtype, device=colors.device)
    if znear.ndim:
        znear = znear.view(-1, 1, 1, 1)
    if zfar.ndim:
        zfar = zfar.view(-1, 1, 1, 1)
    z_inv = (zfar - fragments.zbuf) / (zfar - znear) * m
    z_max = z_inv.max(dim=-1, keepdim=True).values.clamp(min=_EPS)
    weights = prob * torch.exp((z_inv - z_max) / blend_params.gamma)
    delta = torch.exp((_EPS - z_max) / blend_params.gamma).clamp(min=_EPS)
    denom = weights.sum(-1, keepdim=True) + delta
    rgb = (weights[..., None] * colors).sum(-2) + delta * _background(blend_params, colors)
    return torch.cat([rgb / denom, alpha[..., None]], -1)
