"""CPU mesh rasterizer: ``numba.njit(parallel=True)``, face-major within row bands
(docs/kernels.md#cpu-and-gpu-layouts).

Each parallel task owns one band of ``BAND`` rows of one image and the K-lists of those pixels, so
no two threads write the same pixel. Within a band the faces are visited in index order and only
the pixels inside each face's (blur-grown) bounding box are tested, so the cost follows the
covered area, not pixels x faces. The per-pixel math is ``mesh_raster_math``, shared with CUDA.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from p3dlab.kernels import mesh_raster_math as rm
from p3dlab.kernels.parallel_jit import parallel_njit

# Numba's cache checks the contents of the file that defines a kernel, not of the files it inlines
# code from: this line changes with mesh_raster_math.py (tests/test_kernel_cache.py enforces it), so
# cached kernels are rebuilt when the math changes.
MATH_SOURCE_SHA256 = "bce714e3dfd08c92"

_dev = rm.build(lambda fn: njit(cache=True)(fn))
candidate = _dev.candidate
face_setup = _dev.face_setup
pixel_test = _dev.pixel_test
insert = _dev.insert
write_slot = _dev.write_slot
pixel_ndc = _dev.pixel_ndc
rasterize_pixel = _dev.rasterize_pixel
KEEP = rm.KEEP
BAND = 8


@njit(cache=True)
def _pixel_range(lo, hi, n, s):
    """Pixel indices i whose NDC centre (n - 2i - 1)/s lies in [lo, hi], widened by 1e-3 pixel so
    that rounding never drops a pixel the exact test in ``candidate`` would keep; clamped to the
    image. An empty range comes back as (1, 0)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 1, 0
    a = (n - 1.0 - hi * s) / 2.0 - 1e-3
    b = (n - 1.0 - lo * s) / 2.0 + 1e-3
    a = min(max(a, -1.0), n + 1.0)
    b = min(max(b, -1.0), n + 1.0)
    first = max(int(math.ceil(a)), 0)
    last = min(int(math.floor(b)), n - 1)
    if first > last:
        return 1, 0
    return first, last


@njit(cache=True)
def face_pixel_box(fv, f, H, W, s, r, cull, out):
    """``out[f]`` = [row_first, row_last, col_first, col_last] of the pixels inside face f's bounding
    box grown by r = sqrt(blur); empty for a face the kernel never draws (a vertex at view Z < 1e-8,
    zero area, or back-facing when culling). Called in a ``prange`` over the faces: a parallel kernel
    of its own could not be called from ``rasterize_meshes_cpu`` (kernels/parallel_jit.py)."""
    x0, y0, x1, y1, x2, y2 = fv[f, 0, 0], fv[f, 0, 1], fv[f, 1, 0], fv[f, 1, 1], fv[f, 2, 0], fv[f, 2, 1]
    zmin = min(fv[f, 0, 2], fv[f, 1, 2], fv[f, 2, 2])
    area = (x0 - x1) * (y2 - y1) - (y0 - y1) * (x2 - x1)
    if not zmin >= 1e-8 or not abs(area) > 1e-8 or (cull and area < 0.0):  # "not" also catches NaN
        out[f, 0], out[f, 1], out[f, 2], out[f, 3] = 1, 0, 1, 0
        return
    out[f, 0], out[f, 1] = _pixel_range(min(y0, y1, y2) - r, max(y0, y1, y2) + r, H, s)
    out[f, 2], out[f, 3] = _pixel_range(min(x0, x1, x2) - r, max(x0, x1, x2) + r, W, s)


#: Band lists longer than this many entries per face (faces that span many bands) are not built: the
#: band tasks then scan every face of their mesh instead, so memory stays O(F) for any input.
MAX_BAND_ENTRIES_PER_FACE = 8


