"""PyTorch3D's ``pytorch3d.renderer.implicit.raysampling`` path: re-exports of the raysamplers in
``p3dlab.renderer.raysampling``."""

from p3dlab.renderer.raysampling import (
    GridRaysampler,
    MonteCarloRaysampler,
    MultinomialRaysampler,
    NDCGridRaysampler,
    NDCMultinomialRaysampler,
)

__all__ = [
    "GridRaysampler",
    "MonteCarloRaysampler",
    "MultinomialRaysampler",
    "NDCGridRaysampler",
    "NDCMultinomialRaysampler",
]
