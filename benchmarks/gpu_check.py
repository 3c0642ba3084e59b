"""Every CUDA kernel against the CPU kernels on random scenes, with a timing table (``make gpu-check``).

On a machine with an NVIDIA GPU (``pip install -e '.[cuda]'`` first; ``make gpu-check`` does it)::

    python -m benchmarks.gpu_check            # full-size scenes, a few minutes
    python -m benchmarks.gpu_check --dry-run  # tiny scenes on the CUDA simulator, no GPU needed

Each row launches one kernel of ``p3dlab.kernels.cuda_adapter`` and its CPU twin on the same
inputs, compares the outputs (integer outputs exactly, floats to a tolerance of the dtype and of the
order of atomic additions) and times both, next to a dense pure-torch computation of the same
quantity on the same device (the way PyTorch3D's Python fallbacks or a first implementation would
do it) where there is one. A last row renders a mesh through the public API on both devices and
compares the images and the vertex gradients.

``--dry-run`` runs the same rows under Numba's CUDA simulator (NumPy arrays in place of device
arrays) at tiny sizes, so CI checks the script itself without a GPU. Exit status 1 when any row
fails.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

SIZES = {
    # H x W image, F faces per mesh, K faces per pixel, N meshes, P points, R rays, S samples per ray,
    # G grid side, M sample points, kNN clouds of P1 and P2 points, kNN's K
    "tiny": dict(H=6, W=7, F=5, K=2, N=2, P=16, R=6, S=8, G=5, M=24, P1=20, P2=30, KNN=3, repeats=1),
    "full": dict(H=256, W=256, F=20000, K=8, N=2, P=100_000, R=128 * 128, S=150, G=128, M=1 << 20, P1=5000, P2=5000,
                 KNN=10, repeats=5),
}  # fmt: skip


@dataclass
class Row:
    kernel: str
    error: float  # the largest difference CUDA - CPU, relative to the output's scale
    tolerance: float
    cuda_ms: float
    cpu_ms: float
    dense_ms: Optional[float] = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.error <= self.tolerance)


class Device:
    """Where the CUDA kernels run: a GPU (torch CUDA tensors) or the simulator (NumPy arrays)."""

    def __init__(self, dry_run: bool):
        import torch

        self.dry_run = dry_run
        self.torch_device = torch.device("cpu" if dry_run else "cuda")

    def put(self, a: np.ndarray):
        """A device copy of a NumPy array."""
        if self.dry_run:
            return np.array(a)
        import torch

        return torch.from_numpy(np.ascontiguousarray(a)).to(self.torch_device)

    def get(self, a) -> np.ndarray:
        return np.asarray(a) if self.dry_run else a.cpu().numpy()

    def sync(self):
        if not self.dry_run:
            import torch

            torch.cuda.synchronize()


def _median_ms(fn: Callable[[], object], sync: Callable[[], None], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _relative_error(cpu: np.ndarray, cuda: np.ndarray) -> float:
    """max |cuda - cpu| / max(1, max |cpu|): 0 for equal arrays, NaN-aware."""
    cpu, cuda = np.asarray(cpu, np.float64), np.asarray(cuda, np.float64)
    if cpu.shape != cuda.shape:
        return float("inf")
    if not np.array_equal(np.isnan(cpu), np.isnan(cuda)):
        return float("inf")
    diff = np.nan_to_num(np.abs(cuda - cpu), nan=0.0)
    return float(diff.max(initial=0.0) / max(1.0, np.nan_to_num(np.abs(cpu)).max(initial=0.0)))


# ----------------------------------------------------------------------------- scenes
def small_triangles(rng, N, F):
    """N meshes of F random triangles in (x_ndc, y_ndc, Z_view): centres in [-1.1, 1.1]^2, depths in
    [1, 3], corners within 3 / sqrt(F) of the centre (a pixel is covered by a handful of faces)."""
    spread = 3.0 / F**0.5
    centres = np.concatenate([rng.uniform(-1.1, 1.1, (N * F, 1, 2)), rng.uniform(1.0, 3.0, (N * F, 1, 1))], 2)
    offsets = np.concatenate([rng.uniform(-spread, spread, (N * F, 3, 2)), rng.uniform(-0.05, 0.05, (N * F, 3, 1))], 2)
    fv = centres + offsets
    return fv, np.arange(N) * F, np.full(N, F)


def rays_through_the_grid(rng, R, S):
    """The volume kernels' rays (R, 7) (local origin, local direction, world direction norm) from
    z = -1.5 towards +z through the local box [-1, 1]³, and their S sorted sample lengths (R, S)."""
    rays = np.zeros((R, 7))
    rays[:, :2] = rng.uniform(-0.5, 0.5, (R, 2))
    rays[:, 2] = -1.5
    rays[:, 3:5] = rng.uniform(-0.1, 0.1, (R, 2))
    rays[:, 5] = 1.0
    rays[:, 6] = np.linalg.norm(rays[:, 3:6], axis=1) * 0.7
    return rays, np.sort(rng.uniform(0.3, 2.8, (R, S)), axis=1)


def volume_scene(rng, s):
    """Two G^3 grids of density + 3 colours (channels last, flat) and R rays through them."""
    G, R, S, C = s["G"], s["R"], s["S"], 3
    grid = np.concatenate([rng.uniform(0.0, 0.3, (2, G, G, G, 1)), rng.uniform(0, 1, (2, G, G, G, C))], -1).ravel()
    layout = np.array([G, G, G, 1 + C, 1, C], np.int64)
    rays, lengths = rays_through_the_grid(rng, R, S)
    return grid, layout, np.arange(R) % 2, rays, lengths


# ----------------------------------------------------------------------------- rows
def check_mesh_rasterizer(dev, gpu, s, rng):
    import numba
    import torch

    from p3dlab.kernels.mesh_raster_cpu import rasterize_meshes_backward_cpu, rasterize_meshes_cpu
    from p3dlab.ops.rasterize_reference import rasterize_meshes_reference
    from p3dlab.structures import Meshes

    N, H, W, K = s["N"], s["H"], s["W"], s["K"]
    fv, first, count = small_triangles(rng, N, s["F"])
    sibling = np.full(fv.shape[0], -1, np.int64)
    settings = (H, W, K, 0.0, True, False, False)

    def outputs(put):
        shape = (N, H, W, K)
        return [put(np.full(shape, -1, np.int64)), put(np.full(shape, -1.0)), put(np.full(shape + (3,), -1.0)),
                put(np.full(shape, -1.0))]  # fmt: skip

    cpu_out, gpu_out = outputs(np.array), outputs(dev.put)
    gpu_in = [dev.put(a) for a in (fv, sibling, first, count)]
    run_cpu = lambda: rasterize_meshes_cpu(fv, sibling, first, count, *settings, *cpu_out)
    run_gpu = lambda: gpu.rasterize_meshes_cuda(*gpu_in, *settings, *gpu_out)
    cpu_ms, cuda_ms = _median_ms(run_cpu, lambda: None, s["repeats"]), _median_ms(run_gpu, dev.sync, s["repeats"])
    got = [dev.get(a) for a in gpu_out]
    mismatch = float(np.mean(got[0] != cpu_out[0]))
    same = got[0] == cpu_out[0]
    err = max([mismatch] + [_relative_error(c[same], g[same]) for c, g in zip(cpu_out[1:], got[1:])])
    verts = torch.from_numpy(fv.reshape(-1, 3)).to(dev.torch_device)
    faces = torch.arange(fv.shape[0] * 3, device=dev.torch_device).view(-1, 3)
    meshes = Meshes([verts[3 * f : 3 * (f + c)] for f, c in zip(first, count)],
                    [faces[f : f + c] - 3 * f for f, c in zip(first, count)])  # fmt: skip
    dense = lambda: rasterize_meshes_reference(meshes, (H, W), 0.0, K, True)
    dense_ms = _median_ms(dense, dev.sync, 1)
    rows = [
        Row(
            "mesh rasterizer, forward",
            err,
            1e-9,
            cuda_ms,
            cpu_ms,
            dense_ms,
            f"{(cpu_out[0] >= 0).mean():.0%} slots hit",
        )
    ]

    g = [rng.normal(size=cpu_out[i].shape) for i in (1, 2, 3)]
    grad_cpu, grad_gpu = np.zeros_like(fv), dev.put(np.zeros_like(fv))
    g_gpu = [dev.put(a) for a in g]
    p2f_gpu = dev.put(cpu_out[0])
    fv_gpu = gpu_in[0]

    def run_cpu_backward():
        grad_cpu[:] = 0
        rasterize_meshes_backward_cpu(fv, cpu_out[0], *g, H, W, 0.0, True, False, grad_cpu, numba.get_num_threads())

    def run_gpu_backward():
        grad_gpu[:] = 0
        gpu.rasterize_meshes_backward_cuda(fv_gpu, p2f_gpu, *g_gpu, H, W, 0.0, True, False, grad_gpu)

    cpu_ms = _median_ms(run_cpu_backward, lambda: None, s["repeats"])
    cuda_ms = _median_ms(run_gpu_backward, dev.sync, s["repeats"])
    rows.append(Row("mesh rasterizer, backward", _relative_error(grad_cpu, dev.get(grad_gpu)), 1e-9, cuda_ms, cpu_ms))
    return rows


def check_point_rasterizer(dev, gpu, s, rng):
    import numba

    from p3dlab.kernels.point_raster import rasterize_points_backward_cpu, rasterize_points_cpu

    H, W, K, P = s["H"], s["W"], s["K"], s["P"]
    pts = np.concatenate([rng.uniform(-1, 1, (P, 2)), rng.uniform(0.5, 1.5, (P, 1))], 1)
    radius = np.full(P, 0.02 if P > 1000 else 0.4)
    first, counts = np.array([0]), np.array([P])

    def outputs(put):
        return [put(np.full((1, H, W, K), -1, np.int32)), put(np.full((1, H, W, K), -1.0)),
                put(np.full((1, H, W, K), -1.0))]  # fmt: skip

    cpu_out, gpu_out = outputs(np.array), outputs(dev.put)
    gpu_in = [dev.put(a) for a in (pts, radius, first, counts)]
    cpu_ms = _median_ms(
        lambda: rasterize_points_cpu(pts, radius, first, counts, H, W, K, *cpu_out), lambda: None, s["repeats"]
    )
    cuda_ms = _median_ms(lambda: gpu.rasterize_points_cuda(*gpu_in, H, W, K, *gpu_out), dev.sync, s["repeats"])
    got = [dev.get(a) for a in gpu_out]
    err = max(float(np.mean(got[0] != cpu_out[0])), *(_relative_error(c, g) for c, g in zip(cpu_out[1:], got[1:])))
    rows = [Row("point rasterizer, forward", err, 1e-9, cuda_ms, cpu_ms)]

    gz, gd = rng.normal(size=(2, 1, H, W, K))
    grad_cpu, grad_gpu = np.zeros_like(pts), dev.put(np.zeros_like(pts))
    idx_gpu, gz_gpu, gd_gpu = dev.put(cpu_out[0]), dev.put(gz), dev.put(gd)

    def run_cpu():
        grad_cpu[:] = 0
        rasterize_points_backward_cpu(pts, cpu_out[0], gz, gd, H, W, grad_cpu, numba.get_num_threads())

    def run_gpu():
        grad_gpu[:] = 0
        gpu.rasterize_points_backward_cuda(gpu_in[0], idx_gpu, gz_gpu, gd_gpu, H, W, grad_gpu)

    cpu_ms, cuda_ms = _median_ms(run_cpu, lambda: None, s["repeats"]), _median_ms(run_gpu, dev.sync, s["repeats"])
    rows.append(Row("point rasterizer, backward", _relative_error(grad_cpu, dev.get(grad_gpu)), 1e-9, cuda_ms, cpu_ms))
    return rows


def check_volume_sampler(dev, gpu, s, rng):
    import torch
    import torch.nn.functional as F

    from p3dlab.kernels.volume_cpu import sample_volume_backward_cpu, sample_volume_cpu

    G, M, C = s["G"], s["M"], 4
    flat = rng.normal(size=G**3 * C)
    layout = np.array([G, G, G, C, 0, C], np.int64)
    pts = rng.uniform(-1.1, 1.1, (1, M, 3))
    out_cpu, out_gpu = np.zeros((1, M, C)), dev.put(np.zeros((1, M, C)))
    gpu_in = [dev.put(a) for a in (flat, layout, pts)]
    cpu_ms = _median_ms(lambda: sample_volume_cpu(flat, layout, pts, True, out_cpu), lambda: None, s["repeats"])
    cuda_ms = _median_ms(lambda: gpu.sample_volume_cuda(*gpu_in, True, out_gpu), dev.sync, s["repeats"])
    volume = torch.from_numpy(flat.reshape(1, G, G, G, C)).permute(0, 4, 1, 2, 3).to(dev.torch_device)
    where = torch.from_numpy(pts).view(1, 1, 1, M, 3).to(dev.torch_device)
    dense_ms = _median_ms(lambda: F.grid_sample(volume, where, align_corners=True), dev.sync, s["repeats"])
    rows = [
        Row("volume sampler, forward", _relative_error(out_cpu, dev.get(out_gpu)), 1e-12, cuda_ms, cpu_ms, dense_ms)
    ]

    g = rng.normal(size=(1, M, C))
    g_gpu = dev.put(g)
    buf_cpu, gp_cpu = np.zeros((1, flat.size)), np.zeros_like(pts)
    buf_gpu, gp_gpu = dev.put(np.zeros((1, flat.size))), dev.put(np.zeros_like(pts))

    def run_gpu():
        buf_gpu[:] = 0
        gpu.sample_volume_backward_cuda(*gpu_in, True, g_gpu, buf_gpu, gp_gpu)

    cpu_ms = _median_ms(
        lambda: sample_volume_backward_cpu(flat, layout, pts, True, g, buf_cpu, gp_cpu), lambda: None, s["repeats"]
    )
    cuda_ms = _median_ms(run_gpu, dev.sync, s["repeats"])
    err = max(_relative_error(buf_cpu, dev.get(buf_gpu)), _relative_error(gp_cpu, dev.get(gp_gpu)))
    rows.append(Row("volume sampler, backward", err, 1e-9, cuda_ms, cpu_ms))
    return rows


def check_volume_marcher(dev, gpu, s, rng):
    scene = volume_scene(rng, s)
    return _marcher_rows(dev, gpu, s, rng, scene, 0, "emission-absorption") + _marcher_rows(
        dev, gpu, s, rng, scene, 1, "quadrature (NeRF)"
    )


def _dense_emission_absorption(dev, scene, G, C):
    """EA in torch, the dense way: sample every point of every ray, then cumulative products."""
    import torch
    import torch.nn.functional as F

    grid, _, _, rays, lengths = scene
    R, S = lengths.shape
    volume = torch.from_numpy(grid.reshape(2, G, G, G, 1 + C)[:1]).permute(0, 4, 1, 2, 3).to(dev.torch_device)
    t = torch.from_numpy(lengths).to(dev.torch_device)
    o, d = (torch.from_numpy(rays[:, a : a + 3]).to(dev.torch_device) for a in (0, 3))

    def dense():
        x = o[:, None] + t[..., None] * d[:, None]
        v = F.grid_sample(volume, x.view(1, 1, R, S, 3), align_corners=True)[0, :, 0]  # (1 + C, R, S)
        a = v[0].clamp(0, 1)
        T = torch.cumprod(torch.cat([torch.ones_like(a[:, :1]), 1 - a[:, :-1]], 1), 1)
        return ((a * T)[None] * v[1:]).sum(-1)

    return dense


def _marcher_rows(dev, gpu, s, rng, scene, mode, name):
    from p3dlab.kernels.volume_cpu import march_volume_backward_cpu, march_volume_cpu

    grid, layout, ray_vol, rays, lengths = scene
    R, C = rays.shape[0], 3
    order = np.arange(R)
    cpu = [np.zeros((R, C)), np.zeros(R), np.zeros(R), np.zeros(R, np.int64), np.zeros((0, 1, 1 + C))]
    on_gpu = [dev.put(a) for a in cpu]
    gin = [dev.put(a) for a in scene]
    settings = (mode, 1e-3, 0.0, True, False)  # mode, eps, t_min, align_corners, last sample infinite
    run_cpu = lambda: march_volume_cpu(*scene, *settings, *cpu, order, 2)
    run_gpu = lambda: gpu.march_volume_cuda(*gin, *settings, *on_gpu)
    cpu_ms, cuda_ms = _median_ms(run_cpu, lambda: None, s["repeats"]), _median_ms(run_gpu, dev.sync, s["repeats"])
    err = max(_relative_error(c, dev.get(g)) for c, g in zip(cpu[:4], on_gpu[:4]))
    dense_ms = (
        _median_ms(_dense_emission_absorption(dev, scene, s["G"], C), dev.sync, s["repeats"]) if mode == 0 else None
    )
    rows = [Row(f"volume marcher {name}, forward", err, 1e-9, cuda_ms, cpu_ms, dense_ms)]

    G_f, g_o, g_z = rng.normal(size=(R, C)), rng.normal(size=R), rng.normal(size=R)
    f, opacity, z, used = cpu[:4]
    grads = ((f * G_f).sum(1) + z * g_z, 1 - opacity, G_f, g_o, g_z, used)  # S_total, T_P, ...
    ggrads = [dev.put(a) for a in grads]
    common = (mode, 1e-3, True, False)
    buf_cpu, gr_cpu = np.zeros((1, grid.size)), np.zeros((R, 7))
    buf_gpu, gr_gpu = dev.put(buf_cpu), dev.put(gr_cpu)

    def run_cpu_backward():
        buf_cpu[:] = 0
        march_volume_backward_cpu(*scene, *common, *grads, True, cpu[4], buf_cpu, gr_cpu, order)

    def run_gpu_backward():
        buf_gpu[:] = 0
        gpu.march_volume_backward_cuda(*gin, *common, *ggrads, True, on_gpu[4], buf_gpu, gr_gpu)

    cpu_ms = _median_ms(run_cpu_backward, lambda: None, s["repeats"])
    cuda_ms = _median_ms(run_gpu_backward, dev.sync, s["repeats"])
    err = max(_relative_error(buf_cpu, dev.get(buf_gpu)), _relative_error(gr_cpu, dev.get(gr_gpu)))
    rows.append(Row(f"volume marcher {name}, backward", err, 1e-9, cuda_ms, cpu_ms))
    return rows


def check_stratified_jitter(dev, gpu, s, rng):
    import torch

    from p3dlab.kernels.stratified import stratified_jitter_cpu

    lengths = np.sort(rng.uniform(0.5, 3.0, (s["R"], s["S"])), axis=1)
    out_cpu, out_gpu, lengths_gpu = np.zeros_like(lengths), dev.put(np.zeros_like(lengths)), dev.put(lengths)
    cpu_ms = _median_ms(lambda: stratified_jitter_cpu(lengths, 123456789, out_cpu), lambda: None, s["repeats"])
    cuda_ms = _median_ms(lambda: gpu.stratified_jitter_cuda(lengths_gpu, 123456789, out_gpu), dev.sync, s["repeats"])
    t = torch.from_numpy(lengths).to(dev.torch_device)
    dense = lambda: t + (torch.rand_like(t) - 0.5) * (t[:, 1:2] - t[:, :1])
    dense_ms = _median_ms(dense, dev.sync, s["repeats"])
    return [
        Row(
            "stratified jitter (bit for bit)",
            _relative_error(out_cpu, dev.get(out_gpu)),
            0.0,
            cuda_ms,
            cpu_ms,
            dense_ms,
        )
    ]


def check_knn(dev, gpu, s, rng):
    """kNN on CUDA tensors is a blocked dense search in torch (``knn_points``); on the simulator the
    same torch search runs on the CPU against the CPU kernel."""
    import torch

    from p3dlab.ops import knn_points
    from p3dlab.ops.knn import _search_torch

    p1 = torch.from_numpy(rng.uniform(-1, 1, (1, s["P1"], 3)))
    p2 = torch.from_numpy(rng.uniform(-1, 1, (1, s["P2"], 3)))
    K = s["KNN"]
    cpu_ms = _median_ms(lambda: knn_points(p1, p2, K=K), lambda: None, s["repeats"])
    ref = knn_points(p1, p2, K=K)
    if dev.dry_run:
        lengths = torch.tensor([s["P2"]])
        run = lambda: _search_torch(p1, p2, lengths, K, 2)
        cuda_ms = _median_ms(run, dev.sync, s["repeats"])
        idx = run()
        err = float((idx != ref.idx).float().mean())
    else:
        a, b = p1.to(dev.torch_device), p2.to(dev.torch_device)
        cuda_ms = _median_ms(lambda: knn_points(a, b, K=K), dev.sync, s["repeats"])
        got = knn_points(a, b, K=K)
        err = max(
            float((got.idx.cpu() != ref.idx).float().mean()),
            _relative_error(ref.dists.numpy(), got.dists.cpu().numpy()),
        )
    return [Row("kNN (torch search on CUDA)", err, 1e-9, cuda_ms, cpu_ms, None, "no CUDA kernel: dense blocked torch")]


def check_public_api(dev, gpu, s, rng):
    """A Phong-shaded, differentiable render through the public API on both devices."""
    if dev.dry_run:
        return []
    import torch

    from p3dlab.renderer import (
        FoVPerspectiveCameras,
        MeshRasterizer,
        MeshRenderer,
        PointLights,
        RasterizationSettings,
        SoftPhongShader,
        look_at_view_transform,
    )
    from p3dlab.structures import Meshes, TexturesVertex
    from p3dlab.utils import ico_sphere

    results = {}
    for device in ("cpu", "cuda"):
        sphere = ico_sphere(4, device=torch.device(device))
        verts = sphere.verts_packed().double().clone().requires_grad_(True)
        textures = TexturesVertex([torch.full_like(verts, 0.7)])
        mesh = Meshes([verts], [sphere.faces_packed()], textures=textures)
        R, T = look_at_view_transform(2.7, 20, 30, device=device)
        cameras = FoVPerspectiveCameras(R=R.double(), T=T.double(), device=device)
        settings = RasterizationSettings(image_size=256, blur_radius=1e-5, faces_per_pixel=8)
        shader = SoftPhongShader(device=device, cameras=cameras, lights=PointLights(device=device))
        renderer = MeshRenderer(MeshRasterizer(cameras, settings), shader)
        start = time.perf_counter()
        image = renderer(mesh)
        image[..., :3].sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        results[device] = (image.detach().cpu().numpy(), verts.grad.cpu().numpy(), (time.perf_counter() - start) * 1e3)
    err = max(_relative_error(results["cpu"][i], results["cuda"][i]) for i in (0, 1))
    return [Row("public API: soft Phong render + backward", err, 1e-6, results["cuda"][2], results["cpu"][2])]


CHECKS = [check_mesh_rasterizer, check_point_rasterizer, check_volume_sampler, check_volume_marcher,
          check_stratified_jitter, check_knn, check_public_api]  # fmt: skip


def format_table(rows) -> str:
    head = f"{'kernel':44} {'CUDA ms':>9} {'CPU ms':>9} {'dense ms':>9} {'CPU/CUDA':>9} {'error':>9}  result"
    lines = [head, "-" * len(head)]
    for r in rows:
        dense = f"{r.dense_ms:9.2f}" if r.dense_ms is not None else f"{'-':>9}"
        speedup = r.cpu_ms / r.cuda_ms if r.cuda_ms > 0 else float("inf")
        verdict = "ok" if r.ok else f"FAIL (tolerance {r.tolerance:g})"
        note = f"  [{r.note}]" if r.note else ""
        lines.append(
            f"{r.kernel:44} {r.cuda_ms:9.2f} {r.cpu_ms:9.2f} {dense} {speedup:9.1f} {r.error:9.1e}  {verdict}{note}"
        )
    return "\n".join(lines)


def environment() -> str:
    import numba
    import torch

    from p3dlab.kernels import cuda_adapter

    lines = [f"python {sys.version.split()[0]}, torch {torch.__version__}, numba {numba.__version__}, "
             f"CUDA target: {cuda_adapter.TARGET}"]  # fmt: skip
    if torch.cuda.is_available():
        lines.append(f"GPU: {torch.cuda.get_device_name(0)}, torch CUDA {torch.version.cuda}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny scenes on Numba's CUDA simulator, no GPU")
    parser.add_argument("--size", choices=sorted(SIZES), help="scene sizes (default: full, tiny with --dry-run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-k", default="", help="only rows of checks whose name contains this")
    args = parser.parse_args(argv)
    if args.dry_run and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        # the simulator must be chosen before Numba is imported: run again in a fresh interpreter
        import subprocess

        env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
        return subprocess.call([sys.executable, "-m", "benchmarks.gpu_check", *(argv or sys.argv[1:])], env=env)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA GPU. Install a CUDA build of torch and p3dlab's CUDA extra "
              "(pip install -e '.[cuda]'), or run --dry-run.", file=sys.stderr)  # fmt: skip
        return 2
    from p3dlab.ops.dispatch import cuda_kernels

    device = Device(args.dry_run)
    gpu = cuda_kernels(torch.empty(0, device="cuda"), "gpu_check") if not args.dry_run else None
    if gpu is None:
        from p3dlab.kernels import cuda_adapter as gpu
    sizes = SIZES[args.size or ("tiny" if args.dry_run else "full")]
    print(environment())
    rows, start = [], time.perf_counter()
    for check in CHECKS:
        if args.k and args.k not in check.__name__:
            continue
        rows += check(device, gpu, sizes, np.random.default_rng(args.seed))
    print(format_table(rows))
    failed = [r.kernel for r in rows if not r.ok]
    print(f"{len(rows) - len(failed)} passed, {len(failed)} failed in {time.perf_counter() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
