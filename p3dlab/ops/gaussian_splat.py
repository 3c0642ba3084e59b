"""Gaussian splatting as torch operations (docs/kernels.md#gaussian-splatting).

Three steps, each differentiable:

1. ``spherical_harmonics_colors``: view-dependent colours from SH coefficients, forward and backward
   in the Numba kernels of ``p3dlab.kernels.gaussian_project`` (``_SphericalHarmonicsColors``);
   ``spherical_harmonics_colors_torch`` is the same in torch, the kernels' reference.
2. ``project_gaussians``: 3D means and covariances to screen-space means (pixels), conics (inverse
   2D covariances), radii and depths, with the EWA Jacobian of the camera's projection and a
   low-pass dilation: forward and backward in the Numba kernels of ``p3dlab.kernels.gaussian_project``
   (CPU, or CUDA by the tensors' device), wrapped in ``_ProjectGaussians``; when the camera's matrices
   require grad, ``project_gaussians_torch`` (the same math in torch, the kernels' reference), which
   autograd differentiates through the camera too.
3. ``rasterize_gaussians``: tile binning, depth ordering and front-to-back compositing, forward and
   backward in the Numba kernels of ``p3dlab.kernels.gaussian_splat`` (CPU, or CUDA by the tensors'
   device), wrapped in ``_RasterizeGaussians``. ``rasterize_gaussians_reference``
   (``gaussian_splat_reference``) computes the same image densely in torch.
"""

from __future__ import annotations

from typing import NamedTuple, Tuple

import torch
from torch.autograd.function import once_differentiable

from p3dlab.errors import P3DLabValueError
from p3dlab.kernels.sh_constants import FRUSTUM_MARGIN, SH_C0, SH_C1, SH_C2, SH_C3
from p3dlab.ops.checks import check_count, check_finite_number, check_kernel_dtype
from p3dlab.ops.dispatch import cuda_kernels
from p3dlab.runtime import memory_budget

__all__ = [
    "ALPHA_MAX",
    "SH_C0",
    "TILE_SIZE",
    "GaussianProjection",
    "project_gaussians",
    "rasterize_gaussians",
    "spherical_harmonics_colors",
]

TILE_SIZE = 16
ALPHA_MAX = 0.99
CUTOFF = 9.0  # q = d^T conic d <= 9: the 3-sigma ellipse


def spherical_harmonics_colors(sh: torch.Tensor, directions: torch.Tensor, degree: int) -> torch.Tensor:
    """``spherical_harmonics_colors_torch`` (see there for the formula) in the Numba kernels of
    ``p3dlab.kernels.gaussian_project`` (CPU, or CUDA by the tensors' device), differentiable in ``sh``
    and ``directions`` (``_SphericalHarmonicsColors``). Checks its inputs first: ``sh`` (N, K, 3) and
    ``directions`` (N, 3), one float dtype and device, finite values, ``degree`` an int in [0, 3] with
    (degree + 1)^2 <= K."""
    op = "spherical_harmonics_colors"
    if not isinstance(sh, torch.Tensor) or sh.ndim != 3 or sh.shape[2] != 3:
        got = tuple(sh.shape) if isinstance(sh, torch.Tensor) else type(sh).__name__
        raise P3DLabValueError(f"{op}: sh must have shape (N, K, 3), got {got}")
    if not isinstance(directions, torch.Tensor) or tuple(directions.shape) != (sh.shape[0], 3):
        got = tuple(directions.shape) if isinstance(directions, torch.Tensor) else type(directions).__name__
        raise P3DLabValueError(f"{op}: directions must have shape {(sh.shape[0], 3)}, got {got}")
    if isinstance(degree, bool) or not isinstance(degree, int) or not 0 <= degree <= 3:
        raise P3DLabValueError(f"{op}: degree must be an int in [0, 3], got {degree!r}")
    if sh.shape[1] < (degree + 1) ** 2:
        raise P3DLabValueError(
            f"{op}: degree {degree} needs (d + 1)^2 = {(degree + 1) ** 2} coefficients, sh has {sh.shape[1]}"
        )
    check_kernel_dtype(sh, "sh", op)
    if not sh.is_floating_point():
        raise P3DLabValueError(f"{op}: sh must be float32 or float64, got {sh.dtype}")
    if directions.dtype != sh.dtype or directions.device != sh.device:
        raise P3DLabValueError(
            f"{op}: directions are {directions.dtype} on {directions.device} but sh {sh.dtype} on {sh.device}"
        )
    for name, t in (("sh", sh), ("directions", directions)):
        if not bool(torch.isfinite(t.detach().sum())) and not bool(torch.isfinite(t.detach()).all()):
            raise P3DLabValueError(f"{op}: {name} holds NaN or inf")
    return _SphericalHarmonicsColors.apply(sh, directions, (degree + 1) ** 2)


