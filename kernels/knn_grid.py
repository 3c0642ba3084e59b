"""K nearest neighbours in clouds of 1 to 3 dimensions through a uniform grid (CPU): the fast path of ``knn.py``.

Method. Per batch element, cloud 2 is binned into a uniform grid over its bounding box by a counting
sort: every cell gets the start of its run of points in one array of the cloud's points ordered by
cell. The cell size aims at ``points_per_cell`` points a cell on average; the number of cells never
exceeds ``len2 / points_per_cell`` (at least 1), whatever the shape of the box, so a far outlier or a
flat cloud costs speed, never memory: an axis shorter than the cell size (zero extent included) gets
one cell. A query x of cloud 1 starts from its own cell (clamped into the grid when x lies outside
the box) and visits the cells in growing shells, the shell s being the cells at Chebyshev distance s
in cell indices; a cell whose box lies farther from x than the current K-th best distance is skipped.
The search stops after the shell s when it holds K neighbours and every cell not yet visited lies
farther than the K-th best distance, or when no cell is left.

Why it is exact. Candidates are ranked exactly as ``knn_cpu`` ranks them: the same float64 distance
(``point_distance``) and the same order of the pairs (distance, index) (``insert_neighbour``), which
does not depend on the order in which candidates arrive. A point that is never examined lies in a
skipped cell or beyond the last shell, and every point of such a region is at least a lower bound L
away from x, with L > the K-th best distance (strictly: a point at the same distance with a lower
index would take the slot). L is, per axis, the distance from x to the region along that axis
(for the cells beyond shell s: beyond the shell's face on one axis, and anywhere in the box on the
others), combined as the distance is (squared and summed for norm 2, summed for norm 1). Each
axis's term is reduced by a margin of 1e-9 of the axis' scale (coordinates of x and of the box;
at least 1e-300), far more than the rounding of the binning, of the cell bounds and of the distances, so the bound
stays below the computed distance of every point it stands for. Hence no point that belongs in the
K best is ever left out, and the K best pairs are the brute force's, bit for bit.

Stragglers. The box is not always the bounding box: per axis, the points between the 1st and 99th
percentiles span [l, h], and the box is [l - (h - l), h + (h - l)] (within the bounding box). The
points outside it, the stragglers, are not binned: they are kept in one list after the cells, and
every query examines all of them before the shells. One far outlier would otherwise stretch the box
until nearly every point shares a cell (a brute force in disguise). Where the stragglers would be
more than ``len2 / 64`` (and 16) of the points, the box is the bounding box and there are none. The
bounds of the search speak only of binned points, and the stragglers have been examined before any
bound is used, so the search stays exact.

Cost: O(len2) to build the grid, then per query about the points of the few cells around it when
the clouds have comparable densities; a query far from cloud 2 visits more, empty or skipped, cells.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from p3dlab.kernels.knn import insert_neighbour, point_distance
from p3dlab.kernels.parallel_jit import parallel_njit

# Numba's cache checks the contents of the file that defines a kernel, not of the files it inlines
# code from: this line is the hash of knn.py (tests/test_knn_grid.py enforces it), so cached
# kernels are rebuilt when the distance or the ranking change.
MATH_SOURCE_SHA256 = "5df2c88f799c0274"

_MARGIN = 1e-9  # the margin of every bound, relative to the axis' scale (see the module's docstring)
_MARGIN_FLOOR = 1e-300  # and at least this: far above the rounding of subnormal numbers
_MAX_STRAGGLERS = 16  # points left out of the grid's box: at most this many, or len2 / 64
_QUERIES_PER_TASK = 32  # queries one parallel task runs with one set of scratch arrays


@njit(cache=True)
def grid_resolution(extent, num_points, points_per_cell, res):
    """Cells per axis (``res``, 3 axes) for a box of ``extent`` holding ``num_points`` points: about
    ``points_per_cell`` points a cell, at most ``max(1, num_points / points_per_cell)`` cells in all.

    The cell is a cube of side h over the axes at least h long; the others get one cell. Starting from
    all axes of positive extent, h is the side giving the target count over them, and axes shorter than
    h drop out until none does (logarithms: a product of extents may overflow)."""
    target = max(1.0, num_points / points_per_cell)
    active = np.zeros(3, dtype=np.bool_)
    for a in range(3):
        res[a] = 1
        active[a] = extent[a] > 0.0 and math.isfinite(extent[a])
    if not (math.isfinite(extent[0]) and math.isfinite(extent[1]) and math.isfinite(extent[2])):
        return  # coordinates near the float range's end: one cell, which is still exact
    h = 0.0
    for _ in range(3):
        m = 0
        log_volume = 0.0
        for a in range(3):
            if active[a]:
                m += 1
                log_volume += math.log(extent[a])
        if m == 0:
            return
        h = math.exp((log_volume - math.log(target)) / m)
        dropped = False
        for a in range(3):
            if active[a] and extent[a] < h:
                active[a] = False
                dropped = True
        if not dropped:
            break
    for a in range(3):
        if active[a]:
            res[a] = max(1, int(min(extent[a] / h, target)))


@njit(cache=True)
def _axis_term(gap, margin, norm):
    """An axis' share of a lower bound: the gap less the margin (not below 0), squared for norm 2."""
    g = gap - margin
    if g <= 0.0:
        return 0.0
    return g * g if norm == 2 else g


