"""Compositing functions for rasterized points (PyTorch3D's ``pytorch3d.renderer.compositing``).

Each takes ``idx`` (N, K, H, W) packed point indices (-1 where empty), ``alphas`` (N, K, H, W) and
``features`` (C, P), and returns (N, C, H, W) images.
"""

from __future__ import annotations

import torch


def _gather(features, idx):
    """features (C, P), idx (N, K, H, W) -> (C, N, K, H, W), zero where idx < 0."""
    f = features[:, idx.clamp(min=0).long()]
    return f * (idx >= 0).to(f.dtype)[None]


def alpha_composite(idx, alphas, features):
    """Front to back: ``F = sum_k alpha_k prod_{l<k} (1 - alpha_l) f_k`` over valid slots."""
    a = alphas * (idx >= 0).to(alphas.dtype)
    trans = torch.cumprod(torch.cat([torch.ones_like(a[:, :1]), 1 - a[:, :-1]], 1), 1)
    return (_gather(features, idx) * (a * trans)[None]).sum(2).permute(1, 0, 2, 3)


def weighted_sum(idx, alphas, features):
    a = alphas * (idx >= 0).to(alphas.dtype)
    return (_gather(features, idx) * a[None]).sum(2).permute(1, 0, 2, 3)


def norm_weighted_sum(idx, alphas, features):
    a = alphas * (idx >= 0).to(alphas.dtype)
    return ((_gather(features, idx) * a[None]).sum(2) / a.sum(1).clamp(min=1e-4)[None]).permute(1, 0, 2, 3)