class _SphericalHarmonicsColors(torch.autograd.Function):
    """(N, 3) colours from SH coefficients; forward and backward in the kernels."""

    @staticmethod
    def forward(ctx, sh, directions, n_basis):
        sh, directions = sh.detach().contiguous(), directions.detach().contiguous()
        colors = torch.empty((sh.shape[0], 3), dtype=sh.dtype, device=sh.device)
        gpu = cuda_kernels(sh, "spherical_harmonics_colors")
        if gpu:
            gpu.sh_colors_cuda(sh, directions, n_basis, colors)
        else:
            from p3dlab.kernels.gaussian_project import sh_colors_cpu

            sh_colors_cpu(sh.numpy(), directions.numpy(), n_basis, colors.numpy())
        ctx.save_for_backward(sh, directions)
        ctx.n_basis = n_basis
        return colors

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_colors):
        sh, directions = ctx.saved_tensors
        grad_colors = grad_colors.to(sh.dtype).contiguous()
        grad_sh = torch.empty_like(sh)
        grad_directions = torch.empty_like(directions)
        gpu = cuda_kernels(sh, "spherical_harmonics_colors (backward)")
        if gpu:
            gpu.sh_colors_backward_cuda(sh, directions, ctx.n_basis, grad_colors, grad_sh, grad_directions)
        else:
            from p3dlab.kernels.gaussian_project import sh_colors_backward_cpu

            arrays = [t.numpy() for t in (sh, directions)]
            sh_colors_backward_cpu(*arrays, ctx.n_basis, grad_colors.numpy(), grad_sh.numpy(), grad_directions.numpy())
        return grad_sh, grad_directions, None


def spherical_harmonics_colors_torch(sh: torch.Tensor, directions: torch.Tensor, degree: int) -> torch.Tensor:
    """(N, 3) colours ``max(0.5 + sum_{l <= degree} sum_m Y_lm(d) sh_lm, 0)`` for unit view
    directions ``d`` (N, 3) (from the camera to each Gaussian) and coefficients ``sh`` (N, K, 3),
    K >= (degree + 1)^2. The basis is the real SH with the signs of 3DGS (``Y_1 = -C1 y, C1 z,
    -C1 x``...), so coefficients trained elsewhere mean the same colours. In torch: the reference for the
    kernels that ``spherical_harmonics_colors`` runs (which checks its inputs; this checks only the degree)."""
    if not 0 <= degree <= 3 or sh.shape[1] < (degree + 1) ** 2:
        raise P3DLabValueError(f"spherical_harmonics_colors: degree {degree} needs (d + 1)^2 <= {sh.shape[1]}")
    basis = [torch.full_like(directions[:, 0], SH_C0)]
    if degree >= 1:
        x, y, z = directions.unbind(1)
        basis += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
        if degree >= 2:
            xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
            basis += [
                SH_C2[0] * xy,
                SH_C2[1] * yz,
                SH_C2[2] * (2.0 * zz - xx - yy),
                SH_C2[3] * xz,
                SH_C2[4] * (xx - yy),
            ]
            if degree >= 3:
                basis += [
                    SH_C3[0] * y * (3.0 * xx - yy),
                    SH_C3[1] * xy * z,
                    SH_C3[2] * y * (4.0 * zz - xx - yy),
                    SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
                    SH_C3[4] * x * (4.0 * zz - xx - yy),
                    SH_C3[5] * z * (xx - yy),
                    SH_C3[6] * x * (xx - 3.0 * yy),
                ]
    k = len(basis)
    result = (torch.stack(basis, 1)[:, :, None] * sh[:, :k]).sum(1)
    return (result + 0.5).clamp_min(0.0)


