"""The main rows again under load: a student's laptop runs a browser beside the kernel, a class hub
runs many kernels on few cores. Each workload is timed twice, p3dlab and its baseline in alternation:
on the machine as it is, then with one competing busy process per core (``harness.competing_load``).
Rows give the median and the worst call of each. Target: under load p3dlab's median stays within
2.5x of its own median without the load, and its worst call within 4x of it."""

from __future__ import annotations

import statistics
from typing import List, Optional

import torch

from benchmarks.bench_volumes import _blob_volume, _torch_baseline
from benchmarks.harness import Result, competing_load, paired_call_times
from p3dlab import data
from p3dlab.config import fast_mode
from p3dlab.ops import chamfer_distance, march_volumes
from p3dlab.ops.rasterize_reference import rasterize_meshes_reference
from p3dlab.renderer import (
    EmissionAbsorptionRaymarcher,
    FoVPerspectiveCameras,
    MeshRasterizer,
    NDCMultinomialRaysampler,
    RasterizationSettings,
    look_at_view_transform,
)
from p3dlab.structures import Volumes

MEDIAN_TARGET = 2.5  # loaded median / quiet median
WORST_TARGET = 4.0  # loaded worst call / quiet median
REPEATS = 15


def _nothing():
    return None


def _raster(level, size):
    R, T = look_at_view_transform(2.7, 10.0, 20.0)
    rasterizer = MeshRasterizer(FoVPerspectiveCameras(R=R, T=T), RasterizationSettings(image_size=size))
    mesh = data.ico_sphere(level)
    proj, _ = rasterizer.transform(mesh)

    def dense():
        rasterize_meshes_reference(proj, image_size=size, faces_per_pixel=1, perspective_correct=True)

    return (lambda: rasterizer(mesh)), dense


def _chamfer(n):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, n, 3, generator=g, requires_grad=True)
    y = torch.rand(1, n, 3, generator=g)

    def ours():
        chamfer_distance(x, y)[0].backward()

    def dense():
        d = torch.cdist(x, y).pow(2)
        (d.min(2).values.mean() + d.min(1).values.mean()).backward()

    return ours, dense


def _ea_render(size, image, samples):
    dens, cols = _blob_volume(size)
    R, T = look_at_view_transform(2.7, 10.0, 30.0)
    bundle = NDCMultinomialRaysampler(image, image, samples, 0.1, 3.0)(FoVPerspectiveCameras(R=R, T=T))

    def ours():
        dens.grad = cols.grad = None
        f, o, _, _ = march_volumes(Volumes(dens, cols, voxel_size=3.0 / size), bundle, "ea")
        (f.sum() + o.sum()).backward()

    def torch_path():
        dens.grad = cols.grad = None
        vol = Volumes(dens, cols, voxel_size=3.0 / size)
        _torch_baseline(vol, bundle, EmissionAbsorptionRaymarcher()).sum().backward()

    return ours, torch_path


def workloads():
    """(name, p3dlab call, baseline name or None, baseline call or None)."""
    small = fast_mode()
    chamfer_n = 2000 if small else 5000
    vol = (32, 32, 32) if small else (64, 64, 64)
    hard, _ = _raster(5, 256)
    hard_small, dense = _raster(3, 64)  # the dense reference tests every pixel against every face
    chamfer, cdist = _chamfer(chamfer_n)
    render, torch_render = _ea_render(*vol)
    return [
        ("hard raster 20480 faces 256^2", hard, None, None),
        ("hard raster 1280 faces 64^2", hard_small, "dense torch reference", dense),
        (f"chamfer {chamfer_n} x {chamfer_n} fwd+bwd", chamfer, "dense cdist", cdist),
        ("EA render fwd+bwd {}^3 at {}^2, {} samples".format(*vol), render, "grid_sample (torch)", torch_render),
    ]


def load_rows(name: str, quiet: tuple, loaded: tuple, baseline_name: Optional[str], n_busy: int) -> List[Result]:
    """The quiet and the loaded row of one workload from its call times: ``quiet`` and ``loaded`` are
    (p3dlab times, baseline times or None). The loaded row says how far p3dlab moved and flags a miss
    of either target."""
    rows = []
    reference = statistics.median(quiet[0])
    busy = f"{n_busy} busy process" + ("es" if n_busy != 1 else "")
    for label, (ours, base) in (("quiet", quiet), (busy, loaded)):
        median, worst = statistics.median(ours), max(ours)
        row_name, target = f"{name} ({label})", ""
        if ours is loaded[0]:
            m, w = median / reference, worst / reference
            miss = m > MEDIAN_TARGET or w > WORST_TARGET
            row_name += f": median {m:.1f}x, worst {w:.1f}x quiet" + (" OVER TARGET" if miss else "")
            target = f"median <= {MEDIAN_TARGET}x, worst <= {WORST_TARGET}x quiet"
        rows.append(
            Result(
                row_name,
                median,
                baseline_name,
                statistics.median(base) if base else None,
                target,
                worst_s=worst,
                baseline_worst_s=max(base) if base else None,
            )
        )
    return rows


def bench_under_load(processes: Optional[int] = None, repeats: int = REPEATS, chosen: Optional[List] = None):
    """Every workload quiet, then under ``competing_load(processes)``."""
    import os

    n_busy = processes if processes is not None else (os.cpu_count() or 1)
    chosen = workloads() if chosen is None else chosen
    quiet = [paired_call_times(ours, base or _nothing, repeats) for _, ours, _, base in chosen]
    with competing_load(n_busy):
        loaded = [paired_call_times(ours, base or _nothing, repeats) for _, ours, _, base in chosen]
    out = []
    for (name, _, base_name, base), q, lo in zip(chosen, quiet, loaded):
        keep = base is not None
        out.extend(load_rows(name, (q[0], q[1] if keep else None), (lo[0], lo[1] if keep else None), base_name, n_busy))
    return out


ALL = [bench_under_load]
