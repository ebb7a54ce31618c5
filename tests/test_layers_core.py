"""Affine, ReLU, the affine-relu sandwich and the losses: known answers, numerical gradients, bad input."""
import math
import re

import numpy as np
import pytest

from fastopt.gradcheck import eval_numerical_gradient, eval_numerical_gradient_array, rel_error
from fastopt.layers import (affine_backward, affine_forward, affine_relu_backward, affine_relu_forward,
                            relu_backward, relu_forward, softmax_loss, svm_loss)


@pytest.fixture
def rng():
    return np.random.default_rng(231)


# ---------------------------------------------------------------- affine


def test_affine_forward_known_answer():
    # CS231n's own check: x, w, b from linspace, out compared with values computed by hand.
    num_inputs, input_shape, output_dim = 2, (4, 5, 6), 3
    input_size = num_inputs * np.prod(input_shape)
    weight_size = output_dim * np.prod(input_shape)
    x = np.linspace(-0.1, 0.5, num=input_size).reshape(num_inputs, *input_shape)
    w = np.linspace(-0.2, 0.3, num=weight_size).reshape(np.prod(input_shape), output_dim)
    b = np.linspace(-0.3, 0.1, num=output_dim)
    out, _ = affine_forward(x, w, b)
    correct_out = np.array([[1.49834967, 1.70660132, 1.91485297],
                            [3.25553199, 3.5141327, 3.77273342]])
    assert rel_error(out, correct_out) < 1e-7


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_affine_forward_formula(rng, dtype):
    x = rng.standard_normal((5, 2, 3)).astype(dtype)
    w = rng.standard_normal((6, 4)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    out, cache = affine_forward(x, w, b)
    assert out.dtype == dtype and out.shape == (5, 4)
    np.testing.assert_array_equal(out, x.reshape(5, 6) @ w + b)
    dx, dw, db = affine_backward(np.ones((5, 4), dtype), cache)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == b.shape
    assert dx.dtype == dw.dtype == db.dtype == dtype


def test_affine_gradients(rng):
    x = rng.standard_normal((10, 2, 3))
    w = rng.standard_normal((6, 5))
    b = rng.standard_normal(5)
    dout = rng.standard_normal((10, 5))
    dx_num = eval_numerical_gradient_array(lambda x: affine_forward(x, w, b)[0], x, dout)
    dw_num = eval_numerical_gradient_array(lambda w: affine_forward(x, w, b)[0], w, dout)
    db_num = eval_numerical_gradient_array(lambda b: affine_forward(x, w, b)[0], b, dout)
    dx, dw, db = affine_backward(dout, affine_forward(x, w, b)[1])
    assert rel_error(dx, dx_num) < 1e-8
    assert rel_error(dw, dw_num) < 1e-8
    assert rel_error(db, db_num) < 1e-8


# ---------------------------------------------------------------- relu


def test_relu_forward_known_answer():
    x = np.linspace(-0.5, 0.5, num=12).reshape(3, 4)
    out, cache = relu_forward(x)
    correct_out = np.array([[0., 0., 0., 0.],
                            [0., 0., 0.04545455, 0.13636364],
                            [0.22727273, 0.31818182, 0.40909091, 0.5]])
    assert rel_error(out, correct_out) < 1e-7
    assert cache is x


def test_relu_subgradient_and_nan():
    x = np.array([-1.0, 0.0, 2.0, np.nan])
    out, cache = relu_forward(x)
    np.testing.assert_array_equal(out[:3], [0.0, 0.0, 2.0])
    assert np.isnan(out[3])
    dx = relu_backward(np.array([5.0, 5.0, 5.0, 5.0]), cache)
    np.testing.assert_array_equal(dx, [0.0, 0.0, 5.0, 0.0])
    # An inf upstream gradient does not leak into units that were off.
    np.testing.assert_array_equal(relu_backward(np.array([np.inf] * 4), cache), [0.0, 0.0, np.inf, 0.0])


def test_relu_gradient(rng):
    x = rng.standard_normal((10, 10))
    x[np.abs(x) < 1e-3] = 0.5  # keep the probes h = 1e-5 away from the kink
    dout = rng.standard_normal(x.shape)
    dx_num = eval_numerical_gradient_array(lambda x: relu_forward(x)[0], x, dout)
    dx = relu_backward(dout, relu_forward(x)[1])
    assert rel_error(dx, dx_num) < 1e-10


def test_affine_relu_sandwich(rng):
    x = rng.standard_normal((2, 3, 4))
    w = rng.standard_normal((12, 10))
    b = rng.standard_normal(10)
    dout = rng.standard_normal((2, 10))
    out, cache = affine_relu_forward(x, w, b)
    np.testing.assert_array_equal(out, np.maximum(x.reshape(2, 12) @ w + b, 0))
    dx, dw, db = affine_relu_backward(dout, cache)
    dx_num = eval_numerical_gradient_array(lambda x: affine_relu_forward(x, w, b)[0], x, dout)
    dw_num = eval_numerical_gradient_array(lambda w: affine_relu_forward(x, w, b)[0], w, dout)
    db_num = eval_numerical_gradient_array(lambda b: affine_relu_forward(x, w, b)[0], b, dout)
    assert rel_error(dx, dx_num) < 1e-8
    assert rel_error(dw, dw_num) < 1e-8
    assert rel_error(db, db_num) < 1e-8


# ---------------------------------------------------------------- losses


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("num_classes", [1, 2, 10])
def test_losses_of_zero_scores(dtype, num_classes):
    x = np.zeros((7, num_classes), dtype)
    y = np.arange(7) % num_classes
    loss, dx = softmax_loss(x, y)
    assert loss == pytest.approx(math.log(num_classes), rel=1e-6, abs=1e-7)
    assert dx.dtype == dtype and isinstance(loss, float)
    loss, dx = svm_loss(x, y)
    assert loss == num_classes - 1  # every wrong class has margin exactly 1
    assert dx.dtype == dtype


def test_softmax_loss_is_stable_for_large_scores(rng):
    x = rng.standard_normal((6, 5))
    y = rng.integers(5, size=6)
    loss, dx = softmax_loss(x, y)
    loss_big, dx_big = softmax_loss(x + 1000.0, y)  # exp(1000) overflows without the shift
    assert np.isfinite(loss_big) and loss_big == pytest.approx(loss, rel=1e-10)
    np.testing.assert_allclose(dx_big, dx, rtol=1e-8, atol=1e-15)


def test_softmax_loss_formula_and_gradient(rng):
    x = 0.001 * rng.standard_normal((50, 10))
    y = rng.integers(10, size=50)
    loss, dx = softmax_loss(x, y)
    probs = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(probs[np.arange(50), y])), rel=1e-12)
    dx_num = eval_numerical_gradient(lambda x: softmax_loss(x, y)[0], x, verbose=False)
    assert rel_error(dx, dx_num) < 1e-8


