"""Image losses and metrics shared by volume fitting and NeRF."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(prediction: torch.Tensor, target: torch.Tensor, max_value: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB: ``10 log10(max^2 / MSE)``."""
    mse = F.mse_loss(prediction, target).clamp(min=1e-12)
    return 10.0 * torch.log10(torch.as_tensor(max_value**2, dtype=mse.dtype) / mse)


def huber(x: torch.Tensor, y: torch.Tensor, scaling: float = 0.1) -> torch.Tensor:
    """Pseudo-Huber loss ``s^2 (sqrt(1 + ((x - y)/s)^2) - 1)``: quadratic near 0, linear far away."""
    diff = (x - y) / scaling
    return (scaling**2 * (torch.sqrt(1 + diff**2) - 1)).mean()
