"""FullyConnectedNet and weight init: gradients, initial loss, determinism, state, bad inputs."""
import math

import numpy as np
import pytest

from fastopt.gradcheck import eval_numerical_gradient
from fastopt.nn import FullyConnectedNet, init_weight, weight_std
from test_norm_layers import rel_error as max_rel_error

D, H, C, N = 6, [7, 5], 4, 5


def make(**kw):
    args = dict(hidden_dims=H, input_dim=D, num_classes=C, dtype=np.float64, rng=3, weight_scale=5e-2)
    args.update(kw)
    return FullyConnectedNet(**args)


def batch(n=N, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, D)), rng.integers(0, C, size=n)


@pytest.mark.parametrize("normalization", [None, "batchnorm", "layernorm"])
@pytest.mark.parametrize("reg,reg_type", [(0.0, "l2"), (0.7, "l2"), (0.3, "l1")])
@pytest.mark.parametrize("keep", [1, 0.75])
def test_gradients_match_numerical(normalization, reg, reg_type, keep):
    model = make(normalization=normalization, reg=reg, reg_type=reg_type, dropout_keep_ratio=keep)
    check_model_gradients(model, *batch(), bound=1e-7)


def check_model_gradients(model, X, y, bound, h=1e-5):
    """Every trained param's gradient from model.loss(X, y) against centered differences (float64),
    the dropout masks replayed at every evaluation; the error relative to the gradient's largest entry."""
    rng_state = model.rng.bit_generator.state

    def loss_fixed_masks():
        # Every evaluation replays the same dropout masks: restore the model's dropout Generator.
        model.rng.bit_generator.state = rng_state
        return model.loss(X, y)

    loss, grads = loss_fixed_masks()
    assert sorted(grads) == sorted(model.trainable_params)       # all params unless layers are frozen
    for name in grads:
        param = model.params[name]
        num = eval_numerical_gradient(lambda _: loss_fixed_masks()[0], param, verbose=False, h=h)
        if model.normalization == "batchnorm" and name in {f"b{k}" for k in range(1, model.num_layers)}:
            # A bias right before batchnorm is cancelled by the mean subtraction: its gradient is 0.
            assert np.abs(grads[name]).max() < 1e-10 and np.abs(num).max() < 1e-8
            continue
        # Relative to the gradient's largest entry (test_norm_layers.rel_error): the elementwise
        # CS231n rel_error divides by each entry, and entries near 1e-9 made it accept 1e-4.
        assert max_rel_error(num, grads[name]) < bound, name


def test_initial_loss_is_log_num_classes_and_grows_with_reg():
    X, y = batch(n=200)
    base = make(weight_scale=1e-3, hidden_dims=[50], num_classes=10)
    loss0, _ = base.loss(X, y)
    assert abs(loss0 - math.log(10)) < 0.01
    for reg, reg_type in [(1.0, "l2"), (1.0, "l1")]:
        model = make(weight_scale=1e-3, hidden_dims=[50], num_classes=10, reg=reg, reg_type=reg_type)
        loss, _ = model.loss(X, y)
        ws = [model.params["W1"], model.params["W2"]]
        penalty = sum(0.5 * reg * (w ** 2).sum() if reg_type == "l2" else reg * np.abs(w).sum() for w in ws)
        assert loss > loss0
        assert loss == pytest.approx(loss0 + penalty, rel=1e-12)


def test_params_layout_and_init_values():
    model = FullyConnectedNet([8, 9], input_dim=5, num_classes=3, normalization="batchnorm", seed=0)
    assert list(model.params) == ["W1", "b1", "gamma1", "beta1", "W2", "b2", "gamma2", "beta2", "W3", "b3"]
    shapes = {"W1": (5, 8), "W2": (8, 9), "W3": (9, 3), "b3": (3,), "gamma2": (9,)}
    for k, v in model.params.items():
        assert v.dtype == np.float32 and v.flags.c_contiguous
        if k in shapes:
            assert v.shape == shapes[k]
    assert np.all(model.params["gamma1"] == 1) and np.all(model.params["beta2"] == 0)
    assert np.all(model.params["b1"] == 0)


@pytest.mark.parametrize("scheme,expected", [(None, 0.03), ("xavier", math.sqrt(1 / 400)),
                                             ("glorot", math.sqrt(2 / 700)), ("he", math.sqrt(2 / 400))])
def test_weight_init_std(scheme, expected):
    rng = np.random.default_rng(0)
    w = init_weight(rng, 400, 300, weight_init=scheme, weight_scale=0.03, dtype=np.float64)
    assert weight_std(scheme, 400, 300, 0.03) == pytest.approx(expected)
    assert w.std() == pytest.approx(expected, rel=0.01)
    assert abs(w.mean()) < 0.01 * expected


def test_same_rng_same_weights_across_dtypes_and_runs():
    a = make(rng=7, dtype=np.float32, weight_init="he")
    b = make(rng=7, dtype=np.float32, weight_init="he")
    c = make(rng=7, dtype=np.float64, weight_init="he")
    d = make(rng=8, dtype=np.float32, weight_init="he")
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k])
        assert np.array_equal(a.params[k], c.params[k].astype(np.float32))
    assert not np.array_equal(a.params["W1"], d.params["W1"])


