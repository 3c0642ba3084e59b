"""Stratified jitter from a counter-based hash (``p3dlab.ops.stratified_jitter``)."""

import numpy as np
import pytest
import torch

from p3dlab.errors import P3DLabValueError
from p3dlab.ops import stratified_jitter

M32 = 0xFFFFFFFF


def _hash32_reference(x):
    """lowbias32 with Python's exact integers, as the kernel's docstring writes it."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    x ^= x >> 16
    return x


def _uniform_reference(seed, n):
    h = _hash32_reference(_hash32_reference((n & M32) ^ _hash32_reference(n >> 32)) ^ seed)
    return (h >> 8) / 2**24


def _even(R, P, dtype=torch.float64):
    start = torch.linspace(1.0, 2.0, R, dtype=dtype)[:, None]
    return start + 0.25 * torch.arange(P, dtype=dtype)[None]  # spacing 0.25


def test_jitter_equals_the_documented_hash_exactly():
    lengths = _even(7, 5)
    gen = torch.Generator().manual_seed(3)
    seed = int(torch.randint(0, 2**32, (1,), generator=torch.Generator().manual_seed(3)))
    out = stratified_jitter(lengths, gen)
    ref = torch.tensor(
        [
            [float(lengths[r, i]) + (_uniform_reference(seed, r * 5 + i) - 0.5) * 0.25 for i in range(5)]
            for r in range(7)
        ],
        dtype=torch.float64,
    )
    assert torch.allclose(out, ref, rtol=0, atol=1e-15)


def test_the_high_bits_of_the_sample_index_are_mixed_in():
    from p3dlab.kernels.stratified import uniform

    for n in (0, 1, 12345):
        assert uniform(7, n + 2**32) == _uniform_reference(7, n + 2**32) != uniform(7, n) == _uniform_reference(7, n)


@pytest.mark.parametrize("P", [48, 64])
def test_rays_whose_counters_reach_past_2_to_the_32_follow_the_hash(P):
    """Ray r's samples draw counters r P … r P + P - 1; the kernel hashes their high word once per
    ray unless those cross a multiple of 2^32 (P = 48 at r = 2^32 // 48 does, P = 64 never does).
    The rows of a (r + 1, P) view with stride 0 share one row of memory."""
    from p3dlab.kernels.stratified import jitter_ray

    r = 2**32 // P
    row = np.arange(P, dtype=np.float64) * 0.25 + 1.0
    lengths = np.lib.stride_tricks.as_strided(row, shape=(r + 1, P), strides=(0, 8))
    out_row = np.zeros(P)
    out = np.lib.stride_tricks.as_strided(out_row, shape=(r + 1, P), strides=(0, 8))
    jitter_ray(lengths, 99, r, out)
    ref = [row[i] + (_uniform_reference(99, r * P + i) - 0.5) * 0.25 for i in range(P)]
    assert (r * P) >> 32 != (r * P + P - 1) >> 32 if P == 48 else (r * P) >> 32 == 1
    assert np.allclose(out_row, ref, rtol=0, atol=1e-15)


def test_offsets_are_uniform_and_independent():
    R, P = 2000, 64
    lengths = _even(R, P)
    u = (stratified_jitter(lengths, torch.Generator().manual_seed(0)) - lengths) / 0.25 + 0.5  # in [0, 1)
    assert 0.0 <= float(u.min()) and float(u.max()) < 1.0
    flat = u.flatten().numpy()
    counts = np.histogram(flat, bins=32, range=(0, 1))[0]
    expected = flat.size / 32
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 70  # 31 degrees of freedom: P(chi2 > 70) < 1e-4 for a uniform source
    assert abs(flat.mean() - 0.5) < 0.005 and abs(flat.var() - 1 / 12) < 0.002
    centred = u - 0.5
    along = float((centred[:, 1:] * centred[:, :-1]).mean() / centred.var())
    across = float((centred[1:] * centred[:-1]).mean() / centred.var())
    assert abs(along) < 0.01 and abs(across) < 0.01  # neighbouring samples and rays are uncorrelated


def test_the_seed_decides_and_shapes_and_dtypes_are_kept():
    lengths = _even(12, 8, torch.float32).reshape(2, 3, 2, 8)
    a = stratified_jitter(lengths, torch.Generator().manual_seed(1))
    b = stratified_jitter(lengths, torch.Generator().manual_seed(1))
    c = stratified_jitter(lengths, torch.Generator().manual_seed(2))
    assert a.shape == lengths.shape and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(5)
    d = stratified_jitter(lengths)
    torch.manual_seed(5)
    assert torch.equal(d, stratified_jitter(lengths))  # the default generator
    strided = _even(8, 24)[:, ::3]  # not contiguous
    e = stratified_jitter(strided, torch.Generator().manual_seed(1))
    assert ((e - strided).abs() <= 0.375 + 1e-12).all() and (e.diff(dim=-1) > 0).all()
    assert torch.equal(stratified_jitter(torch.zeros(0, 4)), torch.zeros(0, 4))


def test_bad_lengths_are_refused():
    with pytest.raises(P3DLabValueError, match="at least 2 samples"):
        stratified_jitter(torch.zeros(3, 1))
    with pytest.raises(P3DLabValueError, match="floating"):
        stratified_jitter(torch.zeros(3, 4, dtype=torch.int64))


def test_outputs_reuse_the_memory_of_released_ones_and_never_of_kept_ones():
    lengths = _even(4096, 64, torch.float32)  # 1 MB outputs
    kept = stratified_jitter(lengths, torch.Generator().manual_seed(1))
    snapshot = kept.clone()
    second = stratified_jitter(lengths, torch.Generator().manual_seed(2))
    assert second.data_ptr() != kept.data_ptr()
    assert torch.equal(kept, snapshot)  # a kept output is not written over
    released = second.data_ptr()
    del second
    third = stratified_jitter(lengths, torch.Generator().manual_seed(3))
    assert third.data_ptr() == released  # a training loop's last step's lengths serve again
    assert torch.equal(kept, snapshot) and not torch.equal(third, kept)
    assert torch.equal(third, stratified_jitter(lengths, torch.Generator().manual_seed(3)))
