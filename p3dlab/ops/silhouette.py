"""The soft silhouette's alpha, ``1 - prod_k (1 - sigmoid(-d_k / sigma))`` over the valid slots, as
one torch operation with its own backward (docs/kernels.md#soft-silhouette).

On the CPU the Numba kernels of ``p3dlab.kernels.silhouette`` compute it one pixel at a time: no
(N, H, W, K) intermediate in the forward, and one (the distances' gradient) in the backward, where
the torch expression keeps half a dozen. Tensors on other devices use that torch expression
(``silhouette_alpha_torch``), which is also the reference of the tests.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from p3dlab.errors import P3DLabValueError
from p3dlab.runtime.fork_safety import check_cpu_kernels
from p3dlab.runtime.volume_scratch import reused_empty

__all__ = ["silhouette_alpha"]


def silhouette_alpha_torch(pix_to_face: torch.Tensor, dists: torch.Tensor, sigma: float) -> torch.Tensor:
    """The same alpha in plain torch (any device, any order of derivatives)."""
    log_t = torch.where(pix_to_face >= 0, F.logsigmoid(dists / sigma), torch.zeros_like(dists)).sum(-1)
    return -torch.expm1(log_t)


class _SilhouetteAlpha(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dists, pix_to_face, sigma):
        from p3dlab.kernels.silhouette import silhouette_alpha_cpu

        K = dists.shape[-1]
        d = dists.detach().contiguous().reshape(-1, K)
        p2f = pix_to_face.contiguous().reshape(-1, K)
        alpha = torch.empty(d.shape[0], dtype=dists.dtype)
        transmittance = torch.empty_like(alpha)
        silhouette_alpha_cpu(p2f.numpy(), d.numpy(), 1.0 / sigma, alpha.numpy(), transmittance.numpy())
        ctx.save_for_backward(d, p2f, transmittance)
        ctx.sigma = sigma
        ctx.shape = dists.shape
        return alpha.reshape(dists.shape[:-1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_alpha):
        from p3dlab.kernels.silhouette import silhouette_alpha_backward_cpu

        d, p2f, transmittance = ctx.saved_tensors
        grad_dists = reused_empty(d.shape, d.dtype, d.device)  # an earlier step's, if nothing holds it
        g = grad_alpha.to(d.dtype).contiguous().reshape(-1)
        silhouette_alpha_backward_cpu(
            p2f.numpy(), d.numpy(), 1.0 / ctx.sigma, transmittance.numpy(), g.numpy(), grad_dists.numpy()
        )
        return grad_dists.reshape(ctx.shape), None, None


def silhouette_alpha(pix_to_face: torch.Tensor, dists: torch.Tensor, sigma: float) -> torch.Tensor:
    """``alpha = 1 - prod_k (1 - sigmoid(-d_k / sigma))`` over the slots k with ``pix_to_face >= 0``,
    computed in log space (stable for any sigma): ``pix_to_face`` and ``dists`` (..., K), returns
    (...). Differentiable in ``dists`` (first derivatives on the CPU path; the torch path on other
    devices, or for float16/bfloat16, gives any order)."""
    if not isinstance(dists, torch.Tensor) or not isinstance(pix_to_face, torch.Tensor):
        raise P3DLabValueError("silhouette_alpha: pix_to_face and dists must be tensors")
    if pix_to_face.shape != dists.shape or dists.ndim < 1:
        raise P3DLabValueError(
            f"silhouette_alpha: pix_to_face {tuple(pix_to_face.shape)} and dists {tuple(dists.shape)} must have "
            "the same shape (..., K)"
        )
    if pix_to_face.is_floating_point() or pix_to_face.is_complex() or pix_to_face.dtype == torch.bool:
        raise P3DLabValueError(f"silhouette_alpha: pix_to_face must be an integer tensor, got {pix_to_face.dtype}")
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise P3DLabValueError(f"silhouette_alpha: sigma must be a finite number > 0, got {sigma!r}")
    if dists.device != pix_to_face.device:
        raise P3DLabValueError(f"silhouette_alpha: dists are on {dists.device} but pix_to_face on {pix_to_face.device}")
    fast = dists.device.type == "cpu" and dists.dtype in (torch.float32, torch.float64) and dists.shape[-1] > 0
    if not fast:
        return silhouette_alpha_torch(pix_to_face, dists, float(sigma))
    check_cpu_kernels("silhouette_alpha")
    return _SilhouetteAlpha.apply(dists, pix_to_face, float(sigma))