def test_dropout_is_deterministic_from_the_rng_and_off_in_test_mode():
    X, y = batch(n=20)
    a, b = make(dropout_keep_ratio=0.5), make(dropout_keep_ratio=0.5)
    la1, ga1 = a.loss(X, y)
    lb1, gb1 = b.loss(X, y)
    assert la1 == lb1 and all(np.array_equal(ga1[k], gb1[k]) for k in ga1)
    la2, _ = a.loss(X, y)
    assert la2 != la1  # a fresh mask each training pass
    # Test mode: no dropout, no draw from the dropout Generator; same weights as keep=1.
    state = a.rng.bit_generator.state
    plain = make(dropout_keep_ratio=1)
    assert np.array_equal(a.loss(X), plain.loss(X))
    assert a.rng.bit_generator.state == state


def test_batchnorm_running_stats_train_vs_test():
    model = make(normalization="batchnorm")
    X, y = batch(n=30)
    model.loss(X, y)
    stats = [(p["running_mean"].copy(), p["running_var"].copy()) for p in model.bn_params]
    assert all(m.shape == (h,) for (m, _), h in zip(stats, H))
    s1 = model.loss(X)
    s2 = model.loss(X[:3])  # test mode: per-sample, independent of the batch
    assert np.allclose(s1[:3], s2, rtol=1e-12, atol=1e-12)
    for (m, v), p in zip(stats, model.bn_params):
        assert np.array_equal(m, p["running_mean"]) and np.array_equal(v, p["running_var"])


def test_float32_model_outputs_and_grads():
    model = make(dtype=np.float32, normalization="layernorm")
    X, y = batch()
    loss, grads = model.loss(X, y)  # float64 data is cast to the model's dtype
    assert isinstance(loss, float) and np.isfinite(loss)
    for k, g in grads.items():
        assert g.dtype == np.float32 and g.flags.c_contiguous and g.shape == model.params[k].shape
    assert model.loss(X.reshape(N, 2, 3)).dtype == np.float32  # (N, d1, d2) inputs are flattened


def test_state_dict_roundtrip_keeps_param_identity():
    model = make(normalization="batchnorm", dropout_keep_ratio=0.5)
    X, y = batch()
    model.loss(X, y)
    state = model.state_dict()
    ids = {k: id(v) for k, v in model.params.items()}
    ref_loss = model.loss(X, y)[0]
    model.loss(X, y)
    model.load_state_dict(state)
    assert {k: id(v) for k, v in model.params.items()} == ids
    assert model.loss(X, y)[0] == ref_loss


def test_load_state_dict_mismatch_changes_nothing():
    model = make()
    other = make(hidden_dims=[7, 6])
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(ValueError, match="W2"):
        model.load_state_dict(other.state_dict())
    with pytest.raises(ValueError, match="keys"):
        model.load_state_dict({"params": {"W1": model.params["W1"]}, "bn_params": []})
    assert all(np.array_equal(before[k], model.params[k]) for k in before)


@pytest.mark.parametrize("kwargs,exc,fragment", [
    ({"hidden_dims": 5}, TypeError, "hidden_dims"),
    ({"hidden_dims": [4, 0]}, ValueError, r"hidden_dims\[1\]"),
    ({"hidden_dims": [4.0]}, TypeError, r"hidden_dims\[0\]"),
    ({"input_dim": 0}, ValueError, "input_dim"),
    ({"num_classes": 1}, ValueError, "num_classes"),
    ({"dropout_keep_ratio": 0}, ValueError, "dropout_keep_ratio"),
    ({"dropout_keep_ratio": 1.5}, ValueError, "dropout_keep_ratio"),
    ({"normalization": "groupnorm"}, ValueError, "normalization"),
    ({"reg": -0.1}, ValueError, "reg"),
    ({"reg_type": "l3"}, ValueError, "reg_type"),
    ({"weight_scale": 0}, ValueError, "weight_scale"),
    ({"weight_init": "kaiming"}, ValueError, "weight_init"),
    ({"dtype": np.int32}, TypeError, "dtype"),
    ({"dtype": "float16"}, TypeError, "dtype"),
    ({"seed": -1}, ValueError, "seed"),
    ({"seed": 1.5}, TypeError, "seed"),
])
def test_constructor_rejects_bad_arguments(kwargs, exc, fragment):
    with pytest.raises(exc, match=fragment):
        make(**kwargs)


@pytest.mark.parametrize("X,y,exc,fragment", [
    ([[0.0] * D], None, TypeError, "X must be a NumPy array"),
    (np.zeros(D), None, ValueError, "shape"),
    (np.zeros((0, D)), None, ValueError, "N >= 1"),
    (np.zeros((2, D + 1)), None, ValueError, "features"),
    (np.zeros((2, D), dtype=complex), None, TypeError, "dtype"),
    (np.zeros((2, D)), np.zeros(2), TypeError, "integer"),
    (np.zeros((2, D)), [0, 1], TypeError, "y must be"),
    (np.zeros((2, D)), np.zeros(3, dtype=int), ValueError, r"shape \(2,\)"),
    (np.zeros((2, D)), np.array([0, C]), ValueError, "labels"),
    (np.zeros((2, D)), np.array([-1, 0]), ValueError, "labels"),
])
def test_loss_rejects_bad_inputs_and_changes_nothing(X, y, exc, fragment):
    model = make(normalization="batchnorm", dropout_keep_ratio=0.5)
    rng_state = model.rng.bit_generator.state
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(exc, match=fragment):
        model.loss(X, y)
    assert model.rng.bit_generator.state == rng_state
    assert all("running_mean" not in p for p in model.bn_params)
    assert all(np.array_equal(before[k], model.params[k]) for k in before)