def test_svm_loss_formula_and_gradient(rng):
    x = rng.standard_normal((50, 10))
    y = rng.integers(10, size=50)
    margins = x - x[np.arange(50), y][:, None] + 1
    assert np.min(np.abs(margins)) > 1e-4  # no probe crosses a kink
    loss, dx = svm_loss(x, y)
    expected = (np.maximum(margins, 0).sum() - 50.0) / 50  # the correct class contributes 1 each
    assert loss == pytest.approx(expected, rel=1e-12)
    dx_num = eval_numerical_gradient(lambda x: svm_loss(x, y)[0], x, verbose=False)
    assert rel_error(dx, dx_num) < 1e-8


def test_svm_known_answer():
    x = np.array([[3.0, 1.0, 2.5], [0.0, 2.0, 0.0]])
    y = np.array([0, 2])
    # row 0: margins 0, max(0, 1-3+1)=0, max(0, 2.5-3+1)=0.5; row 1: 1, 3, 0 -> total 4.5 / 2
    loss, dx = svm_loss(x, y)
    assert loss == 2.25
    np.testing.assert_array_equal(dx, np.array([[-1.0, 0.0, 1.0], [1.0, 1.0, -2.0]]) / 2)


# ---------------------------------------------------------------- bad input


def _unchanged(*arrays):
    return [(a, a.copy()) for a in arrays]


def _assert_unchanged(saved):
    for a, copy in saved:
        np.testing.assert_array_equal(a, copy)


