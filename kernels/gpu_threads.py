"""What one CUDA thread does, for every CUDA kernel: plain Python, compiled twice.

A CUDA kernel in ``cuda_adapter`` is a shell: it reads its thread number ``t = cuda.grid(1)``,
allocates per-thread scratch where it needs some, and calls the body built here. The body maps
``t`` to its work item and calls the per-pixel / per-ray math shared with the CPU kernels
(``mesh_raster_math``, ``point_raster``, ``volume_math``, ``stratified``).

``build(jit, add, ...)`` compiles the bodies with ``jit``: ``cuda.jit(device=True)`` in the
adapter, ``numba.njit`` in the tests, where a loop over ``t`` stands in for the grid. So the
thread mapping and the scatters of the backward kernels are tested by compiled code on any
machine, without the CUDA simulator (which the newer CUDA targets no longer ship).

Thread mappings (row-major, the last index fastest):

    mesh and point rasterization       t -> (n, i, j)       of N x H x W pixels
    their backward                     t -> (n, i, j, k)    of N x H x W x K fragment slots
    volume sampling, forward/backward  t -> (n, m)          of N x M points
    marching, stratified jitter        t -> ray r

The backward bodies accumulate with ``add(buffer, index, value)``: ``cuda.atomic.add`` on a GPU,
``buffer[index] += value`` when run serially.
"""

from __future__ import annotations

from types import SimpleNamespace

from p3dlab.kernels import mesh_raster_math, point_raster, stratified, volume_math


def _add_serial(buffer, index, value):
    """The scatter of a serial run: ``buffer[index] += value``."""
    buffer[index] += value


