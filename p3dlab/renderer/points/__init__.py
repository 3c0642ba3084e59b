"""Point-cloud rendering (PyTorch3D's ``pytorch3d.renderer.points`` names):
rasterizer, compositors and renderer, each in the submodule PyTorch3D has it in."""

from p3dlab.renderer.compositing import alpha_composite, norm_weighted_sum, weighted_sum
from p3dlab.renderer.points.compositor import AlphaCompositor, NormWeightedCompositor, WeightedSumCompositor
from p3dlab.renderer.points.rasterize_points import rasterize_points
from p3dlab.renderer.points.rasterizer import PointFragments, PointsRasterizationSettings, PointsRasterizer
from p3dlab.renderer.points.renderer import PointsRenderer

__all__ = [
    "AlphaCompositor",
    "NormWeightedCompositor",
    "PointFragments",
    "PointsRasterizationSettings",
    "PointsRasterizer",
    "PointsRenderer",
    "WeightedSumCompositor",
    "alpha_composite",
    "norm_weighted_sum",
    "rasterize_points",
    "weighted_sum",
]
