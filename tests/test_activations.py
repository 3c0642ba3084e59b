"""``kernels.activations``: float32 sigmoid and softplus without libm against float64 references,
and the packing kernels that apply them to a ``VoxelRadianceField``'s raw parameters."""

import numpy as np
import pytest
import torch
from numba import njit

from p3dlab.kernels import volume_cpu as vc


@njit(cache=False)
def _apply(x, out_sigmoid, out_softplus, out_pair):
    for i in range(x.shape[0]):
        out_sigmoid[i] = vc._sigmoid(x[i])
        out_softplus[i] = vc._softplus(x[i])
        out_pair[0, i], out_pair[1, i] = vc._softplus_and_sigmoid(x[i])


def _activations(x):
    """sigmoid(x) and softplus(x) in float64, after checking that the pair function gives the same
    bits (NaN where both are NaN)."""
    s, p, pair = np.empty_like(x), np.empty_like(x), np.empty((2, x.size), x.dtype)
    _apply(x, s, p, pair)
    assert np.array_equal(pair[0], p, equal_nan=True) and np.array_equal(pair[1], s, equal_nan=True)
    return s.astype(np.float64), p.astype(np.float64)


def test_sigmoid_and_softplus_are_within_a_few_float32_units_of_float64():
    x = np.concatenate([np.linspace(-100, 100, 400001), np.geomspace(1e-30, 1, 1000), -np.geomspace(1e-30, 1, 1000)])
    x = x.astype(np.float32)
    sig, sp = _activations(x)
    xd = torch.from_numpy(x).double()
    sig_ref, sp_ref = torch.sigmoid(xd).numpy(), torch.nn.functional.softplus(xd, threshold=1e9).numpy()
    normal = x >= -87  # above: the results are normal float32 numbers
    for ours, ref in ((sig, sig_ref), (sp, sp_ref)):
        rel = np.abs(ours - ref)[normal] / ref[normal]
        assert rel.max() < 4e-7, rel.max()  # 2^-24 = 6e-8 is half a float32 unit
        assert np.abs(ours - ref)[~normal].max() < 2e-38
    assert sp[x == 0][0] == pytest.approx(np.log(2), rel=1e-7) and sig[x == 0][0] == 0.5
    assert np.all(np.diff(sig[np.argsort(x)]) >= 0)  # monotone, as the sums of a grid's colours expect


def test_special_values():
    x = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0, -0.0], np.float32)
    sig, sp = _activations(x)
    assert np.isnan(sig[0]) and np.isnan(sp[0])
    assert sig[1:5].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert sp[1:5].tolist() == [np.inf, 0.0, float(np.float32(1e30)), 0.0]
    assert sig[5] == sig[6] == 0.5


@pytest.mark.parametrize("n_tasks", [1, 2, 3])
def test_packing_applies_the_activations_and_unpacking_their_derivatives(n_tasks):
    g = torch.Generator().manual_seed(0)
    V, D, H, W, scale = 2, 5, 6, 70, 7.5  # 70 columns: blocks of the copies end inside a chunk
    raw_d = (torch.randn(V, 1, D, H, W, generator=g) * 4).numpy()
    raw_c = (torch.randn(V, 3, D, H, W, generator=g) * 4).numpy()
    n = V * D * H * W
    work = np.full((n_tasks, n * 8), np.nan, np.float32)
    sig_d = np.empty(n, np.float32)
    vc.pack_rgb_work_activated(raw_d.reshape(-1), raw_c.reshape(-1), scale, work, sig_d, V)
    rd, rc = torch.from_numpy(raw_d).double(), torch.from_numpy(raw_c).double()
    dens_ref = (scale * torch.nn.functional.softplus(rd)).permute(0, 2, 3, 4, 1).reshape(n)
    cols_ref = torch.sigmoid(rc).permute(0, 2, 3, 4, 1).reshape(n, 3)
    for t in range(n_tasks):
        vox = torch.from_numpy(work[t].reshape(n, 8)).double()
        assert torch.allclose(vox[:, 0], dens_ref, rtol=4e-7, atol=0)
        assert torch.allclose(vox[:, 1:4], cols_ref, rtol=4e-7, atol=0)
        assert torch.equal(vox[:, 4:], torch.zeros(n, 4, dtype=torch.float64))
    assert torch.allclose(torch.from_numpy(sig_d).double(), torch.sigmoid(rd).reshape(n), rtol=4e-7, atol=0)
    # gradients in the accumulators: the sums over tasks, through the activations' derivatives
    grads = torch.randn(n_tasks, n, 4, generator=g)
    work.reshape(n_tasks, n, 8)[:, :, 4:] = grads.numpy()
    first, second = np.empty((V, 1, D, H, W), np.float32), np.empty((V, 3, D, H, W), np.float32)
    vc.unpack_rgb_work_sum_activated(work, sig_d, scale, first.reshape(-1), second.reshape(-1), V)
    total = grads.double().sum(0).reshape(V, D, H, W, 4).permute(0, 4, 1, 2, 3)
    c = torch.from_numpy(work[0].reshape(V, D, H, W, 8)[..., 1:4]).double().permute(0, 4, 1, 2, 3)
    ref_d = total[:, :1] * scale * torch.sigmoid(rd)
    ref_c = total[:, 1:] * c * (1 - c)
    assert torch.allclose(torch.from_numpy(first).double(), ref_d, rtol=2e-6, atol=1e-7 * float(ref_d.abs().max()))
    assert torch.allclose(torch.from_numpy(second).double(), ref_c, rtol=2e-6, atol=1e-7 * float(ref_c.abs().max()))
