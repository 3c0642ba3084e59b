"""A radiance field that trains in about a minute on a laptop CPU: a voxel grid of density and
features, read by trilinear interpolation, plus a tiny MLP that turns features and the viewing
direction into colour (the "hybrid" design of DVGO / Plenoxels-style methods, 2021-22).

Why it is fast: the grid holds most of the scene, so the MLP is 2 layers of 32 units instead of
NeRF's 8 of 256, and it only runs on samples whose density is not negligible (empty-space skipping:
in the empty part of the scene the grid answers alone). The book's architecture stays available as
``NeuralRadianceField``; both are volumetric functions for ``ImplicitRenderer`` and ``fit_nerf``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from p3dlab.errors import P3DLabValueError
from p3dlab.nerf.model import HarmonicEmbedding
from p3dlab.ops.volume_sampling import sample_grid
from p3dlab.renderer.raysampling import ray_bundle_to_ray_points


class HybridRadianceField(torch.nn.Module):
    """``field(ray_bundle=...)`` -> (densities (…, P, 1), colours (…, P, 3)).

    Args:
        grid_size: voxels per side of the grid spanning ``[-half_extent, half_extent]³``.
        n_features: feature channels per voxel besides the density.
        n_hidden: width of the colour MLP.
        n_harmonic_functions_dir: positional encoding of the unit viewing direction.
        density_scale: σ = density_scale · softplus(raw).
        init_opacity: opacity of the initial fog across the box (docs/errata.md#e55).
        skip_density: samples with σ below this skip the MLP (colour 0; their weight is ≲ σδ).
    """

    def __init__(
        self,
        grid_size: int = 64,
        n_features: int = 8,
        half_extent: float = 1.1,
        n_hidden: int = 32,
        n_harmonic_functions_dir: int = 2,
        density_scale: float = 10.0,
        init_opacity: float = 0.5,
        skip_density: float = 1e-2,
        seed: int = 0,
    ):
        super().__init__()
        if not (2 <= grid_size <= 256 and n_features >= 1 and half_extent > 0 and 0 < init_opacity < 1):
            raise P3DLabValueError("HybridRadianceField: need 2 <= grid_size <= 256, n_features >= 1, half_extent > 0")
        g = torch.Generator().manual_seed(seed)
        S = grid_size
        sigma0 = -math.log(1.0 - init_opacity) / (2.0 * half_extent)
        grid = torch.randn(1, 1 + n_features, S, S, S, generator=g) * 0.1
        grid[:, 0] = math.log(math.expm1(sigma0 / density_scale))
        self.grid = torch.nn.Parameter(grid)
        self.half_extent, self.density_scale, self.skip_density = float(half_extent), float(density_scale), skip_density
        self.embed_dir = HarmonicEmbedding(n_harmonic_functions_dir)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(n_features + self.embed_dir.get_output_dim(), n_hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(n_hidden, 3),
        )
        with torch.no_grad():  # reproducible MLP initialisation
            for layer in self.mlp:
                if isinstance(layer, torch.nn.Linear):
                    layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) / math.sqrt(layer.in_features))
                    layer.bias.zero_()

    def density_grid(self) -> torch.Tensor:
        """σ at the voxel centres (1, 1, S, S, S)."""
        return self.density_scale * F.softplus(self.grid[:, :1])

    def forward(self, ray_bundle, **kwargs):
        pts = ray_bundle_to_ray_points(ray_bundle)
        shape = pts.shape[:-1]
        local = pts.reshape(1, -1, 3) / self.half_extent
        vals = sample_grid(self.grid, local)[0]  # (M, 1 + F)
        inside = (local[0].abs() <= 1.0).all(-1)
        sigma = torch.where(inside, self.density_scale * F.softplus(vals[:, 0]), torch.zeros_like(vals[:, 0]))
        colours = torch.zeros(sigma.shape[0], 3, dtype=vals.dtype, device=vals.device)
        active = sigma.detach() > self.skip_density
        if bool(active.any()):
            dirs = F.normalize(ray_bundle.directions, dim=-1)[..., None, :].expand(pts.shape).reshape(-1, 3)
            h = torch.cat([vals[active, 1:], self.embed_dir(dirs[active])], -1)
            colours = colours.index_put((active.nonzero()[:, 0],), torch.sigmoid(self.mlp(h)))
        return sigma.reshape(*shape, 1), colours.reshape(*shape, 3)
