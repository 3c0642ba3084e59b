"""Procedural assets: meshes, textures and point clouds generated on the fly (never downloaded)."""

from p3dlab.data.multiview import MultiViewSplit, multiview_dataset, painted_teapot, render_views, view_angles
from p3dlab.data.pointclouds import figure_meshes, figure_point_cloud, noisy_point_cloud
from p3dlab.data.primitives import (
    capsule,
    colored_cube,
    cube,
    cylinder,
    dodecahedron,
    ico_sphere,
    icosahedron,
    octahedron,
    parallel_planes,
    signed_volume,
    tetrahedron,
    torus,
    uv_checker_texture,
    uv_sphere,
)
from p3dlab.data.teapot import teapot

__all__ = [
    "MultiViewSplit",
    "capsule",
    "colored_cube",
    "cube",
    "cylinder",
    "dodecahedron",
    "figure_meshes",
    "figure_point_cloud",
    "ico_sphere",
    "icosahedron",
    "multiview_dataset",
    "noisy_point_cloud",
    "octahedron",
    "painted_teapot",
    "parallel_planes",
    "render_views",
    "signed_volume",
    "teapot",
    "tetrahedron",
    "torus",
    "uv_checker_texture",
    "uv_sphere",
    "view_angles",
]
