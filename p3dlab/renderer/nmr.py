"""Neural 3D Mesh Renderer (NMR) conventions mapped onto p3dlab
(docs/conventions.md#opencv-opengl-and-nmr).

NMR draws view +X on the **right** (its frames are the left-right mirror of a right-handed camera's),
places its eye at ``(d cos e sin a, d sin e, -d cos e cos a)`` (the z sign is opposite to PyTorch3D:
NMR (d, e, a) is p3dlab spherical (d, e, 180° - a)), uses a *half* viewing angle (30° = 60° field of
view) and normalises meshes so the longest side spans [-1, 1].
"""

from __future__ import annotations

import math

import torch

from p3dlab.renderer.cameras import look_at_rotation


def nmr_eye(distance, elevation, azimuth, degrees: bool = True) -> torch.Tensor:
    """NMR's ``get_points_from_angles``: the eye position (1, 3) in world coordinates."""
    e, a = (math.radians(elevation), math.radians(azimuth)) if degrees else (elevation, azimuth)
    return torch.tensor(
        [[distance * math.cos(e) * math.sin(a), distance * math.sin(e), -distance * math.cos(e) * math.cos(a)]]
    )


def nmr_normalize(verts: torch.Tensor) -> torch.Tensor:
    """NMR's ``load_obj`` normalisation: shift to the positive octant, scale the longest side to 2,
    centre per axis (``v - min``, ``/ max|v|``, ``* 2``, ``- max/2``)."""
    v = verts - verts.min(0).values
    v = v / v.abs().max()
    v = v * 2
    return v - v.max(0).values / 2


def nmr_pose(eye: torch.Tensor):
    """(R, T) of a p3dlab camera at ``eye`` looking at the origin with +Y up, NMR's look-at."""
    R = look_at_rotation(eye)
    return R, -(eye[:, None, :] @ R)[:, 0]


def mirror_x(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W, C) p3dlab images -> NMR frames (flip left-right)."""
    return images.flip(2)
