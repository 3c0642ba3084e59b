"""Neural radiance fields: positional encoding, the book's MLP, a fast hybrid grid + MLP field,
hierarchical sampling, rendering and training on a laptop CPU."""

from p3dlab.nerf.fields import HybridRadianceField
from p3dlab.nerf.model import HarmonicEmbedding, NeuralRadianceField, huber, load_checkpoint, psnr, save_checkpoint
from p3dlab.nerf.sampling import importance_resample, interval_edges, sample_pdf
from p3dlab.nerf.training import fit_nerf, render_image, render_rays

__all__ = [
    "HarmonicEmbedding",
    "HybridRadianceField",
    "NeuralRadianceField",
    "fit_nerf",
    "huber",
    "importance_resample",
    "interval_edges",
    "load_checkpoint",
    "psnr",
    "render_image",
    "render_rays",
    "sample_pdf",
    "save_checkpoint",
]
