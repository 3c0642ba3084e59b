"""Structures and transforms: p3dlab against straightforward pure-torch / SciPy code."""

from __future__ import annotations

import torch

from benchmarks.harness import Result, median_time
from p3dlab.data import ico_sphere
from p3dlab.ops import chamfer_distance, knn_points
from p3dlab.structures import Meshes
from p3dlab.transforms import random_rotations, so3_log_map


def bench_edges() -> Result:
    """Unique edges of a batch of 8 level-5 icospheres (10,242 vertices, 20,480 faces each)."""
    s = ico_sphere(5)
    verts = [s.verts_packed() + i for i in range(8)]
    faces = [s.faces_packed()] * 8

    def ours():
        return Meshes(verts, faces).edges_packed()

    def baseline():  # a Python set of sorted tuples
        out = set()
        offset = 0
        for v, f in zip(verts, faces):
            for a, b, c in (f + offset).tolist():
                out.update({(min(a, b), max(a, b)), (min(b, c), max(b, c)), (min(a, c), max(a, c))})
            offset += v.shape[0]
        return sorted(out)

    return Result("Meshes.edges_packed, 8 x ico_sphere(5)", median_time(ours), "python set", median_time(baseline, 3))


def bench_so3_log() -> Result:
    from scipy.spatial.transform import Rotation

    R = random_rotations(100_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    Rn = R.numpy()
    ours = median_time(lambda: so3_log_map(R))
    base = median_time(lambda: Rotation.from_matrix(Rn).as_rotvec())
    return Result("so3_log_map, 100k rotations (float64)", ours, "scipy as_rotvec", base)


def bench_chamfer() -> Result:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 5000, 3, generator=g, requires_grad=True)
    y = torch.rand(1, 5000, 3, generator=g)

    def ours():
        chamfer_distance(x, y)[0].backward()

    def dense():  # the full 5k x 5k distance matrix, as a straightforward implementation would
        d = torch.cdist(x, y).pow(2)
        (d.min(2).values.mean() + d.min(1).values.mean()).backward()

    return Result("chamfer 5k x 5k fwd+bwd", median_time(ours), "dense cdist", median_time(dense))


def bench_knn() -> Result:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 5000, 3, generator=g, requires_grad=True)
    y = torch.rand(1, 5000, 3, generator=g, requires_grad=True)

    def ours():
        knn_points(x, y, K=10).dists.sum().backward()

    def dense():  # the full 5k x 5k distance matrix and its 10 smallest entries per row
        torch.cdist(x, y).pow(2).topk(10, dim=2, largest=False).values.sum().backward()

    return Result("knn_points 5k x 5k K=10 fwd+bwd", median_time(ours), "dense cdist", median_time(dense))


ALL = [bench_edges, bench_so3_log, bench_chamfer, bench_knn]
