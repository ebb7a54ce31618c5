"""Frozen layers in both executions: no gradients for them, the backward stops at the lowest
trainable layer, the trainable layers' gradients bitwise those of the unfrozen model where a
frozen layer's forward is the unfrozen one (no normalization, layernorm, a frozen classifier).

A frozen batchnorm layer runs in inference mode (fastopt.nn.frozen_norm): its running statistics in
training calls too, never updated, the backward through gamma / sqrt(running_var + eps); checked
against a NumPy forward written here, between the executions, and by centered differences.

``model.frozen`` is set directly here (engineer transfer's freeze() API sets the same attribute).
"""
import numpy as np
import pytest

import fastopt
from fastopt.layers import softmax_loss
from fastopt.nn import FullyConnectedNet
from fastopt.nn.blocks import param_specs
from test_nn import check_model_gradients

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


CONFIGS = [("batchnorm", "relu", 1, 0.0, "l2"), (None, "relu", 1, 0.1, "l2"), ("layernorm", "relu", 1, 0.1, "l1"),
           ("batchnorm", "tanh", 1, 0.05, "l2"), (None, "elu", 1, 0.0, "l2"), ("batchnorm", "relu", 0.7, 0.1, "l2")]


def _frozen_id(f):
    return "frozen" + "".join(map(str, sorted(f)))


def _inference(normalization, frozen):
    """Whether a frozen hidden layer runs batchnorm in inference mode (its forward then differs)."""
    return normalization == "batchnorm" and any(i < len(H) for i in frozen)


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("normalization,activation,keep,reg,reg_type,frozen", [
    pytest.param(*cfg, f, id=f"{cfg[0]}-{cfg[1]}-{cfg[2]}-{_frozen_id(f)}")
    for cfg in CONFIGS for f in FROZEN if not _inference(cfg[0], f)])
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


# ---------------------------------------------------------------- frozen batchnorm: inference mode

BN_FROZEN = [frozenset({0}), frozenset({1}), frozenset({2}), frozenset({0, 2}), frozenset({1, 3}),
             frozenset({0, 1, 2})]      # {1}, {2}, {1, 3}: a frozen layer above a trainable one


def _warmed(dtype, fast, frozen, **kw):
    """A batchnorm model whose running statistics exist and differ from their start (two training
    calls), then frozen: a pretrained body."""
    model = make(dtype, fast, normalization="batchnorm", **kw)
    for seed in (5, 6):
        model.loss(*batch(dtype, n=23, seed=seed))
    model.frozen = frozen
    return model


def _stats(model):
    return [{k: p[k].copy() for k in ("running_mean", "running_var")} for p in model.bn_params]


def reference_data_loss(model, X, y):
    """The data loss of a training call written out in NumPy (float64, no dropout): a trainable
    layer's batchnorm with the batch's mean and (biased) variance, a frozen one's with its running
    statistics."""
    p = {k: v.astype(np.float64) for k, v in model.params.items()}
    act = {"relu": lambda a: np.maximum(a, 0), "tanh": np.tanh}[model.activation]
    h = X.astype(np.float64)
    for i in range(len(model.hidden_dims)):
        k, bn = i + 1, model.bn_params[i]
        a = h @ p[f"W{k}"] + p[f"b{k}"]
        if i in model.frozen:
            mean, var = bn["running_mean"].astype(np.float64), bn["running_var"].astype(np.float64)
        else:
            mean, var = a.mean(axis=0), a.var(axis=0)
        h = act((a - mean) / np.sqrt(var + bn.get("eps", 1e-5)) * p[f"gamma{k}"] + p[f"beta{k}"])
    L = model.num_layers
    scores = h @ p[f"W{L}"] + p[f"b{L}"]
    shifted = scores - scores.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation,keep", [("relu", 1), ("tanh", 1), ("relu", 0.7), ("tanh", 0.7)])
@pytest.mark.parametrize("frozen", BN_FROZEN, ids=_frozen_id)
def test_frozen_batchnorm_runs_in_inference_mode_alike_in_both_executions(backend, dtype, activation, keep, frozen):
    fastopt.set_backend(backend)
    kw = dict(activation=activation, dropout_keep_ratio=keep, reg=0.05)
    fused, layered = _warmed(dtype, True, frozen, **kw), _warmed(dtype, False, frozen, **kw)
    assert fused.fused and not layered.fused
    before = {id(m): _stats(m) for m in (fused, layered)}
    X, y = batch(dtype)
    tol = dict(rtol=1e-11, atol=1e-13) if dtype == np.float64 else dict(rtol=2e-4, atol=2e-6)
    for step in range(2):            # the second call reuses the fused plan
        (loss_f, g_f), (loss_l, g_l) = fused.loss(X, y), layered.loss(X, y)
        np.testing.assert_allclose(loss_f, loss_l, **tol)
        assert set(g_f) == set(g_l) == set(fused.trainable_params)
        for k in g_f:
            np.testing.assert_allclose(g_f[k], g_l[k], err_msg=k, **tol)
        for m in (fused, layered):
            for i, (now, then) in enumerate(zip(_stats(m), before[id(m)])):
                for key in now:
                    if i in frozen:            # never updated: bitwise the pretrained statistics
                        assert now[key].tobytes() == then[key].tobytes(), (i, key)
        for a, b in zip(_stats(fused), _stats(layered)):
            for key in a:
                np.testing.assert_allclose(a[key], b[key], err_msg=key, **tol)
    if keep == 1:                    # the forward itself, against the NumPy one (data loss + L2 penalty)
        penalty = 0.5 * 0.05 * sum(float(np.sum(fused.params[f"W{k}"].astype(np.float64) ** 2))
                                   for k in range(1, fused.num_layers + 1))
        want = reference_data_loss(fused, X, y) + penalty
        rel = 1e-12 if dtype == np.float64 else 1e-5
        assert loss_f == pytest.approx(want, rel=rel) and loss_l == pytest.approx(want, rel=rel)


