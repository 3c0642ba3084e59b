"""PyTorch3D's ``pytorch3d.renderer.implicit.renderer`` path: re-exports of the implicit and volume
renderers in ``p3dlab.renderer.volume_renderer``."""

from p3dlab.renderer.volume_renderer import ImplicitRenderer, VolumeRenderer, VolumeSampler

__all__ = ["ImplicitRenderer", "VolumeRenderer", "VolumeSampler"]
