"""Image losses and metrics shared by volume fitting, NeRF and Gaussian splatting."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from p3dlab.errors import P3DLabValueError


def psnr(prediction: torch.Tensor, target: torch.Tensor, max_value: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB: ``10 log10(max^2 / MSE)``."""
    mse = F.mse_loss(prediction, target).clamp(min=1e-12)
    return 10.0 * torch.log10(torch.as_tensor(max_value**2, dtype=mse.dtype) / mse)


def huber(x: torch.Tensor, y: torch.Tensor, scaling: float = 0.1) -> torch.Tensor:
    """Pseudo-Huber loss ``s^2 (sqrt(1 + ((x - y)/s)^2) - 1)``: quadratic near 0, linear far away."""
    diff = (x - y) / scaling
    return (scaling**2 * (torch.sqrt(1 + diff**2) - 1)).mean()


def _gaussian_window_1d(window_size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Normalised 1D Gaussian ``g_i = exp(-i^2 / (2 sigma^2)) / sum_j exp(-j^2 / (2 sigma^2))`` for
    ``i = -(w-1)/2 .. (w-1)/2``. The 2D window is its outer product ``g g^T`` (separable)."""
    offsets = torch.arange(window_size, dtype=dtype, device=device) - (window_size - 1) / 2
    weights = torch.exp(-(offsets**2) / (2.0 * sigma**2))
    return weights / weights.sum()


def _blur_matrix(size: int, window: torch.Tensor, padding: str) -> torch.Tensor:
    """The 1D Gaussian blur of a signal of ``size`` samples as a matrix: ``blurred = B @ signal``.

    ``"valid"``: B is (size - w + 1, size) with ``B[i, i + k] = window[k]`` (whole windows only).
    ``"reflect"``: B is (size, size); tap ``k`` of output ``i`` reads sample ``j = i + k - (w - 1)/2``,
    mirrored at the ends (``-j`` below 0, ``2 (size - 1) - j`` above ``size - 1``), as ``F.pad``'s
    reflect mode does."""
    w = window.shape[0]
    half = (w - 1) // 2
    taps = torch.arange(w, device=window.device)
    if padding == "valid":
        rows = torch.arange(size - w + 1, device=window.device)[:, None]
        columns = rows + taps
    else:
        rows = torch.arange(size, device=window.device)[:, None]
        columns = rows + taps - half
        columns = torch.where(columns < 0, -columns, columns)
        columns = torch.where(columns > size - 1, 2 * (size - 1) - columns, columns)
    matrix = torch.zeros(rows.shape[0], size, dtype=window.dtype, device=window.device)
    matrix.scatter_add_(1, columns, window.expand(rows.shape[0], w).contiguous())
    return matrix


def _check_ssim_arguments(prediction, target, window_size, sigma, data_range, reduction, padding) -> None:
    if not isinstance(prediction, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise P3DLabValueError("ssim: prediction and target must be torch tensors")
    if prediction.shape != target.shape:
        raise P3DLabValueError(
            f"ssim: prediction and target must have the same shape, got {tuple(prediction.shape)} and "
            f"{tuple(target.shape)}"
        )
    if prediction.dim() < 3:
        raise P3DLabValueError(
            f"ssim: images are channels-last (..., H, W, C); got a tensor of shape {tuple(prediction.shape)}"
        )
    if not prediction.is_floating_point() or not target.is_floating_point():
        raise P3DLabValueError(f"ssim: images must be floating point, got {prediction.dtype} and {target.dtype}")
    if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1 or window_size % 2 == 0:
        raise P3DLabValueError(f"ssim: window_size must be a positive odd integer, got {window_size!r}")
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise P3DLabValueError(f"ssim: sigma must be a positive finite number, got {sigma!r}")
    if not (isinstance(data_range, (int, float)) and math.isfinite(data_range) and data_range > 0):
        raise P3DLabValueError(f"ssim: data_range must be a positive finite number, got {data_range!r}")
    if reduction not in ("mean", "none"):
        raise P3DLabValueError(f"ssim: reduction must be 'mean' or 'none', got {reduction!r}")
    if padding not in ("valid", "reflect"):
        raise P3DLabValueError(f"ssim: padding must be 'valid' or 'reflect', got {padding!r}")
    height, width = prediction.shape[-3], prediction.shape[-2]
    if padding == "valid" and (height < window_size or width < window_size):
        raise P3DLabValueError(
            f"ssim: with padding='valid' the image ({height}x{width}) must be at least window_size={window_size} "
            "pixels on each side; use a smaller window or padding='reflect'"
        )
    if padding == "reflect" and (height <= window_size // 2 or width <= window_size // 2):
        raise P3DLabValueError(
            f"ssim: with padding='reflect' the image ({height}x{width}) must be larger than window_size // 2 = "
            f"{window_size // 2} pixels on each side"
        )


def ssim(
    prediction: torch.Tensor,
    target: torch.Tensor,
    window_size: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
    reduction: str = "mean",
    padding: str = "valid",
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) of channels-last images, differentiable.

    Images are ``(..., H, W, C)``, as the kit's renderers return them; every channel of every image is
    compared on its own. With a normalised Gaussian window ``w`` (``window_size`` taps, standard
    deviation ``sigma`` pixels) the local statistics at each pixel are

        mu_x = w * x,  sigma_x^2 = w * x^2 - mu_x^2,  sigma_xy = w * (x y) - mu_x mu_y

    (population covariance: the weights sum to 1, no ``n / (n - 1)`` correction), and

        SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))

    with ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` and ``L = data_range``. Identical images give 1.

    Borders: ``padding="valid"`` (default) evaluates SSIM only where the whole window lies inside the
    image, so the map is ``(..., H - w + 1, W - w + 1, C)``; its mean is scikit-image's
    ``structural_similarity(..., gaussian_weights=True, use_sample_covariance=False)``, which also
    drops the ``(w - 1) / 2`` border pixels. ``padding="reflect"`` mirrors the image at its edges
    (``a b c | b a``) and returns a map of the input's size, so every pixel counts, borders included.

    ``reduction="mean"`` returns the mean of the map over everything (a scalar); ``"none"`` returns the
    map itself. ``1 - ssim(...)`` is the D-SSIM loss Gaussian splatting trains with.

    The separable blur is two products with banded (H', H) and (W', W) matrices (``_blur_matrix``),
    which hold the border rule too; the five local moments are blurred in one batched product.
    """
    _check_ssim_arguments(prediction, target, window_size, sigma, data_range, reduction, padding)
    height, width = prediction.shape[-3], prediction.shape[-2]
    dtype = torch.promote_types(prediction.dtype, target.dtype)
    # (..., H, W, C) -> (..., C, H, W): a blur is then  B_rows @ plane @ B_cols^T
    x = prediction.to(dtype).movedim(-1, -3)
    y = target.to(dtype).movedim(-1, -3)
    window = _gaussian_window_1d(window_size, float(sigma), dtype, x.device)
    blur_rows = _blur_matrix(height, window, padding)
    blur_cols = _blur_matrix(width, window, padding)
    # the five local moments in one batched blur: E[x], E[y], E[x^2], E[y^2], E[x y]
    moments = blur_rows @ torch.stack([x, y, x * x, y * y, x * y]) @ blur_cols.T
    mu_x, mu_y, mean_xx, mean_yy, mean_xy = moments.unbind(0)
    var_x = mean_xx - mu_x**2
    var_y = mean_yy - mu_y**2
    cov_xy = mean_xy - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    ssim_map = ssim_map.movedim(-3, -1)
    if reduction == "mean":
        return ssim_map.mean()
    return ssim_map
