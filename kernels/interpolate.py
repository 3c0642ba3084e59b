"""Barycentric interpolation of per-face-vertex attributes at the rasterized fragments (the
inference fast path of ``p3dlab.ops.interpolate_face_attributes``):

    out[s, d] = Σ_i bary[s, i] · attr[p2f[s], i, d]   for slots s with p2f[s] >= 0, else 0.

One pass over the slots, parallel over disjoint output rows; no temporaries.
"""

from __future__ import annotations

from numba import prange

from p3dlab.kernels.parallel_jit import parallel_njit


@parallel_njit(cache=True)
def interpolate_cpu(p2f, bary, attr, out):
    """p2f (S,) int, bary (S, 3), attr (F, 3, D), out (S, D) (written for every slot)."""
    S = p2f.shape[0]
    D = attr.shape[2]
    for s in prange(S):
        f = p2f[s]
        if f < 0:
            for d in range(D):
                out[s, d] = 0.0
            continue
        b0 = bary[s, 0]
        b1 = bary[s, 1]
        b2 = bary[s, 2]
        for d in range(D):
            out[s, d] = b0 * attr[f, 0, d] + b1 * attr[f, 1, d] + b2 * attr[f, 2, d]
