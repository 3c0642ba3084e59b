"""Mesh R-CNN's mesh head at CPU size on procedural shapes (the book's chapter 10): a voxel branch,
``cubify``, refinement stages of ``vert_align`` + ``GraphConv`` + bounded offsets, their losses,
training, and the Chamfer / F-score metrics (docs/meshrcnn.md)."""

from p3dlab.meshrcnn.data import (
    SHAPE_CLASSES,
    ShapeSplit,
    make_shapes,
    occupancy_meshes,
    random_rotation,
    render_aligned,
    shape_dataset,
    shape_occupancy,
    voxel_centres,
)
from p3dlab.meshrcnn.metrics import chamfer, f_score, mesh_metrics, nearest_distances, voxel_iou
from p3dlab.meshrcnn.model import Backbone, MeshRCNNHead, MeshRefinementStage, VoxelHead
from p3dlab.meshrcnn.training import (
    PIX3D_WEIGHTS,
    SHAPENET_WEIGHTS,
    LossWeights,
    MeshRCNNHistory,
    evaluate,
    fit_meshrcnn,
    mesh_losses,
)

__all__ = [
    "Backbone",
    "LossWeights",
    "MeshRCNNHead",
    "MeshRCNNHistory",
    "MeshRefinementStage",
    "PIX3D_WEIGHTS",
    "SHAPENET_WEIGHTS",
    "SHAPE_CLASSES",
    "ShapeSplit",
    "VoxelHead",
    "chamfer",
    "evaluate",
    "f_score",
    "fit_meshrcnn",
    "make_shapes",
    "mesh_losses",
    "mesh_metrics",
    "nearest_distances",
    "occupancy_meshes",
    "random_rotation",
    "render_aligned",
    "shape_dataset",
    "shape_occupancy",
    "voxel_centres",
]
