"""Tests written for mutants that survived the fresh mutation sample (seed 6, 3%; MUTATION.md), group E.

Each test pins a documented behaviour and was checked by hand (tools/mutation_verify.py) to fail
with its mutant applied and to pass without; the mutant is named in the comment above it. The exact
text of each refusal is pinned by tests/error_messages.json (tests/_messages.py), not by `match`.
"""
import numpy as np
import pytest

from fastopt.nn import FullyConnectedNet


def _model(dtype=np.float32, **kw):
    return FullyConnectedNet([5], input_dim=4, num_classes=3, dtype=dtype, rng=0, weight_scale=0.5, **kw)


# FullyConnectedNet.__init____mutmut_218 (dropout_param = None without dropout): a model without
# dropout has CS231n's empty dict `dropout_param = {}` (one CS231n dict serves every dropout layer),
# not None; with dropout it is the layer's settings dict.
def test_a_model_without_dropout_has_an_empty_dropout_param_dict():
    model = _model()
    assert not model.use_dropout
    assert type(model.dropout_param) is dict and model.dropout_param == {}
    assert model.dropout_params == []
    X, y = np.ones((2, 4)), np.array([0, 2])
    model.loss(X, y)
    model.loss(X)
    assert model.dropout_param == {}
    assert _model(dropout_keep_ratio=0.5).dropout_param["p"] == 0.5


# FullyConnectedNet._check_X__mutmut_42 (cast with dtype=None): X of another dtype, or of another
# shape (N, d1, ...), is cast to the model's dtype (loss' docstring): the scores (and loss) are those
# of X cast by hand, in the model's dtype, on both executions (under the mutant such an X was only
# reshaped, and went into the execution in its own dtype).
def test_x_is_cast_to_the_models_dtype_on_both_executions():
    rng = np.random.default_rng(4)
    X64 = rng.standard_normal((6, 2, 2))
    Xint = rng.integers(0, 5, size=(6, 4)).astype(np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    for dtype, X in ((np.float32, X64), (np.float32, X64.reshape(6, 4)), (np.float32, Xint),
                     (np.float64, X64.astype(np.float32)), (np.float64, Xint)):
        for fast in (True, False):
            model = _model(dtype)
            model.fast_path = fast
            ref = np.ascontiguousarray(X.reshape(6, 4), dtype=dtype)
            scores = model.loss(X)
            assert scores.dtype == dtype
            np.testing.assert_array_equal(scores, model.loss(ref))
            loss, grads = model.loss(X, y)
            ref_loss, ref_grads = model.loss(ref, y)
            assert loss == ref_loss
            for k in ref_grads:
                assert grads[k].dtype == dtype
                np.testing.assert_array_equal(grads[k], ref_grads[k])


# FullyConnectedNet._check_y__mutmut_35 (unsigned = None): labels of any integer dtype, not only
# intp, are taken (loss' docstring: "N integer labels in [0, num_classes)"), give the intp labels'
# loss and gradients, and out-of-range ones (too large, or negative) are refused with a ValueError.
def test_labels_of_every_integer_dtype_are_taken_and_bounds_checked():
    X = np.random.default_rng(5).standard_normal((4, 4))
    y = np.array([0, 2, 1, 2], dtype=np.intp)
    ref_loss, ref_grads = _model(np.float64).loss(X, y)
    for dt in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.uint64):
        loss, grads = _model(np.float64).loss(X, y.astype(dt))
        assert loss == ref_loss
        for k in ref_grads:
            np.testing.assert_array_equal(grads[k], ref_grads[k])
        with pytest.raises(ValueError, match=r"y must hold labels in \[0, 2\]"):
            _model(np.float64).loss(X, np.array([0, 3, 1, 2], dtype=dt))
    for dt in (np.int8, np.int16, np.int32):
        with pytest.raises(ValueError, match=r"y must hold labels in \[0, 2\], got values in \[-1, 2\]"):
            _model(np.float64).loss(X, np.array([0, -1, 1, 2], dtype=dt))


# FullyConnectedNet.__init____mutmut_29 (hidden_dims checked with integer=False): a width must be an
# int (class docstring: "sequence of int > 0"); a float, even an integral one, is refused by name with
# a TypeError, and an int width is kept as a Python int (under the mutant every width became a float:
# a float passed this check, and any model with a hidden layer then failed inside NumPy, unnamed).
def test_a_float_hidden_width_is_refused_by_name():
    for widths, i in (([4.0], 0), ([3, 2.5], 1), ([np.float64(3)], 0)):
        with pytest.raises(TypeError, match=rf"hidden_dims\[{i}\] must be an int, got float"):
            FullyConnectedNet(widths, input_dim=4, num_classes=3, rng=0)
    model = FullyConnectedNet([np.int64(3)], input_dim=4, num_classes=3, rng=0)
    assert model.hidden_dims == [3] and type(model.hidden_dims[0]) is int
    assert model.params["W1"].shape == (4, 3)
