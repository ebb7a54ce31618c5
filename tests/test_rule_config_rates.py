"""A learning rate written into CS231n's configs (``solver.optim_configs[p]['learning_rate']``) is the
rate the next step uses, as in CS231n's own Solver loop: one rate in every config becomes the param
group's (at the step that uses it), different rates are each parameter's until the group's rate is set again (last write wins)."""
import copy

import numpy as np
import pytest

from fastopt import optim
from fastopt.nn import FullyConnectedNet
from fastopt.optim.rule_adapter import RuleOptimizer


def _model():
    return FullyConnectedNet([7, 5], input_dim=6, num_classes=3, dtype=np.float64, seed=0)


def _grads(model, seed):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=v.shape) for k, v in model.params.items()}


def _cs231n_loop(rule, params, configs, grads):
    """CS231n's Solver._step: each parameter through the rule with its own config."""
    for p, w in params.items():
        next_w, configs[p] = rule(w, grads[p], configs[p])
        params[p] = next_w


@pytest.mark.parametrize("rule", ["sgd_momentum", "adam"])
def test_cs231n_decay_written_into_the_configs_is_the_next_steps_rate(rule):
    model = _model()
    opt = RuleOptimizer(optim.RULES[rule], model.params, {"learning_rate": 1e-2})
    ref_params = {k: v.copy() for k, v in model.params.items()}
    ref_configs = {k: {"learning_rate": 1e-2} for k in ref_params}
    for t in range(4):
        g = _grads(model, t)
        opt.step(g)
        _cs231n_loop(optim.RULES[rule], ref_params, ref_configs, g)
        for p in opt.configs:              # CS231n's lr_decay, written as its Solver writes it
            opt.configs[p]["learning_rate"] *= 0.5
            ref_configs[p]["learning_rate"] *= 0.5
    # The group takes the configs' rate when a step uses it: the last decay is not used yet.
    assert opt.param_groups[0]["lr"] == 1e-2 * 0.5 ** 3
    for k in ref_params:
        np.testing.assert_array_equal(model.params[k], ref_params[k])


def test_per_parameter_rates_in_the_configs_are_each_parameters():
    model = _model()
    opt = RuleOptimizer(optim.adam, model.params, {"learning_rate": 1e-2})
    opt.step(_grads(model, 0))
    ref_params = {k: v.copy() for k, v in model.params.items()}
    ref_configs = copy.deepcopy(dict(opt.configs))
    rates = {k: 1e-3 * (i + 1) for i, k in enumerate(opt.configs)}
    rates["W1"] = 0.0                       # W1 held still, the rest at their own rates
    for k, r in rates.items():
        opt.configs[k]["learning_rate"] = r
        ref_configs[k]["learning_rate"] = r
    w1 = model.params["W1"].copy()
    for t in (1, 2):                        # the rates stay each parameter's on later steps too
        g = _grads(model, t)
        opt.step(g)
        _cs231n_loop(optim.adam, ref_params, ref_configs, g)
    np.testing.assert_array_equal(model.params["W1"], w1)
    for k in ref_params:
        np.testing.assert_array_equal(model.params[k], ref_params[k])
    assert opt.param_groups[0]["lr"] == 1e-2          # the group's rate as last set through it
    state = opt.state_dict()
    assert {k: c["learning_rate"] for k, c in state["configs"].items()} == rates

    other = _model()
    for k in other.params:
        other.params[k] = model.params[k]
    resumed = RuleOptimizer(optim.adam, other.params, {"learning_rate": 1e-2})
    resumed.load_state_dict(state)          # the per-parameter rates survive a save and load
    g = _grads(model, 3)
    opt.step(g)
    resumed.step(g)
    for k in model.params:
        np.testing.assert_array_equal(other.params[k], model.params[k])

    opt.param_groups[0]["lr"] = 5e-3        # the group's setter: one rate again, for every config
    assert {c["learning_rate"] for c in opt.configs.values()} == {5e-3}


@pytest.mark.parametrize("bad, error, match", [
    (-1.0, ValueError, r"configs\['W1'\]"),
    ("fast", TypeError, r"configs\['W1'\]"),
])
def test_a_bad_rate_written_into_a_config_is_refused_and_changes_nothing(bad, error, match):
    for uniform in (False, True):
        model = _model()
        opt = RuleOptimizer(optim.adam, model.params, {"learning_rate": 1e-2})
        opt.step(_grads(model, 0))
        for k in (opt.configs if uniform else ["W1"]):
            opt.configs[k]["learning_rate"] = bad
        before = {k: v.copy() for k, v in model.params.items()}
        state = {k: {n: (v.copy() if isinstance(v, np.ndarray) else v) for n, v in c.items()}
                 for k, c in opt.configs.items()}
        with pytest.raises(error, match=match):
            opt.step(_grads(model, 1))
        assert all(np.array_equal(before[k], model.params[k]) for k in before)
        for k, c in opt.configs.items():
            for n, v in c.items():
                assert np.array_equal(v, state[k][n]) if isinstance(v, np.ndarray) else v == state[k][n]
        assert opt.param_groups[0]["lr"] == 1e-2


def test_the_solver_reports_a_rate_written_into_its_configs():
    from fastopt.solver import Solver
    rng = np.random.default_rng(0)
    data = dict(X_train=rng.normal(size=(40, 6)), y_train=rng.integers(0, 3, 40),
                X_val=rng.normal(size=(10, 6)), y_val=rng.integers(0, 3, 10))
    model = _model()
    solver = Solver(model, data, update_rule="sgd", optim_config={"learning_rate": 1e-1},
                    batch_size=10, num_epochs=1, verbose=False, seed=0)
    solver._step()
    for p in solver.optim_configs:
        solver.optim_configs[p]["learning_rate"] = 0.0
    w = {k: v.copy() for k, v in model.params.items()}
    solver._step()
    assert solver.lr == 0.0
    assert all(np.array_equal(w[k], model.params[k]) for k in w)
