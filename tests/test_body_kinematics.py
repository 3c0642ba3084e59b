"""The body's fast path (p3dlab.ops.body_kinematics, kernels/body_kinematics.py) against the plain
torch body function of p3dlab.body.model, which is the reference."""

import math

import pytest
import torch

from p3dlab.body import BodyModel, lbs, rodrigues
from p3dlab.body.model import forward_kinematics
from p3dlab.errors import P3DLabValueError
from p3dlab.kernels.body_kinematics import rodrigues_factors
from p3dlab.ops.body_kinematics import linear_blend_skinning, pose_chain


@pytest.fixture(scope="module")
def model():
    return BodyModel(dtype=torch.float64)


def random_pose(n, J, seed, scale=0.8):
    """Axis-angle rotations of every size: zero, tiny (the Taylor branch), moderate, near pi."""
    g = torch.Generator().manual_seed(seed)
    pose = scale * torch.randn(n, J, 3, generator=g, dtype=torch.float64)
    pose[0, 1] = 0.0
    pose[0, 2] = torch.tensor([3e-3, -2e-3, 1e-3])  # s = 1.4e-5: below the series' threshold
    pose[-1, 3] = torch.tensor([0.0, 0.0, math.pi - 1e-3])
    return pose


def test_rodrigues_factors_series_meet_the_closed_forms():
    for s in (1e-4 * (1 - 1e-9), 1e-4, 0.3, 2.0, 9.0):
        a, b, da, db = rodrigues_factors(s)
        t = math.sqrt(s)
        assert a == pytest.approx(math.sin(t) / t, rel=1e-13)
        assert b == pytest.approx(2 * math.sin(t / 2) ** 2 / s, rel=1e-13)
        # derivatives against central differences of the closed forms in s
        h = 1e-4 * s
        fa = [math.sin(math.sqrt(x)) / math.sqrt(x) for x in (s - h, s + h)]
        fb = [2 * math.sin(math.sqrt(x) / 2) ** 2 / x for x in (s - h, s + h)]
        assert da == pytest.approx((fa[1] - fa[0]) / (2 * h), rel=1e-5)
        assert db == pytest.approx((fb[1] - fb[0]) / (2 * h), rel=1e-4)
    assert rodrigues_factors(0.0) == (1.0, 0.5, -1.0 / 6.0, -1.0 / 24.0)


def test_pose_chain_matches_the_torch_reference_values_and_gradients(model):
    parents = model._parent_tuple
    pose = random_pose(3, len(parents), seed=1).requires_grad_(True)
    g = torch.Generator().manual_seed(2)
    joints = (
        model.J_template + 0.05 * torch.randn(3, len(parents), 3, generator=g, dtype=torch.float64)
    ).requires_grad_()
    A, posed = pose_chain(pose, joints, parents)
    posed_ref, A_ref = forward_kinematics(rodrigues(pose), joints, parents)
    assert torch.allclose(A, A_ref[:, :, :3], atol=1e-14, rtol=0)
    assert torch.allclose(posed, posed_ref, atol=1e-14, rtol=0)
    gA, gP = (
        torch.randn(A.shape, generator=g, dtype=torch.float64),
        torch.randn(posed.shape, generator=g, dtype=torch.float64),
    )
    grads = torch.autograd.grad((A * gA).sum() + (posed * gP).sum(), (pose, joints))
    grads_ref = torch.autograd.grad((A_ref[:, :, :3] * gA).sum() + (posed_ref * gP).sum(), (pose, joints))
    for got, want in zip(grads, grads_ref):
        assert torch.allclose(got, want, atol=1e-12, rtol=0)


def test_pose_chain_gradcheck_on_a_branching_tree():
    parents = (-1, 0, 1, 1, 0, 4, -1, 6)  # two roots, a fork at joint 1
    pose = random_pose(2, len(parents), seed=3).requires_grad_(True)
    g = torch.Generator().manual_seed(4)
    joints = torch.randn(2, len(parents), 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, j: pose_chain(p, j, parents), (pose, joints), eps=1e-6, atol=1e-7)


