"""K nearest neighbours by brute force, without an N x M distance matrix (CPU).

For every point x_i of cloud 1 the kernel scans cloud 2 and keeps the K smallest distances
``d(x_i, y_j) = sum_c (x_ic - y_jc)^2`` (``norm=2``) or ``sum_c |x_ic - y_jc|`` (``norm=1``) in a sorted
list; equal distances keep the lower index first. Memory is O(P1 K); work is O(P1 P2 D), split over
the points of cloud 1 (no write conflicts).
"""

from __future__ import annotations

from numba import prange

from p3dlab.kernels.parallel_jit import parallel_njit


@parallel_njit(cache=True)
def knn_cpu(p1, p2, len1, len2, K, norm, out_idx, out_dist):
    """Fill ``out_idx`` (N, P1, K) int64 and ``out_dist`` (N, P1, K) (pre-filled with -1 / 0)."""
    N, P1, D = p1.shape
    for t in prange(N * P1):
        n = t // P1
        i = t % P1
        if i >= len1[n]:
            continue
        count = 0
        for j in range(len2[n]):
            d = 0.0
            for c in range(D):
                diff = p1[n, i, c] - p2[n, j, c]
                d += diff * diff if norm == 2 else abs(diff)
            if count == K and d >= out_dist[n, i, K - 1]:
                continue
            pos = count if count < K else K - 1
            while pos > 0 and out_dist[n, i, pos - 1] > d:
                out_dist[n, i, pos] = out_dist[n, i, pos - 1]
                out_idx[n, i, pos] = out_idx[n, i, pos - 1]
                pos -= 1
            out_dist[n, i, pos] = d
            out_idx[n, i, pos] = j
            if count < K:
                count += 1
