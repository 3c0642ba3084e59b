"""Mesh rasterizer and Phong frame: Numba kernels against the dense pure-torch reference.

The dense reference tests every pixel against every face, so it is only run where that is
affordable (it is the baseline the issue asks for; PyTorch3D's CPU path is also brute force).
"""

from __future__ import annotations

import torch

from benchmarks.harness import Result, median_time
from p3dlab import data
from p3dlab.config import fast_mode
from p3dlab.ops.rasterize_reference import rasterize_meshes_reference
from p3dlab.renderer import (
    FoVPerspectiveCameras,
    HardPhongShader,
    MeshRasterizer,
    MeshRenderer,
    RasterizationSettings,
    look_at_view_transform,
)
from p3dlab.structures import TexturesVertex

TARGETS = {(5, 256, 1): "<= 10 ms", (6, 512, 1): "<= 40 ms"}


def _camera():
    R, T = look_at_view_transform(2.7, 10.0, 20.0)
    return FoVPerspectiveCameras(R=R, T=T)


def bench_fragments():
    cam = _camera()
    levels = (3, 5) if fast_mode() else (3, 5, 6)
    sizes = (128, 256) if fast_mode() else (128, 256, 512)
    out = []
    for level in levels:
        mesh = data.ico_sphere(level)
        n_faces = int(mesh.num_faces_per_mesh())
        for size in sizes:
            for K in (1, 10):
                rast = MeshRasterizer(cam, RasterizationSettings(image_size=size, faces_per_pixel=K))
                ours = median_time(lambda r=rast, m=mesh: r(m), repeats=15)
                base_name, base = None, None
                if level == 3 and size == 128:
                    proj, _ = rast.transform(mesh)
                    kw = dict(image_size=size, faces_per_pixel=K, perspective_correct=True)
                    base = median_time(lambda p=proj, kw=kw: rasterize_meshes_reference(p, **kw), repeats=3)
                    base_name = "dense torch reference"
                target = TARGETS.get((level, size, K), "")
                out.append(Result(f"fragments {n_faces} faces {size}^2 K={K}", ours, base_name, base, target))
    return out


def bench_phong_frame():
    mesh = data.ico_sphere(5)
    mesh.textures = TexturesVertex([torch.full_like(mesh.verts_packed(), 0.8)])
    renderer = MeshRenderer(MeshRasterizer(_camera(), RasterizationSettings(image_size=256)), HardPhongShader())
    return [
        Result("HardPhong frame 20480 faces 256^2", median_time(lambda: renderer(mesh), repeats=15), target="<= 33 ms")
    ]


ALL = [bench_fragments, bench_phong_frame]
