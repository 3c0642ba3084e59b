"""PyTorch3D's ``pytorch3d.utils.ico_sphere``: the icosphere with PyTorch3D's ``(level, device)``
signature, so ``ico_sphere(4, device)`` ports unchanged.

``p3dlab.data.ico_sphere`` (which this calls) takes ``dtype`` second; this one always builds float32
meshes, as PyTorch3D's does.
"""

from __future__ import annotations

from typing import Optional

from p3dlab.common.datatypes import Device, make_device
from p3dlab.data.primitives import ico_sphere as _ico_sphere
from p3dlab.structures.meshes import Meshes


def ico_sphere(level: int = 0, device: Optional[Device] = None) -> Meshes:
    """Unit sphere from an icosahedron subdivided ``level`` times (float32, on ``device``).

    Level L has ``10 * 4**L + 2`` vertices and ``20 * 4**L`` faces.
    """
    return _ico_sphere(level, device=None if device is None else make_device(device))


__all__ = ["ico_sphere"]
