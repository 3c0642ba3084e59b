"""The body model (chapter 8): one SMPLify fit, and the body function's forward + backward."""

from __future__ import annotations

import math
import statistics
import time

import torch

from benchmarks.harness import Result, median_time
from p3dlab.body import BodyModel, default_pose_prior, fit_smplify, keypoint_camera, lbs, project, sample_poses
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
    """The lesson's body (all vertices, float32, batch 1): forward and backward through betas and pose,
    on the default path (the Numba pose chain and hand-written backward passes for CPU tensors)
    against the plain torch body function (``lbs(..., use_kernels=False)``), calls alternated."""
    model = BodyModel()
    betas = torch.zeros(1, model.num_betas, requires_grad=True)
    pose = (0.3 * torch.randn(1, 21, 3, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    data = (model.v_template, model.shapedirs, model.J_regressor, model.weights, model._parent_tuple)
    blend = (model.J_template, model.J_shapedirs)

    def step(use_kernels):
        full_pose = torch.cat([torch.zeros(1, 1, 3), pose], 1)
        verts, joints = lbs(betas, full_pose, *data, joint_blend=blend, use_kernels=use_kernels)
        (verts.square().sum() + joints.sum()).backward()

    for _ in range(3):
        step(None)
        step(False)
    times = {None: [], False: []}
    cpu = {None: 0.0, False: 0.0}
    for _ in range(50):
        for path in (None, False):
            c0, t0 = time.process_time(), time.perf_counter()
            step(path)
            times[path].append(time.perf_counter() - t0)
            cpu[path] += time.process_time() - c0
    label = f"body forward + backward ({model.num_vertices} vertices, float32; CPU time {cpu[None] / 50 * 1e3:.1f} ms)"
    return Result(
        label,
        statistics.median(times[None]),
        baseline_name="plain torch body function",
        baseline_median_s=statistics.median(times[False]),
        target="<= 0.005 s",
    )


ALL = [bench_smplify_fit, bench_body_forward_backward]
