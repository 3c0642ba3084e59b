"""Neural radiance fields (groundwork): positional encoding, the tutorial's MLP, losses, checkpoints."""

from p3dlab.nerf.model import HarmonicEmbedding, NeuralRadianceField, huber, load_checkpoint, psnr, save_checkpoint

__all__ = ["HarmonicEmbedding", "NeuralRadianceField", "huber", "load_checkpoint", "psnr", "save_checkpoint"]
