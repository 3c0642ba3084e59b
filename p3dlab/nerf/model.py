"""NeRF building blocks with PyTorch3D's tutorial names (docs/conventions.md#ray-marching).

``HarmonicEmbedding`` (defined in ``p3dlab.renderer.implicit.harmonic_embedding``, where PyTorch3D
has it): ``[sin(w_k x), cos(w_k x), x]`` with ``w_k = omega_0 2^k`` (log spacing) or
``omega_0 (1 + k (2^{L-1} - 1)/(L - 1))`` (linear), output dimension ``d (2L + 1)`` with the input
appended. The book's variant is L = 60, omega_0 = 0.1, without the input.

``NeuralRadianceField``: the tutorial's MLP — embedded positions through ``n_layers`` of
``n_hidden`` units with one skip connection, a density head (softplus, so densities are >= 0 and
work with the quadrature marcher) and a colour head that also sees the embedded viewing direction
(sigmoid colours). It is a volumetric function for ``ImplicitRenderer``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from p3dlab.loss.image_losses import huber, psnr  # noqa: F401  (re-exported by p3dlab.nerf)
from p3dlab.renderer.implicit.harmonic_embedding import HarmonicEmbedding


class NeuralRadianceField(torch.nn.Module):
    """``field(ray_bundle=...)`` -> (densities (..., P, 1), colours (..., P, 3)).

    Args:
        n_harmonic_functions_xyz / _dir: positional encodings of points and directions.
        n_hidden: width of the MLP; n_layers: depth of the trunk; skips: layers that see the
            embedded input again.
    """

    def __init__(
        self,
        n_harmonic_functions_xyz: int = 6,
        n_harmonic_functions_dir: int = 4,
        n_hidden: int = 128,
        n_layers: int = 4,
        skips: Sequence[int] = (2,),
    ):
        super().__init__()
        from p3dlab.renderer.raysampling import ray_bundle_to_ray_points

        self._points = ray_bundle_to_ray_points
        self.embed_xyz = HarmonicEmbedding(n_harmonic_functions_xyz)
        self.embed_dir = HarmonicEmbedding(n_harmonic_functions_dir)
        d_xyz, d_dir = self.embed_xyz.get_output_dim(), self.embed_dir.get_output_dim()
        self.skips = set(skips)
        layers, d = [], d_xyz
        for i in range(n_layers):
            layers.append(torch.nn.Linear(d + (d_xyz if i in self.skips else 0), n_hidden))
            d = n_hidden
        self.trunk = torch.nn.ModuleList(layers)
        self.density = torch.nn.Linear(n_hidden, 1)
        self.feature = torch.nn.Linear(n_hidden, n_hidden)
        self.colour = torch.nn.Sequential(
            torch.nn.Linear(n_hidden + d_dir, n_hidden // 2),
            torch.nn.Softplus(beta=10.0),
            torch.nn.Linear(n_hidden // 2, 3),
        )
        self.density.bias.data.fill_(-1.5)  # start nearly transparent: fewer floaters early on

    def forward(self, ray_bundle, **kwargs):
        pts = self._points(ray_bundle)
        x = self.embed_xyz(pts)
        h = x
        for i, layer in enumerate(self.trunk):
            if i in self.skips:
                h = torch.cat([h, x], -1)
            h = F.softplus(layer(h), beta=10.0)
        densities = F.softplus(self.density(h))
        dirs = F.normalize(ray_bundle.directions, dim=-1)[..., None, :].expand_as(pts)
        colours = torch.sigmoid(self.colour(torch.cat([self.feature(h), self.embed_dir(dirs)], -1)))
        return densities, colours


def save_checkpoint(path, model: torch.nn.Module, optimizer=None, **extra) -> None:
    """Model (and optimizer) state plus any extra values, with ``torch.save``."""
    torch.save(
        {"model": model.state_dict(), "optimizer": optimizer.state_dict() if optimizer else None, "extra": extra}, path
    )


def load_checkpoint(path, model: torch.nn.Module, optimizer=None) -> dict:
    """Restore a checkpoint written by :func:`save_checkpoint`; returns its extra values."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    if optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    return state["extra"]
