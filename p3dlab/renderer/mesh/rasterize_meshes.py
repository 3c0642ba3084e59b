"""PyTorch3D's ``pytorch3d.renderer.mesh.rasterize_meshes`` path: a re-export of the mesh
rasterization op ``p3dlab.ops.rasterize_meshes.rasterize_meshes``."""

from p3dlab.ops.rasterize_meshes import rasterize_meshes

__all__ = ["rasterize_meshes"]
