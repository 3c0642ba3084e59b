"""``kernels.exp_neg``: e^{-x} without libm, against ``math.exp`` (what the CUDA build and the
sample-by-sample marcher use), compiled and in plain Python, scalar and in a vectorised loop."""

import math

import numpy as np
from numba import njit

from p3dlab.kernels.exp_neg import X_MAX, exp_neg

_exp_neg = njit(inline="always")(exp_neg)


@njit
def _loop(x, out):
    for i in range(x.shape[0]):  # vectorised by LLVM: no call left after inlining
        out[i] = _exp_neg(x[i])


@njit
def _scalar(v):
    return _exp_neg(v)


def _grid():
    rng = np.random.default_rng(0)
    k = np.arange(0, 1023) * math.log(2)  # the reduction's boundaries, and either side of them
    return np.concatenate(
        [
            rng.uniform(0, 1e-6, 1000),
            rng.uniform(0, 1, 20000),
            rng.uniform(0, 40, 20000),
            rng.uniform(0, X_MAX, 20000),
            k[k <= X_MAX],
            np.nextafter(k[k <= X_MAX], np.inf),
            (np.arange(1023) + 0.5) * math.log(2),
        ]
    )


def test_within_3_ulp_of_the_exact_value_over_the_whole_range():
    x = _grid()
    x = x[x <= X_MAX]
    got = np.empty_like(x)
    _loop(x, got)
    libm = np.exp(-x)
    ulp = np.spacing(libm)
    assert (np.abs(got - libm) <= 4 * ulp).all(), float((np.abs(got - libm) / ulp).max())
    if np.finfo(np.longdouble).eps < np.finfo(np.float64).eps:  # x86's 80-bit floats: 11 more bits
        exact = np.exp(-x.astype(np.longdouble))
        err = np.abs(got.astype(np.longdouble) - exact) / ulp
        assert float(err.max()) <= 3.0, float(err.max())


def test_exact_values_and_special_inputs():
    x = np.array([0.0, -0.0, 1e-300, X_MAX, np.nextafter(X_MAX, np.inf), 745.0, 1e10, np.inf, np.nan])
    got = np.empty_like(x)
    _loop(x, got)
    assert got[0] == 1.0 and got[1] == 1.0 and got[2] == 1.0  # transmittance stays exactly T
    assert got[3] == math.exp(-X_MAX) or abs(got[3] - math.exp(-X_MAX)) <= 2 * np.spacing(math.exp(-X_MAX))
    assert (got[4:8] == 0.0).all()  # below the smallest normal: 0
    assert np.isnan(got[8])


def test_compiled_scalar_vectorised_and_plain_python_agree():
    x = _grid()[::97]
    vec = np.empty_like(x)
    _loop(x, vec)
    scalar = np.array([_scalar(v) for v in x])
    python = np.array([exp_neg(float(v)) for v in x])
    assert np.array_equal(vec, scalar)
    assert np.array_equal(scalar, python)