@pytest.mark.parametrize("make, error, fragment", [
    (lambda x, w, b: (x.astype(complex), w, b), TypeError, "x must have a real numeric dtype"),
    (lambda x, w, b: (x, w, [0.0] * 4), TypeError, "b must be a NumPy array"),
    (lambda x, w, b: (x[0, 0], w, b), ValueError, "x must have shape (N, d1, ..., dk)"),
    (lambda x, w, b: (x, w[:5], b), ValueError, "w must have shape (D, M) with D = 6"),
    (lambda x, w, b: (x, w.ravel(), b), ValueError, "w must have shape (D, M)"),
    (lambda x, w, b: (x, w, b[:3]), ValueError, "b must have shape (4,)"),
    (lambda x, w, b: (x.tolist(), w, b), TypeError, "x must be a NumPy array"),
])
def test_affine_bad_input(rng, make, error, fragment):
    x, w, b = rng.standard_normal((5, 2, 3)), rng.standard_normal((6, 4)), rng.standard_normal(4)
    saved = _unchanged(x, w, b)
    args = make(x, w, b)
    with pytest.raises(error, match=re.escape(fragment)):
        affine_forward(*args)
    _assert_unchanged(saved)


def test_backward_bad_dout(rng):
    x, w, b = rng.standard_normal((5, 6)), rng.standard_normal((6, 4)), rng.standard_normal(4)
    _, cache = affine_forward(x, w, b)
    with pytest.raises(ValueError, match=r"dout must have shape \(5, 4\)"):
        affine_backward(np.ones((5, 3)), cache)
    with pytest.raises(TypeError, match="dout must have a real numeric dtype"):
        affine_backward(np.ones((5, 4), complex), cache)
    _, cache = relu_forward(x)
    with pytest.raises(ValueError, match=r"dout must have shape \(5, 6\)"):
        relu_backward(np.ones((6, 5)), cache)
    with pytest.raises(TypeError, match="x must have a real numeric dtype"):
        relu_forward(np.ones(3, dtype=complex))


def test_read_only_operands_convert_as_numpy_would(rng):
    # CS231n passes integer gamma/beta and mixes float32 params with float64 data: promoted as NumPy does.
    x = rng.standard_normal((5, 6))
    w32, b_int = rng.standard_normal((6, 4)).astype(np.float32), np.arange(4)
    out, cache = affine_forward(x, w32, b_int)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, x @ w32.astype(np.float64) + b_int)
    dx, dw, db = affine_backward(np.ones((5, 4), np.float32), cache)
    assert dx.dtype == dw.dtype == db.dtype == np.float64
    out32, cache32 = affine_forward(x.astype(np.float32), w32, np.zeros(4, np.float32))
    assert out32.dtype == np.float32
    assert affine_backward(np.ones((5, 4)), cache32)[1].dtype == np.float64
    r, _ = relu_forward(np.array([-2, 0, 3]))
    assert r.dtype == np.float64 and r.tolist() == [0.0, 0.0, 3.0]
    assert relu_forward(np.ones(3, np.float16))[0].dtype == np.float32
    loss, dx = softmax_loss(np.zeros((3, 4), dtype=np.int64), np.array([0, 1, 2]))
    assert dx.dtype == np.float64 and loss == pytest.approx(math.log(4))


@pytest.mark.parametrize("loss_fn", [softmax_loss, svm_loss])
@pytest.mark.parametrize("x, y, error, fragment", [
    (np.zeros((3, 4)), np.array([0.0, 1.0, 2.0]), TypeError, "y must have an integer dtype"),
    (np.zeros((3, 4)), np.array([True, False, True]), TypeError, "y must have an integer dtype"),
    (np.zeros((3, 4)), [0, 1, 2], TypeError, "y must be a NumPy array"),
    (np.zeros((3, 4)), np.array([0, 1]), ValueError, "y must have shape (3,)"),
    (np.zeros((3, 4)), np.array([[0, 1, 2]]), ValueError, "y must have shape (3,)"),
    (np.zeros((3, 4)), np.array([0, 4, 1]), ValueError, "labels in [0, 4)"),
    (np.zeros((3, 4)), np.array([0, -1, 1]), ValueError, "labels in [0, 4)"),
    (np.zeros(4), np.array([0]), ValueError, "x must be scores of shape (N, C)"),
    (np.zeros((0, 4)), np.array([], dtype=int), ValueError, "x must be scores of shape (N, C)"),
    (np.zeros((3, 4), dtype=complex), np.array([0, 1, 2]), TypeError, "x must have a real numeric dtype"),
])
def test_loss_bad_input(loss_fn, x, y, error, fragment):
    saved = _unchanged(x, *([y] if isinstance(y, np.ndarray) else []))
    with pytest.raises(error, match=re.escape(fragment)):
        loss_fn(x, y)
    _assert_unchanged(saved)
