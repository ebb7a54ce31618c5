"""Frozen layers in both executions: no gradients for them, the backward stops at the lowest
trainable layer, the trainable layers' gradients bitwise those of the unfrozen model.

``model.frozen`` is set directly here (engineer transfer's freeze() API sets the same attribute).
"""
import numpy as np
import pytest

import fastopt
from fastopt.nn import FullyConnectedNet
from fastopt.nn.blocks import param_specs

D, H, C = 13, [17, 70, 9], 4          # four affine layers: indices 0, 1, 2 (hidden) and 3 (classifier)
FROZEN = [frozenset({0}), frozenset({1}), frozenset({0, 1}), frozenset({0, 2}), frozenset({3}),
          frozenset({1, 2, 3}), frozenset({0, 1, 2})]   # all four frozen is refused (test below)


def make(dtype, fast, **kw):
    args = dict(hidden_dims=H, input_dim=D, num_classes=C, dtype=dtype, rng=3, weight_scale=0.2)
    args.update(kw)
    model = FullyConnectedNet(**args)
    model.fast_path = fast
    return model


def batch(dtype, n=11, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, D)).astype(dtype), rng.integers(0, C, size=n)


def layer_keys(model, layer):
    return {name for name, _, _ in param_specs([model.blocks[layer]])}


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("normalization,activation,keep,reg,reg_type", [
    ("batchnorm", "relu", 1, 0.0, "l2"), (None, "relu", 1, 0.1, "l2"), ("layernorm", "relu", 1, 0.1, "l1"),
    ("batchnorm", "tanh", 1, 0.05, "l2"), (None, "elu", 1, 0.0, "l2"), ("batchnorm", "relu", 0.7, 0.1, "l2")])
@pytest.mark.parametrize("frozen", FROZEN, ids=lambda f: "frozen" + "".join(map(str, sorted(f))))
def test_frozen_grads_bitwise_and_absent(backend, fast, dtype, normalization, activation, keep, reg,
                                         reg_type, frozen):
    fastopt.set_backend(backend)
    kw = dict(normalization=normalization, activation=activation, dropout_keep_ratio=keep, reg=reg,
              reg_type=reg_type)
    full, part = make(dtype, fast, **kw), make(dtype, fast, **kw)
    part.frozen = frozen
    assert full.fused == fast and part.fused == fast
    X, y = batch(dtype)
    loss_full, grads_full = full.loss(X, y)
    loss_part, grads_part = part.loss(X, y)
    frozen_keys = set().union(*(layer_keys(part, i) for i in frozen))
    assert set(grads_part) == set(full.params) - frozen_keys
    assert loss_part == loss_full       # a frozen weight's penalty stays in the loss
    for k, g in grads_part.items():
        assert g.dtype == grads_full[k].dtype
        np.testing.assert_array_equal(g, grads_full[k], err_msg=k)
    # Running statistics moved alike (the forward pass of a frozen layer is unchanged).
    for a, b in zip(full.bn_params, part.bn_params):
        for key in ("running_mean", "running_var"):
            if key in a:
                np.testing.assert_array_equal(a[key], b[key])
    # The zero-copy form: the trainable keys, as views of model.grads; frozen entries untouched.
    part.grads.zero_()
    sentinel = {k: part.grads[k].copy() for k in frozen_keys}
    _, views = part.loss(X, y, out=part.grads)
    _, grads_full = full.loss(X, y)      # the second call of each: the same fresh dropout masks
    assert set(views) == set(grads_part)
    for k, g in views.items():
        assert np.shares_memory(g, part.grads[k])
        np.testing.assert_array_equal(g, grads_full[k], err_msg=k)
    for k, v in sentinel.items():
        np.testing.assert_array_equal(part.grads[k], v, err_msg=k)


def test_backward_stops_at_the_lowest_trainable_layer(monkeypatch):
    """With layers 0 and 1 frozen, the fused execution runs no matmul below layer 2: no gradient
    wrt layer 2's input (no dx) and no dW of layers 0 and 1."""
    fastopt.set_backend("cython")
    model = make(np.float64, True, normalization="batchnorm")
    model.frozen = frozenset({0, 1})
    X, y = batch(np.float64)
    model.loss(X, y)                     # builds the plan
    shapes = []
    real = np.matmul

    def counting(a, b, *args, **kw):
        shapes.append((a.shape, b.shape))
        return real(a, b, *args, **kw)
    monkeypatch.setattr(np, "matmul", counting)
    model.loss(X, y, out=model.grads)
    monkeypatch.undo()
    W = [model.params[f"W{i}"] for i in range(1, 5)]
    forward = [(X.shape, W[0].shape), ((11, 17), W[1].shape), ((11, 70), W[2].shape), ((11, 9), W[3].shape)]
    backward = [((9, 11), (11, 4)),            # dW4
                ((11, 4), W[3].T.shape),       # dh of layer 2 (through W4)
                ((70, 11), (11, 9))]           # dW3; then stop: no dh of layer 1
    assert shapes == forward + backward


@pytest.mark.parametrize("fast", [True, False])
def test_out_mapping_with_only_trainable_keys(fast):
    fastopt.set_backend("cython")
    model = make(np.float64, fast, normalization="batchnorm")
    model.frozen = frozenset({0})
    X, y = batch(np.float64)
    _, ref = model.loss(X, y)
    out = {k: np.full_like(v, 7.0) for k, v in ref.items()}
    _, got = model.loss(X, y, out=out)
    assert got is out
    for k in ref:
        np.testing.assert_array_equal(out[k], ref[k])
    with pytest.raises(ValueError, match="out must be model.grads or a mapping"):
        model.loss(X, y, out={k: v for k, v in out.items() if k != "W2"})


def test_frozen_is_checked_when_set_and_nothing_changes():
    model = make(np.float64, True)
    X, y = batch(np.float64)
    model.frozen = {1}
    for bad, error in ((frozenset({4}), ValueError), (frozenset({-1}), ValueError), ({"0"}, TypeError),
                       ("0", TypeError), (frozenset({0, 1, 2, 3}), ValueError)):
        with pytest.raises(error):
            model.frozen = bad
        assert model.frozen == frozenset({1})
    _, grads = model.loss(X, y)
    assert set(grads) == set(model.params) - set(model.layer_param_names(1))
    model._frozen = {0}                      # bypassing the setter: the loss refuses it before any work
    with pytest.raises(ValueError, match="model.frozen"):
        model.loss(X, y)
    model.frozen = frozenset()
    _, grads = model.loss(X, y)
    assert set(grads) == set(model.params)


def test_training_a_frozen_model_changes_only_trainable_params():
    """SGD over the returned grads: frozen parameters never move, and both executions train the
    rest alike."""
    fastopt.set_backend("cython")
    a, b = make(np.float64, True, normalization="batchnorm"), make(np.float64, False, normalization="batchnorm")
    a.frozen = b.frozen = frozenset({0, 1})
    before = {k: v.copy() for k, v in a.params.items()}
    for t in range(3):
        X, y = batch(np.float64, seed=t)
        for m in (a, b):
            _, grads = m.loss(X, y)
            for k, g in grads.items():
                m.params[k] -= 0.1 * g
    for k in layer_keys(a, 0) | layer_keys(a, 1):
        np.testing.assert_array_equal(a.params[k], before[k])
    for k in a.params:
        np.testing.assert_allclose(a.params[k], b.params[k], rtol=1e-11, atol=1e-13, err_msg=k)
