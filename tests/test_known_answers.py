"""Known answers that pin documented defaults and formulas, each one a number worked out by hand.

Every test here failed against a mutant that the rest of the suite let through (see MUTATION.md):
the default eps of the normalizations, the twins' numerically stable variance, the units of an
iteration schedule, the first-best rule of the best validation snapshot.
"""
import math

import numpy as np
import pytest

import fastopt
from fastopt.solver import _evaluation
from fastopt import _norm_kernels
from fastopt.layers import (batchnorm_forward, layernorm_forward, spatial_batchnorm_forward)
from fastopt.nn import FullyConnectedNet
from fastopt.reference import norm as twin
from fastopt.solver import Solver

from _nn_data import blob_data

# Two values 0.02 apart: mean 0.01, biased variance 1e-4, so xhat = +-0.01 / sqrt(1e-4 + eps).
# With the documented eps = 1e-5 that is +-0.95346...; eps = 1e-4 would give +-0.70711.
A = 0.01 / math.sqrt(1e-4 + 1e-5)


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_default_eps_of_each_normalization_is_1e_5(backend):
    fastopt.set_backend(backend)
    x = np.array([[0.0], [0.02]])
    out, _ = batchnorm_forward(x, np.ones(1), np.zeros(1), {"mode": "train"})
    np.testing.assert_allclose(out, [[-A], [A]], rtol=1e-12)
    out, _ = layernorm_forward(x.T.copy(), np.ones(2), np.zeros(2), {})
    np.testing.assert_allclose(out, [[-A, A]], rtol=1e-12)
    out, _ = spatial_batchnorm_forward(x.reshape(2, 1, 1, 1), np.ones(1), np.zeros(1), {"mode": "train"})
    np.testing.assert_allclose(out.ravel(), [-A, A], rtol=1e-12)
    # test mode: running_var 1e-4 (given), same eps
    p = {"mode": "test", "running_mean": np.array([0.01]), "running_var": np.array([1e-4])}
    out, _ = batchnorm_forward(x, np.ones(1), np.zeros(1), p)
    np.testing.assert_allclose(out, [[-A], [A]], rtol=1e-12)


def test_batchnorm_default_momentum_is_0_9():
    x = np.array([[1.0, -2.0], [3.0, 6.0]])           # mean (2, 2), biased var (1, 16)
    p = {"mode": "train"}
    batchnorm_forward(x, np.ones(2), np.zeros(2), p)
    np.testing.assert_allclose(p["running_mean"], [0.2, 0.2], rtol=1e-12)    # 0.9 * 0 + 0.1 * mean
    np.testing.assert_allclose(p["running_var"], [0.1, 1.6], rtol=1e-12)
    batchnorm_forward(x, np.ones(2), np.zeros(2), p)
    np.testing.assert_allclose(p["running_mean"], [0.38, 0.38], rtol=1e-12)


def _model(normalization, hidden, w1, w2, fast):
    model = FullyConnectedNet([hidden], input_dim=w1.shape[0], num_classes=w2.shape[1],
                              normalization=normalization, dtype=np.float64, seed=0)
    model.params["W1"][...] = w1
    model.params["W2"][...] = w2
    for k in ("b1", "b2", f"beta1"):
        model.params[k][...] = 0
    model.params["gamma1"][...] = 1
    model.fast_path = fast
    return model


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "layer-path"])
def test_model_batchnorm_and_layernorm_use_eps_1e_5(fast):
    # batchnorm: z = (0, 0.02) over the batch -> relu(bn) = (0, A); scores (0, 0) and (A, 0), y = 0.
    model = _model("batchnorm", 1, np.array([[1.0]]), np.array([[1.0, 0.0]]), fast)
    loss, _ = model.loss(np.array([[0.0], [0.02]]), np.array([0, 0]))
    assert loss == pytest.approx((math.log(2) + math.log1p(math.exp(-A))) / 2, rel=1e-12)
    # layernorm: one row z = (0, 0.02) -> relu(ln) = (0, A); scores (0, A), y = 1.
    model = _model("layernorm", 2, np.array([[0.0, 0.02]]), np.eye(2), fast)
    loss, _ = model.loss(np.array([[1.0]]), np.array([1]))
    assert loss == pytest.approx(math.log1p(math.exp(-A)), rel=1e-12)


# ------------------------------------------------------------------------------------------------
# the twins' statistics are numerically stable (two-pass), like the kernels' shifted sums

def _exact_stats(x, axes):
    x64 = x.astype(np.float64)
    mu = x64.mean(axis=axes, keepdims=True)
    return mu.squeeze(axis=axes), np.square(x64 - mu).mean(axis=axes)


