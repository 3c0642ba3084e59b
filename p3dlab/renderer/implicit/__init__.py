"""Implicit and volume rendering (PyTorch3D's ``pytorch3d.renderer.implicit`` names): raysamplers,
raymarchers, renderers, ``RayBundle`` and ``HarmonicEmbedding``, each also at the submodule path
PyTorch3D has it at."""

from p3dlab.renderer.implicit.harmonic_embedding import HarmonicEmbedding
from p3dlab.renderer.implicit.raymarching import AbsorptionOnlyRaymarcher, EmissionAbsorptionRaymarcher
from p3dlab.renderer.implicit.raysampling import (
    GridRaysampler,
    MonteCarloRaysampler,
    MultinomialRaysampler,
    NDCGridRaysampler,
    NDCMultinomialRaysampler,
)
from p3dlab.renderer.implicit.renderer import ImplicitRenderer, VolumeRenderer, VolumeSampler
from p3dlab.renderer.implicit.utils import RayBundle, ray_bundle_to_ray_points

__all__ = [
    "AbsorptionOnlyRaymarcher",
    "EmissionAbsorptionRaymarcher",
    "GridRaysampler",
    "HarmonicEmbedding",
    "ImplicitRenderer",
    "MonteCarloRaysampler",
    "MultinomialRaysampler",
    "NDCGridRaysampler",
    "NDCMultinomialRaysampler",
    "RayBundle",
    "VolumeRenderer",
    "VolumeSampler",
    "ray_bundle_to_ray_points",
]
