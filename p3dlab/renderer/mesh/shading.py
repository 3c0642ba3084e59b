"""PyTorch3D's ``pytorch3d.renderer.mesh.shading`` path: re-exports of the shading functions in
``p3dlab.renderer.shading``."""

from p3dlab.renderer.shading import flat_shading, gouraud_shading, phong_shading

__all__ = ["flat_shading", "gouraud_shading", "phong_shading"]
