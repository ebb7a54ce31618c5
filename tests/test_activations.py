"""Activation layers: compiled kernels against their NumPy twins, gradient checks, the table."""
import inspect

import numpy as np
import pytest
from hypothesis import given, strategies as st

import fastopt
from fastopt import _activation_kernels as K
from fastopt import gradcheck
from fastopt.layers import activations as act
from fastopt.reference import activations as R

NAMES = tuple(act.ACTIVATIONS)
DTYPES = (np.float32, np.float64)
SIZES = (1, 7, 1023, (1 << 20) + 3)
EXACT_FORWARD = ("relu", "leaky_relu")      # no transcendental function: bitwise equal to the twin


def _x(rng, n, dtype):
    x = rng.standard_normal(n) * 3
    x[::5] *= 30                               # saturating and overflow-prone magnitudes
    return x.astype(dtype)


def _param(spec, rng):
    return 0.0 if spec.param is None else float(rng.uniform(0.05, 2.0))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_kernels_match_twins(name, dtype, n, rng):
    spec = act.ACTIVATIONS[name]
    x = _x(rng, n, dtype)
    param = _param(spec, rng)
    out_k, out_r = np.empty_like(x), np.empty_like(x)
    getattr(K, spec.forward_kernel)(x, param, out_k, 2)
    getattr(R, spec.forward_kernel)(x, param, out_r, 2)
    if name in EXACT_FORWARD:
        np.testing.assert_array_equal(out_k, out_r)
    else:   # libm's exp/expm1/tanh against NumPy's: a few units in the last place
        np.testing.assert_allclose(out_k, out_r, rtol=4 * np.finfo(dtype).eps,
                                   atol=4 * np.finfo(dtype).tiny)
    saved = x if spec.saves == "x" else out_r
    dout = rng.standard_normal(n).astype(dtype)
    dx_k, dx_r = np.empty_like(x), np.empty_like(x)
    getattr(K, spec.backward_kernel)(dout, saved, param, dx_k, 2)
    getattr(R, spec.backward_kernel)(dout, saved, param, dx_r, 2)
    np.testing.assert_array_equal(dx_k, dx_r)   # same arithmetic in the same order: bitwise


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_and_twins_agree_on_signed_zeros(name, dtype):
    # assert_allclose above cannot tell -0.0 from +0.0; elu(-0.0) is -0.0 (alpha * expm1(-0.0)),
    # which the twin once returned as +0.0 (np.minimum(-0.0, 0.0) gives +0.0).
    spec = act.ACTIVATIONS[name]
    x = np.array([-0.0, 0.0, -0.0, 0.0], dtype)
    param = 0.0 if spec.param is None else 1.0
    out_k, out_r = np.empty_like(x), np.empty_like(x)
    getattr(K, spec.forward_kernel)(x, param, out_k, 1)
    getattr(R, spec.forward_kernel)(x, param, out_r, 1)
    assert out_k.tobytes() == out_r.tobytes(), (out_k, out_r)


@given(name=st.sampled_from(NAMES), dtype=st.sampled_from(DTYPES), n=st.integers(1, 5000),
       param=st.floats(0.0, 5.0), scale=st.floats(1e-3, 1e3), threads=st.integers(1, 4),
       seed=st.integers(0, 2**32 - 1))
