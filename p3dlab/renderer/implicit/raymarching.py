"""PyTorch3D's ``pytorch3d.renderer.implicit.raymarching`` path: re-exports of the raymarchers in
``p3dlab.renderer.raymarching``."""

from p3dlab.renderer.raymarching import AbsorptionOnlyRaymarcher, EmissionAbsorptionRaymarcher

__all__ = ["AbsorptionOnlyRaymarcher", "EmissionAbsorptionRaymarcher"]