@njit(cache=True)
def band_face_lists(boxes, face_first, face_count, n_bands, out_first, out_faces):
    """Counting sort of the faces into the row bands their boxes touch: band b of mesh n lists its
    faces in ``out_faces[out_first[n * n_bands + b] : out_first[n * n_bands + b + 1]]``, in index
    order. Returns False, having written nothing into ``out_faces``, when the lists would hold more
    than ``out_faces.shape[0]`` entries."""
    N = face_first.shape[0]
    out_first[:] = 0
    for n in range(N):
        for f in range(face_first[n], face_first[n] + face_count[n]):
            if boxes[f, 0] <= boxes[f, 1]:
                for b in range(boxes[f, 0] // BAND, boxes[f, 1] // BAND + 1):
                    out_first[n * n_bands + b + 1] += 1
    for t in range(N * n_bands):
        out_first[t + 1] += out_first[t]
    if out_first[N * n_bands] > out_faces.shape[0]:
        return False
    fill = out_first[:-1].copy()
    for n in range(N):
        for f in range(face_first[n], face_first[n] + face_count[n]):
            if boxes[f, 0] <= boxes[f, 1]:
                for b in range(boxes[f, 0] // BAND, boxes[f, 1] // BAND + 1):
                    out_faces[fill[n * n_bands + b]] = f
                    fill[n * n_bands + b] += 1
    return True


@njit(cache=True)
def sort_slots(p2f, zbuf, bary, dists, n, i, j, count, key, order, scratch, scratch_f):
    """Order the first ``count`` slots of pixel (n, i, j), written in the order their faces arrived,
    as ``insert`` would have: an insertion sort that moves each slot in turn before the earlier
    ones with a greater z, done on (z, slot) pairs and applied to the four outputs once.
    ``key``, ``order`` (m,), ``scratch`` (m, 4) and ``scratch_f`` (m,), m >= ``count``, are the
    task's scratch."""
    for a in range(count):
        z = zbuf[n, i, j, a]
        pos = a
        while pos > 0 and key[pos - 1] > z:
            key[pos] = key[pos - 1]
            order[pos] = order[pos - 1]
            pos -= 1
        key[pos] = z
        order[pos] = a
    moved = False
    for a in range(count):
        moved = moved or order[a] != a
    if not moved:
        return
    for a in range(count):
        o = order[a]
        scratch_f[a] = p2f[n, i, j, o]
        scratch[a, 0] = dists[n, i, j, o]
        scratch[a, 1] = bary[n, i, j, o, 0]
        scratch[a, 2] = bary[n, i, j, o, 1]
        scratch[a, 3] = bary[n, i, j, o, 2]
    for a in range(count):
        p2f[n, i, j, a] = scratch_f[a]
        zbuf[n, i, j, a] = key[a]
        dists[n, i, j, a] = scratch[a, 0]
        bary[n, i, j, a, 0] = scratch[a, 1]
        bary[n, i, j, a, 1] = scratch[a, 2]
        bary[n, i, j, a, 2] = scratch[a, 3]


@njit(cache=True, inline="always")
def rasterize_face_in_band(
    fv, sibling, f, boxes, n, i0, i1, H, W, K, blur, persp, clip, cull, s, lists, p2f, zbuf, bary, dists, scratch
):
    """Test face f at every pixel of its box within rows i0..i1 of image n and keep what it keeps:
    ``candidate`` with the per-face part (``face_setup``) done once. Inlined into the band loop
    (``inline="always"``): as a call it is slower (docs/performance.md#rasterizer-band-lists).

    ``lists`` is the band's state: a pixel's count of kept faces, plus ``UNSORTED`` while its slots
    are in arrival order (``deferred_order``): kept faces are then appended, and the slots are
    sorted once, when a K+1-th face arrives or when the band is done. ``scratch``: ``sort_slots``'s."""
    drawn, x0, y0, z0, x1, y1, z1, x2, y2, z2, x_lo, x_hi, y_lo, y_hi, a_hat = face_setup(fv, f, blur, cull)
    if not drawn:
        return
    lo = max(boxes[f, 0], i0)
    hi = min(boxes[f, 1], i1)
    for i in range(lo, hi + 1):
        py = pixel_ndc(i, H, s)
        for j in range(boxes[f, 2], boxes[f, 3] + 1):
            px = pixel_ndc(j, W, s)
            c = lists[i - i0, j]
            # a full, sorted list takes no face at or behind its last one (``insert``), unless it
            # replaces its sibling
            z_far = zbuf[n, i, j, K - 1] if c == K and sibling[f] < 0 else math.inf
            status, z, sd, b0, b1, b2 = pixel_test(
                px, py, x0, y0, z0, x1, y1, z1, x2, y2, z2, x_lo, x_hi, y_lo, y_hi, a_hat, blur, persp, clip, z_far
            )
            if status == KEEP:
                if c >= UNSORTED:
                    c -= UNSORTED
                    if c < K:
                        write_slot(p2f, zbuf, bary, dists, n, i, j, c, f, z, sd, b0, b1, b2)
                        lists[i - i0, j] = UNSORTED + c + 1
                        continue
                    sort_slots(p2f, zbuf, bary, dists, n, i, j, c, scratch[0], scratch[1], scratch[2], scratch[3])
                lists[i - i0, j] = insert(p2f, zbuf, bary, dists, n, i, j, c, K, f, sibling[f], z, sd, b0, b1, b2)


#: Added to a pixel's count in a band's ``lists`` while its slots are in arrival order.
UNSORTED = 1 << 40


@parallel_njit(cache=True)
def rasterize_meshes_cpu(fv, sibling, face_first, face_count, H, W, K, blur, persp, clip, cull, p2f, zbuf, bary, dists):
    """Fill the K nearest faces of every pixel; every slot without a face gets -1 in all four outputs
    (each band task first sets its own rows to -1: the caller passes uninitialised outputs, and the
    rows are written while they are in the task's cache rather than by a separate pass).

    Each band task visits the faces whose boxes reach its rows, in index order: from the band lists
    (``band_face_lists``), or, where those would be too long, by scanning all faces of its mesh.
    Either way the same faces reach each pixel in the same order, so the outputs are identical.

    Deferred order (K > 1, no z-clip siblings): a pixel's kept faces are appended in arrival order
    and sorted once (``sort_slots``), which gives exactly the lists that inserting each face in turn
    (``insert``) gives, with fewer moves; a pixel that gets more than K faces is sorted then and
    inserts from there on. Siblings replace each other in place, which depends on the order at the
    time, so meshes with z-clipped faces insert throughout.

    Args:
        fv: (F, 3, 3) face vertices (x_ndc, y_ndc, Z_view).
        sibling: (F,) index of the other half of a z-clipped face, or -1.
        face_first, face_count: (N,) packed face range of each mesh.
        p2f (N, H, W, K) int64, zbuf (N, H, W, K), bary (N, H, W, K, 3), dists (N, H, W, K): outputs.
    """
    N = face_first.shape[0]
    F = fv.shape[0]
    s = float(min(H, W))
    r = math.sqrt(blur)
    boxes = np.empty((F, 4), np.int64)
    for f in prange(F):
        face_pixel_box(fv, f, H, W, s, r, cull, boxes)
    deferred_order = K > 1
    for f in range(F):
        if sibling[f] >= 0:
            deferred_order = False
            break
    n_bands = (H + BAND - 1) // BAND
    list_first = np.empty(N * n_bands + 1, np.int64)
    list_faces = np.empty(MAX_BAND_ENTRIES_PER_FACE * F + n_bands, np.int64)
    listed = band_face_lists(boxes, face_first, face_count, n_bands, list_first, list_faces)
    for task in prange(N * n_bands):
        n = task // n_bands
        i0 = (task % n_bands) * BAND
        i1 = min(i0 + BAND, H) - 1
        lists = np.full((BAND, W), UNSORTED if deferred_order else 0, np.int64)
        # ``sort_slots``'s scratch: a pixel keeps at most min(K, F) faces (K alone may be huge)
        m = min(K, F)
        scratch = (np.empty(m, zbuf.dtype), np.empty(m, np.int64), np.empty((m, 4), zbuf.dtype), np.empty(m, np.int64))
        for i in range(i0, i1 + 1):
            for j in range(W):
                for k in range(K):
                    p2f[n, i, j, k] = -1
                    zbuf[n, i, j, k] = -1.0
                    dists[n, i, j, k] = -1.0
                    bary[n, i, j, k, 0] = -1.0
                    bary[n, i, j, k, 1] = -1.0
                    bary[n, i, j, k, 2] = -1.0
        # this band's faces: its list, or every face of the mesh whose box reaches its rows
        n_faces = list_first[task + 1] - list_first[task] if listed else face_count[n]
        for e in range(n_faces):
            f = list_faces[list_first[task] + e] if listed else face_first[n] + e
            if boxes[f, 0] <= i1 and boxes[f, 1] >= i0:
                rasterize_face_in_band(
                    fv,
                    sibling,
                    f,
                    boxes,
                    n,
                    i0,
                    i1,
                    H,
                    W,
                    K,
                    blur,
                    persp,
                    clip,
                    cull,
                    s,
                    lists,
                    p2f,
                    zbuf,
                    bary,
                    dists,
                    scratch,
                )
        for i in range(i0, i1 + 1):
            for j in range(W):
                c = lists[i - i0, j] - UNSORTED
                if c > 1:
                    sort_slots(p2f, zbuf, bary, dists, n, i, j, c, scratch[0], scratch[1], scratch[2], scratch[3])


@parallel_njit(cache=True)
def rasterize_meshes_cpu_naive(
    fv, sibling, face_first, face_count, H, W, K, blur, persp, clip, cull, p2f, zbuf, bary, dists
):
    """The GPU layout on the CPU: one task per pixel looping over all faces of its mesh. Slow;
    used by tests to show the band kernel and the per-pixel loop agree."""
    N = face_first.shape[0]
    for t in prange(N * H * W):
        n = t // (H * W)
        i = (t // W) % H
        j = t % W
        rasterize_pixel(
            fv, sibling, face_first[n], face_count[n], n, i, j, H, W, K, blur, persp, clip, cull, p2f, zbuf, bary, dists
        )


slot_backward = _dev.slot_backward


@parallel_njit(cache=True)
def rasterize_meshes_backward_cpu(
    fv, p2f, grad_zbuf, grad_bary, grad_dists, H, W, blur, persp, clip, grad_fv, n_threads
):
    """Accumulate dL/d(face_verts) (F, 3, 3) from the fragments' upstream gradients.

    Upstream gradient arrays may be empty (size 0): no gradient flows from that output.
    Pixels are split into one contiguous block of rows per task; each task accumulates into its
    own (F, 3, 3) buffer (no races), and the buffers are summed in a fixed order (deterministic
    for a given ``n_threads``, normally ``numba.get_num_threads()``).

    ``p2f`` is the forward's: each pixel's faces fill its first slots and -1 the rest, so a pixel's
    slots are read up to its first -1. An index outside [-1, F) is never used: the kernel returns
    one such value (the fragments were changed after the forward pass), or -1 when there is none.
    """
    N, _, _, K = p2f.shape
    F = fv.shape[0]
    s = float(min(H, W))
    n_tasks = max(min(n_threads, N * H), 1)
    rows = N * H
    buffers = np.zeros((n_tasks, F, 3, 3), grad_fv.dtype)
    bad_index = np.full(n_tasks, -1, np.int64)
    for task in prange(n_tasks):
        r0 = rows * task // n_tasks
        r1 = rows * (task + 1) // n_tasks
        buf = buffers[task]
        for r in range(r0, r1):
            n = r // H
            i = r % H
            py = pixel_ndc(i, H, s)
            for j in range(W):
                px = pixel_ndc(j, W, s)
                for k in range(K):
                    f = p2f[n, i, j, k]
                    if f < 0 or f >= F:
                        if f != -1:
                            bad_index[task] = f
                        break
                    gz = grad_zbuf[n, i, j, k] if grad_zbuf.size else 0.0
                    gb0 = gb1 = gb2 = 0.0
                    if grad_bary.size:
                        gb0, gb1, gb2 = grad_bary[n, i, j, k, 0], grad_bary[n, i, j, k, 1], grad_bary[n, i, j, k, 2]
                    gd = grad_dists[n, i, j, k] if grad_dists.size else 0.0
                    if gz == 0.0 and gb0 == 0.0 and gb1 == 0.0 and gb2 == 0.0 and gd == 0.0:
                        continue
                    gx0, gy0, gZ0, gx1, gy1, gZ1, gx2, gy2, gZ2 = slot_backward(
                        fv, f, px, py, blur, persp, clip, gz, gb0, gb1, gb2, gd
                    )
                    buf[f, 0, 0] += gx0
                    buf[f, 0, 1] += gy0
                    buf[f, 0, 2] += gZ0
                    buf[f, 1, 0] += gx1
                    buf[f, 1, 1] += gy1
                    buf[f, 1, 2] += gZ1
                    buf[f, 2, 0] += gx2
                    buf[f, 2, 1] += gy2
                    buf[f, 2, 2] += gZ2
    for task in range(n_tasks):
        grad_fv += buffers[task]
    for task in range(n_tasks):
        if bad_index[task] != -1:
            return bad_index[task]
    return -1