class GaussianProjection(NamedTuple):
    """Screen-space Gaussians. ``means2d`` (N, 2) in pixels (u = column, v = row; pixel (i, j) has its
    centre at (j, i)); ``conics`` (N, 3) = (a, b, c), the inverse of the 2D covariance
    ``[[a, b], [b, c]]``; ``radii`` (N,) int64 pixel radius of the 3-sigma footprint, 0 = culled;
    ``depths`` (N,) view-space z; ``cov2d`` (N, 2, 2) the dilated 2D covariance (pixels^2)."""

    means2d: torch.Tensor
    conics: torch.Tensor
    radii: torch.Tensor
    depths: torch.Tensor
    cov2d: torch.Tensor


def project_gaussians(
    means: torch.Tensor,
    covariances: torch.Tensor,
    world_to_ndc: torch.Tensor,
    world_to_view: torch.Tensor,
    image_size: Tuple[int, int],
    low_pass: float = 0.3,
    near_plane: float = 0.01,
) -> GaussianProjection:
    """Project 3D Gaussians (means (N, 3), covariances (N, 3, 3), world) to the screen: the math of
    ``project_gaussians_torch`` (see there), in the Numba kernels of ``p3dlab.kernels.gaussian_project``
    (CPU, or CUDA by the tensors' device), differentiable in ``means`` and ``covariances``
    (``_ProjectGaussians``). Where ``world_to_ndc`` or ``world_to_view`` requires grad (a camera being
    optimised) it runs ``project_gaussians_torch``, which autograd differentiates through the camera
    too. The outputs are the same either way (radii equal, values to rounding).

    The inputs are checked first: shapes, float32/float64 means (covariances in the same dtype, the
    matrices cast to it), one device, finite values, a positive image size, ``low_pass >= 0`` and a
    finite ``near_plane``; a ``P3DLabValueError`` says what is wrong.
    """
    op = "project_gaussians"
    H, W, low_pass, near_plane = check_projection_inputs(
        means, covariances, world_to_ndc, world_to_view, image_size, low_pass, near_plane, op
    )
    dt = means.dtype
    M, V = world_to_ndc.to(dt), world_to_view.to(dt)
    if M.requires_grad or V.requires_grad:
        return project_gaussians_torch(means, covariances, M, V, (H, W), low_pass, near_plane)
    means2d, conics, depths, cov2d, radii = _ProjectGaussians.apply(
        means, covariances, M, V, H, W, low_pass, near_plane
    )
    return GaussianProjection(means2d, conics, radii, depths, cov2d)


