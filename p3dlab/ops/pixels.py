"""Where the pixels are: the NDC coordinates of pixel centres, the one convention that the
rasterizers, the raysamplers and NeRF's pixel sampling share.

Pixel (i, j) of an H x W image (row i from the top, column j from the left) has its centre at

    x = (W - 2j - 1) / s,    y = (H - 2i - 1) / s,    s = min(H, W)

so +X points left and +Y up (PyTorch3D's NDC), the shorter side spans [-1, 1] and the longer one
proportionally more. The Numba rasterizer computes the same expression per pixel
(``_pixel_ndc`` in ``kernels/mesh_raster_math.py``); computing it here in the same order keeps the
two equal bit for bit, so a ray cast through ``pixel_centres`` meets exactly the point the
rasterizer tested.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

__all__ = ["pixel_centres"]


def pixel_centres(
    H: int, W: int, dtype: torch.dtype = torch.float64, device: Optional[torch.device] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(H, W) NDC x and y of every pixel centre: ``x = (W - 2j - 1)/min(H, W)`` (+X left, +Y up)."""
    s = min(H, W)
    x = (W - 2.0 * torch.arange(W, dtype=dtype, device=device) - 1.0) / s
    y = (H - 2.0 * torch.arange(H, dtype=dtype, device=device) - 1.0) / s
    return x[None, :].expand(H, W), y[:, None].expand(H, W)
