"""Rendering 3D Gaussians with the kit's cameras (docs/kernels.md#gaussian-splatting).

``render_gaussians`` chains the three steps of ``p3dlab.ops.gaussian_splat``: view-dependent colours
from spherical harmonics, the EWA projection to the screen, and the tile-based compositing (the Numba
kernels, or the dense torch reference). Pixels follow the mesh rasterizer's NDC pixel centres, so a
splat image lines up with a mesh render of the same camera.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.checks import check_finite_number
from p3dlab.ops.gaussian_splat import (
    project_gaussians,
    rasterize_gaussians,
    spherical_harmonics_colors,
)
from p3dlab.ops.gaussian_splat_reference import rasterize_gaussians_reference
from p3dlab.structures.gaussians import GaussianSplats

__all__ = ["GaussianRender", "render_gaussians"]

_BACKENDS = ("auto", "reference")


class GaussianRender(NamedTuple):
    """What ``render_gaussians`` returns.

    image: (H, W, 3) composited colour over the background.
    alpha: (H, W) accumulated opacity ``1 - T``.
    means2d: (N, 2) projected centres in pixels (u = column, v = row; pixel (i, j) is centred at
        (j, i)). When the Gaussians need gradients the renderer called ``retain_grad()`` on it, so after
        ``loss.backward()`` ``means2d.grad`` is the screen-space positional gradient 3DGS densifies by.
    radii: (N,) int64 pixel radius of the 3-sigma footprint; 0 = culled (behind the near plane,
        outside the frustum, degenerate or off the image).
    depths: (N,) view-space z.
    """

    image: torch.Tensor
    alpha: torch.Tensor
    means2d: torch.Tensor
    radii: torch.Tensor
    depths: torch.Tensor


def _image_size(image_size) -> Tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    if not (isinstance(image_size, (tuple, list)) and len(image_size) == 2):
        raise P3DLabValueError(f"render_gaussians: image_size must be (H, W) or an int, got {image_size!r}")
    H, W = image_size
    if any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in (H, W)):
        raise P3DLabValueError(f"render_gaussians: image_size must be two positive ints, got {image_size!r}")
    return H, W


def camera_matrices(cameras, image_size: Tuple[int, int], dtype: torch.dtype) -> Tuple[torch.Tensor, ...]:
    """(world_to_ndc (4, 4), world_to_view (4, 4), camera centre (3,)) of a one-camera batch, as
    row-vector matrices in ``dtype`` (the camera's own transforms: differentiable in R and T)."""
    if len(cameras) != 1:
        raise P3DLabValueError(f"render_gaussians: renders one camera at a time, got a batch of {len(cameras)}")
    kwargs = {} if cameras.in_ndc() or cameras.get_image_size() is not None else {"image_size": (image_size,)}
    full = cameras.get_full_projection_transform(**kwargs).compose(cameras.get_ndc_camera_transform(**kwargs))
    world_to_ndc = full.get_matrix()[0].to(dtype)
    world_to_view = cameras.get_world_to_view_transform().get_matrix()[0].to(dtype)
    centre = cameras.get_camera_center()[0].to(dtype)
    return world_to_ndc, world_to_view, centre


def render_gaussians(
    splats: GaussianSplats,
    cameras,
    image_size: Union[int, Sequence[int]],
    background: Optional[torch.Tensor] = None,
    sh_degree: Optional[int] = None,
    low_pass: float = 0.3,
    alpha_min: float = 1.0 / 255.0,
    transmittance_min: float = 1e-4,
    backend: str = "auto",
    near_plane: float = 0.01,
) -> GaussianRender:
    """Render ``splats`` through one camera (FoVPerspectiveCameras, PerspectiveCameras, ... with batch 1).

    Args:
        splats: the Gaussians (activated values).
        cameras: a kit camera object holding one camera (row vectors, +X left, +Y up).
        image_size: (H, W) or an int.
        background: (3,) colour behind the Gaussians (default black); differentiable.
        sh_degree: use only the first (d + 1)^2 SH coefficients (default: all held).
        low_pass: added to the 2D covariance's diagonal (pixels^2), so every splat covers about a pixel.
        alpha_min: a Gaussian whose alpha at a pixel is below this is skipped there.
        transmittance_min: compositing stops before the transmittance would fall below this.
        backend: "auto" = the Numba kernels (CPU or CUDA by the tensors' device), "reference" = the
            dense pure-torch path (every Gaussian against every pixel: small scenes only).
        near_plane: Gaussians with a view depth at or below it are culled.

    Returns a ``GaussianRender`` (image, alpha, means2d, radii, depths), differentiable w.r.t. the
    means, scales, rotations, opacities, sh, the background and the camera.
    """
    op = "render_gaussians"
    if not isinstance(splats, GaussianSplats):
        raise P3DLabValueError(f"{op}: splats must be a GaussianSplats, got {type(splats).__name__}")
    if backend not in _BACKENDS:
        raise P3DLabValueError(f"{op}: backend must be one of {_BACKENDS}, got {backend!r}")
    H, W = _image_size(image_size)
    low_pass = check_finite_number(low_pass, "low_pass", op, 0.0)
    near_plane = check_finite_number(near_plane, "near_plane", op, 0.0)
    degree = splats.sh_degree if sh_degree is None else sh_degree
    if isinstance(degree, bool) or not isinstance(degree, int) or not 0 <= degree <= splats.sh_degree:
        raise P3DLabValueError(f"{op}: sh_degree must be an int in [0, {splats.sh_degree}] (the degree held)")
    dt, dev = splats.dtype, splats.device
    if background is None:
        background = torch.zeros(3, dtype=dt, device=dev)
    if not isinstance(background, torch.Tensor) or tuple(background.shape) != (3,):
        raise P3DLabValueError(f"{op}: background must be a (3,) tensor")
    if not bool(torch.isfinite(background).all()):
        raise P3DLabValueError(f"{op}: background must be finite")
    for name in ("means", "scales", "rotations", "opacities", "sh"):  # changed in place since it was built?
        t = getattr(splats, name).detach()
        if not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
            raise P3DLabValueError(f"{op}: splats.{name} holds NaN or inf")

    world_to_ndc, world_to_view, centre = camera_matrices(cameras, (H, W), dt)
    world_to_ndc, world_to_view, centre = world_to_ndc.to(dev), world_to_view.to(dev), centre.to(dev)
    proj = project_gaussians(
        splats.means, splats.covariances(), world_to_ndc, world_to_view, (H, W), low_pass, near_plane
    )
    means2d = proj.means2d
    if means2d.requires_grad:
        means2d.retain_grad()
    directions = splats.means - centre
    directions = directions / directions.norm(dim=1, keepdim=True).clamp_min(1e-12)
    colors = spherical_harmonics_colors(splats.sh, directions, degree)
    raster = rasterize_gaussians if backend == "auto" else rasterize_gaussians_reference
    color, transmittance = raster(
        means2d, proj.conics, splats.opacities, colors, proj.depths, proj.radii, (H, W), alpha_min, transmittance_min
    )
    image = color + transmittance[..., None] * background.to(dt)
    return GaussianRender(image, 1.0 - transmittance, means2d, proj.radii, proj.depths)