def test_kernels_match_twins_random(name, dtype, n, param, scale, threads, seed):
    spec = act.ACTIVATIONS[name]
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * scale).astype(dtype)
    dout = rng.standard_normal(n).astype(dtype)
    out_k, out_r = np.empty_like(x), np.empty_like(x)
    getattr(K, spec.forward_kernel)(x, param, out_k, threads)
    getattr(R, spec.forward_kernel)(x, param, out_r, 1)
    np.testing.assert_allclose(out_k, out_r, rtol=4 * np.finfo(dtype).eps, atol=4 * np.finfo(dtype).tiny)
    saved = x if spec.saves == "x" else out_r
    dx_k, dx_r = np.empty_like(x), np.empty_like(x)
    getattr(K, spec.backward_kernel)(dout, saved, param, dx_k, threads)
    getattr(R, spec.backward_kernel)(dout, saved, param, dx_r, 1)
    np.testing.assert_array_equal(dx_k, dx_r)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_bitwise_independent_of_threads(name, dtype, rng):
    spec = act.ACTIVATIONS[name]
    n = (1 << 18) + 5
    x = _x(rng, n, dtype)
    dout = rng.standard_normal(n).astype(dtype)
    results = []
    for threads in (1, 2, 3):
        out, dx = np.empty_like(x), np.empty_like(x)
        getattr(K, spec.forward_kernel)(x, 0.3, out, threads)
        getattr(K, spec.backward_kernel)(dout, x if spec.saves == "x" else out, 0.3, dx, threads)
        results.append((out, dx))
    for out, dx in results[1:]:
        np.testing.assert_array_equal(out, results[0][0])
        np.testing.assert_array_equal(dx, results[0][1])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("module", (K, R), ids=("cython", "numpy"))
def test_kernels_in_place(name, module, rng):
    spec = act.ACTIVATIONS[name]
    x = _x(rng, 1001, np.float64)
    dout = rng.standard_normal(1001)
    out = np.empty_like(x)
    getattr(module, spec.forward_kernel)(x, 0.2, out, 1)
    saved = x.copy() if spec.saves == "x" else out
    dx = np.empty_like(x)
    getattr(module, spec.backward_kernel)(dout, saved, 0.2, dx, 1)
    inplace = x.copy()
    getattr(module, spec.forward_kernel)(inplace, 0.2, inplace, 1)
    np.testing.assert_array_equal(inplace, out)
    getattr(module, spec.backward_kernel)(dout, saved, 0.2, dout, 1)
    np.testing.assert_array_equal(dout, dx)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("module", (K, R), ids=("cython", "numpy"))
def test_kernels_check_sizes(name, module):
    spec = act.ACTIVATIONS[name]
    a, short = np.zeros(8), np.zeros(7)
    with pytest.raises(ValueError, match="out must have 8 elements, got 7"):
        getattr(module, spec.forward_kernel)(a, 0.0, short, 1)
    with pytest.raises(ValueError, match="saved must have 8 elements, got 7"):
        getattr(module, spec.backward_kernel)(a, short, 0.0, np.zeros(8), 1)
    with pytest.raises(ValueError, match="dx must have 8 elements, got 7"):
        getattr(module, spec.backward_kernel)(a, np.zeros(8), 0.0, short, 1)


def test_compiled_kernels_refuse_mixed_dtypes():
    with pytest.raises((TypeError, ValueError)):
        K.tanh_forward(np.zeros(4), 0.0, np.zeros(4, np.float32), 1)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_float64(name, rng):
    spec = act.ACTIVATIONS[name]
    x = rng.standard_normal((7, 9))
    x[np.abs(x) < 1e-3] = 0.5                # stay off the kink at 0 (relu family, elu's 2nd derivative)
    dout = rng.standard_normal(x.shape)
    kw = {} if spec.param is None else {spec.param: 0.37}
    out, cache = spec.forward(x, **kw)
    dx = spec.backward(dout, cache)
    dx_num = gradcheck.eval_numerical_gradient_array(lambda z: spec.forward(z, **kw)[0], x, dout, h=1e-6)
    assert gradcheck.rel_error(dx, dx_num) < 1e-8


@pytest.mark.parametrize("name", NAMES)
def test_layer_functions_on_both_backends(name, rng):
    spec = act.ACTIVATIONS[name]
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    dout = rng.standard_normal(x.shape).astype(np.float32)
    out, cache = spec.forward(x)
    dx = spec.backward(dout, cache)
    assert out.shape == dx.shape == x.shape and out.dtype == dx.dtype == np.float32
    fastopt.set_backend("numpy")
    out_r, cache_r = spec.forward(x)
    np.testing.assert_allclose(out_r, out, rtol=1e-6)
    np.testing.assert_allclose(spec.backward(dout, cache_r), dx, rtol=1e-6, atol=1e-7)


