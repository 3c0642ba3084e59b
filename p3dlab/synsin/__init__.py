"""View synthesis from one RGB-D image, SynSin's pipeline made CPU-sized (docs/synsin.md): procedural
RGB-D scenes with exact novel views, unprojection, feature splatting with the kit's point rasterizer
and compositors, a refinement U-Net, training with L1 + (1 - SSIM), and sequential view synthesis."""

from p3dlab.synsin.model import (
    COMPOSITORS,
    SplatFragments,
    SynSin,
    composite,
    coverage,
    splat,
    splat_fragments,
    synsin_alphas,
    unproject_depth,
)
from p3dlab.synsin.scenes import RGBDPairs, focal_from_fov, relative_motion, rgbd_pairs, scene_mesh
from p3dlab.synsin.training import evaluate, evaluate_baseline, fit_synsin, sequential_views, synsin_loss

__all__ = [
    "COMPOSITORS",
    "RGBDPairs",
    "SplatFragments",
    "SynSin",
    "composite",
    "coverage",
    "evaluate",
    "evaluate_baseline",
    "fit_synsin",
    "focal_from_fov",
    "relative_motion",
    "rgbd_pairs",
    "scene_mesh",
    "sequential_views",
    "splat",
    "splat_fragments",
    "synsin_alphas",
    "synsin_loss",
    "unproject_depth",
]
