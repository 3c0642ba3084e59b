"""Mesh R-CNN's mesh head (lesson 11): time for the lesson's training to reach its stated held-out
Chamfer distance on procedural shapes, data generation included."""

from __future__ import annotations

import time

import torch

from benchmarks.harness import Result
from p3dlab.config import fast_mode

# The lesson's single-image -> mesh run (course/source/11_meshes_from_images, section 5) and the
# held-out Chamfer it states; fast mode is a smoke test of the same code at toy size.
FULL = dict(n_train=128, n_test=16, image_size=48, voxel_size=16, iterations=150, target=0.02)
FAST = dict(n_train=16, n_test=4, image_size=32, voxel_size=8, iterations=10, target=0.2)


def bench_meshrcnn_training():
    """The lesson's training (backbone, voxel branch, cubify, 2 refinement stages) to its held-out Chamfer."""
    from p3dlab.meshrcnn import MeshRCNNHead, fit_meshrcnn, shape_dataset

    cfg = FAST if fast_mode() else FULL
    start = time.perf_counter()
    train, test = shape_dataset(
        cfg["n_train"], cfg["n_test"], seed=0, image_size=cfg["image_size"], voxel_size=cfg["voxel_size"]
    )
    data_s = time.perf_counter() - start
    torch.manual_seed(0)
    model = MeshRCNNHead(voxel_size=cfg["voxel_size"], num_stages=2, hidden=64, width=16)
    hist = fit_meshrcnn(
        model, train, test, iterations=cfg["iterations"], batch_size=8, eval_every=25, target_chamfer=cfg["target"]
    )
    total = time.perf_counter() - start
    reached = data_s + hist.seconds_to_target if hist.seconds_to_target is not None else float("inf")
    label = (
        f"Mesh R-CNN head to held-out Chamfer {cfg['target']} ({cfg['voxel_size']}^3 voxels, {cfg['image_size']}^2 "
        f"images; final Chamfer {hist.test_chamfer[-1]:.4f}, F@0.1 {hist.test_f_score[-1]:.3f} after "
        f"{cfg['iterations']} it. in {total:.0f} s, data {data_s:.0f} s)"
    )
    return Result(label, reached, target="<= 180 s")


ALL = [bench_meshrcnn_training]