@pytest.mark.parametrize("module", [twin, _norm_kernels], ids=["twin", "kernel"])
@pytest.mark.parametrize("dtype, offset", [(np.float32, 1e4), (np.float64, 1e6)])
def test_statistics_of_data_far_from_zero(module, dtype, offset):
    # E[x^2] - mean^2 loses ~log10(offset^2 / var) digits even in float64: at 1e4 + N(0, 1) its
    # variance is off by ~1e-8 relative, at 1e6 by ~1e-4. A two-pass (or shifted) sum keeps ~1e-14.
    rng = np.random.default_rng(3)
    x = (offset + rng.standard_normal((512, 8))).astype(dtype)
    d = x.shape[1]
    gamma, beta = np.ones(d, dtype), np.zeros(d, dtype)
    mean_true, var_true = _exact_stats(x, 0)
    out, mean, inv = np.empty_like(x), np.empty(d, dtype), np.empty(d, dtype)
    rm, rv = np.zeros(d, np.float64).astype(dtype), np.zeros(d, dtype)
    # momentum 0: the running variance IS the batch variance, in x's dtype
    module.batchnorm_train_forward(x, gamma, beta, 1e-5, 0.0, out, mean, inv, rm, rv, 1)
    tol = 1e-6 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(rv, var_true, rtol=tol)
    np.testing.assert_allclose(inv, 1 / np.sqrt(var_true + 1e-5), rtol=tol)
    # layernorm: rows far from zero
    xt = np.ascontiguousarray(x.T)
    _, var_rows = _exact_stats(xt, 1)
    out, mean, inv = np.empty_like(xt), np.empty(d, dtype), np.empty(d, dtype)
    module.layernorm_forward(xt, np.ones(512, dtype), np.zeros(512, dtype), 1e-5, out, mean, inv, 1)
    np.testing.assert_allclose(inv, 1 / np.sqrt(var_rows + 1e-5), rtol=tol)
    # spatial batchnorm: channels far from zero
    x3 = np.ascontiguousarray(x.reshape(64, 8, 8).transpose(0, 2, 1))    # (N, C, S)
    _, var_ch = _exact_stats(x3, (0, 2))
    out, mean, inv = np.empty_like(x3), np.empty(8, dtype), np.empty(8, dtype)
    rm, rv = np.zeros(8, dtype), np.zeros(8, dtype)
    module.spatial_batchnorm_train_forward(x3, gamma, beta, 1e-5, 0.0, out, mean, inv, rm, rv, 1)
    np.testing.assert_allclose(rv, var_ch, rtol=tol)


# ------------------------------------------------------------------------------------------------
# the Solver's schedules and best snapshot


def _solver(**kw):
    model = FullyConnectedNet([8], input_dim=6, num_classes=3, rng=1)
    args = dict(update_rule="sgd", optim_config={"learning_rate": 0.1}, batch_size=20, num_epochs=2,
                num_train_samples=50, num_val_samples=30, verbose=False, seed=5)
    args.update(kw)
    lrs = []
    args["callback"] = lambda s, e, i: lrs.append(i["lr"]) if e == "iteration" else None
    return Solver(model, blob_data(), **args), lrs


@pytest.mark.parametrize("rule", ["sgd", fastopt.optim.SGD])
def test_iteration_unit_schedule_counts_iterations(rule):
    solver, lrs = _solver(update_rule=rule, lr_schedule="exponential:gamma=0.5,unit=iteration")
    solver.train()
    ipe = solver.iterations_per_epoch
    assert ipe > 1 and len(lrs) == 2 * ipe
    assert lrs == pytest.approx([0.1 * 0.5 ** t for t in range(2 * ipe)], rel=1e-12)


def test_epoch_unit_schedule_counts_epochs():
    solver, lrs = _solver(lr_schedule="step:step_size=1,gamma=0.5")          # unit=epoch (default)
    solver.train()
    ipe = solver.iterations_per_epoch
    assert lrs == pytest.approx([0.1] * ipe + [0.05] * ipe, rel=1e-12)


def test_best_snapshot_is_the_first_of_equal_validation_accuracies(monkeypatch):
    # CS231n keeps the params of the FIRST evaluation reaching the best accuracy (val_acc > best).
    solver, _ = _solver(num_epochs=3)
    snapshots = []
    real = _evaluation.accuracy
    accuracy = iter([0.1, 0.5, 0.3, 0.5, 0.6, 0.5, 0.2, 0.5])    # (train, val) per evaluation

    def fixed(*args, **kwargs):
        real(*args, **kwargs)                                   # same RNG draws as usual
        return next(accuracy)

    monkeypatch.setattr(_evaluation, "accuracy", fixed)          # what the Solver's evaluation calls
    solver.callback = lambda s, e, i: (snapshots.append({k: v.copy() for k, v in s.model.params.items()})
                                       if e == "eval" else None)
    solver.train()
    assert solver.val_acc_history == [0.5, 0.5, 0.5, 0.5]
    assert solver.best_val_acc == 0.5
    first = snapshots[0]
    assert not all(np.array_equal(first[k], snapshots[-1][k]) for k in first)   # training moved
    for k in first:
        assert np.array_equal(solver.best_params[k], first[k]), k


def test_solver_documented_defaults():
    model = FullyConnectedNet([8], input_dim=6, num_classes=3, rng=1)
    s = Solver(model, blob_data())
    assert (s.update_rule, s.lr_decay, s.batch_size, s.num_epochs) == ("sgd", 1.0, 100, 10)
    assert (s.num_train_samples, s.num_val_samples, s.lr_schedule_unit) == (1000, None, None)
