"""Volumetric reconstruction: a density + colour voxel grid fitted to multi-view images, and the
surfaces of volumes as coloured meshes."""

from p3dlab.common.history import FitHistory
from p3dlab.volumes.reconstruction import VoxelRadianceField, evaluate, fit_volume
from p3dlab.volumes.surface import isosurface

__all__ = ["FitHistory", "VoxelRadianceField", "evaluate", "fit_volume", "isosurface"]
