"""PyTorch3D's ``pytorch3d.renderer.implicit.utils`` path: re-exports of ``RayBundle`` and
``ray_bundle_to_ray_points`` from ``p3dlab.renderer.raysampling``."""

from p3dlab.renderer.raysampling import RayBundle, ray_bundle_to_ray_points

__all__ = ["RayBundle", "ray_bundle_to_ray_points"]
