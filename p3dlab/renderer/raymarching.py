"""Ray marchers (docs/conventions.md#ray-marching, docs/kernels.md#ray-marchers).

``EmissionAbsorptionRaymarcher`` reproduces PyTorch3D: densities are per-sample opacities a_i in
[0, 1], ``T_i = prod_{j < i} (1 + eps - a_j)``, ``w_i = a_i T_i``, ``F = sum w_i f_i``,
``O = 1 - prod (1 - a_i)``. No step length enters, so the image depends on the number of samples.

``QuadratureRaymarcher`` is the physically based alternative (p3dlab's lesson default): densities
are extinction coefficients sigma_i >= 0, ``tau_i = sigma_i delta_i`` with ``delta_i = (t_{i+1} - t_i)|d|``,
``alpha_i = 1 - exp(-tau_i)``, ``T_{i+1} = T_i exp(-tau_i)``; colour ``sum w_i c_i + T_P c_bg``,
opacity ``1 - T_P`` and expected depth ``sum w_i t_i``. A constant sigma over a length L gives opacity
``1 - exp(-sigma L)`` whatever the number of samples.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple, Optional, Sequence

import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.ops.checks import check_finite_number


def _terminate(T: torch.Tensor, threshold: float) -> torch.Tensor:
    """Mask (…, P) of the samples marched when a ray stops after the first sample whose outgoing
    transmittance ``T[..., i + 1]`` is below ``threshold``; ``T`` is (…, P + 1) with T_0 = 1."""
    below = (T[..., 1:-1] < threshold).to(T.dtype)
    stopped = torch.cumsum(below, -1) > 0
    return torch.cat([torch.ones_like(T[..., :1]), (~stopped).to(T.dtype)], -1).detach()


def _check(densities, features):
    if densities.shape[-1] != 1:
        raise P3DLabValueError(f"rays_densities must end with a size-1 axis, got {tuple(densities.shape)}")
    if features is not None and features.shape[:-1] != densities.shape[:-1]:
        raise P3DLabValueError("rays_features must match rays_densities except in the last axis")
    if bool(torch.isnan(densities).any()):
        raise P3DLabValueError("rays_densities contain NaN")


class EmissionAbsorptionRaymarcher(torch.nn.Module):
    """PyTorch3D's marcher: returns ``cat(F, O)`` (..., C + 1)."""

    def __init__(self, surface_thickness: int = 1, termination_threshold: float = 0.0):
        super().__init__()
        if surface_thickness < 1:
            raise P3DLabValueError("surface_thickness must be >= 1")
        if not 0.0 <= termination_threshold < 1.0:
            raise P3DLabValueError("termination_threshold must be in [0, 1)")
        self.surface_thickness = surface_thickness
        self.termination_threshold = termination_threshold

    def forward(
        self, rays_densities: torch.Tensor, rays_features: torch.Tensor, eps: float = 1e-10, **kwargs
    ) -> torch.Tensor:
        _check(rays_densities, rays_features)
        eps = check_finite_number(eps, "eps", "EmissionAbsorptionRaymarcher", minimum=0.0)
        a = rays_densities[..., 0]
        if bool(((a < 0) | (a > 1)).any()):
            warnings.warn("EmissionAbsorptionRaymarcher: densities outside [0, 1]", stacklevel=2)
        if self.termination_threshold > 0 and a.shape[-1] > 1:
            T = torch.cat([torch.ones_like(a[..., :1]), torch.cumprod(1.0 + eps - a.detach(), dim=-1)], -1)
            a = a * _terminate(T, self.termination_threshold)
        shifted = torch.cumprod(1.0 + eps - a, dim=-1)
        s = self.surface_thickness
        T = torch.cat([torch.ones_like(a[..., :s]), shifted[..., :-s]], -1) if a.shape[-1] > s else torch.ones_like(a)
        w = a * T
        feats = (w[..., None] * rays_features).sum(-2)
        opacity = 1.0 - torch.prod(1.0 - a, dim=-1, keepdim=True)
        return torch.cat([feats, opacity], -1)


