"""PyTorch3D's ``pytorch3d.renderer.mesh.renderer`` path: re-exports of ``MeshRenderer`` and
``MeshRendererWithFragments`` from ``p3dlab.renderer.mesh_renderer``."""

from p3dlab.renderer.mesh_renderer import MeshRenderer, MeshRendererWithFragments

__all__ = ["MeshRenderer", "MeshRendererWithFragments"]
