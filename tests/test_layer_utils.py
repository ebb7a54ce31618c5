"""fastopt.layer_utils: CS231n's sandwich layers, numerically gradient-checked."""
import numpy as np
import pytest

from fastopt import layer_utils
from fastopt.gradcheck import eval_numerical_gradient_array, rel_error
from fastopt.layer_utils import (affine_bn_relu_backward, affine_bn_relu_forward, affine_ln_relu_backward,
                                 affine_ln_relu_forward, affine_relu_backward, affine_relu_forward)
from fastopt.layers import affine_forward, batchnorm_forward, relu_forward


def test_affine_relu_cell():
    # FullyConnectedNets.ipynb, "Sandwich" layers (imports changed only)
    np.random.seed(231)
    x = np.random.randn(2, 3, 4)
    w = np.random.randn(12, 10)
    b = np.random.randn(10)
    dout = np.random.randn(2, 10)

    out, cache = affine_relu_forward(x, w, b)
    dx, dw, db = affine_relu_backward(dout, cache)

    dx_num = eval_numerical_gradient_array(lambda x: affine_relu_forward(x, w, b)[0], x, dout)
    dw_num = eval_numerical_gradient_array(lambda w: affine_relu_forward(x, w, b)[0], w, dout)
    db_num = eval_numerical_gradient_array(lambda b: affine_relu_forward(x, w, b)[0], b, dout)

    # "Relative error should be around e-10 or less" (published 2.30e-11, 8.16e-11, 7.83e-12)
    assert rel_error(dx_num, dx) < 1e-9
    assert rel_error(dw_num, dw) < 1e-9
    assert rel_error(db_num, db) < 1e-9


@pytest.mark.parametrize("forward, backward, param", [
    (affine_bn_relu_forward, affine_bn_relu_backward, lambda: {"mode": "train"}),
    (affine_ln_relu_forward, affine_ln_relu_backward, lambda: {}),
])
def test_affine_norm_relu_gradients(forward, backward, param):
    rng = np.random.default_rng(231)
    x = rng.standard_normal((6, 3, 4))
    w = rng.standard_normal((12, 7))
    b = rng.standard_normal(7)
    gamma, beta = rng.standard_normal(7), rng.standard_normal(7)
    dout = rng.standard_normal((6, 7))
    out, cache = forward(x, w, b, gamma, beta, param())
    grads = backward(dout, cache)
    assert out.shape == (6, 7) and len(grads) == 5
    for i, name in enumerate(("x", "w", "b", "gamma", "beta")):
        args = [x, w, b, gamma, beta]

        def f(a, i=i):
            call = list(args)
            call[i] = a
            return forward(*call, param())[0]

        num = eval_numerical_gradient_array(f, args[i].copy(), dout)
        if name == "b" and forward is affine_bn_relu_forward:
            # batchnorm removes a bias before it: the gradient is 0, both sides rounding noise
            assert np.abs(grads[i]).max() < 1e-12 and np.abs(num).max() < 1e-9
            continue
        assert rel_error(num, grads[i]) < 1e-7, name


def test_affine_bn_relu_is_the_composition():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((5, 4)), rng.standard_normal((4, 3)), rng.standard_normal(3)
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    out, _ = affine_bn_relu_forward(x, w, b, gamma, beta, {"mode": "train"})
    a, _ = affine_forward(x, w, b)
    an, _ = batchnorm_forward(a, gamma, beta, {"mode": "train"})
    assert np.array_equal(out, relu_forward(an)[0])


def test_names():
    assert set(layer_utils.__all__) == {"affine_relu_forward", "affine_relu_backward", "affine_bn_relu_forward",
                                        "affine_bn_relu_backward", "affine_ln_relu_forward",
                                        "affine_ln_relu_backward"}
