"""Batches of voxel grids with PyTorch3D's ``Volumes`` semantics (docs/conventions.md#volumes).

A volume holds densities (N, 1, D, H, W) and optional features (N, C, D, H, W). Local coordinates
(x, y, z) in [-1, 1] index (W, H, D) — reversed with respect to the array order. World and local
coordinates are related by

    x_world = x_local * (S_xyz - 1)/2 * voxel_size - volume_translation

with S_xyz = (W, H, D): **the volume centre sits at -volume_translation** (a sign trap), and voxel
centres span +-(S - 1)/2 * voxel_size (64 voxels of 0.1 -> +-3.15). With ``align_corners=True``
(p3dlab's default) voxel centres sit at local -1 ... +1; with False at -1 + 1/S ... 1 - 1/S.
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch

from p3dlab.errors import P3DLabValueError


def _per_volume(value, n: int, name: str, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        t = t.expand(3)
    if t.ndim == 1:
        if t.shape[0] != 3:
            raise P3DLabValueError(f"Volumes: {name} must be a scalar, (3,) or (N, 3)")
        t = t[None].expand(n, 3)
    if t.shape != (n, 3):
        raise P3DLabValueError(f"Volumes: {name} must be a scalar, (3,) or ({n}, 3), got {tuple(t.shape)}")
    return t


def _has_nan(x: torch.Tensor) -> bool:
    """Whether ``x`` holds a NaN: a sum that is not NaN proves there is none, in one reduction
    without an element-wise mask (1.4 ms -> 0.06 ms for a 128³ grid); a NaN sum (a NaN, or +inf and
    -inf) falls back to the exact test."""
    with torch.no_grad():
        return bool(torch.isnan(x.sum())) and bool(torch.isnan(x).any())


class Volumes:
    """A batch of N volumes of equal grid size.

    Args:
        densities: (N, 1, D, H, W) tensor (or a list of (1, D, H, W)).
        features: optional (N, C, D, H, W) (or list).
        voxel_size: world size of a voxel: scalar, (3,) (x, y, z) or (N, 3); must be > 0.
        volume_translation: (3,) or (N, 3); the volume centre is at ``-volume_translation``.
        align_corners: as in ``grid_sample`` (default True).
    """

    def __init__(
        self, densities, features=None, voxel_size=1.0, volume_translation=(0.0, 0.0, 0.0), align_corners: bool = True
    ):
        dens = torch.stack(list(densities)) if isinstance(densities, (list, tuple)) else densities
        if not torch.is_tensor(dens) or dens.ndim != 5 or dens.shape[1] != 1:
            raise P3DLabValueError("Volumes: densities must be (N, 1, D, H, W)")
        if not dens.is_floating_point():
            raise P3DLabValueError(f"Volumes: densities must be floating point, got {dens.dtype}")
        if _has_nan(dens):
            raise P3DLabValueError("Volumes: densities contain NaN")
        feats = None
        if features is not None:
            feats = torch.stack(list(features)) if isinstance(features, (list, tuple)) else features
            if feats.ndim != 5 or feats.shape[0] != dens.shape[0] or feats.shape[2:] != dens.shape[2:]:
                raise P3DLabValueError("Volumes: features must be (N, C, D, H, W) matching the densities' grid")
            if feats.device != dens.device:
                raise P3DLabValueError("Volumes: densities and features on different devices")
        n = dens.shape[0]
        self._densities, self._features = dens, feats
        self._voxel_size = _per_volume(voxel_size, n, "voxel_size", dens)
        if bool((self._voxel_size <= 0).any()) or not bool(torch.isfinite(self._voxel_size).all()):
            raise P3DLabValueError("Volumes: voxel_size must be finite and > 0")
        self._translation = _per_volume(volume_translation, n, "volume_translation", dens)
        self.align_corners = align_corners
        if not align_corners:
            warnings.warn(
                "Volumes(align_corners=False): the world mapping still uses S - 1, so the world voxel pitch becomes "
                "voxel_size * (S - 1) / S",
                stacklevel=2,
            )
        self.device = dens.device

    def __len__(self) -> int:
        return self._densities.shape[0]

    def __repr__(self) -> str:
        return f"Volumes(N={len(self)}, grid={tuple(self._densities.shape[2:])}, device={self.device})"

    def densities(self) -> torch.Tensor:
        return self._densities

    def features(self) -> Optional[torch.Tensor]:
        return self._features

    def get_voxel_size(self) -> torch.Tensor:
        return self._voxel_size

    def get_volume_translation(self) -> torch.Tensor:
        return self._translation

    def get_grid_sizes(self) -> torch.Tensor:
        """(N, 3) grid sizes in array order (D, H, W)."""
        return torch.tensor(self._densities.shape[2:], device=self.device).expand(len(self), 3)

    def get_local_to_world_scale(self) -> torch.Tensor:
        """(N, 3) world units per local unit along x, y, z: (S_xyz - 1)/2 * voxel_size. With
        ``get_volume_translation`` it is everything the volume kernels need of the world mapping:
        ``x_local = (x_world + volume_translation) / scale``."""
        D, H, W = self._densities.shape[2:]
        s = torch.tensor([W - 1, H - 1, D - 1], dtype=self._densities.dtype, device=self.device)
        return s / 2 * self._voxel_size

    def _bcast(self, t: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], *([1] * (points.ndim - 2)), 3)

    def local_to_world_coords(self, points_local: torch.Tensor) -> torch.Tensor:
        """(N, ..., 3) local -> world: ``x_local * (S - 1)/2 * voxel_size - volume_translation``."""
        scale = self._bcast(self.get_local_to_world_scale(), points_local)
        return points_local * scale - self._bcast(self._translation, points_local)

    def world_to_local_coords(self, points_world: torch.Tensor) -> torch.Tensor:
        """(N, ..., 3) world -> local: ``(x_world + volume_translation) / ((S - 1)/2 * voxel_size)``."""
        scale = self._bcast(self.get_local_to_world_scale(), points_world)
        return (points_world + self._bcast(self._translation, points_world)) / scale

    def get_coord_grid(self, world_coordinates: bool = True) -> torch.Tensor:
        """(N, D, H, W, 3) coordinates (x, y, z) of every voxel centre."""
        D, H, W = self._densities.shape[2:]

        def axis(n):
            t = (
                torch.linspace(-1.0, 1.0, n, dtype=self._densities.dtype, device=self.device)
                if n > 1
                else torch.zeros(1, dtype=self._densities.dtype, device=self.device)
            )
            if not self.align_corners and n > 0:
                t = t * (n - 1) / n
            return t

        z, y, x = torch.meshgrid(axis(D), axis(H), axis(W), indexing="ij")
        local = torch.stack([x, y, z], -1)[None].expand(len(self), D, H, W, 3)
        return self.local_to_world_coords(local) if world_coordinates else local

    def update_padded(self, new_densities: torch.Tensor, new_features: Optional[torch.Tensor] = None) -> "Volumes":
        """New volumes with the same geometry and new densities (and features)."""
        return Volumes(
            new_densities,
            new_features if new_features is not None else self._features,
            self._voxel_size,
            self._translation,
            self.align_corners,
        )

    def clone(self) -> "Volumes":
        f = self._features.clone() if self._features is not None else None
        return Volumes(
            self._densities.clone(), f, self._voxel_size.clone(), self._translation.clone(), self.align_corners
        )

    def to(self, device) -> "Volumes":
        f = self._features.to(device) if self._features is not None else None
        return Volumes(
            self._densities.to(device), f, self._voxel_size.to(device), self._translation.to(device), self.align_corners
        )

    def __getitem__(self, index) -> "Volumes":
        if isinstance(index, int):
            index = [index]
        f = self._features[index] if self._features is not None else None
        return Volumes(self._densities[index], f, self._voxel_size[index], self._translation[index], self.align_corners)
