"""Soft labels (mixup's target probabilities): the compiled output-layer kernel against its twin, its
gradient, fastopt.layers.softmax_loss and FullyConnectedNet.loss in both executions, and bad targets."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastopt import _backend, layers
from fastopt.gradcheck import eval_numerical_gradient
from fastopt.layers.losses import SOFT_TARGET_TOL
from fastopt.nn import FullyConnectedNet
from fastopt.reference import mlp as R
from test_nn import check_model_gradients
from test_norm_layers import rel_error

K = _backend.kernels("mlp")
MODULES = [m for m in dict.fromkeys([pytest.importorskip("fastopt._mlp_kernels"), K])]
DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}


def soft_targets(rng, n, c, dtype=np.float64):
    """Rows of random probabilities (a Dirichlet draw), renormalised in float64 then cast."""
    t = rng.gamma(0.5, size=(n, c)) + 1e-12
    t /= t.sum(axis=1, keepdims=True)
    return t.astype(dtype)


def one_hot(y, c, dtype):
    t = np.zeros((y.size, c), dtype)
    t[np.arange(y.size), y] = 1
    return t


def _run(module, s, b, t, n_threads=1, in_place=False):
    ss, db = s.copy(), np.empty(s.shape[1], s.dtype)
    ds = ss if in_place else np.empty_like(s)
    loss = module.bias_softmax_soft_loss_grad(ss, b, t, ds, db, n_threads)
    return loss, ss, ds, db


# ------------------------------------------------------------------------------------------------ kernel


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=25, deadline=None)
@given(n=st.sampled_from([1, 7, 64, 1023]), c=st.sampled_from([1, 2, 10, 65, 1023]),
       seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([1.0, 30.0]))
def test_kernel_matches_twin_and_threads_bitwise(module, dtype, n, c, seed, scale):
    rng = np.random.default_rng(seed)
    s = (rng.standard_normal((n, c)) * scale).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    t = soft_targets(rng, n, c, dtype)
    loss1, ss1, ds1, db1 = _run(module, s, b, t, 1)
    loss2, ss2, ds2, db2 = _run(module, s, b, t, 2)
    assert loss1 == loss2
    for a, bb in ((ss1, ss2), (ds1, ds2), (db1, db2)):
        np.testing.assert_array_equal(a, bb)
    loss_ip, _, ds_ip, db_ip = _run(module, s, b, t, 2, in_place=True)      # dscores is scores
    assert loss_ip == loss1
    np.testing.assert_array_equal(ds_ip, ds1)
    np.testing.assert_array_equal(db_ip, db1)
    loss_t, ss_t, ds_t, db_t = _run(R, s, b, t)
    assert loss1 == pytest.approx(loss_t, rel=TOL[dtype]["rtol"] * 10, abs=TOL[dtype]["atol"] * 10)
    np.testing.assert_array_equal(ss1, ss_t)              # the bias add is one rounding either way
    np.testing.assert_allclose(ds1, ds_t, **TOL[dtype])
    np.testing.assert_allclose(db1, db_t, **TOL[dtype])
    # The definition in float64: mean of -sum t log softmax(s + b); gradient (softmax - t) / N.
    a = s.astype(np.float64) + b
    logp = a - a.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    t64 = t.astype(np.float64)
    assert loss1 == pytest.approx(-(t64 * logp).sum() / n, rel=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(ds1, (np.exp(logp) - t64) / n, rtol=1e-4 if dtype == np.float32 else 1e-10,
                               atol=1e-7 if dtype == np.float32 else 1e-16)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_at_a_realistic_size(module, dtype):
    """>= 1M elements (1024 rows x 1024 classes), split across threads; the twin within tolerance."""
    rng = np.random.default_rng(5)
    n, c = 1024, 1024
    s = (rng.standard_normal((n, c)) * 3).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    t = soft_targets(rng, n, c, dtype)
    loss1, _, ds1, db1 = _run(module, s, b, t, 1)
    loss2, _, ds2, db2 = _run(module, s, b, t, 2)
    assert loss1 == loss2
    np.testing.assert_array_equal(ds1, ds2)
    np.testing.assert_array_equal(db1, db2)
    loss_t, _, ds_t, db_t = _run(R, s, b, t)
    assert loss1 == pytest.approx(loss_t, rel=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(ds1, ds_t, **TOL[dtype])
    np.testing.assert_allclose(db1, db_t, rtol=TOL[dtype]["rtol"], atol=1e-5 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("module", MODULES + [R], ids=lambda m: m.__name__)
@pytest.mark.parametrize("dtype", DTYPES)
def test_one_hot_targets_are_the_label_kernel_bitwise(module, dtype):
    """Targets 0/1 add exact zeros and subtract 1/N where the label kernel does: the same bits."""
    rng = np.random.default_rng(11)
    for n, c in ((1, 1), (7, 3), (300, 10), (70, 1023)):
        s = (rng.standard_normal((n, c)) * 4).astype(dtype)
        b = rng.standard_normal(c).astype(dtype)
        y = rng.integers(0, c, n)
        ss, ds, db = s.copy(), np.empty((n, c), dtype), np.empty(c, dtype)
        want = module.bias_softmax_loss_grad(ss, b, y, ds, db, 2)
        loss, ss2, ds2, db2 = _run(module, s, b, one_hot(y, c, dtype), 2)
        assert loss == want
        for got, ref in ((ss2, ss), (ds2, ds), (db2, db)):
            np.testing.assert_array_equal(got, ref)


def test_kernel_gradient_numerically():
    """Centered differences in float64 of the returned loss, wrt the scores and the bias."""
    rng = np.random.default_rng(3)
    n, c = 6, 5
    s, b, t = rng.standard_normal((n, c)) * 2, rng.standard_normal(c), soft_targets(rng, n, c)

    def f():
        return K.bias_softmax_soft_loss_grad(s.copy(), b, t, np.empty((n, c)), np.empty(c), 1)

    _, _, ds, db = _run(K, s, b, t)
    for analytic, x in ((ds, s), (db, b)):
        num = eval_numerical_gradient(lambda _: f(), x, verbose=False, h=1e-5)
        assert rel_error(num, analytic) < 1e-8


@pytest.mark.parametrize("module", MODULES + [R], ids=lambda m: m.__name__)
def test_kernel_shape_errors_change_nothing(module):
    s = np.ones((3, 4))
    b, t = np.zeros(4), np.full((3, 4), 0.25)
    ds, db = np.full((3, 4), 7.0), np.full(4, 7.0)
    for args, name in (((s, b, t[:2], ds, db), "targets"), ((s, b, t, np.ones((3, 3)), db), "dscores"),
                       ((s, np.zeros(5), t, ds, db), "b"), ((s, b, t, ds, np.zeros(3)), "db")):
        with pytest.raises(ValueError, match=f"^{name} must have shape"):
            module.bias_softmax_soft_loss_grad(*args, 1)
    with pytest.raises(ValueError, match="n_threads must be >= 1"):
        module.bias_softmax_soft_loss_grad(s, b, t, ds, db, 0)
    with pytest.raises(ValueError, match="at least one row"):
        module.bias_softmax_soft_loss_grad(np.ones((0, 4)), b, np.ones((0, 4)), np.ones((0, 4)), db, 1)
    np.testing.assert_array_equal(s, 1.0)
    np.testing.assert_array_equal(ds, 7.0)
    np.testing.assert_array_equal(db, 7.0)


# ------------------------------------------------------------------------------------------------ layer


def test_layer_soft_loss_gradient_numerically():
    rng = np.random.default_rng(4)
    x, t = rng.standard_normal((7, 6)) * 3, soft_targets(rng, 7, 6)
    loss, dx = layers.softmax_loss(x, t)
    num = eval_numerical_gradient(lambda _: layers.softmax_loss(x, t)[0], x, verbose=False, h=1e-5)
    assert rel_error(num, dx) < 1e-8
    logp = x - x.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    assert loss == pytest.approx(-(t * logp).sum() / 7, rel=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_one_hot_targets_match_labels(dtype):
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((9, 5)).astype(dtype), rng.integers(0, 5, 9)
    loss, dx = layers.softmax_loss(x, y)
    loss_s, dx_s = layers.softmax_loss(x, one_hot(y, 5, dtype))
    assert dx_s.dtype == dtype
    assert loss_s == pytest.approx(loss, rel=1e-6 if dtype == np.float32 else 1e-14)
    np.testing.assert_allclose(dx_s, dx, rtol=1e-5 if dtype == np.float32 else 1e-13, atol=1e-8)


def test_layer_targets_promote_like_any_read_operand():
    x = np.zeros((2, 4), np.float32)
    assert layers.softmax_loss(x, np.full((2, 4), 0.25, np.float32))[1].dtype == np.float32
    assert layers.softmax_loss(x, np.full((2, 4), 0.25))[1].dtype == np.float64
    loss, dx = layers.softmax_loss(x, np.full((2, 4), 0.25))
    assert loss == pytest.approx(np.log(4), rel=1e-15)
    np.testing.assert_allclose(dx, 0, atol=1e-17)


# Each bad target: (y, error, message fragment) for scores of shape (3, 4).
GOOD = np.full((3, 4), 0.25)


def _with(**cells):
    y = GOOD.copy()
    for key, v in cells.items():
        y[int(key[1]), int(key[2])] = v
    return y


BAD_TARGETS = [
    (np.full((3, 5), 0.2), ValueError, "y as target probabilities must have shape (3, 4)"),
    (np.full((2, 4), 0.25), ValueError, "y as target probabilities must have shape (3, 4)"),
    (np.full((3, 4), 0.25, np.float16), TypeError, "must have dtype float32 or float64, got float16"),
    (np.zeros((3, 4), np.int64), ValueError, "y must have shape (3,)"),
    (_with(r12=-0.25, r13=0.75), ValueError, "must be >= 0, got [0.25, 0.25, -0.25, 0.75] in row 1"),
    (_with(r20=0.3), ValueError, "rows summing to 1 (within 1e-06), got row 2 summing to 1.05"),
    (GOOD * (1 + 3 * SOFT_TARGET_TOL), ValueError, "got row 0 summing to"),
    (_with(r01=np.nan), ValueError, "must be finite, got [0.25, nan, 0.25, 0.25] in row 0"),
    (_with(r11=np.inf, r12=-np.inf), ValueError, "must be finite"),
    (_with(r22=np.inf), ValueError, "must be finite, got [0.25, 0.25, inf, 0.25] in row 2"),
]


@pytest.mark.parametrize("y,error,fragment", BAD_TARGETS)
def test_layer_bad_targets(y, error, fragment):
    x, saved = np.zeros((3, 4)), y.copy()
    with pytest.raises(error, match=__import__("re").escape(fragment)):
        layers.softmax_loss(x, y)
    np.testing.assert_array_equal(y, saved)
    np.testing.assert_array_equal(x, 0)


def test_targets_within_the_tolerance_are_accepted():
    y = GOOD * (1 + 0.5 * SOFT_TARGET_TOL)
    assert np.isfinite(layers.softmax_loss(np.zeros((3, 4)), y)[0])
    f32 = soft_targets(np.random.default_rng(0), 64, 10, np.float32)      # float32 rounding of a row
    assert np.isfinite(layers.softmax_loss(np.zeros((64, 10), np.float32), f32)[0])


# ------------------------------------------------------------------------------------------------ model

D, HID, C, N = 6, [7, 5], 4, 5


def make(**kw):
    args = dict(hidden_dims=HID, input_dim=D, num_classes=C, dtype=np.float64, rng=3, weight_scale=5e-2)
    args.update(kw)
    return FullyConnectedNet(**args)


def data(n=N, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, D)), soft_targets(rng, n, C, dtype)


@pytest.mark.parametrize("normalization", [None, "batchnorm", "layernorm"])
@pytest.mark.parametrize("keep", [1, 0.75])
@pytest.mark.parametrize("fast_path", [True, False])
def test_model_soft_gradients_numerically(normalization, keep, fast_path):
    # weight_scale 0.3: gradients of order 1e-1, so the differences' rounding (~1e-11) stays far below
    # the 1e-8 bound (at 5e-2 the gradients are ~1e-3 and the check itself reaches ~1e-8).
    model = make(normalization=normalization, dropout_keep_ratio=keep, reg=0.3, weight_scale=0.3)
    model.fast_path = fast_path
    check_model_gradients(model, *data(), bound=1e-8)


@pytest.mark.parametrize("normalization", [None, "batchnorm", "layernorm"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_model_executions_agree_and_one_hot_is_the_labels(normalization, dtype):
    X, t = data(n=33, dtype=dtype)
    y = np.random.default_rng(1).integers(0, C, 33)
    results = {}
    for fast in (True, False):
        for name, target in (("soft", t), ("onehot", one_hot(y, C, dtype)), ("labels", y)):
            model = make(normalization=normalization, dtype=dtype, reg=0.1)
            model.fast_path = fast
            loss, grads = model.loss(X.astype(dtype), target)
            results[fast, name] = loss, grads, [dict(p) for p in model.bn_params]
    tol = dict(rtol=1e-4, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    for name in ("soft", "onehot"):
        (lf, gf, _), (ll, gl, _) = results[True, name], results[False, name]
        assert lf == pytest.approx(ll, rel=tol["rtol"])
        for k in gf:
            np.testing.assert_allclose(gf[k], gl[k], **tol)
    # The fused path: one-hot targets give the label kernel's bits (test above), hence the same step.
    (lo, go, bo), (lb, gb, bb) = results[True, "onehot"], results[True, "labels"]
    assert lo == lb
    for k in go:
        np.testing.assert_array_equal(go[k], gb[k])
    for po, pb in zip(bo, bb):
        for k in ("running_mean", "running_var"):
            if k in po:
                np.testing.assert_array_equal(po[k], pb[k])


def test_model_casts_targets_to_its_dtype_and_takes_both_forms_in_turn():
    model = make(dtype=np.float32, normalization="batchnorm")
    X, t = data()
    y = np.array([0, 1, 2, 3, 0])
    l64, _ = model.loss(X, t)                      # float64 targets, a float32 model
    l32, _ = make(dtype=np.float32, normalization="batchnorm").loss(X, t.astype(np.float32))
    assert l64 == pytest.approx(l32, rel=1e-6)
    for target in (y, t, y, one_hot(y, C, np.float64)):   # the plan is reused across the forms
        loss, grads = model.loss(X, target, out=model.grads)
        assert np.isfinite(loss)


def _snapshot(model):
    return ({k: v.copy() for k, v in model.params.items()}, model.grads.buffers[model.dtype].copy()
            if hasattr(model.grads, "buffers") else None,
            [{k: v.copy() for k, v in p.items() if isinstance(v, np.ndarray)} for p in model.bn_params],
            model.rng.bit_generator.state if model.rng is not None else None, np.random.get_state()[1].copy())


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("y,error,fragment", BAD_TARGETS)
def test_model_bad_targets_change_nothing(fast_path, y, error, fragment):
    """Every check before anything moves: params, grads, running statistics, the dropout stream."""
    model = make(num_classes=4, normalization="batchnorm", dropout_keep_ratio=0.5)
    model.fast_path = fast_path
    X = np.random.default_rng(2).standard_normal((3, D))
    model.loss(X, np.array([0, 1, 2]), out=model.grads)      # a workspace and plan exist
    before = _snapshot(model)
    with pytest.raises(error, match=__import__("re").escape(fragment)):
        model.loss(X, y, out=model.grads)
    after = _snapshot(model)
    for a, b in zip(before[0].values(), after[0].values()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(before[1], after[1])
    for pa, pb in zip(before[2], after[2]):
        for k in pa:
            np.testing.assert_array_equal(pa[k], pb[k])
    assert before[3] == after[3]
    np.testing.assert_array_equal(before[4], after[4])
