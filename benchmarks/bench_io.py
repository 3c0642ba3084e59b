"""File readers on a generated grid mesh of about 1M faces (100k in fast mode): p3dlab against
plyfile, trimesh and a plain Python line loop, all in the same run."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import Result, median_time
from p3dlab.config import fast_mode
from p3dlab.io import load_obj, load_ply, save_obj, save_ply


def _grid_mesh(n_faces: int):
    side = int(np.sqrt(n_faces / 2)) + 1
    u, v = np.meshgrid(np.linspace(0, 1, side), np.linspace(0, 1, side))
    verts = np.stack([u.ravel(), v.ravel(), 0.1 * np.sin(6 * u.ravel()) * np.cos(5 * v.ravel())], 1)
    idx = np.arange(side * side).reshape(side, side)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return torch.from_numpy(verts.astype(np.float32)), torch.from_numpy(faces)


def _python_obj_loop(path):
    verts, faces = [], []
    with open(path) as fh:
        for line in fh:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "v":
                verts.append([float(x) for x in parts[1:4]])
            elif parts[0] == "f":
                faces.append([int(p.split("/")[0]) - 1 for p in parts[1:4]])
    return np.array(verts, np.float32), np.array(faces, np.int64)


def bench_readers():
    import plyfile
    import trimesh

    n = 100_000 if fast_mode() else 1_000_000
    verts, faces = _grid_mesh(n)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        ply = Path(tmp) / "grid.ply"
        obj = Path(tmp) / "grid.obj"
        save_ply(ply, verts, faces)
        save_obj(obj, verts, faces)
        label = f"{faces.shape[0] / 1e6:.2f}M faces"
        ours = median_time(lambda: load_ply(ply), repeats=5)
        out.append(
            Result(
                f"binary PLY {label}",
                ours,
                "plyfile",
                median_time(lambda: plyfile.PlyData.read(str(ply)), repeats=5),
                ">= plyfile",
            )
        )
        ours = median_time(lambda: load_obj(obj), repeats=3)
        out.append(
            Result(
                f"OBJ {label}",
                ours,
                "python line loop",
                median_time(lambda: _python_obj_loop(obj), repeats=3),
                ">= 2x loop",
            )
        )
        tm = median_time(lambda: trimesh.load(str(obj), process=False, force="mesh"), repeats=3)
        out.append(Result(f"OBJ {label}", ours, "trimesh", tm, ">= trimesh"))
    return out


ALL = [bench_readers]
