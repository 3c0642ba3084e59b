"""The projection of 3D Gaussians as a Numba kernel (docs/kernels.md#gaussian-splatting): against the
float64 torch path (``project_gaussians_torch``) on scenes with Gaussians behind the camera, outside the
frustum, degenerate and huge; gradcheck of the autograd function; the CUDA kernels (simulator and
serial) against the CPU ones; the camera-gradient fallback; bad input."""

import numpy as np
import pytest
import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.kernels import gaussian_project as gp
from p3dlab.ops import gaussian_splat as op
from p3dlab.ops.gaussian_splat import (
    project_gaussians,
    project_gaussians_torch,
    spherical_harmonics_colors,
    spherical_harmonics_colors_torch,
)
from p3dlab.renderer import FoVPerspectiveCameras, PerspectiveCameras, look_at_view_transform
from p3dlab.renderer.splatting import camera_matrices

DT = torch.float64
FIELDS = ("means2d", "conics", "depths", "cov2d")


def _matrices(image_size, screen=False, dtype=DT):
    """(world_to_ndc, world_to_view) of a FoV camera, or of a screen-space one with an off-centre
    principal point and unequal focal lengths."""
    R, T = look_at_view_transform(3.0, 20.0, 30.0)
    if screen:
        H, W = image_size
        cam = PerspectiveCameras(
            focal_length=((1.1 * W, 0.9 * W),), principal_point=((0.4 * W, 0.6 * H),), in_ndc=False,
            image_size=(image_size,), R=R.to(dtype), T=T.to(dtype),
        )  # fmt: skip
    else:
        cam = FoVPerspectiveCameras(R=R.to(dtype), T=T.to(dtype))
    M, V, _ = camera_matrices(cam, image_size, dtype)
    return M, V


