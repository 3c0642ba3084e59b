"""Differentiable operations on tensors and structures (pure torch or Numba kernels behind autograd)."""

from p3dlab.ops.chamfer import chamfer_distance
from p3dlab.ops.interpolate import interpolate_face_attributes
from p3dlab.ops.knn import KNN, knn_gather, knn_points
from p3dlab.ops.marching_cubes import marching_cubes
from p3dlab.ops.mesh_ops import GraphConv, SubdivideMeshes, cubify, subdivide_faces, vert_align
from p3dlab.ops.sample_points import sample_points_from_meshes
from p3dlab.ops.stratified import stratified_jitter
from p3dlab.ops.volume_sampling import march_volumes, march_volumes_mse, sample_grid

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
    "sample_grid",
    "sample_points_from_meshes",
    "stratified_jitter",
    "subdivide_faces",
    "vert_align",
]