def build(jit, add):
    """Compile the per-thread bodies with ``jit``; ``add`` is the (atomic) scatter, already
    compiled for the same target. Volumes run ``volume_math``'s core alone: the CPU's fast paths
    (``volume_fast``) are vector instructions and per-ray scratch arrays, which a GPU thread has no
    use or room for."""
    # the bodies call the shared math through plain names (Numba resolves a closure's free
    # variables when they are functions, not attributes of a namespace)
    mesh = mesh_raster_math.build(jit)
    rasterize_mesh_pixel, slot_backward, pixel_ndc = mesh.rasterize_pixel, mesh.slot_backward, mesh.pixel_ndc
    rasterize_point_pixel = point_raster.build(jit).rasterize_pixel
    volume = volume_math.build(jit, add)
    sample_point, sample_point_backward = volume.sample_point, volume.sample_point_backward
    march_ray, march_ray_backward = volume.march_ray, volume.march_ray_backward
    jitter_ray = stratified.build(jit).jitter_ray

    def grad_or_zero(grad, n, i, j, k):
        """An upstream gradient of one fragment slot; an empty array means "no gradient"."""
        return grad[n, i, j, k] if grad.size > 0 else 0.0

    grad_or_zero = jit(grad_or_zero)

    def fragment_slot(t, H, W, K):
        """Thread t of an (N, H, W, K) fragment array: its (n, i, j, k), k fastest."""
        return t // (K * W * H), (t // (K * W)) % H, (t // K) % W, t % K

    fragment_slot = jit(fragment_slot)

    def rasterize_meshes(
        t, fv, sibling, face_first, face_count, H, W, K, blur, persp, clip, cull, p2f, zbuf, bary, dists
    ):
        """Pixel t of mesh n = t // (H W): its K nearest faces (``mesh_raster_math.rasterize_pixel``)."""
        N = face_first.shape[0]
        if t >= N * H * W:
            return
        n = t // (H * W)
        i = (t // W) % H
        j = t % W
        rasterize_mesh_pixel(
            fv, sibling, face_first[n], face_count[n], n, i, j, H, W, K, blur, persp, clip, cull, p2f, zbuf, bary, dists
        )

    def rasterize_meshes_backward(t, fv, p2f, grad_zbuf, grad_bary, grad_dists, H, W, blur, persp, clip, grad_fv):
        """Fragment slot t: dL/d(face vertices) of its face, scattered into ``grad_fv`` (F, 3, 3)."""
        N, _, _, K = p2f.shape
        if t >= N * H * W * K:
            return
        n, i, j, k = fragment_slot(t, H, W, K)
        f = p2f[n, i, j, k]
        if f < 0:
            return
        s = float(min(H, W))
        gb0 = grad_bary[n, i, j, k, 0] if grad_bary.size > 0 else 0.0
        gb1 = grad_bary[n, i, j, k, 1] if grad_bary.size > 0 else 0.0
        gb2 = grad_bary[n, i, j, k, 2] if grad_bary.size > 0 else 0.0
        g = slot_backward(
            fv, f, pixel_ndc(j, W, s), pixel_ndc(i, H, s), blur, persp, clip,
            grad_or_zero(grad_zbuf, n, i, j, k), gb0, gb1, gb2, grad_or_zero(grad_dists, n, i, j, k),
        )  # fmt: skip
        for v in range(3):
            for c in range(3):
                add(grad_fv, (f, v, c), g[3 * v + c])

    def rasterize_points(t, pts, radius, first_idx, counts, H, W, K, idx, zbuf, dists):
        """Pixel t of cloud n = t // (H W): its K nearest points (``point_raster.rasterize_pixel``)."""
        N = first_idx.shape[0]
        if t >= N * H * W:
            return
        n = t // (H * W)
        rasterize_point_pixel(pts, radius, first_idx[n], counts[n], n, (t // W) % H, t % W, H, W, K, idx, zbuf, dists)

    def rasterize_points_backward(t, pts, idx, grad_zbuf, grad_dists, H, W, grad_pts):
        """Fragment slot t: d = |p_xy - pixel|^2 gives dL/dp_xy = 2 (p_xy - pixel) dL/dd, and
        z = p_z gives dL/dp_z = dL/dz."""
        N, _, _, K = idx.shape
        if t >= N * H * W * K:
            return
        n, i, j, k = fragment_slot(t, H, W, K)
        p = idx[n, i, j, k]
        if p < 0:
            return
        s = float(min(H, W))
        gd = grad_or_zero(grad_dists, n, i, j, k)
        add(grad_pts, (p, 0), 2.0 * (pts[p, 0] - pixel_ndc(j, W, s)) * gd)
        add(grad_pts, (p, 1), 2.0 * (pts[p, 1] - pixel_ndc(i, H, s)) * gd)
        if grad_zbuf.size > 0:
            add(grad_pts, (p, 2), grad_zbuf[n, i, j, k])

    def volume_of(n, flat, shape):
        """The volume batch n samples: 0 when one volume is shared by the whole batch."""
        return 0 if flat.size == shape[0] * shape[1] * shape[2] * shape[3] else n

    volume_of = jit(volume_of)

    def sample_volume(t, flat, shape, pts, align, out):
        """Point m of batch n (t = n M + m): trilinear sample into ``out[n][:, m]``."""
        N, M, _ = pts.shape
        if t >= N * M:
            return
        n = t // M
        m = t % M
        sample_point(flat, shape, volume_of(n, flat, shape), pts[n, m, 0], pts[n, m, 1], pts[n, m, 2], align, out[n], m)

    def sample_volume_backward(t, flat, shape, pts, align, grad_out, buf, grad_points):
        """Point t: grid gradient scattered into ``buf``, point gradient written to ``grad_points``."""
        N, M, _ = pts.shape
        if t >= N * M:
            return
        n = t // M
        m = t % M
        b = volume_of(n, flat, shape)
        gx, gy, gz = sample_point_backward(
            flat, shape, b, pts[n, m, 0], pts[n, m, 1], pts[n, m, 2], align, grad_out[n], m, buf
        )
        grad_points[n, m, 0] = gx
        grad_points[n, m, 1] = gy
        grad_points[n, m, 2] = gz

    def march_volume(
        r, grid, layout, ray_vol, rays, lengths, mode, eps, t_min, align, last_inf, out_f, out_o, out_z, n_used, samples
    ):  # fmt: skip
        """Ray r, marched sample by sample (``volume_math``'s ``march_ray``)."""
        if r >= rays.shape[0]:
            return
        march_ray(
            grid, layout, ray_vol[r], rays, lengths, r, mode, eps, t_min, align, last_inf, out_f, out_o, out_z, n_used,
            samples,
        )  # fmt: skip

    def march_volume_backward(
        r, grid, layout, ray_vol, rays, lengths, mode, eps, align, last_inf, S_total, T_P, G_f, g_o, g_z, n_used,
        ray_grad, samples, buf, grad_rays, scratch,
    ):  # fmt: skip
        """Ray r in reverse: ``scratch`` (P, 2) holds T and Π(1 - a) per sample of the EA scan, whose
        reverse pass samples the grid again (``volume_math``'s ``march_ray_backward``)."""
        if r >= rays.shape[0]:
            return
        march_ray_backward(
            grid, layout, ray_vol[r], rays, lengths, r, mode, eps, align, last_inf, S_total, T_P, G_f, g_o, g_z,
            n_used, ray_grad, samples, scratch, buf, grad_rays,
        )  # fmt: skip

    def stratified_jitter(r, lengths, seed, out):
        """Ray r: its P sample lengths jittered within their bins (``stratified.jitter_ray``)."""
        if r < lengths.shape[0]:
            jitter_ray(lengths, seed, r, out)

    return SimpleNamespace(
        rasterize_meshes=jit(rasterize_meshes),
        rasterize_meshes_backward=jit(rasterize_meshes_backward),
        rasterize_points=jit(rasterize_points),
        rasterize_points_backward=jit(rasterize_points_backward),
        sample_volume=jit(sample_volume),
        sample_volume_backward=jit(sample_volume_backward),
        march_volume=jit(march_volume),
        march_volume_backward=jit(march_volume_backward),
        stratified_jitter=jit(stratified_jitter),
    )