def test_linear_blend_skinning_gradcheck_and_reference(model):
    keep = torch.arange(0, model.num_vertices, 400)
    weights = model.weights[keep]
    g = torch.Generator().manual_seed(5)
    v = torch.randn(2, keep.numel(), 3, generator=g, dtype=torch.float64, requires_grad=True)
    A, _ = pose_chain(random_pose(2, 22, seed=6), model.J_template.expand(2, -1, -1), model._parent_tuple)
    A = A.detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v, a: linear_blend_skinning(v, a, weights), (v, A))
    eye = torch.eye(3, 4, dtype=torch.float64)
    T = torch.einsum("vj,njrc->nvrc", weights, A - eye)
    want = v + torch.einsum("nvrc,nvc->nvr", T[..., :3], v) + T[..., 3]
    assert torch.allclose(linear_blend_skinning(v, A, weights), want, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_body_function_fast_path_equals_the_torch_path(dtype):
    model = BodyModel(dtype=dtype)
    g = torch.Generator().manual_seed(7)
    betas = torch.randn(2, model.num_betas, generator=g, dtype=dtype, requires_grad=True)
    pose = random_pose(2, 22, seed=8).to(dtype).requires_grad_(True)
    args = (model.v_template, model.shapedirs, model.J_regressor, model.weights, model._parent_tuple)
    blend = (model.J_template, model.J_shapedirs)
    fast = lbs(betas, pose, *args, joint_blend=blend)
    slow = lbs(betas, pose, *args, joint_blend=blend, use_kernels=False)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for a, b in zip(fast, slow):
        assert a.dtype == dtype and torch.allclose(a, b, atol=tol, rtol=0)
    gv = torch.randn(fast[0].shape, generator=g, dtype=dtype)
    grads = torch.autograd.grad((fast[0] * gv).sum() + fast[1].sum(), (betas, pose))
    grads_ref = torch.autograd.grad((slow[0] * gv).sum() + slow[1].sum(), (betas, pose))
    for a, b in zip(grads, grads_ref):
        scale = float(b.abs().max())
        assert torch.allclose(a, b, atol=tol * scale * 10, rtol=0)


def test_rest_pose_is_exact_on_the_fast_path():
    model = BodyModel(dtype=torch.float32)
    out = model()
    assert torch.equal(out.vertices[0], model.v_template)
    A, posed = pose_chain(torch.zeros(1, 22, 3), model.J_template[None], model._parent_tuple)
    assert torch.equal(A[0], torch.eye(3, 4).expand(22, 3, 4))
    assert torch.equal(posed[0], model.J_template)


def test_model_data_with_gradients_takes_the_torch_path(model):
    template = model.v_template.clone().requires_grad_(True)
    pose = random_pose(1, 22, seed=9)
    verts, _ = lbs(
        torch.zeros(1, model.num_betas, dtype=torch.float64),
        pose,
        template,
        model.shapedirs,
        model.J_regressor,
        model.weights,
        model._parent_tuple,
    )
    (grad,) = torch.autograd.grad(verts.sum(), template)
    assert grad.shape == template.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_bad_input_is_refused():
    pose = torch.zeros(1, 3, 3)
    joints = torch.zeros(1, 3, 3)
    with pytest.raises(P3DLabValueError, match="parent must come before"):
        pose_chain(pose, joints, (-1, 2, 1))
    with pytest.raises(P3DLabValueError, match="parent must come before"):
        pose_chain(pose, joints, (-1, 0, 7))
    with pytest.raises(P3DLabValueError, match="full_pose must be"):
        pose_chain(torch.zeros(1, 4, 3), joints, (-1, 0, 1))
    with pytest.raises(P3DLabValueError, match="joints must be"):
        pose_chain(pose, torch.zeros(2, 3, 3), (-1, 0, 1))
    with pytest.raises(P3DLabValueError, match="float32 or float64"):
        pose_chain(pose.half(), joints.half(), (-1, 0, 1))
    with pytest.raises(P3DLabValueError, match="NaN"):
        pose_chain(torch.full((1, 3, 3), float("nan")), joints, (-1, 0, 1))
    with pytest.raises(P3DLabValueError, match="weights must be"):
        linear_blend_skinning(torch.zeros(1, 5, 3), torch.zeros(1, 3, 3, 4), torch.zeros(4, 3))
    with pytest.raises(P3DLabValueError, match="A must be"):
        linear_blend_skinning(torch.zeros(1, 5, 3), torch.zeros(1, 2, 3, 4), torch.zeros(5, 3))
    with pytest.raises(P3DLabValueError, match="no gradient"):
        linear_blend_skinning(torch.zeros(1, 5, 3), torch.zeros(1, 3, 3, 4), torch.zeros(5, 3, requires_grad=True))