def test_layer_functions_non_contiguous_input_unchanged(rng):
    x = rng.standard_normal((6, 8))[:, ::2]
    before = x.copy()
    out, cache = act.elu_forward(x)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_allclose(out, np.where(before > 0, before, np.expm1(before)), rtol=1e-15)
    dx = act.elu_backward(np.ones_like(x), cache)
    np.testing.assert_allclose(dx, np.where(before > 0, 1.0, np.exp(before)), rtol=1e-14)


def test_known_answers():
    x = np.array([-1000.0, -2.0, 0.0, 3.0, 1000.0])
    np.testing.assert_array_equal(act.relu_forward(x)[0], [0, 0, 0, 3, 1000])
    np.testing.assert_allclose(act.leaky_relu_forward(x)[0], [-10, -0.02, 0, 3, 1000])
    np.testing.assert_allclose(act.leaky_relu_forward(x, 0.2)[0], [-200, -0.4, 0, 3, 1000])
    np.testing.assert_allclose(act.elu_forward(x, alpha=2.0)[0], [-2, 2 * np.expm1(-2), 0, 3, 1000])
    np.testing.assert_allclose(act.tanh_forward(x)[0], np.tanh(x))
    with np.errstate(over="raise"):      # the stable form never overflows
        s = act.sigmoid_forward(x)[0]
    np.testing.assert_allclose(s, [0, 1 / (1 + np.exp(2)), 0.5, 1 / (1 + np.exp(-3)), 1])
    g = act.relu_backward(np.full(5, np.inf), act.relu_forward(x)[1])
    np.testing.assert_array_equal(g, [0, 0, 0, np.inf, np.inf])   # inf does not leak into dead units


def test_table_declares_inits_kernels_and_signatures():
    for name, spec in act.ACTIVATIONS.items():
        assert spec.init == ("xavier" if name in ("tanh", "sigmoid") else "he")
        for kernel in (spec.forward_kernel, spec.backward_kernel):
            assert callable(getattr(K, kernel)) and callable(getattr(R, kernel))
            assert getattr(act, kernel) in (spec.forward, spec.backward)
        params = list(inspect.signature(spec.forward).parameters)
        assert params == ["x"] + ([spec.param] if spec.param else [])
    assert inspect.signature(act.leaky_relu_forward).parameters["negative_slope"].default == 0.01
    assert inspect.signature(act.elu_forward).parameters["alpha"].default == 1.0
    assert "activation" in fastopt._backend.FAMILIES and K.GRAIN == R.GRAIN
    assert act.get("elu").check_param(None) == 1.0 and act.get("relu").check_param(None) == 0.0
    assert act.get("leaky_relu").check_param(0.2) == 0.2
    with pytest.raises(ValueError, match="negative_slope must be >= 0.0"):
        act.get("leaky_relu").check_param(-0.1)


def test_bad_input():
    x = np.zeros(3)
    with pytest.raises(TypeError, match="x must be a NumPy array"):
        act.relu_forward([1.0, 2.0])
    with pytest.raises(TypeError, match="x must have dtype float32 or float64"):
        act.tanh_forward(np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="negative_slope must be >= 0.0"):
        act.leaky_relu_forward(x, -1.0)
    with pytest.raises(TypeError, match="alpha must be a real number"):
        act.elu_forward(x, alpha="1")
    with pytest.raises(TypeError):
        act.relu_forward(x, 0.5)                  # relu has no hyperparameter
    out, cache = act.tanh_forward(x)
    with pytest.raises(ValueError, match=r"dout must have shape \(3,\)"):
        act.tanh_backward(np.zeros(4), cache)
    with pytest.raises(TypeError, match="dout must have dtype float64"):
        act.tanh_backward(np.zeros(3, np.float32), cache)
    with pytest.raises(TypeError, match="cache must be the cache returned by sigmoid_forward"):
        act.sigmoid_backward(np.zeros(3), cache)
    with pytest.raises(ValueError, match="activation must be one of"):
        act.get("swish")
    with pytest.raises(ValueError, match="kernel family must be one of"):
        fastopt._backend.kernels("nope")