def check_projection_inputs(means, covariances, world_to_ndc, world_to_view, image_size, low_pass, near_plane, op):
    """The arguments of ``project_gaussians``: returns (H, W, low_pass, near_plane) or raises a
    ``P3DLabValueError`` naming the argument."""
    if not (isinstance(image_size, (tuple, list)) and len(image_size) == 2):
        raise P3DLabValueError(f"{op}: image_size must be (H, W), got {image_size!r}")
    H, W = (check_count(x, "image_size", op) for x in image_size)
    if H * W > 2**28:
        raise P3DLabValueError(f"{op}: image_size must be at most 2^28 pixels, got {(H, W)}")
    low_pass = check_finite_number(low_pass, "low_pass", op, 0.0)
    near_plane = check_finite_number(near_plane, "near_plane", op)
    if not isinstance(means, torch.Tensor) or means.ndim != 2 or means.shape[1] != 3:
        got = tuple(means.shape) if isinstance(means, torch.Tensor) else type(means).__name__
        raise P3DLabValueError(f"{op}: means must have shape (N, 3), got {got}")
    n = means.shape[0]
    shapes = {"covariances": (n, 3, 3), "world_to_ndc": (4, 4), "world_to_view": (4, 4)}
    tensors = {"covariances": covariances, "world_to_ndc": world_to_ndc, "world_to_view": world_to_view}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shapes[name]:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise P3DLabValueError(f"{op}: {name} must have shape {shapes[name]}, got {got}")
        if t.device != means.device:
            raise P3DLabValueError(f"{op}: {name} is on {t.device} but means on {means.device}")
    check_kernel_dtype(means, "means", op)
    if not means.is_floating_point():
        raise P3DLabValueError(f"{op}: means must be float32 or float64, got {means.dtype}")
    if covariances.dtype != means.dtype:
        raise P3DLabValueError(f"{op}: covariances are {covariances.dtype} but means {means.dtype}")
    for name, t in tensors.items():
        if not (t.is_floating_point() and t.dtype not in (torch.float16, torch.bfloat16)):
            raise P3DLabValueError(f"{op}: {name} must be float32 or float64, got {t.dtype}")
    for name, t in {"means": means, **tensors}.items():
        if not bool(torch.isfinite(t.detach().sum())) and not bool(torch.isfinite(t.detach()).all()):
            raise P3DLabValueError(f"{op}: {name} holds NaN or inf")
    return H, W, low_pass, near_plane


class _ProjectGaussians(torch.autograd.Function):
    """(means2d, conics, depths, cov2d, radii) of ``project_gaussians``; forward and backward in the
    kernels, gradients for ``means`` and ``covariances`` (the camera is a constant here)."""

    @staticmethod
    def forward(ctx, means, covariances, M, V, H, W, low_pass, near_plane):
        n, dt, dev = means.shape[0], means.dtype, means.device
        inputs = [t.detach().contiguous() for t in (means, covariances, M, V)]
        means2d = torch.empty((n, 2), dtype=dt, device=dev)
        conics = torch.empty((n, 3), dtype=dt, device=dev)
        depths = torch.empty((n,), dtype=dt, device=dev)
        cov2d = torch.empty((n, 2, 2), dtype=dt, device=dev)
        radii = torch.empty((n,), dtype=torch.int64, device=dev)
        outputs = (means2d, conics, depths, cov2d, radii)
        # looked up on the module, so that a test can swap the projection's launchers apart from the
        # compositing's (tests/gpu_serial.py stands in for the latter only)
        gpu = cuda_kernels(means, "project_gaussians")
        if gpu:
            gpu.project_gaussians_cuda(*inputs, H, W, low_pass, near_plane, *outputs)
        else:
            from p3dlab.kernels.gaussian_project import project_gaussians_cpu

            project_gaussians_cpu(*[t.numpy() for t in inputs], H, W, low_pass, near_plane,
                                  *[t.numpy() for t in outputs])  # fmt: skip
        ctx.save_for_backward(*inputs)
        ctx.settings = (H, W, low_pass, near_plane)
        ctx.mark_non_differentiable(radii)
        return outputs

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_means2d, grad_conics, grad_depths, grad_cov2d, _grad_radii):
        means, covariances, M, V = ctx.saved_tensors
        H, W, low_pass, near_plane = ctx.settings
        n, dt = means.shape[0], means.dtype
        upstream = []
        for g, shape in ((grad_means2d, (n, 2)), (grad_conics, (n, 3)), (grad_depths, (n,)), (grad_cov2d, (n, 2, 2))):
            upstream.append(means.new_zeros(shape) if g is None else g.to(dt).contiguous())
        grad_means = torch.empty_like(means)
        grad_covs = torch.empty_like(covariances)
        gpu = cuda_kernels(means, "project_gaussians (backward)")
        if gpu:
            gpu.project_gaussians_backward_cuda(
                means, covariances, M, V, H, W, low_pass, near_plane, *upstream, grad_means, grad_covs
            )
        else:
            from p3dlab.kernels.gaussian_project import project_gaussians_backward_cpu

            arrays = [t.numpy() for t in (means, covariances, M, V)]
            project_gaussians_backward_cpu(
                *arrays, H, W, low_pass, near_plane, *[g.numpy() for g in upstream], grad_means.numpy(),
                grad_covs.numpy(),
            )  # fmt: skip
        return grad_means, grad_covs, None, None, None, None, None, None