def _scene(n, seed, spread=6.0, dtype=DT):
    """n random Gaussians in a box around the camera's target (some behind the camera, some outside the
    frustum), with random positive-definite covariances, plus, in the last rows: a zero covariance (only
    the low-pass dilation left), a negative-definite one, a non-symmetric one and a huge one."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * spread
    A = torch.randn(n, 3, 3, generator=g, dtype=dtype) * torch.rand(n, 1, 1, generator=g, dtype=dtype) * 0.3
    covs = A @ A.transpose(1, 2) + 1e-4 * torch.eye(3, dtype=dtype)
    means[-4:] = torch.tensor([[0.1, 0.0, 0.2], [0.0, 0.1, 0.0], [-0.2, 0.1, 0.1], [0.0, 0.0, 0.0]], dtype=dtype)
    covs[-4] = 0.0
    covs[-3] = -covs[-3]
    covs[-2, 0, 1] += 0.05
    covs[-1] = 1e6 * torch.eye(3, dtype=dtype)
    return means, covs


def _assert_rows_close(a, b, tol):
    """|a - b| <= tol max(1, the largest |b| of the same Gaussian): rounding, measured on each Gaussian's
    own scale (the off-diagonal of a huge covariance is a difference of numbers ~1e8)."""
    scale = b.detach().abs().reshape(b.shape[0], -1).amax(1).clamp_min(1.0)
    err = (a.detach() - b.detach()).abs().reshape(b.shape[0], -1).amax(1)
    assert bool((err <= tol * scale).all()), f"worst relative error {float((err / scale).max()):.3g}"


def _weights(proj, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(getattr(proj, f).shape, generator=g, dtype=DT) for f in FIELDS]


def _loss(proj, weights):
    return sum((getattr(proj, f).to(DT) * w).sum() for f, w in zip(FIELDS, weights))


@pytest.mark.parametrize("screen, image_size, low_pass", [(False, (20, 30), 0.3), (True, (33, 17), 0.0)])
def test_kernel_equals_the_torch_path_forward_and_backward(screen, image_size, low_pass):
    M, V = _matrices(image_size, screen)
    means, covs = _scene(300, seed=1)
    means.requires_grad_()
    covs.requires_grad_()
    a = project_gaussians(means, covs, M, V, image_size, low_pass)
    b = project_gaussians_torch(means, covs, M, V, image_size, low_pass)
    assert torch.equal(a.radii, b.radii) and a.radii.dtype == torch.int64
    visible = int((a.radii > 0).sum())
    assert 20 < visible < 290  # the scene has visible and culled Gaussians
    assert int(a.radii[-1]) == 4 * max(image_size)  # the huge Gaussian's radius is clamped
    assert int(a.radii[-3]) == 0  # negative definite: culled
    assert int(a.radii[-4]) == (0 if low_pass == 0.0 else 2)  # zero covariance: the dilation alone
    for f in FIELDS:
        _assert_rows_close(getattr(a, f), getattr(b, f), 1e-10)
    w = _weights(a, seed=2)
    ga = torch.autograd.grad(_loss(a, w), (means, covs))
    gb = torch.autograd.grad(_loss(b, w), (means, covs))
    for x, y in zip(ga, gb):
        _assert_rows_close(x, y, 1e-10)


def test_float32_kernel_close_to_the_float64_torch_path():
    M, V = _matrices((24, 24))
    means, covs = _scene(200, seed=3, spread=3.0)
    a = project_gaussians(means.float(), covs.float(), M.float(), V.float(), (24, 24))
    b = project_gaussians_torch(means, covs, M, V, (24, 24))
    assert a.means2d.dtype == torch.float32
    assert torch.equal(a.radii, b.radii)
    keep = b.radii > 0
    for f in ("means2d", "conics", "depths"):
        torch.testing.assert_close(getattr(a, f)[keep].double(), getattr(b, f)[keep], rtol=1e-4, atol=1e-4)


def test_gradcheck_means_and_covariances():
    """Eight Gaussians: six visible, one behind the camera, one outside the frustum (their conics are
    still differentiable functions of the inputs, as in the torch path)."""
    M, V = _matrices((16, 20))
    g = torch.Generator().manual_seed(4)
    means = (torch.rand(8, 3, generator=g, dtype=DT) - 0.5) * 1.5
    R, T = look_at_view_transform(3.0, 20.0, 30.0)
    centre = FoVPerspectiveCameras(R=R.to(DT), T=T.to(DT)).get_camera_center()[0]
    means[6] = 1.5 * centre  # behind the camera, which looks at the origin
    means[7] = torch.tensor([4.0, -3.0, 0.0], dtype=DT)
    A = torch.randn(8, 3, 3, generator=g, dtype=DT) * 0.2
    covs = A @ A.transpose(1, 2) + 0.01 * torch.eye(3, dtype=DT)
    radii = project_gaussians(means, covs, M, V, (16, 20)).radii
    assert int((radii > 0).sum()) >= 5 and radii[6] == 0 and radii[7] == 0

    def fn(m, c):
        p = project_gaussians(m, c, M, V, (16, 20))
        return p.means2d, p.conics, p.depths, p.cov2d

    inputs = (means.requires_grad_(), covs.requires_grad_())
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_camera_gradients_take_the_torch_path():
    M, V = _matrices((16, 16))
    means, covs = _scene(30, seed=5, spread=2.0)
    M = M.clone().requires_grad_()
    p = project_gaussians(means, covs, M, V, (16, 16))
    (grad_M,) = torch.autograd.grad(p.means2d.sum() + p.conics.sum(), M)
    assert grad_M.abs().sum() > 0
    ref = project_gaussians(means, covs, M.detach(), V, (16, 16))
    for f in FIELDS:
        _assert_rows_close(getattr(p, f), getattr(ref, f), 1e-10)
    assert torch.equal(p.radii, ref.radii)


def test_no_gaussians_and_no_grad():
    M, V = _matrices((8, 8))
    p = project_gaussians(torch.zeros(0, 3, dtype=DT), torch.zeros(0, 3, 3, dtype=DT), M, V, (8, 8))
    assert p.means2d.shape == (0, 2) and p.radii.shape == (0,)
    means, covs = _scene(10, seed=6, spread=1.0)
    with torch.no_grad():
        q = project_gaussians(means.requires_grad_(), covs, M, V, (8, 8))
    assert not q.means2d.requires_grad


# ----------------------------------------------------------------------------- colours
def _sh_scene(n, k, seed, dtype=DT):
    """Coefficients (N, K, 3) large enough that some colours are clamped at 0, and unit directions."""
    g = torch.Generator().manual_seed(seed)
    sh = torch.randn(n, k, 3, generator=g, dtype=dtype) * 0.8
    d = torch.randn(n, 3, generator=g, dtype=dtype)
    return sh, d / d.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_kernel_equals_the_torch_path_forward_and_backward(degree):
    sh, d = _sh_scene(200, 16, seed=20 + degree)  # more coefficients than the degree uses
    sh.requires_grad_()
    d.requires_grad_()
    a = spherical_harmonics_colors(sh, d, degree)
    b = spherical_harmonics_colors_torch(sh, d, degree)
    assert (b == 0).sum() > 3  # some colours are clamped
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    w = torch.randn(a.shape, generator=torch.Generator().manual_seed(3), dtype=DT)
    ga = torch.autograd.grad((a * w).sum(), (sh, d))
    gb = torch.autograd.grad((b * w).sum(), (sh, d), allow_unused=True)  # degree 0 does not read d
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, torch.zeros_like(x) if y is None else y, rtol=1e-12, atol=1e-12)
    assert float(ga[0][:, (degree + 1) ** 2 :].abs().sum()) == 0.0
    single = spherical_harmonics_colors(sh.detach().float(), d.detach().float(), degree)
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), b.detach(), rtol=1e-5, atol=1e-5)


def test_sh_gradcheck():
    """Degree 3 (every basis function), directions not normalised (the kernel takes them as given); a
    clamped colour has a zero gradient, and none lies within eps of the clamp."""
    sh, d = _sh_scene(8, 16, seed=30)
    inputs = (2.0 * sh, 1.3 * d)
    unclamped = spherical_harmonics_colors_torch(inputs[0], inputs[1], 3)
    assert (unclamped == 0).any() and (unclamped > 0).sum() > 12
    inputs = tuple(t.requires_grad_() for t in inputs)
    assert torch.autograd.gradcheck(lambda s, x: spherical_harmonics_colors(s, x, 3), inputs, eps=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- CUDA kernels against the CPU ones
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_projection_equals_cpu_forward_and_backward(dtype, gpu):
    if gpu.__name__ == "gpu_serial" and dtype == np.float32:
        pytest.skip("float32 runs on the simulator; the serial bodies' float64 build covers the mapping")
    H, W = 21, 35
    M, V = (t.numpy().astype(dtype) for t in _matrices((H, W)))
    means, covs = (t.numpy().astype(dtype) for t in _scene(60, seed=7))
    n = means.shape[0]
    rng = np.random.default_rng(8)
    upstream = [rng.standard_normal(s).astype(dtype) for s in ((n, 2), (n, 3), (n,), (n, 2, 2))]
    results = []
    for launch, launch_backward in (
        (gp.project_gaussians_cpu, gp.project_gaussians_backward_cpu),
        (gpu.project_gaussians_cuda, gpu.project_gaussians_backward_cuda),
    ):
        outs = [np.zeros((n, 2), dtype), np.zeros((n, 3), dtype), np.zeros(n, dtype), np.zeros((n, 2, 2), dtype)]
        outs.append(np.zeros(n, np.int64))
        launch(means, covs, M, V, H, W, 0.3, 0.01, *outs)
        grads = [np.zeros((n, 3), dtype), np.zeros((n, 3, 3), dtype)]
        launch_backward(means, covs, M, V, H, W, 0.3, 0.01, *upstream, *grads)
        results.append(outs + grads)
    assert np.array_equal(results[0][4], results[1][4])
    assert (results[0][4] > 0).sum() > 5
    for a, b in zip(results[0][:4] + results[0][5:], results[1][:4] + results[1][5:]):
        _assert_rows_close(
            torch.from_numpy(a).double(), torch.from_numpy(b).double(), 1e-12 if b.itemsize == 8 else 1e-5
        )


def test_the_cuda_branch_of_the_operation_equals_the_cpu_one(gpu, monkeypatch):
    """``project_gaussians`` through the autograd function's CUDA branch (the gpu, on CPU tensors),
    forward and backward, against its CPU branch."""
    M, V = _matrices((20, 24))
    means, covs = _scene(50, seed=9, spread=3.0)
    results = []
    for branch in ("cpu", "gpu"):
        if branch == "gpu":
            monkeypatch.setattr(op, "cuda_kernels", lambda tensor, name: gpu)
        leaves = (means.clone().requires_grad_(), covs.clone().requires_grad_())
        p = project_gaussians(*leaves, M, V, (20, 24))
        grads = torch.autograd.grad(_loss(p, _weights(p, seed=10)), leaves)
        results.append(([getattr(p, f).detach() for f in FIELDS] + [p.radii], grads))
    for a, b in zip(results[0][0] + list(results[0][1]), results[1][0] + list(results[1][1])):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


def test_cuda_sh_colors_equal_cpu(gpu, monkeypatch):
    sh, d = _sh_scene(40, 16, seed=31)
    results = []
    for branch in ("cpu", "gpu"):
        if branch == "gpu":
            monkeypatch.setattr(op, "cuda_kernels", lambda tensor, name: gpu)
        leaves = (sh.clone().requires_grad_(), d.clone().requires_grad_())
        colours = spherical_harmonics_colors(*leaves, 3)
        grads = torch.autograd.grad((colours * torch.linspace(-1, 1, 3, dtype=DT)).sum(), leaves)
        results.append((colours.detach(), *grads))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------- bad input
def _bad(**change):
    M, V = _matrices((8, 8))
    means, covs = _scene(5, seed=11, spread=1.0)
    args = {"means": means, "covariances": covs, "world_to_ndc": M, "world_to_view": V, "image_size": (8, 8)}
    args.update(change)
    return args


@pytest.mark.parametrize(
    "change, message",
    [
        ({"means": torch.zeros(5, 2, dtype=DT)}, r"means must have shape \(N, 3\)"),
        ({"means": [[0.0, 0.0, 0.0]]}, r"means must have shape \(N, 3\)"),
        ({"covariances": torch.zeros(4, 3, 3, dtype=DT)}, r"covariances must have shape \(5, 3, 3\)"),
        ({"world_to_ndc": torch.eye(3, dtype=DT)}, r"world_to_ndc must have shape \(4, 4\)"),
        ({"means": torch.zeros(5, 3, dtype=torch.float16)}, r"means is torch.float16.*\.float\(\)"),
        ({"means": torch.zeros(5, 3, dtype=torch.int64)}, "means must be float32 or float64"),
        ({"covariances": torch.zeros(5, 3, 3)}, "covariances are torch.float32 but means torch.float64"),
        ({"world_to_view": torch.eye(4, dtype=torch.int64)}, "world_to_view must be float32 or float64"),
        ({"means": torch.full((5, 3), float("nan"), dtype=DT)}, "means holds NaN or inf"),
        ({"covariances": torch.full((5, 3, 3), float("inf"), dtype=DT)}, "covariances holds NaN or inf"),
        ({"world_to_view": torch.eye(4, dtype=DT, device="meta")}, "world_to_view is on meta but means on cpu"),
        ({"image_size": (0, 8)}, "image_size must be an int >= 1"),
        ({"image_size": (8.5, 8)}, "image_size must be an int >= 1"),
        ({"image_size": 8}, r"image_size must be \(H, W\)"),
        ({"image_size": (2**15, 2**15)}, "at most 2\\^28 pixels"),
        ({"low_pass": -0.1}, "low_pass must be a finite number >= 0"),
        ({"near_plane": float("nan")}, "near_plane must be a finite number"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(change, message):
    with pytest.raises(P3DLabValueError, match=message):
        project_gaussians(**_bad(**change))


@pytest.mark.parametrize(
    "sh, directions, degree, message",
    [
        (torch.zeros(4, 9), torch.zeros(4, 3), 1, r"sh must have shape \(N, K, 3\)"),
        (torch.zeros(4, 9, 3), torch.zeros(5, 3), 1, r"directions must have shape \(4, 3\)"),
        (torch.zeros(4, 9, 3), torch.zeros(4, 3), 4, r"degree must be an int in \[0, 3\]"),
        (torch.zeros(4, 9, 3), torch.zeros(4, 3), True, r"degree must be an int in \[0, 3\]"),
        (torch.zeros(4, 9, 3), torch.zeros(4, 3), 3, r"degree 3 needs \(d \+ 1\)\^2 = 16 coefficients, sh has 9"),
        (torch.zeros(4, 9, 3, dtype=torch.float16), torch.zeros(4, 3), 1, r"sh is torch.float16"),
        (torch.zeros(4, 9, 3, dtype=torch.int32), torch.zeros(4, 3), 1, "sh must be float32 or float64"),
        (torch.zeros(4, 9, 3), torch.zeros(4, 3, dtype=DT), 1, "directions are torch.float64 on cpu but sh"),
        (torch.full((4, 9, 3), float("nan")), torch.zeros(4, 3), 1, "sh holds NaN or inf"),
        (torch.zeros(4, 9, 3), torch.full((4, 3), float("inf")), 1, "directions holds NaN or inf"),
    ],
)
def test_sh_bad_input_is_refused_with_a_clear_error(sh, directions, degree, message):
    with pytest.raises(P3DLabValueError, match=message):
        spherical_harmonics_colors(sh, directions, degree)


def test_the_kernels_constants_are_the_operations():
    """The kernels cannot import the operations: their copies of the shared constants must agree."""
    assert (gp.SH_C0, gp.SH_C1, gp.SH_C2, gp.SH_C3) == (op.SH_C0, op.SH_C1, op.SH_C2, op.SH_C3)
    assert gp.FRUSTUM_MARGIN == op.FRUSTUM_MARGIN
