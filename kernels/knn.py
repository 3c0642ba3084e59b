"""K nearest neighbours by brute force, without an N x M distance matrix (CPU): the reference.

For every point x_i of cloud 1 the kernel scans cloud 2 and keeps the K smallest distances
``d(x_i, y_j) = sum_c (x_ic - y_jc)^2`` (``norm=2``) or ``sum_c |x_ic - y_jc|`` (``norm=1``) in a sorted
list. The order is the one of the pairs ``(d, j)``: equal distances keep the lower index first.
Distances are computed in float64 whatever the clouds' dtype (float32 coordinates subtract and
square exactly there) and ranked in float64, so the result does not depend on the order in which
candidates are met: the grid search (``knn_grid.py``), which meets them cell by cell, returns the same
neighbours and distances. Memory is O(P1 K); work is O(P1 P2 D), split over the points of cloud 1
(no write conflicts).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from p3dlab.kernels.parallel_jit import parallel_njit


@njit(cache=True)
def point_distance(x, i, y, j, D, norm):
    """``sum_c (x_ic - y_jc)^2`` (norm 2) or ``sum_c |x_ic - y_jc|`` (norm 1) over the first D coordinates, in
    float64, between the rows i of ``x`` and j of ``y`` (2-D arrays: a view of a row per pair would cost more)."""
    d = 0.0
    for c in range(D):
        diff = np.float64(x[i, c]) - np.float64(y[j, c])
        d += diff * diff if norm == 2 else abs(diff)
    return d


@njit(cache=True)
def insert_neighbour(best_d, best_j, count, K, d, j):
    """Insert the candidate ``(d, j)`` into the ``count`` best pairs kept sorted in ``best_d``/``best_j``
    (at most K); the pairs are ordered by distance, then by index. Returns the new count."""
    if count == K and (d > best_d[K - 1] or (d == best_d[K - 1] and j > best_j[K - 1])):
        return count
    pos = count if count < K else K - 1
    while pos > 0 and (best_d[pos - 1] > d or (best_d[pos - 1] == d and best_j[pos - 1] > j)):
        best_d[pos] = best_d[pos - 1]
        best_j[pos] = best_j[pos - 1]
        pos -= 1
    best_d[pos] = d
    best_j[pos] = j
    return count + 1 if count < K else count


@parallel_njit(cache=True)
def knn_cpu(p1, p2, len1, len2, K, norm, out_idx, out_dist):
    """Fill ``out_idx`` (N, P1, K) int64 and ``out_dist`` (N, P1, K) (pre-filled with -1 / 0): the slots
    beyond ``len2[n]`` keep those values."""
    N, P1, D = p1.shape
    for t in prange(N * P1):
        n = t // P1
        i = t % P1
        if i >= len1[n]:
            continue
        x, y = p1[n], p2[n]
        best_d = np.empty(K, dtype=np.float64)
        best_j = np.empty(K, dtype=np.int64)
        count = 0
        for j in range(len2[n]):
            d = point_distance(x, i, y, j, D, norm)
            count = insert_neighbour(best_d, best_j, count, K, d, j)
        for k in range(count):
            out_dist[n, i, k] = best_d[k]
            out_idx[n, i, k] = best_j[k]