def project_gaussians_torch(
    means: torch.Tensor,
    covariances: torch.Tensor,
    world_to_ndc: torch.Tensor,
    world_to_view: torch.Tensor,
    image_size: Tuple[int, int],
    low_pass: float = 0.3,
    near_plane: float = 0.01,
) -> GaussianProjection:
    """Project 3D Gaussians (means (N, 3), covariances (N, 3, 3), world) to the screen, in torch: the
    reference the kernels of ``project_gaussians`` are tested against, and its path when the camera's
    matrices require grad (autograd differentiates everything here, the camera included). Unchecked.

    ``world_to_ndc`` (4, 4) and ``world_to_view`` (4, 4) are row-vector matrices (``[X, 1] @ M``): the
    camera's full projection to NDC (a projective map: ``x_ndc = h_0 / h_3``, ``y_ndc = h_1 / h_3``,
    ``h = [X, 1] M``) and its world-to-view transform. Pixel coordinates follow the rasterizers'
    centres (``p3dlab.ops.pixels``): ``u = (W - 1 - s x_ndc) / 2``, ``v = (H - 1 - s y_ndc) / 2``,
    s = min(H, W). The EWA approximation linearises the projection at the mean:

        J = d(u, v)/dX = -(s / 2) (M_{:3,k} h_3 - h_k M_{:3,3}) / h_3^2,  k = 0, 1   (2 x 3)
        Sigma_2D = J Sigma J^T + low_pass I,      conic = Sigma_2D^{-1}

    (the world-to-view rotation is inside M, so J already includes it). ``radius = ceil(3
    sqrt(lambda_max(Sigma_2D)))``. A Gaussian is culled (radius 0) when its view depth is below
    ``near_plane``, its centre lies beyond 1.3 times the image's NDC extent, its 2D covariance is
    degenerate, or its 3-sigma box misses the image.
    """
    H, W = image_size
    s = float(min(H, W))
    dt = means.dtype
    M = world_to_ndc.to(dt)
    V = world_to_view.to(dt)
    depths = means @ V[:3, 2] + V[3, 2]
    h = means @ M[:3] + M[3]  # (N, 4)
    valid = depths > near_plane
    w = torch.where(valid, h[:, 3], torch.ones_like(h[:, 3]))
    ndc = h[:, :2] / w[:, None]
    valid = valid & (ndc[:, 0].abs() <= FRUSTUM_MARGIN * W / s) & (ndc[:, 1].abs() <= FRUSTUM_MARGIN * H / s)
    jac_ndc = (M[:3, :2].T[None] * w[:, None, None] - h[:, :2, None] * M[:3, 3][None, None, :]) / (w * w)[:, None, None]
    J = -0.5 * s * jac_ndc  # (N, 2, 3)
    u = (W - 1.0 - s * ndc[:, 0]) * 0.5
    v = (H - 1.0 - s * ndc[:, 1]) * 0.5
    means2d = torch.stack([u, v], -1)
    # J Sigma J^T as broadcast products: faster than batched matmuls of 2 x 3 matrices
    JS = (J[:, :, :, None] * covariances[:, None, :, :]).sum(2)  # (N, 2, 3)
    cov2d = (JS[:, :, None, :] * J[:, None, :, :]).sum(3)
    cov2d = cov2d + low_pass * torch.eye(2, dtype=dt, device=means.device)
    a, b, c = cov2d[:, 0, 0], cov2d[:, 0, 1], cov2d[:, 1, 1]
    det = a * c - b * b
    valid = valid & (det > 0) & torch.isfinite(det)
    det_safe = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], -1)
    with torch.no_grad():
        mid = 0.5 * (a + c)
        lam = mid + torch.sqrt((mid * mid - det).clamp_min(0.0))
        radius = torch.ceil(3.0 * torch.sqrt(lam.clamp_min(0.0)))
        radius = torch.where(valid & torch.isfinite(radius), radius, torch.zeros_like(radius))
        # the 3-sigma box must meet the image (a huge or non-finite box is culled)
        box_ok = (u + radius >= 0) & (u - radius <= W - 1) & (v + radius >= 0) & (v - radius <= H - 1)
        radius = torch.where(box_ok & (radius > 0), radius, torch.zeros_like(radius))
        radius = radius.clamp_max(float(4 * max(H, W)))  # huge footprints cover the image; keep ints small
        radii = radius.to(torch.int64)
    return GaussianProjection(means2d, conics, radii, depths, cov2d)


