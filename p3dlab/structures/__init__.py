"""Batched 3D structures: ``Meshes``, ``Pointclouds`` and mesh textures (PyTorch3D names)."""

from p3dlab.structures.gaussians import GaussianSplats
from p3dlab.structures.meshes import Meshes, join_meshes_as_batch, join_meshes_as_scene
from p3dlab.structures.pointclouds import Pointclouds, join_pointclouds_as_batch, join_pointclouds_as_scene
from p3dlab.structures.textures import TexturesAtlas, TexturesUV, TexturesVertex
from p3dlab.structures.utils import list_to_packed, list_to_padded, packed_to_list, padded_to_list, padded_to_packed
from p3dlab.structures.volumes import Volumes

__all__ = [
    "GaussianSplats",
    "Meshes",
    "Pointclouds",
    "TexturesAtlas",
    "TexturesUV",
    "TexturesVertex",
    "Volumes",
    "join_meshes_as_batch",
    "join_meshes_as_scene",
    "join_pointclouds_as_batch",
    "join_pointclouds_as_scene",
    "list_to_packed",
    "list_to_padded",
    "packed_to_list",
    "padded_to_list",
    "padded_to_packed",
]
