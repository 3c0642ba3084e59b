"""Losses (PyTorch3D's ``pytorch3d.loss`` names)."""

from p3dlab.loss.image_losses import huber, psnr, ssim
from p3dlab.loss.mesh_losses import mesh_edge_loss, mesh_laplacian_smoothing, mesh_normal_consistency
from p3dlab.ops.chamfer import chamfer_distance

__all__ = [
    "chamfer_distance",
    "huber",
    "psnr",
    "ssim",
    "mesh_edge_loss",
    "mesh_laplacian_smoothing",
    "mesh_normal_consistency",
]
