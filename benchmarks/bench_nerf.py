"""NeRF: time to 25 dB held-out PSNR on the default synthetic 64² scene (20 views, 4 held out)."""

from __future__ import annotations

import torch

from benchmarks.harness import Result
from p3dlab.config import fast_mode
from p3dlab.data import multiview_dataset
from p3dlab.nerf import HybridRadianceField, NeuralRadianceField, fit_nerf


def _time_to_25db(name, field, iterations, **kwargs):
    torch.manual_seed(0)
    size = 32 if fast_mode() else 64
    train, test = multiview_dataset(n_views=20, n_test=4, image_size=size)
    hist = fit_nerf(field, train, test, iterations=iterations, eval_every=10, target_psnr=25.0, **kwargs)
    label = (
        f"{name} to 25 dB held-out ({size}^2, 20 views; final {hist.test_psnr[-1]:.1f} dB after "
        f"{iterations} it. in {hist.seconds[-1]:.0f} s)"
    )
    reached = hist.seconds_to_target if hist.seconds_to_target is not None else float("inf")
    return Result(label, reached, target="<= 300 s")


def bench_nerf_hybrid():
    """The lesson's default field: 48³ grid of density + 8 features, 32-unit colour MLP."""
    return _time_to_25db("hybrid grid+MLP NeRF 48^3", HybridRadianceField(48), 100 if fast_mode() else 300, lr=0.05)


def bench_nerf_mlp():
    """A small version of the book's MLP (L = 6, 3 x 64 units): no grid at all."""
    field = NeuralRadianceField(n_hidden=64, n_layers=3)
    return _time_to_25db("MLP NeRF 3x64", field, 100 if fast_mode() else 300, lr=5e-3, lr_mlp=5e-3)


ALL = [bench_nerf_hybrid, bench_nerf_mlp]