@njit(cache=True)
def _cell_axis_term(q, lo, size, k, margin, norm):
    """The share of axis a in the distance from the coordinate q to the cell k's slab [lo + k size, lo + (k+1) size]."""
    below = lo + k * size - q
    above = q - (lo + (k + 1) * size)
    return _axis_term(max(below, above, 0.0), margin, norm)


@njit(cache=True)
def _box(cloud, m, lo, hi):
    """The box the grid covers, of the first m points of ``cloud`` (P, D): per axis, the 1st-99th
    percentile range [l, h] widened by its length on both sides, within the bounding box, unless more
    than ``max(16, m / 64)`` points would fall outside it; then the bounding box (module docstring)."""
    D = cloud.shape[1]
    if m == 0:
        return
    for a in range(D):
        coords = np.sort(cloud[:m, a])
        low, high = coords[m // 100], coords[m - 1 - m // 100]
        lo[a] = max(coords[0], low - (high - low))
        hi[a] = min(coords[m - 1], high + (high - low))
    outside = 0
    for j in range(m):
        for a in range(D):
            if not (lo[a] <= cloud[j, a] <= hi[a]):
                outside += 1
                break
    if outside > max(_MAX_STRAGGLERS, m // 64):
        for a in range(D):
            lo[a] = cloud[0, a]
            hi[a] = cloud[0, a]
            for j in range(1, m):
                lo[a] = min(lo[a], cloud[j, a])
                hi[a] = max(hi[a], cloud[j, a])


@njit(cache=True)
def build_grids(p2, len2, points_per_cell):
    """The grid of every cloud of ``p2`` (N, P2, D) float64, and its points sorted by cell (a counting sort).

    Returns ``(box_lo, cell_size, res, cell_offset, cell_start, sorted_pts, sorted_j)``: per cloud n the
    box's low corner ``box_lo[n]``, the cells' size ``cell_size[n]`` and count ``res[n]`` (int64) along
    the 3 axes (an axis beyond D: 0, 0, 1); cloud n's cells are numbers ``cell_offset[n]`` to
    ``cell_offset[n + 1] - 2`` of all the clouds' cells, and number ``cell_offset[n + 1] - 1`` holds its
    stragglers (the points outside the box, see the module's docstring). The points of its cell c =
    (k0 r1 + k1) r2 + k2 are ``sorted_pts`` / ``sorted_j`` [cell_start[cell_offset[n] + c],
    cell_start[cell_offset[n] + c + 1]): the clouds' points one after the other, with their indices in
    their cloud, ascending in a cell."""
    N, P2, D = p2.shape
    box_lo = np.zeros((N, 3))
    cell_size = np.zeros((N, 3))
    res = np.ones((N, 3), dtype=np.int64)
    cell_offset = np.zeros(N + 1, dtype=np.int64)
    first_point = np.zeros(N + 1, dtype=np.int64)
    extent = np.zeros(3)
    box_hi = np.zeros((N, 3))
    for n in range(N):
        m = len2[n]
        for a in range(3):
            extent[a] = 0.0
        _box(p2[n], m, box_lo[n], box_hi[n])
        for a in range(D if m > 0 else 0):
            extent[a] = box_hi[n, a] - box_lo[n, a]
        grid_resolution(extent, m, points_per_cell, res[n])
        for a in range(3):
            cell_size[n, a] = extent[a] / res[n, a]
        cell_offset[n + 1] = cell_offset[n] + res[n, 0] * res[n, 1] * res[n, 2] + 1  # + the stragglers
        first_point[n + 1] = first_point[n] + m

    cell_start = np.empty(cell_offset[N] + 1, dtype=np.int64)
    sorted_pts = np.empty((first_point[N], D))
    sorted_j = np.empty(first_point[N], dtype=np.int64)
    cell_start[cell_offset[N]] = first_point[N]
    for n in range(N):
        m = len2[n]
        base = cell_offset[n]
        cells = cell_offset[n + 1] - base
        cell_of = np.empty(m, dtype=np.int64)
        fill = np.zeros(cells, dtype=np.int64)
        for j in range(m):
            c = 0
            for a in range(3):
                k = 0
                if a < D and res[n, a] > 1:
                    t = (p2[n, j, a] - box_lo[n, a]) / cell_size[n, a]
                    k = min(max(int(t), 0), res[n, a] - 1)
                c = c * res[n, a] + k
            for a in range(D):
                if not (box_lo[n, a] <= p2[n, j, a] <= box_hi[n, a]):
                    c = cells - 1  # a straggler
            cell_of[j] = c
            fill[c] += 1
        pos = first_point[n]
        for c in range(cells):
            cell_start[base + c] = pos
            pos += fill[c]
            fill[c] = cell_start[base + c]  # from here on: the cell's next free slot
        for j in range(m):
            slot = fill[cell_of[j]]
            fill[cell_of[j]] += 1
            for a in range(D):
                sorted_pts[slot, a] = p2[n, j, a]
            sorted_j[slot] = j
    return box_lo, cell_size, res, cell_offset, cell_start, sorted_pts, sorted_j


@njit(cache=True)
def _search_block(x, first_query, stop_query, norm, lo, size, res, base, cell_start, sorted_pts, sorted_j, idx, dist):
    """The K best pairs (distance, index) of the queries ``x[first_query:stop_query]`` (one cloud) in the
    grid of the other cloud (see the module's docstring), written into ``idx`` / ``dist`` (P1, K); the
    slots beyond the number found keep their values.

    The search of one query is written out in the loop over the queries rather than in a function of its
    own: every call with array arguments costs two atomic reference counts per array, which took half
    the time with a call per query."""
    D = x.shape[1]
    K = idx.shape[1]
    best_d = np.empty(K, dtype=np.float64)
    best_j = np.empty(K, dtype=np.int64)
    q = np.zeros(3)  # the query's coordinates (0 beyond D)
    margin = np.zeros(3)  # per axis: what every bound gives away to rounding
    reach = np.zeros(3)  # per axis: the query's term of distance to the box, a lower bound for every point
    cq = np.zeros(3, dtype=np.int64)  # the query's cell, clamped into the grid
    stragglers = base + res[0] * res[1] * res[2]  # the "cell" after the grid's: the points outside the box
    for i in range(first_query, stop_query):
        for a in range(3):
            q[a] = np.float64(x[i, a]) if a < D else 0.0
            hi = lo[a] + res[a] * size[a]
            margin[a] = _MARGIN * (abs(q[a]) + abs(lo[a]) + abs(hi)) + _MARGIN_FLOOR
            reach[a] = _axis_term(max(lo[a] - q[a], q[a] - hi, 0.0), margin[a], norm)
            t = (q[a] - lo[a]) / size[a] if size[a] > 0.0 else 0.0
            cq[a] = 0 if t <= 0.0 else (res[a] - 1 if t >= res[a] - 1 else int(t))
        c0, c1, c2 = cq[0], cq[1], cq[2]
        last_shell = max(c0, res[0] - 1 - c0, c1, res[1] - 1 - c1, c2, res[2] - 1 - c2)
        count = 0
        for p in range(cell_start[stragglers], cell_start[stragglers + 1]):  # before any bound is used
            d = point_distance(x, i, sorted_pts, p, D, norm)
            count = insert_neighbour(best_d, best_j, count, K, d, sorted_j[p])
        for s in range(last_shell + 1):
            for k0 in range(max(0, c0 - s), min(res[0] - 1, c0 + s) + 1):
                lb0 = _cell_axis_term(q[0], lo[0], size[0], k0, margin[0], norm)
                if count == K and lb0 > best_d[K - 1]:
                    continue
                for k1 in range(max(0, c1 - s), min(res[1] - 1, c1 + s) + 1):
                    lb1 = lb0 + _cell_axis_term(q[1], lo[1], size[1], k1, margin[1], norm)
                    if count == K and lb1 > best_d[K - 1]:
                        continue
                    # this row's cells in shell s, as up to two runs of points [a0, a1) and [b0, b1)
                    row = base + (k0 * res[1] + k1) * res[2]
                    first, last = max(0, c2 - s), min(res[2] - 1, c2 + s)
                    a0 = a1 = b0 = b1 = 0
                    if max(abs(k0 - c0), abs(k1 - c1)) == s:
                        # on the shell's k0/k1 faces: the cells first..last (one run) less those too far at its ends
                        while count == K and first <= last:
                            if lb1 + _cell_axis_term(q[2], lo[2], size[2], first, margin[2], norm) > best_d[K - 1]:
                                first += 1
                            elif lb1 + _cell_axis_term(q[2], lo[2], size[2], last, margin[2], norm) > best_d[K - 1]:
                                last -= 1
                            else:
                                break
                        if first <= last:
                            a0, a1 = cell_start[row + first], cell_start[row + last + 1]
                    else:
                        # inside those faces: the row's two ends, c2 - s and c2 + s
                        if c2 - s >= 0:
                            lb = lb1 + _cell_axis_term(q[2], lo[2], size[2], c2 - s, margin[2], norm)
                            if count < K or lb <= best_d[K - 1]:
                                a0, a1 = cell_start[row + c2 - s], cell_start[row + c2 - s + 1]
                        if c2 + s < res[2]:
                            lb = lb1 + _cell_axis_term(q[2], lo[2], size[2], c2 + s, margin[2], norm)
                            if count < K or lb <= best_d[K - 1]:
                                b0, b1 = cell_start[row + c2 + s], cell_start[row + c2 + s + 1]
                    for run in range(2):
                        start, stop = (a0, a1) if run == 0 else (b0, b1)
                        for p in range(start, stop):
                            d = point_distance(x, i, sorted_pts, p, D, norm)
                            count = insert_neighbour(best_d, best_j, count, K, d, sorted_j[p])
            if count < K:
                continue
            # the cells beyond shell s: beyond its face on one axis a, anywhere in the box on the others
            beyond = math.inf
            for a in range(3):
                others = 0.0
                for b in range(3):
                    if b != a:
                        others += reach[b]
                if cq[a] - s - 1 >= 0:
                    gap = q[a] - (lo[a] + (cq[a] - s) * size[a])
                    beyond = min(beyond, others + max(_axis_term(gap, margin[a], norm), reach[a]))
                if cq[a] + s + 1 <= res[a] - 1:
                    gap = lo[a] + (cq[a] + s + 1) * size[a] - q[a]
                    beyond = min(beyond, others + max(_axis_term(gap, margin[a], norm), reach[a]))
            if beyond > best_d[K - 1]:
                break
        for k in range(count):
            dist[i, k] = best_d[k]
            idx[i, k] = best_j[k]


@parallel_njit(cache=True)
def knn_grid_cpu(
    p1, len1, len2, K, norm, box_lo, cell_size, res, cell_offset, cell_start, sorted_pts, sorted_j, out_idx, out_dist
):
    """``knn_cpu``'s outputs, searched in the grids of cloud 2 (``build_grids``; float64 clouds): fill
    ``out_idx`` (N, P1, K) int64 and ``out_dist`` (N, P1, K) (pre-filled with -1 / 0). Work is split in
    blocks of queries of one cloud."""
    N, P1, D = p1.shape
    per_cloud = (P1 + _QUERIES_PER_TASK - 1) // _QUERIES_PER_TASK
    for task in prange(N * per_cloud):
        n = task // per_cloud
        first = (task % per_cloud) * _QUERIES_PER_TASK
        stop = min(first + _QUERIES_PER_TASK, len1[n])
        if len2[n] > 0 and first < stop:
            grid = (box_lo[n], cell_size[n], res[n], cell_offset[n], cell_start, sorted_pts, sorted_j)
            _search_block(p1[n], first, stop, norm, *grid, out_idx[n], out_dist[n])
