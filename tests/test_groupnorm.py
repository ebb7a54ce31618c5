"""Spatial group normalization: compiled kernels against their NumPy twin, gradients, layer API."""
import numpy as np
import pytest

import fastopt
from fastopt import _backend
from fastopt.gradcheck import eval_numerical_gradient_array, rel_error
from fastopt.layers import spatial_groupnorm_backward, spatial_groupnorm_forward
from fastopt.reference import norm as twin

DTYPES = [np.float32, np.float64]
# (N, C, H, W, G): size-1 axes, odd sizes, a group of 1 channel and of all channels, S not a
# multiple of the kernel's 32 lanes, and one of >= 1M elements split across threads.
SHAPES = [(1, 1, 1, 1, 1), (3, 6, 1, 7, 3), (2, 4, 5, 5, 4), (5, 6, 7, 3, 1), (1, 3, 1023, 1, 3),
          (16, 32, 48, 48, 8)]


def _kernels():
    return _backend.kernels("norm")


def _data(shape, dtype, seed=0):
    n, c, h, w, g = shape
    rng = np.random.default_rng(seed)
    x = (3 * rng.standard_normal((n, c, h * w)) + 5).astype(dtype)
    gamma, beta = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    return x, gamma, beta, dout, g


def _run(mod, x, gamma, beta, dout, g, eps=1e-5, n_threads=1):
    n, c, s = x.shape
    out, mean, inv_std = np.empty_like(x), np.empty(n * g, x.dtype), np.empty(n * g, x.dtype)
    mod.spatial_groupnorm_forward(x, gamma, beta, g, eps, out, mean, inv_std, n_threads)
    dx, dgamma, dbeta = np.empty_like(x), np.empty_like(gamma), np.empty_like(gamma)
    mod.spatial_groupnorm_backward(dout, x, mean, inv_std, gamma, g, dx, dgamma, dbeta, n_threads)
    return out, mean, inv_std, dx, dgamma, dbeta


