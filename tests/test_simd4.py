"""The CPU kernels' four-lane primitives (``p3dlab.kernels.simd4``) against their definitions and
against the scalar forms the CUDA build uses."""

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from p3dlab.kernels.simd4 import add4, axpy4, prefetch_w


@njit
def _axpy4_all(a, qs, ws):
    """Σ_k ws[k] · a[qs[k] : qs[k] + 4] with the vector primitive, and with the scalar one."""
    z = a.dtype.type(0.0)
    vec = (z, z, z, z)
    sca = (z, z, z, z)
    for k in range(qs.shape[0]):
        vec = axpy4(vec, ws[k], a, qs[k])
        sca = (
            sca[0] + ws[k] * a[qs[k]],
            sca[1] + ws[k] * a[qs[k] + 1],
            sca[2] + ws[k] * a[qs[k] + 2],
            sca[3] + ws[k] * a[qs[k] + 3],
        )
    return vec, sca


@njit
def _add4_all(a, qs, ws, g):
    for k in range(qs.shape[0]):
        add4(a, qs[k], ws[k], g)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_axpy4_reads_the_four_lanes_at_q(dtype):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(64).astype(dtype)
    qs = np.array([0, 60, 13, 4, 31, 13], np.int64)  # unaligned, repeated, at both ends
    ws = rng.standard_normal(qs.shape[0]).astype(dtype)
    vec, sca = _axpy4_all(a, qs, ws)
    exact = sum(float(w) * a[q : q + 4].astype(np.float64) for q, w in zip(qs, ws))
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(vec, exact, rtol=tol, atol=tol)
    np.testing.assert_allclose(vec, sca, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add4_scatters_into_the_four_lanes_at_q_only(dtype):
    rng = np.random.default_rng(1)
    a = rng.standard_normal(40).astype(dtype)
    qs = np.array([3, 36, 3, 17], np.int64)
    ws = rng.standard_normal(qs.shape[0]).astype(dtype)
    g = tuple(dtype(v) for v in rng.standard_normal(4))
    expect = a.astype(np.float64)
    for q, w in zip(qs, ws):
        expect[q : q + 4] += float(w) * np.array(g, np.float64)
    out = a.copy()
    _add4_all(out, qs, ws, g)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(out, expect, rtol=tol, atol=tol)
    untouched = np.ones(a.shape[0], bool)
    for q in qs:
        untouched[q : q + 4] = False
    assert np.array_equal(out[untouched], a[untouched])


def test_bad_arrays_are_refused_when_compiling():
    @njit
    def read(a):
        z = a.dtype.type(0)
        return axpy4((z, z, z, z), z, a, 0)

    with pytest.raises(TypingError, match="1-D array"):
        read(np.zeros((4, 4), np.float32))
    with pytest.raises(TypingError, match="float32 or float64"):
        read(np.zeros(8, np.int64))


def test_prefetch_w_is_only_a_hint():
    """Prefetching every element of an array (first and last included) changes no value."""

    @njit
    def touch_all(a):
        for q in range(a.size):
            prefetch_w(a, q)
        return a.sum()

    a = np.arange(1000, dtype=np.float32)
    before = a.copy()
    assert touch_all(a) == before.sum() and np.array_equal(a, before)
