"""The procedural body model and SMPLify (p3dlab.body; docs/body-models.md)."""

import math

import pytest
import torch

from p3dlab.body import (
    FACING_CAMERA,
    JOINT_NAMES,
    BodyModel,
    body_model_data,
    descendants,
    draw_keypoints,
    fit_smplify,
    geman_mcclure,
    joint_index,
    keypoint_camera,
    lbs,
    project,
    rodrigues,
    sample_poses,
)
from p3dlab.errors import P3DLabValueError


@pytest.fixture(scope="module")
def model():
    return BodyModel(dtype=torch.float64)


def rotation_angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per joint, the angle (degrees) of the rotation between axis-angle vectors a and b (..., 3)."""
    Ra, Rb = rodrigues(a.reshape(-1, 3).double()), rodrigues(b.reshape(-1, 3).double())
    cos = (((Ra.transpose(1, 2) @ Rb).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
    return torch.rad2deg(torch.arccos(cos))


# ----------------------------------------------------------------------------- the template
def test_template_is_watertight_and_closed(model):
    faces = model.faces
    directed = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    V = model.num_vertices
    keys = directed[:, 0] * V + directed[:, 1]
    assert torch.unique(keys).numel() == keys.numel()  # consistently wound: no directed edge twice
    reverse = directed[:, 1] * V + directed[:, 0]
    assert torch.isin(reverse, keys).all()  # every edge has its opposite: closed, two faces per edge
    undirected = torch.unique(torch.sort(directed, 1).values, dim=0)
    assert V - undirected.shape[0] + faces.shape[0] == 2  # a sphere's Euler characteristic
    v = model.v_template[faces]
    volume = (v[:, 0] * torch.cross(v[:, 1], v[:, 2], dim=-1)).sum() / 6
    assert 0.04 < float(volume) < 0.12  # outward-wound, a human's volume in cubic metres
    assert 3000 < V < 9000 and len(JOINT_NAMES) == 22


def test_skinning_weights_are_sparse_and_sum_to_one(model):
    W = model.weights
    assert torch.allclose(W.sum(1), torch.ones_like(W[:, 0]))
    assert (W >= 0).all() and ((W > 0).sum(1) <= 4).all()
    assert ((W > 0).sum(0) > 0).all()  # every joint moves some vertices
    # smooth: neighbouring vertices' weights differ little
    e = model.faces[:, [0, 1]]
    assert float((W[e[:, 0]] - W[e[:, 1]]).abs().sum(1).max()) < 0.8


def test_building_is_deterministic():
    a, b = body_model_data(), BodyModel().faces
    assert torch.equal(a.faces, b)
    from p3dlab.body import build_body_model_data

    c = build_body_model_data(num_betas=3, num_samples=16, step=0.06)
    d = build_body_model_data(num_betas=3, num_samples=16, step=0.06)
    assert torch.equal(c.v_template, d.v_template) and torch.equal(c.shapedirs, d.shapedirs)


# ----------------------------------------------------------------------------- skinning
def test_rest_pose_returns_the_template_exactly(model):
    out = model()
    assert torch.equal(out.vertices[0], model.v_template)
    assert torch.allclose(out.joints[0], model.J_regressor @ model.v_template, atol=1e-12)


def test_one_joint_moves_only_its_vertices_and_descendants(model):
    elbow = joint_index("left_elbow")
    pose = torch.zeros(1, 21, 3, dtype=torch.float64)
    pose[0, elbow - 1] = torch.tensor([0.3, -1.0, 0.2])
    out = model(body_pose=pose)
    moved = (out.vertices[0] - model.v_template).norm(dim=1) > 1e-9
    subtree = descendants(elbow)
    weighted = model.weights[:, subtree].sum(1) > 0
    assert torch.equal(moved, weighted)
    assert moved.sum() > 100
    joint_moved = (out.joints[0] - model.J_regressor @ model.v_template).norm(dim=1) > 1e-9
    assert joint_moved.nonzero().flatten().tolist() == [j for j in subtree if j != elbow]


@pytest.mark.parametrize("use_kernels", [True, False], ids=["fast path", "torch"])
def test_gradcheck_of_the_body_function_on_a_reduced_body(model, use_kernels):
    keep = torch.arange(0, model.num_vertices, 500)
    data = dict(
        v_template=model.v_template[keep],
        shapedirs=model.shapedirs[keep, :, :3],
        J_regressor=model.J_regressor[:, keep] / model.J_regressor[:, keep].sum(1, keepdim=True).clamp_min(1e-3),
        weights=model.weights[keep],
        parents=model.parents.tolist(),
    )
    g = torch.Generator().manual_seed(0)
    betas = torch.randn(1, 3, generator=g, dtype=torch.float64, requires_grad=True)
    pose = (0.4 * torch.randn(1, 22, 3, generator=g, dtype=torch.float64)).requires_grad_(True)
    pose.data[0, 5] = 0.0  # one joint at exactly zero rotation: the gradient there must be right too

    def body(b, p):
        return lbs(b, p, **data, use_kernels=use_kernels)

    assert torch.autograd.gradcheck(body, (betas, pose), eps=1e-6, atol=1e-6)


def test_rodrigues_matches_the_closed_form():
    w = torch.tensor([[0.0, 0.0, math.pi / 2], [1e-5, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    R = rodrigues(w)
    assert torch.allclose(R[0], torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(R[2], torch.eye(3, dtype=torch.float64))
    assert torch.allclose(R[1] @ R[1].T, torch.eye(3, dtype=torch.float64), atol=1e-14)


# ----------------------------------------------------------------------------- shape space
def test_joints_move_with_betas(model):
    rest = model.rest_joints()
    for k in range(3):
        betas = torch.zeros(1, model.num_betas, dtype=torch.float64)
        betas[0, k] = 2.0
        assert float((model.rest_joints(betas) - rest).norm(dim=-1).max()) > 0.01
    # the first component is mostly height: the head rises (or falls) far more than the pelvis
    betas = torch.zeros(1, model.num_betas, dtype=torch.float64)
    betas[0, 0] = 2.0
    d = model.rest_joints(betas) - rest
    head, ankle = joint_index("head"), joint_index("left_ankle")
    assert abs(float(d[0, head, 1] - d[0, ankle, 1])) > 0.05
    # joints_only path and the full body agree
    out = model(betas=betas, body_pose=0.2 * torch.ones(1, 63, dtype=torch.float64))
    assert torch.allclose(out.joints, model.posed_joints(betas, 0.2 * torch.ones(1, 63, dtype=torch.float64)))


def test_float32_batched_and_bad_input():
    m = BodyModel()
    out = m(betas=torch.zeros(3, 8), transl=torch.tensor([[0.0, 0.0, 1.0]] * 3))
    assert out.vertices.shape == (3, m.num_vertices, 3) and out.vertices.dtype == torch.float32
    with pytest.raises(P3DLabValueError):
        m(betas=torch.zeros(2, 5))
    with pytest.raises(P3DLabValueError):
        m(betas=torch.zeros(2, 8), body_pose=torch.zeros(3, 63))
    with pytest.raises(P3DLabValueError):
        m(body_pose=torch.full((1, 63), float("nan")))
    with pytest.raises(P3DLabValueError):
        BodyModel(dtype=torch.float16)


def test_obj_export_round_trip(tmp_path, model):
    from p3dlab.io import load_obj

    out = model(body_pose=0.1 * torch.ones(1, 63, dtype=torch.float64))
    out.save_obj(tmp_path / "body.obj")
    verts, faces, _ = load_obj(tmp_path / "body.obj")
    assert torch.allclose(verts.double(), out.vertices[0], atol=1e-5)
    assert torch.equal(faces.verts_idx, out.faces)


# ----------------------------------------------------------------------------- SMPLify
def synthetic_keypoints(model, seed=3):
    g = torch.Generator().manual_seed(seed)
    betas = 0.8 * torch.randn(1, model.num_betas, generator=g, dtype=torch.float64)
    pose = sample_poses(8, seed=11)[seed : seed + 1]
    orient = torch.tensor([[0.1, math.pi - 0.3, 0.05]], dtype=torch.float64)
    transl = torch.tensor([[0.05, 0.1, 4.0]], dtype=torch.float64)
    joints = model.posed_joints(betas, pose, orient, transl)
    return project(keypoint_camera(dtype=torch.float64), joints)[0], pose, orient, joints


def test_smplify_recovers_noise_free_keypoints_and_pose(model):
    keypoints, pose, orient, _ = synthetic_keypoints(model)
    fit = fit_smplify(model, keypoints, iterations=120)
    assert fit.reprojection_px < 1.0
    errors = rotation_angle_deg(fit.body_pose, pose)
    # stated accuracy: mean joint rotation error under 10 degrees, global orientation under 5
    assert float(errors.mean()) < 10.0
    assert float(rotation_angle_deg(fit.global_orient, orient)[0]) < 5.0
    assert fit.history.reprojection_px[-1] < fit.history.reprojection_px[0]
    assert set(fit.history.stage) == {0, 1, 2, 3, 4}


def test_robust_term_beats_plain_least_squares_with_outliers(model):
    keypoints, pose, orient, joints = synthetic_keypoints(model, seed=5)
    g = torch.Generator().manual_seed(1)
    noisy = keypoints + 1.5 * torch.randn(keypoints.shape, generator=g, dtype=torch.float64)
    outliers = [joint_index("left_wrist"), joint_index("right_ankle"), joint_index("head")]
    noisy[outliers] += torch.tensor([[70.0, -50.0], [-60.0, 40.0], [55.0, 60.0]], dtype=torch.float64)
    inliers = torch.ones(len(JOINT_NAMES), dtype=torch.bool)
    inliers[outliers] = False

    def error(fit):  # mean pixels between the fit's projections and the true keypoints of the inliers
        return float((fit.keypoints[0] - keypoints).norm(dim=-1)[inliers].mean())

    robust = fit_smplify(model, noisy, iterations=80, sigma=20.0)
    plain = fit_smplify(model, noisy, iterations=80, robust=False)
    # measured: the outliers drag plain least squares' whole skeleton; Geman-McClure ignores them
    assert error(robust) < 0.5 * error(plain)
    assert error(robust) < 3.0


def test_smplify_bad_input_and_helpers(model):
    with pytest.raises(P3DLabValueError):
        fit_smplify(model, torch.zeros(5, 2))
    with pytest.raises(P3DLabValueError):
        fit_smplify(model, torch.full((22, 2), float("inf")))
    e = torch.tensor([0.0, 1.0, 1e6], dtype=torch.float64)
    rho = geman_mcclure(e, 10.0)
    assert rho[0] == 0 and abs(float(rho[1]) - 100 / 101) < 1e-12 and float(rho[2]) < 100.0
    image = draw_keypoints(None, torch.full((22, 2), 100.0), torch.full((22, 2), 50.0), image_size=128)
    assert image.shape == (128, 128, 3)
    assert (image[100, 100] == (0, 170, 0)).all() and (image[50, 50] == (220, 0, 0)).all()
    assert FACING_CAMERA[1] == pytest.approx(math.pi)