class AbsorptionOnlyRaymarcher(torch.nn.Module):
    """Opacity only: ``O = 1 - prod (1 - a_i)`` (..., 1)."""

    def forward(
        self, rays_densities: torch.Tensor, rays_features: Optional[torch.Tensor] = None, **kwargs
    ) -> torch.Tensor:
        _check(rays_densities, None)
        return 1.0 - torch.prod(1.0 - rays_densities[..., 0], dim=-1, keepdim=True)


class RaymarchResult(NamedTuple):
    """Everything a quadrature march computes: ``features`` (…, C) (the background included),
    ``opacity`` (…, 1) = 1 - T_P, ``depth`` (…, 1) = Σ w_i t_i and the per-sample ``weights`` w_i
    (…, P) that hierarchical sampling resamples from."""

    features: torch.Tensor
    opacity: torch.Tensor
    depth: torch.Tensor
    weights: torch.Tensor


class QuadratureRaymarcher(torch.nn.Module):
    """Physically based emission-absorption quadrature. ``forward`` needs the samples' ``lengths``
    (..., P) and the rays' ``directions`` (..., 3) (passed by the renderers) and returns
    ``cat(colour, opacity)`` like PyTorch3D's marchers; ``march`` takes the same arguments and returns
    a ``RaymarchResult`` with the expected depth and the weights too. The marcher keeps no state
    between calls.

    Args:
        background: colour c_bg added with weight T_P (default none: black).
        last_delta: "interval" repeats the previous step for the last sample; "inf" makes the last
            sample absorb everything (original NeRF code).
    """

    def __init__(
        self,
        background: Optional[Sequence[float]] = None,
        last_delta: str = "interval",
        termination_threshold: float = 0.0,
    ):
        super().__init__()
        if last_delta not in ("interval", "inf"):
            raise P3DLabValueError("last_delta must be 'interval' or 'inf'")
        if not 0.0 <= termination_threshold < 1.0:
            raise P3DLabValueError("termination_threshold must be in [0, 1)")
        self.background, self.last_delta = background, last_delta
        self.termination_threshold = termination_threshold

    def forward(self, rays_densities, rays_features, lengths=None, directions=None, **kwargs) -> torch.Tensor:
        result = self.march(rays_densities, rays_features, lengths, directions)
        return torch.cat([result.features, result.opacity], -1)

    def march(self, rays_densities, rays_features, lengths=None, directions=None) -> RaymarchResult:
        """Colour, opacity, expected depth and weights of every ray (see ``RaymarchResult``)."""
        _check(rays_densities, rays_features)
        if lengths is None:
            raise P3DLabValueError(
                "QuadratureRaymarcher needs the sample lengths (use VolumeRenderer/ImplicitRenderer)"
            )
        sigma = rays_densities[..., 0].clamp(min=0)
        step = lengths[..., 1:] - lengths[..., :-1]
        if self.last_delta == "interval":
            last = step[..., -1:] if step.shape[-1] else torch.ones_like(lengths[..., :1])
        else:
            last = torch.full_like(lengths[..., :1], 1e10)
        delta = torch.cat([step, last], -1)
        if directions is not None:
            delta = delta * directions.norm(dim=-1, keepdim=True)
        tau = sigma * delta
        if self.termination_threshold > 0 and tau.shape[-1] > 1:
            T = torch.exp(-torch.cat([torch.zeros_like(tau[..., :1]), torch.cumsum(tau.detach(), -1)], -1))
            tau = tau * _terminate(T, self.termination_threshold)
        log_T = torch.cat([torch.zeros_like(tau[..., :1]), torch.cumsum(tau, -1)], -1)
        T = torch.exp(-log_T)  # T_0 .. T_P
        w = T[..., :-1] - T[..., 1:]  # T_i (1 - exp(-tau_i))
        colour = (w[..., None] * rays_features).sum(-2)
        T_P = T[..., -1:]
        if self.background is not None:
            bg = torch.as_tensor(self.background, dtype=colour.dtype, device=colour.device)
            colour = colour + T_P * bg
        return RaymarchResult(colour, 1.0 - T_P, (w * lengths).sum(-1, keepdim=True), w)
