"""Point compositors (PyTorch3D's ``pytorch3d.renderer.points.compositor``): modules that blend the
K points of each pixel with one of the ``p3dlab.renderer.compositing`` functions and fill empty
pixels with an optional background colour."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.renderer.compositing import alpha_composite, norm_weighted_sum, weighted_sum


def _background(images, idx0, background_color):
    if background_color is None:
        return images
    bg = torch.as_tensor(background_color, dtype=images.dtype, device=images.device)
    C = images.shape[1]
    if bg.shape[0] not in (C, C - 1) and not (C == 4 and bg.shape[0] == 3):
        raise P3DLabValueError(f"background_color has {bg.shape[0]} values for {C} channels")
    if bg.shape[0] < C:
        bg = torch.cat([bg, bg.new_ones(C - bg.shape[0])])
    empty = (idx0 < 0)[:, None]
    return torch.where(empty, bg.view(1, C, 1, 1).expand_as(images), images)


class _Compositor(torch.nn.Module):
    _fn = staticmethod(alpha_composite)

    def __init__(self, background_color: Optional[Sequence[float]] = None):
        super().__init__()
        self.background_color = background_color

    def forward(self, fragments, alphas, ptclds, **kwargs):
        images = self._fn(fragments, alphas, ptclds)
        return _background(images, fragments[:, 0], kwargs.get("background_color", self.background_color))


class AlphaCompositor(_Compositor):
    """``compositor(idx (N, K, H, W), alphas (N, K, H, W), features (C, P))`` -> (N, C, H, W)."""

    _fn = staticmethod(alpha_composite)


class NormWeightedCompositor(_Compositor):
    _fn = staticmethod(norm_weighted_sum)


class WeightedSumCompositor(_Compositor):
    _fn = staticmethod(weighted_sum)
