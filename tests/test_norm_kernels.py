"""fastopt._norm_kernels against its NumPy twin fastopt.reference.norm, called directly.

Every compiled SIMD variant this machine runs (the SSE2 baseline and, where built and supported, the
AVX2+FMA and AVX-512 modules) is tested: each test takes the module under test as its argument `K`.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastopt import _backend, _norm_kernels
from fastopt.reference import norm as R


VARIANTS = list(_backend.compiled_variants("norm").values())
per_variant = pytest.mark.parametrize("K", VARIANTS, ids=[m.SIMD_VARIANT for m in VARIANTS])

DTYPES = [np.float32, np.float64]
# Relative tolerance kernel vs twin: they differ only in summation order of the float64 statistics
# and in terms grouped in the array's precision (8 rows, or lane blocks) before the float64
# accumulation.
RTOL = {np.float32: 2e-5, np.float64: 1e-11}

# 1, 7, 1023 columns; 8200 is wider than one column block (CB = 8192), so it is split even on one
# thread, and every D >= 9 is split across 2 threads.
BN_SHAPES = [(1, 1), (2, 7), (7, 1023), (64, 7), (130, 33), (3, 8200), (1, 1023)]
SPATIAL_SHAPES = [(1, 1, 1), (2, 3, 7), (7, 2, 33), (4, 5, 1024), (1, 7, 9)]
LN_SHAPES = [(1, 1), (2, 7), (7, 1023), (64, 7), (130, 33), (2, 8200)]


def close(name, got, want, dtype):
    """Elementwise agreement relative to the array's scale (dx has cancellations)."""
    scale = max(1.0, float(np.max(np.abs(want.astype(np.float64)))))
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=RTOL[dtype] * scale, err_msg=name)


def data(seed, shape, dtype, nparam):
    rng = np.random.default_rng(seed)
    loc = rng.uniform(-20, 20)
    x = (loc + rng.uniform(0.1, 5) * rng.standard_normal(shape)).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    gamma = rng.standard_normal(nparam).astype(dtype)
    beta = rng.standard_normal(nparam).astype(dtype)
    rm = rng.standard_normal(nparam).astype(dtype)
    rv = rng.uniform(0.5, 2, nparam).astype(dtype)
    return x, dout, gamma, beta, rm, rv


def run_train(mod, fname, x, gamma, beta, eps, momentum, rm, rv, n_threads):
    nparam = gamma.shape[0]
    out, mean, inv = np.empty_like(x), np.empty(nparam, x.dtype), np.empty(nparam, x.dtype)
    rm, rv = rm.copy(), rv.copy()
    getattr(mod, fname)(x, gamma, beta, eps, momentum, out, mean, inv, rm, rv, n_threads)
    return out, mean, inv, rm, rv


def run_backward(mod, fname, dout, x, mean, inv, gamma, n_threads):
    dx, dg, db = np.empty_like(x), np.empty_like(gamma), np.empty_like(gamma)
    getattr(mod, fname)(dout, x, mean, inv, gamma, dx, dg, db, n_threads)
    return dx, dg, db


common = dict(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from(DTYPES),
              eps=st.floats(1e-8, 1e-1), n_threads=st.sampled_from([1, 2]), K=st.sampled_from(VARIANTS))


@given(shape=st.sampled_from(BN_SHAPES), momentum=st.floats(0, 1), **common)
def test_batchnorm_matches_twin(shape, seed, dtype, eps, momentum, n_threads, K):
    x, dout, gamma, beta, rm, rv = data(seed, shape, dtype, shape[1])
    got = run_train(K, "batchnorm_train_forward", x, gamma, beta, eps, momentum, rm, rv, n_threads)
    want = run_train(R, "batchnorm_train_forward", x, gamma, beta, eps, momentum, rm, rv, n_threads)
    for name, g, w in zip(["out", "mean", "inv_std", "running_mean", "running_var"], got, want):
        close(name, g, w, dtype)
    mean, inv = want[1], want[2]     # same saved statistics for both backwards
    got = run_backward(K, "batchnorm_backward", dout, x, mean, inv, gamma, n_threads)
    want = run_backward(R, "batchnorm_backward", dout, x, mean, inv, gamma, n_threads)
    for name, g, w in zip(["dx", "dgamma", "dbeta"], got, want):
        close(name, g, w, dtype)
    outs = []
    for mod in (K, R):
        out = np.empty_like(x)
        mod.batchnorm_test_forward(x, gamma, beta, rm, rv, eps, out, n_threads)
        outs.append(out)
    close("test out", outs[0], outs[1], dtype)


@given(shape=st.sampled_from(SPATIAL_SHAPES), momentum=st.floats(0, 1), **common)
def test_spatial_batchnorm_matches_twin(shape, seed, dtype, eps, momentum, n_threads, K):
    x, dout, gamma, beta, rm, rv = data(seed, shape, dtype, shape[1])
    got = run_train(K, "spatial_batchnorm_train_forward", x, gamma, beta, eps, momentum, rm, rv, n_threads)
    want = run_train(R, "spatial_batchnorm_train_forward", x, gamma, beta, eps, momentum, rm, rv, n_threads)
    for name, g, w in zip(["out", "mean", "inv_std", "running_mean", "running_var"], got, want):
        close(name, g, w, dtype)
    mean, inv = want[1], want[2]
    got = run_backward(K, "spatial_batchnorm_backward", dout, x, mean, inv, gamma, n_threads)
    want = run_backward(R, "spatial_batchnorm_backward", dout, x, mean, inv, gamma, n_threads)
    for name, g, w in zip(["dx", "dgamma", "dbeta"], got, want):
        close(name, g, w, dtype)
    outs = []
    for mod in (K, R):
        out = np.empty_like(x)
        mod.spatial_batchnorm_test_forward(x, gamma, beta, rm, rv, eps, out, n_threads)
        outs.append(out)
    close("test out", outs[0], outs[1], dtype)