def check_screen_gaussians(means2d, conics, opacities, colors, depths, radii, image_size, op: str):
    """The arguments of ``rasterize_gaussians``: shapes, one float dtype and device, finite values and
    positive-definite conics where a Gaussian is visible (radius > 0). Returns (H, W)."""
    if not (isinstance(image_size, (tuple, list)) and len(image_size) == 2):
        raise P3DLabValueError(f"{op}: image_size must be (H, W), got {image_size!r}")
    H, W = (int(x) for x in image_size)
    if H < 1 or W < 1 or H * W > 2**28:
        raise P3DLabValueError(f"{op}: image_size must be positive and at most 2^28 pixels, got {(H, W)}")
    n = means2d.shape[0] if isinstance(means2d, torch.Tensor) and means2d.ndim == 2 else -1
    shapes = {"means2d": (n, 2), "conics": (n, 3), "opacities": (n,), "colors": (n, 3), "depths": (n,), "radii": (n,)}
    tensors = {"means2d": means2d, "conics": conics, "opacities": opacities, "colors": colors, "depths": depths}
    tensors["radii"] = radii
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shapes[name]:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise P3DLabValueError(f"{op}: {name} must have shape {shapes[name]}, got {got}")
        if t.device != means2d.device:
            raise P3DLabValueError(f"{op}: {name} is on {t.device} but means2d on {means2d.device}")
    if radii.is_floating_point() or radii.is_complex() or radii.dtype == torch.bool:
        raise P3DLabValueError(f"{op}: radii must be an integer tensor, got {radii.dtype}")
    for name in ("means2d", "conics", "opacities", "colors", "depths"):
        check_kernel_dtype(tensors[name], name, op)
        if tensors[name].dtype != means2d.dtype:
            raise P3DLabValueError(f"{op}: {name} is {tensors[name].dtype} but means2d is {means2d.dtype}")
    if not means2d.is_floating_point():
        raise P3DLabValueError(f"{op}: means2d must be float32 or float64, got {means2d.dtype}")
    visible = radii > 0
    for name in ("means2d", "conics", "opacities", "colors", "depths"):
        t = tensors[name].detach()
        if bool(torch.isfinite(t.sum())):  # one reduction: NaN or inf anywhere would show in the sum
            continue
        finite = torch.isfinite(t)
        bad = visible & ~(finite if finite.ndim == 1 else finite.all(1))
        if bool(bad.any()):
            k = int(bad.nonzero()[0, 0])
            raise P3DLabValueError(f"{op}: {name} of visible Gaussian {k} is not finite: {t[k].tolist()}")
    cn = conics.detach()
    not_pd = visible & ~((cn[:, 0] > 0) & (cn[:, 0] * cn[:, 2] - cn[:, 1] * cn[:, 1] > 0))
    if bool(not_pd.any()):
        k = int(not_pd.nonzero()[0, 0])
        raise P3DLabValueError(
            f"{op}: the conic of visible Gaussian {k}, {cn[k].tolist()}, is not positive definite "
            "(need a > 0 and a c - b^2 > 0: the inverse of a 2D covariance)"
        )
    return H, W


