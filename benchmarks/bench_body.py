"""The body model (chapter 8): one SMPLify fit, and the body function's forward + backward."""

from __future__ import annotations

import math
import statistics
import time

import torch

from benchmarks.harness import Result, median_time
from p3dlab.body import BodyModel, default_pose_prior, fit_smplify, keypoint_camera, project, sample_poses
from p3dlab.config import fast_mode


def _keypoints(model):
    betas = 0.8 * torch.randn(1, model.num_betas, generator=torch.Generator().manual_seed(3))
    pose = sample_poses(8, seed=11)[3:4].float()
    orient = torch.tensor([[0.1, math.pi - 0.3, 0.05]])
    joints = model.posed_joints(betas, pose, orient, torch.tensor([[0.05, 0.1, 4.0]]))
    return project(keypoint_camera(), joints)[0]


def bench_smplify_fit():
    """SMPLify from noise-free keypoints of a procedural pose: camera stage + 4 body stages."""
    model = BodyModel()
    default_pose_prior()  # built once per process, not part of a fit
    iterations = 60 if fast_mode() else 300
    keypoints = _keypoints(model)
    fits, cpu = [], []

    def fit():
        start = time.process_time()
        fits.append(fit_smplify(model, keypoints, iterations=iterations))
        cpu.append(time.process_time() - start)

    seconds = median_time(fit, repeats=3)
    label = (
        f"SMPLify fit, {iterations} L-BFGS it. (final {fits[-1].reprojection_px:.2f} px; "
        f"CPU time {statistics.median(cpu):.1f} s)"
    )
    return Result(label, seconds, target="<= 10 s")


def bench_body_forward_backward():
    """The lesson's body (all vertices, float32, batch 1): forward and backward through betas and pose."""
    model = BodyModel()
    betas = torch.zeros(1, model.num_betas, requires_grad=True)
    pose = (0.3 * torch.randn(1, 63, generator=torch.Generator().manual_seed(0))).requires_grad_(True)

    def step():
        out = model(betas=betas, body_pose=pose)
        (out.vertices.square().sum() + out.joints.sum()).backward()

    start = time.process_time()
    seconds = median_time(step, repeats=50, warmup=3)
    cpu_ms = (time.process_time() - start) / 53 * 1e3
    label = f"body forward + backward ({model.num_vertices} vertices; CPU time {cpu_ms:.1f} ms)"
    return Result(label, seconds, target="<= 0.005 s")


ALL = [bench_smplify_fit, bench_body_forward_backward]
