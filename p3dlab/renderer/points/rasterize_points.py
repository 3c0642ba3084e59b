"""PyTorch3D's ``pytorch3d.renderer.points.rasterize_points`` path: a re-export of the point
rasterization op ``p3dlab.ops.rasterize_points.rasterize_points``."""

from p3dlab.ops.rasterize_points import rasterize_points

__all__ = ["rasterize_points"]
