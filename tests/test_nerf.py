import math

import pytest
import torch

from p3dlab.nerf import HarmonicEmbedding, NeuralRadianceField, huber, load_checkpoint, psnr, save_checkpoint
from p3dlab.renderer import (
    FoVPerspectiveCameras,
    ImplicitRenderer,
    MonteCarloRaysampler,
    QuadratureRaymarcher,
    look_at_view_transform,
    ray_bundle_to_ray_points,
)


def test_harmonic_embedding_values_and_dimensions():
    emb = HarmonicEmbedding(3, omega_0=0.5)
    x = torch.tensor([[0.3, -1.0]])
    out = emb(x)
    assert out.shape == (1, 2 * (2 * 3 + 1)) and emb.get_output_dim(2) == 14
    freqs = torch.tensor([0.5, 1.0, 2.0])
    expected = torch.cat(
        [torch.sin(x[..., None] * freqs).reshape(1, -1), torch.cos(x[..., None] * freqs).reshape(1, -1), x], -1
    )
    assert torch.allclose(out, expected)
    book = HarmonicEmbedding(60, omega_0=0.1, append_input=False)
    assert book(torch.zeros(5, 3)).shape == (5, 360)
    lin = HarmonicEmbedding(4, logspace=False)
    assert torch.allclose(lin._frequencies, torch.tensor([1.0, 1 + 7 / 3, 1 + 14 / 3, 8.0]))


def test_psnr_and_huber():
    a = torch.zeros(10)
    assert psnr(a + 0.1, a).item() == pytest.approx(20.0)
    assert huber(torch.tensor([0.001]), torch.tensor([0.0])).item() == pytest.approx(0.5 * 0.001**2, rel=1e-2)
    assert huber(torch.tensor([10.0]), torch.tensor([0.0])).item() == pytest.approx(0.1 * 10 - 0.01, rel=1e-3)


def _ball_scene(ray_bundle, **kwargs):
    pts = ray_bundle_to_ray_points(ray_bundle)
    inside = (pts.norm(dim=-1, keepdim=True) < 0.5).float()
    colour = torch.stack(
        [
            0.5 + 0.5 * torch.tanh(3 * pts[..., 0]),
            0.5 + 0.5 * torch.tanh(3 * pts[..., 1]),
            torch.full_like(pts[..., 0], 0.3),
        ],
        -1,
    )
    return 8.0 * inside, colour


def test_a_tiny_nerf_learns_and_checkpoints_round_trip(tmp_path):
    torch.manual_seed(0)
    R, T = look_at_view_transform(2.5, torch.tensor([10.0, 30.0, -20.0, 0.0]), torch.tensor([0.0, 90.0, 180.0, 270.0]))
    cams = FoVPerspectiveCameras(R=R, T=T)
    sampler = MonteCarloRaysampler(-1, 1, -1, 1, 128, 24, 1.5, 3.5)
    renderer = ImplicitRenderer(sampler, QuadratureRaymarcher())
    field = NeuralRadianceField(n_hidden=32, n_layers=3, skips=(2,))
    opt = torch.optim.Adam(field.parameters(), lr=5e-3)
    losses = []
    for step in range(25):
        g = torch.Generator().manual_seed(step)
        target, _ = renderer(cams, _ball_scene, generator=g)
        pred, _ = renderer(cams, field, generator=torch.Generator().manual_seed(step))
        loss = ((pred - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    path = tmp_path / "nerf.pt"
    save_checkpoint(path, field, opt, step=25)
    other = NeuralRadianceField(n_hidden=32, n_layers=3, skips=(2,))
    assert load_checkpoint(path, other)["step"] == 25
    a, _ = renderer(cams, field, generator=torch.Generator().manual_seed(99))
    b, _ = renderer(cams, other, generator=torch.Generator().manual_seed(99))
    assert torch.equal(a, b)
    assert math.isfinite(losses[-1])
