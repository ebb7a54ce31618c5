"""The elementwise layers (activations, relu, dropout) keep x's shape, 0-d and empty included, and
convert read-only operands of another real dtype as fastopt.layers.core.compute_dtype says."""
import numpy as np
import pytest

from fastopt import layers

ELEMENTWISE = {name: (lambda x, f=getattr(layers, name): f(x)) for name in
               ("relu_forward", "leaky_relu_forward", "elu_forward", "tanh_forward", "sigmoid_forward")}
ELEMENTWISE["dropout_forward"] = lambda x: layers.dropout_forward(x, {"p": 0.5, "mode": "train", "seed": 1})


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
@pytest.mark.parametrize("shape", [(), (0,), (3, 0), (1,), (2, 3, 4)])
def test_shape_kept(name, shape):
    x = np.random.default_rng(0).standard_normal(shape)
    out, cache = ELEMENTWISE[name](x)
    dx = getattr(layers, name.replace("forward", "backward"))(np.ones(shape), cache)
    assert out.shape == dx.shape == shape and out.dtype == dx.dtype == np.float64


def test_relu_converts_like_core_did():
    x = np.arange(-3, 3, dtype=np.int16).reshape(2, 3)[:, ::-1]       # int, non-contiguous
    out, cache = layers.relu_forward(x)
    np.testing.assert_array_equal(out, np.maximum(x, 0).astype(np.float64))
    dx = layers.relu_backward(np.full((2, 3), 2, np.float32), cache)   # float32 dout with float64 x
    assert dx.dtype == np.float64
    np.testing.assert_array_equal(dx, np.where(x > 0, 2.0, 0.0))
    half = layers.relu_forward(np.array([-1.0, 2.0], np.float16))[0]
    assert half.dtype == np.float32 and half.tolist() == [0.0, 2.0]
    assert layers.relu_forward is layers.core.relu_forward is layers.activations.relu_forward
