"""PyTorch3D's ``pytorch3d.renderer.mesh.rasterizer`` path: re-exports of ``MeshRasterizer``, its
settings and its ``Fragments`` from ``p3dlab.renderer.mesh_rasterizer``."""

from p3dlab.renderer.mesh_rasterizer import Fragments, MeshRasterizer, RasterizationSettings

__all__ = ["Fragments", "MeshRasterizer", "RasterizationSettings"]