@pytest.mark.parametrize("simd", ["sse2", "avx2"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_matches_twin(shape, dtype, simd):
    if _backend.backend() != "cython":
        pytest.skip("compiled core not active")
    if simd == "avx2" and not _backend.avx2_supported():
        pytest.skip("no AVX2 build or CPU")
    args = _data(shape, dtype)
    with _backend.preserved():
        _backend.set_simd(simd)
        assert _backend.simd_variant("norm") == simd
        mine = _run(_kernels(), *args)
    ref = _run(twin, *args)
    rtol, atol = (2e-4, 2e-5) if dtype == np.float32 else (1e-11, 1e-12)
    for name, a, b in zip(("out", "mean", "inv_std", "dx", "dgamma", "dbeta"), mine, ref):
        scale = 1 + np.abs(b).max() if name in ("dgamma", "dbeta") else 1
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol * scale, err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_results_do_not_depend_on_threads(dtype):
    if _backend.backend() != "cython":
        pytest.skip("compiled core not active")
    args = _data((16, 32, 48, 48, 8), dtype, seed=3)
    one = _run(_kernels(), *args, n_threads=1)
    two = _run(_kernels(), *args, n_threads=2)
    for a, b in zip(one, two):
        assert np.array_equal(a, b)


def test_kernel_checks_buffer_sizes():
    if _backend.backend() != "cython":
        pytest.skip("compiled core not active")
    k = _kernels()
    x, gamma, beta, dout, g = _data((2, 6, 2, 2, 3), np.float64)
    n, c, s = x.shape
    out, mean, inv_std = np.empty_like(x), np.empty(n * g), np.empty(n * g)
    bad = [
        (x, gamma[:5], beta, g, 1e-5, out, mean, inv_std, 1),
        (x, gamma, beta, 4, 1e-5, out, mean, inv_std, 1),
        (x, gamma, beta, g, 1e-5, out, mean[:5], inv_std, 1),
        (x, gamma, beta, g, 1e-5, out[:1], mean, inv_std, 1),
    ]
    for args in bad:
        with pytest.raises(ValueError):
            k.spatial_groupnorm_forward(*args)
    k.spatial_groupnorm_forward(x, gamma, beta, g, 1e-5, out, mean, inv_std, 1)
    dx, dgamma, dbeta = np.empty_like(x), np.empty(c), np.empty(c)
    with pytest.raises(ValueError):
        k.spatial_groupnorm_backward(dout, x, mean, inv_std, gamma, g, dx, dgamma[:2], dbeta, 1)
    with pytest.raises(ValueError):
        k.spatial_groupnorm_backward(dout[:1], x, mean, inv_std, gamma, g, dx, dgamma, dbeta, 1)


def test_layer_matches_formula_and_numerical_gradient():
    rng = np.random.default_rng(7)
    N, C, H, W, G = 3, 6, 3, 4, 3
    x = 2 * rng.standard_normal((N, C, H, W)) + 1
    gamma, beta = rng.standard_normal(C), rng.standard_normal(C)
    out, cache = spatial_groupnorm_forward(x, gamma, beta, G, {"eps": 1e-5})
    xg = x.reshape(N, G, -1)
    xhat = ((xg - xg.mean(axis=2, keepdims=True)) / np.sqrt(xg.var(axis=2, keepdims=True) + 1e-5)).reshape(x.shape)
    np.testing.assert_allclose(out, gamma[:, None, None] * xhat + beta[:, None, None], rtol=1e-12, atol=1e-12)

    dout = rng.standard_normal(x.shape)
    dx, dgamma, dbeta = spatial_groupnorm_backward(dout, cache)
    f = lambda a: spatial_groupnorm_forward(a, gamma, beta, G, {})[0]  # noqa: E731
    assert rel_error(dx, eval_numerical_gradient_array(f, x, dout)) < 1e-7
    fg = lambda a: spatial_groupnorm_forward(x, a, beta, G, {})[0]  # noqa: E731
    fb = lambda a: spatial_groupnorm_forward(x, gamma, a, G, {})[0]  # noqa: E731
    assert rel_error(dgamma, eval_numerical_gradient_array(fg, gamma.copy(), dout)) < 1e-9
    assert rel_error(dbeta, eval_numerical_gradient_array(fb, beta.copy(), dout)) < 1e-9
    assert dgamma.shape == dbeta.shape == (C,)


def test_param_shape_is_kept_and_dtypes_convert():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    out, cache = spatial_groupnorm_forward(x, np.ones((1, 4, 1, 1), np.int64), np.zeros(4, np.float32), 2, {})
    assert out.dtype == np.float64          # float32 with int64, as NumPy promotes
    dx, dgamma, dbeta = spatial_groupnorm_backward(np.ones(x.shape, np.float32), cache)
    assert dgamma.shape == dbeta.shape == (1, 4, 1, 1) and dx.dtype == np.float64
    out32, _ = spatial_groupnorm_forward(x, np.ones(4, np.float32), np.zeros(4, np.float32), 2, {})
    assert out32.dtype == np.float32


@pytest.mark.parametrize("args, exc, fragment", [
    (lambda x, g, b: (x[0], g, b, 2, {}), ValueError, "x must be 4-D"),
    (lambda x, g, b: (x, g, b, 3, {}), ValueError, "G must divide"),
    (lambda x, g, b: (x, g, b, 0, {}), ValueError, "G must be >= 1"),
    (lambda x, g, b: (x, g, b, 2.0, {}), TypeError, "G must be an int"),
    (lambda x, g, b: (x, g[:3], b, 2, {}), ValueError, "gamma must have shape"),
    (lambda x, g, b: (x, g, b, 2, []), TypeError, "gn_param must be a dict"),
    (lambda x, g, b: (x, g, b, 2, {"eps": -1.0}), ValueError, "gn_param['eps']"),
    (lambda x, g, b: (x.astype(complex), g, b, 2, {}), TypeError, "x must have a real numeric dtype"),
])
def test_layer_rejects_bad_input(args, exc, fragment):
    rng = np.random.default_rng(0)
    x, g, b = rng.standard_normal((2, 4, 2, 2)), np.ones(4), np.zeros(4)
    with pytest.raises(exc, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        spatial_groupnorm_forward(*args(x, g, b))


def test_backward_refuses_another_kind_of_cache():
    from fastopt.layers import layernorm_forward
    _, cache = layernorm_forward(np.ones((2, 3)), np.ones(3), np.zeros(3), {})
    with pytest.raises(ValueError, match="layernorm_forward"):
        spatial_groupnorm_backward(np.ones((2, 3)), cache)


def test_numpy_backend_runs_the_twin():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 3, 3))
    with _backend.preserved():
        fastopt.set_backend("numpy")
        a, _ = spatial_groupnorm_forward(x, np.ones(4), np.zeros(4), 2, {})
    b, _ = spatial_groupnorm_forward(x, np.ones(4), np.zeros(4), 2, {})
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_simd_variants_round_identically(dtype):
    # the AVX2 build has no FMA contraction (setup.py): both variants give the same bits
    if _backend.backend() != "cython" or not _backend.avx2_supported():
        pytest.skip("needs the compiled core and an AVX2 CPU")
    args = _data((3, 12, 9, 11, 4), dtype, seed=5)
    results = {}
    for simd in ("sse2", "avx2"):
        with _backend.preserved():
            _backend.set_simd(simd)
            results[simd] = _run(_kernels(), *args)
    for a, b in zip(results["sse2"], results["avx2"]):
        np.testing.assert_array_equal(a, b)
