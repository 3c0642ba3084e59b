"""The trainable state of a Gaussian-splatting scene: raw (unconstrained) parameters and their
initialisation from a point cloud or a random box (docs/gaussian-splatting.md#parameters).

Adam works on raw values that may take any real value; ``GaussianModel.splats`` activates them into
a ``GaussianSplats`` every step:

    scales = exp(log_scales),  opacities = sigmoid(logit_opacities),
    rotations = quaternions (normalised by GaussianSplats),  sh = [sh_dc, sh_rest[:, :(d+1)^2 - 1]].
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.structures.gaussians import GaussianSplats

#: The zeroth spherical-harmonic basis constant: colour = 0.5 + SH_C0 * sh[:, 0] at degree 0.
SH_C0 = 0.28209479177387814

#: The raw parameters, in the order they appear as Adam's parameter groups.
PARAMETER_NAMES = ("means", "log_scales", "quaternions", "logit_opacities", "sh_dc", "sh_rest")


def rgb_to_sh_dc(rgb: torch.Tensor) -> torch.Tensor:
    """The degree-0 coefficient that renders ``rgb``: ``(rgb - 0.5) / SH_C0``."""
    return (rgb - 0.5) / SH_C0


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


class GaussianModel(torch.nn.Module):
    """N Gaussians as raw parameters: ``means`` (N, 3), ``log_scales`` (N, 3), ``quaternions`` (N, 4)
    (w, x, y, z), ``logit_opacities`` (N,), ``sh_dc`` (N, 1, 3) and ``sh_rest`` (N, (D+1)^2 - 1, 3)
    for the largest SH degree ``max_sh_degree = D``.

    Build one with :meth:`from_points` or :meth:`random_box`. Densification replaces the parameter
    tensors (``p3dlab.splatting.GaussianTrainer`` keeps the optimiser in step with them)."""

    def __init__(
        self,
        means: torch.Tensor,
        log_scales: torch.Tensor,
        quaternions: torch.Tensor,
        logit_opacities: torch.Tensor,
        sh_dc: torch.Tensor,
        sh_rest: torch.Tensor,
    ):
        super().__init__()
        n = means.shape[0] if means.dim() == 2 else -1
        expected = {
            "means": (n, 3),
            "log_scales": (n, 3),
            "quaternions": (n, 4),
            "logit_opacities": (n,),
            "sh_dc": (n, 1, 3),
        }
        values = dict(
            means=means,
            log_scales=log_scales,
            quaternions=quaternions,
            logit_opacities=logit_opacities,
            sh_dc=sh_dc,
            sh_rest=sh_rest,
        )
        for name, shape in expected.items():
            if tuple(values[name].shape) != shape:
                raise P3DLabValueError(
                    f"GaussianModel: {name} must have shape {shape}, got {tuple(values[name].shape)}"
                )
        k_rest = sh_rest.shape[1] if sh_rest.dim() == 3 else -1
        degree = math.isqrt(k_rest + 1) - 1 if k_rest >= 0 else -1
        if sh_rest.dim() != 3 or sh_rest.shape[0] != n or sh_rest.shape[2] != 3 or (degree + 1) ** 2 != k_rest + 1:
            raise P3DLabValueError(
                f"GaussianModel: sh_rest must have shape (N, (D+1)^2 - 1, 3) for D in 0..3, got {tuple(sh_rest.shape)}"
            )
        if degree > 3:
            raise P3DLabValueError(f"GaussianModel: spherical harmonics go up to degree 3, got {degree}")
        for name, value in values.items():
            if not value.is_floating_point() or not bool(torch.isfinite(value).all()):
                raise P3DLabValueError(f"GaussianModel: {name} must be finite floating-point values")
            setattr(self, name, torch.nn.Parameter(value.detach().clone()))
        self.max_sh_degree = degree

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[0]

    def splats(self, sh_degree: Optional[int] = None) -> GaussianSplats:
        """The activated Gaussians (in the autograd graph), with SH coefficients up to ``sh_degree``
        (default ``max_sh_degree``)."""
        degree = self.max_sh_degree if sh_degree is None else min(int(sh_degree), self.max_sh_degree)
        sh = torch.cat([self.sh_dc, self.sh_rest[:, : (degree + 1) ** 2 - 1]], 1)
        return GaussianSplats(
            self.means, torch.exp(self.log_scales), self.quaternions, torch.sigmoid(self.logit_opacities), sh
        )

    @classmethod
    def from_points(
        cls,
        points: torch.Tensor,
        colours: Optional[torch.Tensor] = None,
        max_sh_degree: int = 3,
        initial_opacity: float = 0.1,
        neighbours: int = 3,
    ) -> "GaussianModel":
        """One isotropic Gaussian per point (P, 3), as 3DGS starts from a structure-from-motion cloud.

        Scale: the root-mean-square distance to the ``neighbours`` nearest other points (so the cloud
        covers its surface without holes); rotation: identity; opacity: ``initial_opacity``; colour:
        ``colours`` (P, 3) in [0, 1] as the degree-0 SH coefficient (grey 0.5 when None), higher
        degrees 0."""
        if points.dim() != 2 or points.shape[1] != 3 or points.shape[0] < 1:
            raise P3DLabValueError(
                f"GaussianModel.from_points: points must be (P, 3) with P >= 1, got {tuple(points.shape)}"
            )
        if not points.is_floating_point() or not bool(torch.isfinite(points).all()):
            raise P3DLabValueError("GaussianModel.from_points: points must be finite floating-point values")
        if not 0 <= max_sh_degree <= 3:
            raise P3DLabValueError(f"GaussianModel.from_points: max_sh_degree must be 0..3, got {max_sh_degree}")
        if not 0.0 < initial_opacity < 1.0:
            raise P3DLabValueError(
                f"GaussianModel.from_points: initial_opacity must be in (0, 1), got {initial_opacity}"
            )
        n = points.shape[0]
        if colours is not None and tuple(colours.shape) != (n, 3):
            raise P3DLabValueError(f"GaussianModel.from_points: colours must be (P, 3), got {tuple(colours.shape)}")
        scale = _neighbour_scale(points, neighbours)
        dtype, device = points.dtype, points.device
        quaternions = torch.zeros(n, 4, dtype=dtype, device=device)
        quaternions[:, 0] = 1.0
        rgb = torch.full((n, 3), 0.5, dtype=dtype, device=device) if colours is None else colours.to(dtype)
        return cls(
            means=points,
            log_scales=torch.log(scale)[:, None].expand(n, 3),
            quaternions=quaternions,
            logit_opacities=torch.full((n,), _logit(initial_opacity), dtype=dtype, device=device),
            sh_dc=rgb_to_sh_dc(rgb)[:, None, :],
            sh_rest=torch.zeros(n, (max_sh_degree + 1) ** 2 - 1, 3, dtype=dtype, device=device),
        )

    @classmethod
    def random_box(
        cls,
        num_gaussians: int,
        box_min=(-1.0, -1.0, -1.0),
        box_max=(1.0, 1.0, 1.0),
        seed: int = 0,
        max_sh_degree: int = 3,
        initial_opacity: float = 0.1,
        dtype: torch.dtype = torch.float32,
    ) -> "GaussianModel":
        """``num_gaussians`` points uniform in the box, random colours, then as :meth:`from_points`
        (the 3DGS paper's start for synthetic scenes without a point cloud)."""
        if num_gaussians < 1:
            raise P3DLabValueError(f"GaussianModel.random_box: num_gaussians must be >= 1, got {num_gaussians}")
        lo, hi = torch.tensor(box_min, dtype=dtype), torch.tensor(box_max, dtype=dtype)
        if lo.shape != (3,) or hi.shape != (3,) or not bool((hi > lo).all()):
            raise P3DLabValueError("GaussianModel.random_box: box_min and box_max are 3 numbers with box_min < box_max")
        gen = torch.Generator().manual_seed(seed)
        points = lo + (hi - lo) * torch.rand(num_gaussians, 3, generator=gen, dtype=dtype)
        colours = torch.rand(num_gaussians, 3, generator=gen, dtype=dtype)
        return cls.from_points(points, colours, max_sh_degree, initial_opacity)


def _neighbour_scale(points: torch.Tensor, neighbours: int) -> torch.Tensor:
    """RMS distance of each point to its ``neighbours`` nearest others (P,), floored at 1e-7; chunks of
    rows keep the distance matrix small."""
    n = points.shape[0]
    k = min(neighbours, n - 1)
    if k < 1:
        return torch.full((n,), 0.01, dtype=points.dtype, device=points.device)
    out = []
    for start in range(0, n, 2048):
        d2 = torch.cdist(points[start : start + 2048], points).pow(2)
        nearest = d2.topk(k + 1, dim=1, largest=False).values[:, 1:]  # drop the point itself
        out.append(nearest.mean(1).sqrt())
    return torch.cat(out).clamp(min=1e-7)