def draw_order(depths: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Indices of the visible Gaussians (radius > 0) by ascending depth, ties by index."""
    visible = (radii > 0).nonzero()[:, 0]
    order = torch.sort(depths.detach()[visible], stable=True).indices
    return visible[order]


def tile_rects(means2d: torch.Tensor, radii: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(N, 4) int64 inclusive tile ranges (ty0, ty1, tx0, tx1) of each Gaussian's box ``[u - r, u + r]
    x [v - r, v + r]`` clipped to the image; meaningful where radius > 0 (then the box meets the image)."""
    r = radii.to(means2d.dtype)
    m = means2d.detach()
    j0 = torch.ceil(m[:, 0] - r).clamp(0, W - 1)
    j1 = torch.floor(m[:, 0] + r).clamp(0, W - 1)
    i0 = torch.ceil(m[:, 1] - r).clamp(0, H - 1)
    i1 = torch.floor(m[:, 1] + r).clamp(0, H - 1)
    rects = torch.stack([i0, i1, j0, j1], -1).to(torch.int64) // TILE_SIZE
    return torch.where((radii > 0)[:, None], rects, torch.zeros_like(rects))


def bin_gaussians_torch(order: torch.Tensor, rects: torch.Tensor, H: int, W: int):
    """Tile lists in torch (any device; the CUDA path): every (tile, Gaussian) pair of ``order``,
    stably sorted by tile so each tile keeps the drawing order. Same result as the CPU kernel's
    counting sort ``bin_gaussians_cpu``. Returns (tile_starts (T + 1,), ids)."""
    tiles_x = (W + TILE_SIZE - 1) // TILE_SIZE
    n_tiles = tiles_x * ((H + TILE_SIZE - 1) // TILE_SIZE)
    rr = rects[order]
    rows = rr[:, 1] - rr[:, 0] + 1
    cols = rr[:, 3] - rr[:, 2] + 1
    per = rows * cols
    ids = torch.repeat_interleave(order, per)
    first = torch.repeat_interleave(torch.cumsum(per, 0) - per, per)
    local = torch.arange(ids.shape[0], device=order.device) - first
    rep_rr = torch.repeat_interleave(rr, per, dim=0)
    rep_cols = torch.repeat_interleave(cols, per)
    tile = (rep_rr[:, 0] + local // rep_cols) * tiles_x + rep_rr[:, 2] + local % rep_cols
    sort = torch.sort(tile, stable=True).indices
    ids = ids[sort]
    counts = torch.bincount(tile, minlength=n_tiles)
    tile_starts = torch.zeros(n_tiles + 1, dtype=torch.int64, device=order.device)
    tile_starts[1:] = torch.cumsum(counts, 0)
    return tile_starts, ids


def _tile_pairs(rects: torch.Tensor, order: torch.Tensor) -> int:
    rr = rects[order]
    return int(((rr[:, 1] - rr[:, 0] + 1) * (rr[:, 3] - rr[:, 2] + 1)).sum()) if order.numel() else 0


class _RasterizeGaussians(torch.autograd.Function):
    """(color (H, W, 3), T (H, W)) of screen-space Gaussians; backward through the kernels."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, order, rects, H, W, alpha_min, t_min):
        dev, dt = means2d.device, means2d.dtype
        color = torch.zeros((H, W, 3), dtype=dt, device=dev)
        t_final = torch.ones((H, W), dtype=dt, device=dev)
        last = torch.zeros((H, W), dtype=torch.int64, device=dev)
        tiles_x = (W + TILE_SIZE - 1) // TILE_SIZE
        n_tiles = tiles_x * ((H + TILE_SIZE - 1) // TILE_SIZE)
        inputs = [t.detach().contiguous() for t in (means2d, conics, opacities, colors)]
        gpu = cuda_kernels(means2d, "rasterize_gaussians")
        if gpu:
            tile_starts, ids = bin_gaussians_torch(order, rects, H, W)
            gpu.composite_gaussians_cuda(tile_starts, ids, *inputs, H, W, alpha_min, t_min, color, t_final, last)
        else:
            import numba

            from p3dlab.kernels.gaussian_splat import bin_gaussians_cpu, composite_cpu

            starts_np, ids_np = bin_gaussians_cpu(order.numpy(), rects.numpy(), n_tiles, tiles_x)
            tile_starts, ids = torch.from_numpy(starts_np), torch.from_numpy(ids_np)
            arrays = [t.numpy() for t in inputs]
            composite_cpu(
                starts_np, ids_np, *arrays, H, W, alpha_min, t_min, color.numpy(), t_final.numpy(), last.numpy(),
                numba.get_num_threads(),
            )  # fmt: skip
        ctx.save_for_backward(*inputs, tile_starts, ids, t_final, last)
        ctx.settings = (H, W, alpha_min)
        ctx.mark_non_differentiable(last)
        return color, t_final, last

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_color, grad_t, _grad_last):
        means2d, conics, opacities, colors, tile_starts, ids, t_final, last = ctx.saved_tensors
        H, W, alpha_min = ctx.settings
        dt = means2d.dtype
        gc = torch.zeros_like(t_final)[..., None].expand(H, W, 3) if grad_color is None else grad_color
        gt = torch.zeros_like(t_final) if grad_t is None else grad_t
        gc, gt = gc.to(dt).contiguous(), gt.to(dt).contiguous()
        grads = torch.zeros((means2d.shape[0], 9), dtype=dt, device=means2d.device)
        gpu = cuda_kernels(means2d, "rasterize_gaussians (backward)")
        args = (tile_starts, ids, means2d, conics, opacities, colors)
        if gpu:
            gpu.composite_gaussians_backward_cuda(*args, H, W, alpha_min, t_final, last, gc, gt, grads)
        else:
            import numba

            from p3dlab.kernels.gaussian_splat import composite_backward_cpu

            composite_backward_cpu(
                *[a.numpy() for a in args], H, W, alpha_min, t_final.numpy(), last.numpy(), gc.numpy(), gt.numpy(),
                grads.numpy(), numba.get_num_threads(),
            )  # fmt: skip
        return grads[:, 0:2], grads[:, 2:5], grads[:, 5], grads[:, 6:9], None, None, None, None, None, None


def check_thresholds(alpha_min, transmittance_min, op: str) -> Tuple[float, float]:
    """``alpha_min`` in [0, 0.99] and ``transmittance_min`` in [0, 1): finite numbers."""
    a = check_finite_number(alpha_min, "alpha_min", op, 0.0)
    t = check_finite_number(transmittance_min, "transmittance_min", op, 0.0)
    if a > ALPHA_MAX or t >= 1.0:
        raise P3DLabValueError(f"{op}: need 0 <= alpha_min <= 0.99 and 0 <= transmittance_min < 1, got {a}, {t}")
    return a, t


def rasterize_gaussians(
    means2d: torch.Tensor,
    conics: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    depths: torch.Tensor,
    radii: torch.Tensor,
    image_size: Tuple[int, int],
    alpha_min: float = 1.0 / 255.0,
    transmittance_min: float = 1e-4,
):
    """Composite screen-space Gaussians (``project_gaussians``' output, colours (N, 3)) front to back.

    Gaussians with radius 0 are skipped; the others are drawn in ascending depth (ties: lower index)
    from 16 x 16 tile lists. At pixel centre (j, i), Gaussian n contributes ``alpha = min(0.99, o
    exp(-q/2))``, ``q = d^T conic d``, ``d = means2d_n - (j, i)``, where ``q <= 9`` and ``alpha >=
    alpha_min``; compositing stops before the first Gaussian that would bring the transmittance below
    ``transmittance_min``. Returns ``(color (H, W, 3), transmittance (H, W))``: the image over a black
    background and the light let through (``alpha = 1 - T``; over a background b the image is
    ``color + T b``). Differentiable in means2d, conics, opacities and colors.
    """
    op = "rasterize_gaussians"
    H, W = check_screen_gaussians(means2d, conics, opacities, colors, depths, radii, image_size, op)
    a_min, t_min = check_thresholds(alpha_min, transmittance_min, op)
    with torch.no_grad():
        order = draw_order(depths, radii)
        rects = tile_rects(means2d, radii, H, W)
        pairs = _tile_pairs(rects, order)
    memory_budget.check_fits(op, 8 * 2 * pairs, f"the tile lists of {pairs} (tile, Gaussian) pairs", "image_size")
    color, t_final, _ = _RasterizeGaussians.apply(means2d, conics, opacities, colors, order, rects, H, W, a_min, t_min)
    return color, t_final
