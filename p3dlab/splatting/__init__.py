"""3D Gaussian splatting's training: raw parameters, Adam with per-parameter learning rates,
densification (clone / split), pruning, opacity reset and the SH schedule (docs/gaussian-splatting.md)."""

from p3dlab.splatting.model import GaussianModel, rgb_to_sh_dc
from p3dlab.splatting.training import (
    GaussianTrainer,
    SplatHistory,
    SplatSchedule,
    d_ssim_loss,
    fit_gaussians,
    scene_extent,
)

__all__ = [
    "GaussianModel",
    "GaussianTrainer",
    "SplatHistory",
    "SplatSchedule",
    "d_ssim_loss",
    "fit_gaussians",
    "rgb_to_sh_dc",
    "scene_extent",
]