@pytest.mark.parametrize("fast", [True, False])
def test_all_hidden_batchnorm_frozen_is_the_test_mode_forward(fast):
    """No dropout, every hidden layer frozen: a training call's data loss is the softmax loss of
    the test-mode scores, and the head's gradient is that of those scores."""
    fastopt.set_backend("cython")
    model = _warmed(np.float64, fast, frozenset({0, 1, 2}))
    X, y = batch(np.float64)
    scores = model.loss(X)
    want, dscores = softmax_loss(scores, y)
    loss, grads = model.loss(X, y)
    assert loss == pytest.approx(want, rel=1e-13)
    np.testing.assert_allclose(grads["b4"], dscores.sum(axis=0), rtol=1e-12, atol=1e-15)
    assert set(grads) == {"W4", "b4"}


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("activation,keep", [("relu", 1), ("tanh", 1), ("relu", 0.75)])
@pytest.mark.parametrize("frozen", [frozenset({1}), frozenset({1, 2}), frozenset({2, 3}), frozenset({0, 2})],
                         ids=_frozen_id)
def test_gradients_through_a_frozen_batchnorm_layer_match_numerical(fast, activation, keep, frozen):
    """float64 centered differences of the training loss (dropout masks replayed) for every trainable
    param, with a frozen inference-mode batchnorm layer above a trainable one."""
    fastopt.set_backend("cython")
    model = _warmed(np.float64, fast, frozen, activation=activation, dropout_keep_ratio=keep, reg=0.1)
    lowest = min(set(range(model.num_layers)) - frozen)
    assert lowest < max(frozen)          # a frozen layer above a trainable one: the gradient goes through it
    # h 1e-6: with h 1e-5 one probe of relu-1-frozen1 crossed a ReLU kink (error 1e-2, 1e-9 at 1e-6)
    check_model_gradients(model, *batch(np.float64, n=9), bound=1e-7, h=1e-6)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("train_first", [True, False])
def test_a_frozen_layer_without_statistics_gets_mean_0_and_variance_1(fast, train_first):
    """A never-run frozen batchnorm layer normalizes with mean 0, variance 1 (torch's and Keras's
    initial values, not CS231n's zero variance) from its first call, training or test, and keeps
    them; the trainable layers' statistics start as CS231n's zeros."""
    fastopt.set_backend("cython")
    model = make(np.float64, fast, normalization="batchnorm")
    model.frozen = frozenset({1})
    X, y = batch(np.float64)
    p = model.bn_params
    if not train_first:
        model.loss(X)
        assert not p[0]["running_var"].any() and not p[2]["running_mean"].any()   # CS231n's zeros
    loss, _ = model.loss(X, y)
    assert p[1]["running_mean"].tobytes() == np.zeros(H[1]).tobytes()
    assert p[1]["running_var"].tobytes() == np.ones(H[1]).tobytes()
    if train_first:                   # one training call moved layer 0's from CS231n's zeros (momentum 0.9)
        a = X @ model.params["W1"] + model.params["b1"]
        np.testing.assert_allclose(p[0]["running_mean"], 0.1 * a.mean(axis=0), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(p[0]["running_var"], 0.1 * a.var(axis=0), rtol=1e-12, atol=1e-15)
    assert loss == pytest.approx(reference_data_loss(model, X, y), rel=1e-12)
    other = make(np.float64, not fast, normalization="batchnorm")
    other.frozen = frozenset({1})
    if not train_first:
        other.loss(X)
    loss_other, _ = other.loss(X, y)
    assert loss_other == pytest.approx(loss, rel=1e-12)


def test_a_frozen_layer_keeps_running_statistics_it_was_given():
    """Statistics present (loaded, or set by hand) are used as they are, whatever their values."""
    fastopt.set_backend("cython")
    model = make(np.float64, True, normalization="batchnorm")
    rng = np.random.default_rng(4)
    model.bn_params[0]["running_mean"] = rng.standard_normal(H[0])
    model.bn_params[0]["running_var"] = rng.uniform(0.5, 2.0, H[0])
    model.frozen = frozenset({0})
    saved = {k: model.bn_params[0][k].copy() for k in ("running_mean", "running_var")}
    X, y = batch(np.float64)
    loss, _ = model.loss(X, y)
    assert loss == pytest.approx(reference_data_loss(model, X, y), rel=1e-12)
    assert all(model.bn_params[0][k].tobytes() == v.tobytes() for k, v in saved.items())
