"""Volumetric reconstruction: a density + colour voxel grid fitted to multi-view images."""

from p3dlab.volumes.reconstruction import FitHistory, VoxelRadianceField, evaluate, fit_volume

__all__ = ["FitHistory", "VoxelRadianceField", "evaluate", "fit_volume"]
