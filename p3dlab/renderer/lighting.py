"""Lights and materials (docs/conventions.md#lights-and-materials), batched like cameras; all computed in world space.

With ``n̂ = n/max(|n|, 1e-6)``, ``l̂`` the unit vector towards the light, ``v̂`` towards the camera and
``r = 2 (n̂·l̂) n̂ - l̂``::

    diffuse  = k_d ⊙ L_d · max(0, n̂·l̂)
    specular = k_s ⊙ L_s · (max(0, v̂·r) · [n̂·l̂ > 0])^p        (0^0 = 1: p = 0 does NOT switch it off)

There is no distance attenuation and there are no shadows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from p3dlab.errors import P3DLabValueError

_EPS = 1e-6


def _as_batch(value, name: str, device=None, dtype=torch.float32) -> torch.Tensor:
    t = value if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=dtype)
    if device is not None:
        t = t.to(device)
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2:
        raise P3DLabValueError(f"{name} must be (N, C) or (C,), got {tuple(t.shape)}")
    return t


def _expand_to(param: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(N, C) -> (N, 1, ..., 1, C) broadcastable against (N, ..., 3) points."""
    return param.view(param.shape[0], *([1] * (points.ndim - 2)), param.shape[-1])


class _Batched:
    _FIELDS = ()

    def _init_fields(self, device, **fields):
        tensors = {k: _as_batch(v, k, device) for k, v in fields.items()}
        sizes = {t.shape[0] for t in tensors.values()}
        n = max(sizes)
        if any(s not in (1, n) for s in sizes):
            raise P3DLabValueError(f"{type(self).__name__}: fields with batch sizes {sorted(sizes)}")
        for k, t in tensors.items():
            setattr(self, k, t.expand(n, t.shape[1]) if t.shape[0] == 1 and n > 1 else t)
        self.device = next(iter(tensors.values())).device

    def __len__(self) -> int:
        return getattr(self, self._FIELDS[0]).shape[0]

    def clone(self):
        return type(self)(**{k: getattr(self, k).clone() for k in self._FIELDS})

    def to(self, device):
        return type(self)(device=device, **{k: getattr(self, k) for k in self._FIELDS})

    def __getitem__(self, index):
        if isinstance(index, int):
            index = [index]
        return type(self)(**{k: getattr(self, k)[index] for k in self._FIELDS})


def _specular(normals, light_dir, view_dir, color, shininess):
    cos = (normals * light_dir).sum(-1, keepdim=True)
    reflect = 2.0 * cos * normals - light_dir
    alpha = F.relu((view_dir * reflect).sum(-1, keepdim=True)) * (cos > 0).to(normals.dtype)
    p = (
        shininess.view(shininess.shape[0], *([1] * (normals.ndim - 1)))
        if isinstance(shininess, torch.Tensor)
        else shininess
    )
    return color * torch.pow(alpha, p)


class DirectionalLights(_Batched):
    """Light from ``direction`` (pointing from the surface **towards** the light), any distance."""

    _FIELDS = ("ambient_color", "diffuse_color", "specular_color", "direction")

    def __init__(
        self,
        ambient_color=((0.5, 0.5, 0.5),),
        diffuse_color=((0.3, 0.3, 0.3),),
        specular_color=((0.2, 0.2, 0.2),),
        direction=((0.0, 1.0, 0.0),),
        device=None,
    ):
        self._init_fields(
            device,
            ambient_color=ambient_color,
            diffuse_color=diffuse_color,
            specular_color=specular_color,
            direction=direction,
        )

    def _light_dir(self, points):
        return F.normalize(_expand_to(self.direction, points).to(points), dim=-1, eps=_EPS)

    def diffuse(self, normals, points):
        n = F.normalize(normals, dim=-1, eps=_EPS)
        cos = F.relu((n * self._light_dir(points)).sum(-1, keepdim=True))
        return _expand_to(self.diffuse_color, points).to(points) * cos

    def specular(self, normals, points, camera_position, shininess):
        n = F.normalize(normals, dim=-1, eps=_EPS)
        v = F.normalize(_expand_to(camera_position, points).to(points) - points, dim=-1, eps=_EPS)
        return _specular(n, self._light_dir(points), v, _expand_to(self.specular_color, points).to(points), shininess)


class PointLights(DirectionalLights):
    """Light from ``location`` (no distance attenuation)."""

    _FIELDS = ("ambient_color", "diffuse_color", "specular_color", "location")

    def __init__(
        self,
        ambient_color=((0.5, 0.5, 0.5),),
        diffuse_color=((0.3, 0.3, 0.3),),
        specular_color=((0.2, 0.2, 0.2),),
        location=((0.0, 1.0, 0.0),),
        device=None,
    ):
        self._init_fields(
            device,
            ambient_color=ambient_color,
            diffuse_color=diffuse_color,
            specular_color=specular_color,
            location=location,
        )

    def _light_dir(self, points):
        return F.normalize(_expand_to(self.location, points).to(points) - points, dim=-1, eps=_EPS)


class AmbientLights(_Batched):
    """Ambient light only; works with any number of channels C."""

    _FIELDS = ("ambient_color",)

    def __init__(self, ambient_color=((1.0, 1.0, 1.0),), device=None):
        self._init_fields(device, ambient_color=ambient_color)

    def diffuse(self, normals, points):
        return torch.zeros_like(points[..., :1])

    def specular(self, normals, points, camera_position, shininess):
        return torch.zeros_like(points[..., :1])


class Materials(_Batched):
    """Reflectances ``k_a``, ``k_d``, ``k_s`` and the Phong exponent ``shininess`` (default 64)."""

    _FIELDS = ("ambient_color", "diffuse_color", "specular_color", "shininess")

    def __init__(
        self,
        ambient_color=((1.0, 1.0, 1.0),),
        diffuse_color=((1.0, 1.0, 1.0),),
        specular_color=((1.0, 1.0, 1.0),),
        shininess=64,
        device=None,
    ):
        sh = torch.as_tensor(shininess, dtype=torch.float32) if not isinstance(shininess, torch.Tensor) else shininess
        self._init_fields(
            device,
            ambient_color=ambient_color,
            diffuse_color=diffuse_color,
            specular_color=specular_color,
            shininess=sh.reshape(-1, 1),
        )
        self.shininess = self.shininess[:, 0]

    def clone(self):
        return Materials(
            self.ambient_color.clone(), self.diffuse_color.clone(), self.specular_color.clone(), self.shininess.clone()
        )

    def to(self, device):
        return Materials(self.ambient_color, self.diffuse_color, self.specular_color, self.shininess, device=device)

    def __getitem__(self, index):
        if isinstance(index, int):
            index = [index]
        return Materials(
            self.ambient_color[index], self.diffuse_color[index], self.specular_color[index], self.shininess[index]
        )


def apply_lighting(points, normals, lights, cameras, materials, **kwargs):
    """(ambient, diffuse, specular) colour terms at (N, ..., 3) world points with normals."""
    C = cameras.get_camera_center(**kwargs)
    ambient = _expand_to(materials.ambient_color * lights.ambient_color, points).to(points)
    diffuse = _expand_to(materials.diffuse_color, points).to(points) * lights.diffuse(normals, points)
    specular = _expand_to(materials.specular_color, points).to(points) * lights.specular(
        normals, points, C, materials.shininess.to(points)
    )
    return ambient, diffuse, specular
