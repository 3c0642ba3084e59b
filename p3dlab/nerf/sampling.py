"""Hierarchical (coarse-to-fine) sampling along rays, as in NeRF.

A coarse pass renders each ray with stratified samples and yields weights w_i over the intervals
between them. The fine pass draws more samples from the piecewise-constant density proportional to
those weights (inverse transform sampling of its CDF), so samples gather where the coarse pass saw
matter, and renders the union of coarse and fine samples.

The sample *positions* carry no gradient (they are a sampling choice, as in NeRF); the fine render
is differentiable in the field at those positions.
"""

from __future__ import annotations

from typing import Optional

import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.renderer.raysampling import RayBundle


def sample_pdf(
    bins: torch.Tensor,
    weights: torch.Tensor,
    n_samples: int,
    deterministic: bool = False,
    eps: float = 1e-5,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Draw ``n_samples`` per ray from the piecewise-constant pdf with mass ``weights`` (..., B) on
    the intervals ``bins`` (..., B + 1) (ascending edges). ``eps`` is added to every weight so that
    rays with no mass sample uniformly. ``deterministic`` uses evenly spaced CDF values
    ``(k + 0.5)/n``. Returns (..., n_samples) sorted, detached."""
    if bins.shape[:-1] != weights.shape[:-1] or bins.shape[-1] != weights.shape[-1] + 1:
        raise P3DLabValueError(
            f"sample_pdf: bins {tuple(bins.shape)} must have one more entry than weights {tuple(weights.shape)}"
        )
    if n_samples < 1:
        raise P3DLabValueError("sample_pdf: n_samples must be >= 1")
    bins, weights = bins.detach(), weights.detach().clamp(min=0) + eps
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), torch.cumsum(pdf, -1).clamp(max=1.0)], -1)  # (..., B + 1)
    shape = (*cdf.shape[:-1], n_samples)
    if deterministic:
        u = ((torch.arange(n_samples, dtype=cdf.dtype, device=cdf.device) + 0.5) / n_samples).expand(shape)
    else:
        u = torch.rand(shape, dtype=cdf.dtype, generator=generator).to(cdf.device)
    u = u.contiguous()
    idx = torch.searchsorted(cdf.contiguous(), u, right=True)  # cdf[idx - 1] <= u < cdf[idx]
    lo = (idx - 1).clamp(0, cdf.shape[-1] - 1)
    hi = idx.clamp(0, cdf.shape[-1] - 1)
    c_lo, c_hi = torch.gather(cdf, -1, lo), torch.gather(cdf, -1, hi)
    b_lo, b_hi = torch.gather(bins, -1, lo), torch.gather(bins, -1, hi)
    span = c_hi - c_lo
    frac = torch.where(span > 0, (u - c_lo) / span.clamp(min=1e-12), torch.zeros_like(u))
    return torch.sort(b_lo + frac * (b_hi - b_lo), -1).values


def interval_edges(lengths: torch.Tensor) -> torch.Tensor:
    """(..., P + 1) interval edges around P sorted sample lengths: midpoints between samples, and the
    first and last sample as the outer edges."""
    mids = 0.5 * (lengths[..., 1:] + lengths[..., :-1])
    return torch.cat([lengths[..., :1], mids, lengths[..., -1:]], -1)


def importance_resample(
    bundle: RayBundle,
    weights: torch.Tensor,
    n_fine: int,
    deterministic: bool = False,
    generator: Optional[torch.Generator] = None,
) -> RayBundle:
    """The fine ray bundle: the coarse samples of ``bundle`` plus ``n_fine`` samples drawn from the
    coarse ``weights`` (..., P) (the marcher's w_i), sorted along each ray."""
    edges = interval_edges(bundle.lengths)
    # the weight of sample i is spread over the interval around it
    fine = sample_pdf(edges, weights, n_fine, deterministic, generator=generator)
    lengths = torch.sort(torch.cat([bundle.lengths.detach(), fine], -1), -1).values
    return RayBundle(bundle.origins, bundle.directions, lengths, bundle.xys)
