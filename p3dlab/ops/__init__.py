"""Differentiable operations on tensors and structures (pure torch or Numba kernels behind autograd)."""

from p3dlab.ops.chamfer import chamfer_distance
from p3dlab.ops.gaussian_splat import project_gaussians, rasterize_gaussians, spherical_harmonics_colors
from p3dlab.ops.gaussian_splat_reference import rasterize_gaussians_reference
from p3dlab.ops.interpolate import interpolate_face_attributes
from p3dlab.ops.knn import KNN, knn_gather, knn_points
from p3dlab.ops.marching_cubes import marching_cubes
from p3dlab.ops.mesh_ops import GraphConv, subdivide_faces, vert_align
from p3dlab.ops.sample_points import sample_points_from_meshes
from p3dlab.ops.silhouette import silhouette_alpha
from p3dlab.ops.stratified import stratified_jitter
from p3dlab.ops.volume_fit_loss import march_volumes_mse
from p3dlab.ops.volume_sampling import march_volumes, sample_grid

__all__ = [
    "GraphConv",
    "KNN",
    "SubdivideMeshes",
    "chamfer_distance",
    "cubify",
    "interpolate_face_attributes",
    "knn_gather",
    "knn_points",
    "march_volumes",
    "march_volumes_mse",
    "marching_cubes",
    "project_gaussians",
    "rasterize_gaussians",
    "rasterize_gaussians_reference",
    "sample_grid",
    "sample_points_from_meshes",
    "silhouette_alpha",
    "spherical_harmonics_colors",
    "stratified_jitter",
    "subdivide_faces",
    "vert_align",
]


# ``cubify`` and ``SubdivideMeshes`` return ``Meshes``, a structure one layer above ops, so they are
# defined in p3dlab.structures (cubify.py, subdivide.py). PyTorch3D exports them from
# ``pytorch3d.ops``, so ``p3dlab.ops`` keeps both names as aliases that import their module on first
# use (PEP 562): importing p3dlab.ops never imports p3dlab.structures, which itself builds on
# p3dlab.ops. These two imports are the only ones tests/test_layering.py allows to point upward.
def __getattr__(name: str):
    if name == "cubify":
        from p3dlab.structures.cubify import cubify

        return cubify
    if name == "SubdivideMeshes":
        from p3dlab.structures.subdivide import SubdivideMeshes

        return SubdivideMeshes
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | {"cubify", "SubdivideMeshes"})
