"""The soft silhouette's alpha, forward and backward, one pixel per iteration (CPU): the fast path of
``p3dlab.renderer.sigmoid_alpha_blend`` (docs/kernels.md#soft-silhouette).

Per pixel, over the slots k whose face is valid (``pix_to_face >= 0``), with the signed distances
``d_k`` (negative inside a face) and the edge width sigma:

    L = log T = sum_k log(1 - sigmoid(-d_k / sigma)) = sum_k log_sigmoid(d_k / sigma)
    alpha = 1 - T = -expm1(L)
    d alpha / d d_k = -T * d L / d d_k = -T * sigmoid(-d_k / sigma) / sigma

``log_sigmoid(x) = min(x, 0) - log1p(exp(-|x|))`` and ``sigmoid(-x) = exp(-max(x, 0)) / (1 + exp(-|x|))``
never overflow. The sum is float64; the forward keeps T for the backward. Each pixel writes only its
own outputs, so there is nothing to synchronise and the result does not depend on the thread count.
"""

from __future__ import annotations

import math

from numba import njit, prange

from p3dlab.kernels.parallel_jit import parallel_njit


@njit(cache=True, inline="always")
def log_sigmoid(x):
    """``log(1 / (1 + exp(-x)))``, for any x."""
    return min(x, 0.0) - math.log1p(math.exp(-abs(x)))


@njit(cache=True, inline="always")
def sigmoid_of_minus(x):
    """``sigmoid(-x) = 1 / (1 + exp(x))``, for any x."""
    return math.exp(-max(x, 0.0)) / (1.0 + math.exp(-abs(x)))


@parallel_njit(cache=True)
def silhouette_alpha_cpu(pix_to_face, dists, inv_sigma, alpha, transmittance):
    """``pix_to_face`` (P, K) int, ``dists`` (P, K); writes ``alpha`` and ``transmittance`` (P,)."""
    P, K = dists.shape
    for p in prange(P):
        log_t = 0.0
        for k in range(K):
            if pix_to_face[p, k] >= 0:
                log_t += log_sigmoid(dists[p, k] * inv_sigma)
        alpha[p] = -math.expm1(log_t)
        transmittance[p] = math.exp(log_t)


@parallel_njit(cache=True)
def silhouette_alpha_backward_cpu(pix_to_face, dists, inv_sigma, transmittance, grad_alpha, grad_dists):
    """``grad_dists`` (P, K) from ``grad_alpha`` (P,): ``-g T sigmoid(-d / sigma) / sigma`` on valid slots,
    0 on the others."""
    P, K = dists.shape
    for p in prange(P):
        scale = -grad_alpha[p] * transmittance[p] * inv_sigma
        for k in range(K):
            if pix_to_face[p, k] >= 0:
                grad_dists[p, k] = scale * sigmoid_of_minus(dists[p, k] * inv_sigma)
            else:
                grad_dists[p, k] = 0.0
