"""Feature fields and the composition operator (docs/giraffe.md#the-composition-operator).

A feature field maps a point to a density σ >= 0 and a feature vector f (C channels) instead of
NeRF's colour. GIRAFFE gives every object its own field, conditioned on a shape code z_s (which
shapes the density) and an appearance code z_a (which only changes the features), evaluated in
the object's own box coordinates; a background field fills the rest.

The composition operator merges K fields at a point x:

    σ(x) = Σ_k σ_k(x)                       densities add
    f(x) = Σ_k σ_k(x) f_k(x) / σ(x)         features are the density-weighted mean (0 where σ = 0)

Volume rendering of (σ, f) then gives one feature per ray (``QuadratureRaymarcher``).
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F

from p3dlab.errors import P3DLabValueError
from p3dlab.renderer.implicit.harmonic_embedding import HarmonicEmbedding


def composite_fields(densities: torch.Tensor, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Compose K fields sampled at the same points.

    Args:
        densities: (K, ..., 1) σ_k >= 0; features: (K, ..., C) f_k.
    Returns ``(σ (..., 1), f (..., C))`` with ``σ = Σ_k σ_k`` and ``f = Σ_k σ_k f_k / σ``, and f = 0
    where σ = 0 (no field is there; its weight in the render is 0 anyway). Differentiable, without
    NaN gradients at σ = 0."""
    if densities.dim() < 2 or densities.shape[-1] != 1:
        raise P3DLabValueError(f"composite_fields: densities must be (K, ..., 1), got {tuple(densities.shape)}")
    if features.shape[:-1] != densities.shape[:-1]:
        raise P3DLabValueError(
            f"composite_fields: features {tuple(features.shape)} must match densities {tuple(densities.shape)} "
            "except in the last axis"
        )
    if bool((densities < 0).any()) or bool(torch.isnan(densities).any()):
        raise P3DLabValueError("composite_fields: densities must be >= 0 (and not NaN)")
    sigma = densities.sum(0)
    weighted = (densities * features).sum(0)
    occupied = sigma > 0
    return sigma, torch.where(occupied, weighted / torch.where(occupied, sigma, torch.ones_like(sigma)), 0.0)


def _init_linear(layer: torch.nn.Linear, generator: torch.Generator, gain: float = math.sqrt(2.0)) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * gain / math.sqrt(layer.in_features))
        layer.bias.zero_()


class ObjectFeatureField(torch.nn.Module):
    """``field(u, z_shape, z_appearance)`` -> (σ (M, 1), f (M, C)) at object-local points u (M, 3).

    The density branch sees the positional encoding γ(u) and the shape code:
    ``h = MLP([γ(u), z_s])``, ``σ = density_scale · softplus(w_σ·h + b)``; the feature branch sees
    γ(u) and the appearance code only: ``f = MLP([γ(u), z_a])``. (GIRAFFE feeds the feature branch
    ``[h, z_a]``; trained as an auto-decoder, that lets the shape code carry the colour too, and
    swapping appearance codes then changes little. Keeping z_s out of the features separates "what"
    from "what colour" by construction, at the price of shading that cannot depend on the shape.)
    σ is 0 outside the box ``|u|_∞ <= 1``, so an object never reaches past its box. One field
    serves every object: the codes tell them apart."""

    def __init__(
        self,
        n_features: int = 16,
        shape_dim: int = 16,
        appearance_dim: int = 16,
        n_hidden: int = 64,
        n_harmonic_functions: int = 4,
        density_scale: float = 10.0,
        seed: int = 0,
    ):
        super().__init__()
        if min(n_features, shape_dim, appearance_dim, n_hidden) < 1 or n_harmonic_functions < 0 or density_scale <= 0:
            raise P3DLabValueError("ObjectFeatureField: sizes must be >= 1 and density_scale > 0")
        g = torch.Generator().manual_seed(seed)
        self.embed = HarmonicEmbedding(n_harmonic_functions)
        d_in = self.embed.get_output_dim() + shape_dim
        self.shape_dim, self.appearance_dim, self.n_features = shape_dim, appearance_dim, n_features
        self.trunk1 = torch.nn.Linear(d_in, n_hidden)
        self.trunk2 = torch.nn.Linear(n_hidden, n_hidden)
        self.density = torch.nn.Linear(n_hidden, 1)
        self.feature1 = torch.nn.Linear(self.embed.get_output_dim() + appearance_dim, n_hidden)
        self.feature2 = torch.nn.Linear(n_hidden, n_features)
        for layer in (self.trunk1, self.trunk2, self.feature1):
            _init_linear(layer, g)
        _init_linear(self.density, g, 0.1)
        _init_linear(self.feature2, g, 1.0)
        self.density.bias.data.fill_(-2.0)  # start nearly empty
        self.density_scale = float(density_scale)

    def forward(self, u: torch.Tensor, z_shape: torch.Tensor, z_appearance: torch.Tensor):
        gamma = self.embed(u)
        h = F.relu(self.trunk1(torch.cat([gamma, z_shape], -1)))
        h = F.relu(self.trunk2(h))
        inside = (u.abs() <= 1.0).all(-1, keepdim=True)
        sigma = torch.where(inside, self.density_scale * F.softplus(self.density(h)), 0.0)
        f = self.feature2(F.relu(self.feature1(torch.cat([gamma, z_appearance], -1))))
        return sigma, f


class BackgroundFeatureField(torch.nn.Module):
    """A sky at infinity: features depend on the unit ray direction only, ``f = MLP(γ(d))``, and the
    density is ``sky_density`` beyond ``radius`` from the origin and 0 inside, so the objects, which
    stay inside, are always in front of it. With the marcher's last step infinite, every ray ends in
    the sky."""

    def __init__(
        self,
        n_features: int = 16,
        n_hidden: int = 32,
        n_harmonic_functions: int = 2,
        radius: float = 2.5,
        sky_density: float = 10.0,
        seed: int = 1,
    ):
        super().__init__()
        if min(n_features, n_hidden) < 1 or radius <= 0 or sky_density <= 0:
            raise P3DLabValueError("BackgroundFeatureField: sizes must be >= 1, radius and sky_density > 0")
        g = torch.Generator().manual_seed(seed)
        self.embed = HarmonicEmbedding(n_harmonic_functions)
        self.layer1 = torch.nn.Linear(self.embed.get_output_dim(), n_hidden)
        self.layer2 = torch.nn.Linear(n_hidden, n_features)
        _init_linear(self.layer1, g)
        _init_linear(self.layer2, g, 1.0)
        self.radius, self.sky_density = float(radius), float(sky_density)

    def forward(self, points: torch.Tensor, directions: torch.Tensor):
        """points (..., P, 3) world samples, directions (..., 3) their rays' directions ->
        (σ (..., P, 1), f (..., P, C))."""
        d = F.normalize(directions, dim=-1)
        f = self.layer2(F.relu(self.layer1(self.embed(d))))  # (..., C)
        beyond = points.norm(dim=-1, keepdim=True) > self.radius
        sigma = torch.where(beyond, self.sky_density, 0.0).to(points.dtype)
        return sigma, f[..., None, :].expand(*points.shape[:-1], f.shape[-1])