@given(shape=st.sampled_from(LN_SHAPES), **common)
def test_layernorm_matches_twin(shape, seed, dtype, eps, n_threads, K):
    x, dout, gamma, beta, _, _ = data(seed, shape, dtype, shape[1])
    res = []
    for mod in (K, R):
        out, mean, inv = np.empty_like(x), np.empty(shape[0], dtype), np.empty(shape[0], dtype)
        mod.layernorm_forward(x, gamma, beta, eps, out, mean, inv, n_threads)
        res.append((out, mean, inv))
    for name, g, w in zip(["out", "mean", "inv_std"], *res):
        close(name, g, w, dtype)
    mean, inv = res[1][1], res[1][2]
    got = run_backward(K, "layernorm_backward", dout, x, mean, inv, gamma, n_threads)
    want = run_backward(R, "layernorm_backward", dout, x, mean, inv, gamma, n_threads)
    for name, g, w in zip(["dx", "dgamma", "dbeta"], got, want):
        close(name, g, w, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@per_variant
def test_known_answer_batchnorm(dtype, K):
    # Two rows: mean = (a+b)/2, biased var = ((a-b)/2)^2, xhat = -1, +1.
    x = np.array([[1.0, -3.0], [3.0, 5.0]], dtype)
    gamma, beta = np.array([2.0, 1.0], dtype), np.array([0.5, 0.0], dtype)
    rm, rv = np.array([1.0, 0.0], dtype), np.array([1.0, 2.0], dtype)
    out, mean, inv = np.empty_like(x), np.empty(2, dtype), np.empty(2, dtype)
    K.batchnorm_train_forward(x, gamma, beta, 0.0, 0.75, out, mean, inv, rm, rv, 1)
    np.testing.assert_allclose(mean, [2.0, 1.0])
    np.testing.assert_allclose(inv, [1.0, 0.25])
    np.testing.assert_allclose(out, [[-1.5, -1.0], [2.5, 1.0]])
    np.testing.assert_allclose(rm, [0.75 * 1 + 0.25 * 2, 0.25 * 1])
    np.testing.assert_allclose(rv, [0.75 * 1 + 0.25 * 1, 0.75 * 2 + 0.25 * 16])


@pytest.mark.parametrize("dtype", DTYPES)
@per_variant
def test_known_answer_layernorm(dtype, K):
    x = np.array([[1.0, 3.0], [0.0, -4.0]], dtype)
    gamma, beta = np.array([1.0, 2.0], dtype), np.array([0.0, 1.0], dtype)
    out, mean, inv = np.empty_like(x), np.empty(2, dtype), np.empty(2, dtype)
    K.layernorm_forward(x, gamma, beta, 0.0, out, mean, inv, 1)
    np.testing.assert_allclose(mean, [2.0, -2.0])
    np.testing.assert_allclose(inv, [1.0, 0.5])
    np.testing.assert_allclose(out, [[-1.0, 3.0], [1.0, -1.0]])


@per_variant
def test_constant_feature_gives_beta(K):
    # Zero variance: xhat = 0 (no NaN from a negative rounding of E[t^2] - E[t]^2).
    x = np.full((5, 3), 7.25, np.float32)
    gamma, beta = np.ones(3, np.float32), np.arange(3, dtype=np.float32)
    out, mean, inv = run_train(K, "batchnorm_train_forward", x, gamma, beta, 1e-5, 0.9,
                               np.zeros(3, np.float32), np.ones(3, np.float32), 1)[:3]
    np.testing.assert_array_equal(out, np.broadcast_to(beta, x.shape))
    np.testing.assert_array_equal(mean, 7.25)


@pytest.mark.parametrize("dtype", DTYPES)
@per_variant
def test_bitwise_identical_for_any_thread_count(dtype, K):
    rng = np.random.default_rng(7)
    for shape, train, back, nparam in [((257, 1031), "batchnorm_train_forward", "batchnorm_backward", 1031),
                                       ((5, 6, 333), "spatial_batchnorm_train_forward",
                                        "spatial_batchnorm_backward", 6)]:
        x, dout, gamma, beta, rm, rv = data(int(rng.integers(1 << 30)), shape, dtype, nparam)
        one = run_train(K, train, x, gamma, beta, 1e-5, 0.9, rm, rv, 1)
        two = run_train(K, train, x, gamma, beta, 1e-5, 0.9, rm, rv, 2)
        for a, b in zip(one, two):
            np.testing.assert_array_equal(a, b)
        one = run_backward(K, back, dout, x, one[1], one[2], gamma, 1)
        two = run_backward(K, back, dout, x, two[1], two[2], gamma, 2)
        for a, b in zip(one, two):
            np.testing.assert_array_equal(a, b)
    x, dout, gamma, beta, _, _ = data(3, (257, 1031), dtype, 1031)
    res = []
    for n_threads in (1, 2):
        out, mean, inv = np.empty_like(x), np.empty(257, dtype), np.empty(257, dtype)
        K.layernorm_forward(x, gamma, beta, 1e-5, out, mean, inv, n_threads)
        res.append((out, mean, inv) + run_backward(K, "layernorm_backward", dout, x, mean, inv, gamma, n_threads))
    for a, b in zip(*res):
        np.testing.assert_array_equal(a, b)


@per_variant
def test_grain_constant_shared(K):
    assert K.GRAIN == R.GRAIN and K.GRAIN > 0
