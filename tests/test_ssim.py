"""SSIM (p3dlab.loss.ssim) against scikit-image's structural_similarity, analytic cases and gradcheck."""

import pytest
import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.loss import ssim

try:
    from skimage.metrics import structural_similarity
except ImportError:  # scikit-image is a developer extra; the comparison is skipped without it
    structural_similarity = None

needs_skimage = pytest.mark.skipif(structural_similarity is None, reason="scikit-image not installed")


def _skimage_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    return structural_similarity(
        a.double().numpy(),
        b.double().numpy(),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        channel_axis=-1,
    )


def _image_pairs():
    g = torch.Generator().manual_seed(1)
    base = torch.rand(32, 40, 3, generator=g, dtype=torch.float64)
    smooth = torch.nn.functional.avg_pool2d(base.permute(2, 0, 1)[None], 5, 1, 2)[0].permute(1, 2, 0)
    noisy = (smooth + 0.1 * torch.randn(32, 40, 3, generator=g, dtype=torch.float64)).clamp(0, 1)
    shifted = torch.roll(smooth, shifts=(2, -3), dims=(0, 1))
    constant_a = torch.full((24, 24, 3), 0.3, dtype=torch.float64)
    constant_b = torch.full((24, 24, 3), 0.7, dtype=torch.float64)
    ramp = torch.linspace(0, 1, 24, dtype=torch.float64)[None, :, None].expand(24, 24, 3).clone()
    return {
        "noise": (smooth, noisy),
        "shifted": (smooth, shifted),
        "random": (base, torch.rand(32, 40, 3, generator=g, dtype=torch.float64)),
        "constant": (constant_a, constant_b),
        "constant_vs_ramp": (constant_a, ramp),
        "one_channel": (smooth[..., :1], noisy[..., :1]),
    }


def test_identical_images_give_one():
    image = torch.rand(20, 30, 3, dtype=torch.float64)
    assert ssim(image, image).item() == pytest.approx(1.0, abs=1e-12)
    assert ssim(image, image, padding="reflect").item() == pytest.approx(1.0, abs=1e-12)
    assert torch.allclose(ssim(image, image, reduction="none"), torch.ones(10, 20, 3, dtype=torch.float64))


@needs_skimage
@pytest.mark.parametrize("case", list(_image_pairs()))
def test_matches_scikit_image(case):
    a, b = _image_pairs()[case]
    expected = _skimage_ssim(a, b)
    assert ssim(a, b).item() == pytest.approx(expected, abs=1e-10)
    assert ssim(a.float(), b.float()).item() == pytest.approx(expected, abs=2e-5)


def test_constant_images_analytic():
    # constant images: variances and covariance are 0, so SSIM = (2 a b + C1) / (a^2 + b^2 + C1)
    a, b, c1 = 0.3, 0.7, 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    value = ssim(torch.full((16, 16, 3), a, dtype=torch.float64), torch.full((16, 16, 3), b, dtype=torch.float64))
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_noise_lowers_ssim_monotonically():
    g = torch.Generator().manual_seed(3)
    image = torch.rand(24, 24, 3, generator=g, dtype=torch.float64)
    noise = torch.randn(24, 24, 3, generator=g, dtype=torch.float64)
    values = [ssim(image, image + s * noise).item() for s in (0.0, 0.05, 0.2, 0.5)]
    assert values[0] == pytest.approx(1.0) and all(x > y for x, y in zip(values, values[1:]))


def test_batches_and_map_shapes():
    a, b = torch.rand(2, 4, 16, 18, 3), torch.rand(2, 4, 16, 18, 3)
    assert ssim(a, b, reduction="none").shape == (2, 4, 6, 8, 3)
    assert ssim(a, b, reduction="none", padding="reflect").shape == (2, 4, 16, 18, 3)
    per_image = torch.stack([ssim(a[i, j], b[i, j]) for i in range(2) for j in range(4)])
    assert ssim(a, b).item() == pytest.approx(per_image.mean().item(), abs=1e-6)
    assert ssim(a, b, window_size=5, sigma=1.0).shape == ()


def test_data_range_scales_constants():
    a, b = torch.rand(16, 16, 3, dtype=torch.float64), torch.rand(16, 16, 3, dtype=torch.float64)
    assert ssim(255 * a, 255 * b, data_range=255.0).item() == pytest.approx(ssim(a, b).item(), rel=1e-10)


@pytest.mark.parametrize("padding", ["valid", "reflect"])
def test_gradcheck(padding):
    a = torch.rand(7, 8, 2, dtype=torch.float64, requires_grad=True)
    b = torch.rand(7, 8, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: ssim(x, y, window_size=5, padding=padding), (a, b))
    assert torch.autograd.gradcheck(
        lambda x, y: ssim(x, y, window_size=3, sigma=0.8, reduction="none", padding=padding), (a, b)
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(window_size=4), "odd"),
        (dict(window_size=0), "odd"),
        (dict(sigma=0.0), "sigma"),
        (dict(sigma=float("nan")), "sigma"),
        (dict(data_range=-1.0), "data_range"),
        (dict(reduction="sum"), "reduction"),
        (dict(padding="zeros"), "padding"),
        (dict(window_size=21), "at least"),
    ],
)
def test_bad_arguments(kwargs, match):
    a = torch.rand(16, 16, 3)
    with pytest.raises(P3DLabValueError, match=match):
        ssim(a, a, **kwargs)


def test_bad_images():
    with pytest.raises(P3DLabValueError, match="same shape"):
        ssim(torch.rand(16, 16, 3), torch.rand(16, 16, 1))
    with pytest.raises(P3DLabValueError, match="channels-last"):
        ssim(torch.rand(16, 16), torch.rand(16, 16))
    with pytest.raises(P3DLabValueError, match="floating"):
        ssim(torch.zeros(16, 16, 3, dtype=torch.uint8), torch.zeros(16, 16, 3, dtype=torch.uint8))
    with pytest.raises(P3DLabValueError, match="reflect"):
        ssim(torch.rand(4, 4, 3), torch.rand(4, 4, 3), padding="reflect")


def _conv_reference_map(a: torch.Tensor, b: torch.Tensor, window_size: int, sigma: float, padding: str):
    """SSIM map by 2D convolution with the outer-product window (reflect padding by F.pad)."""
    offsets = torch.arange(window_size, dtype=torch.float64) - (window_size - 1) / 2
    g = torch.exp(-(offsets**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :])[None, None]
    x, y = a.permute(2, 0, 1)[:, None], b.permute(2, 0, 1)[:, None]
    if padding == "reflect":
        half = window_size // 2
        x = torch.nn.functional.pad(x, (half,) * 4, mode="reflect")
        y = torch.nn.functional.pad(y, (half,) * 4, mode="reflect")

    def blur(t):
        return torch.nn.functional.conv2d(t, kernel)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s[:, 0].permute(1, 2, 0)


@pytest.mark.parametrize("padding", ["valid", "reflect"])
def test_map_matches_convolution_reference(padding):
    g = torch.Generator().manual_seed(5)
    a, b = (
        torch.rand(19, 23, 3, generator=g, dtype=torch.float64),
        torch.rand(19, 23, 3, generator=g, dtype=torch.float64),
    )
    expected = _conv_reference_map(a, b, 7, 1.2, padding)
    assert torch.allclose(ssim(a, b, window_size=7, sigma=1.2, reduction="none", padding=padding), expected, atol=1e-12)
