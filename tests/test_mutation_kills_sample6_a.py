"""Tests written for mutants that survived the fresh mutation sample (seed 6, 3%; MUTATION.md), group A.

Each test pins a documented behaviour and was checked by hand (tools/mutation_verify.py) to fail
with its mutant applied and to pass without; the mutant is named in the comment above it. The exact
text of each refusal is pinned by tests/error_messages.json (tests/_messages.py), not by `match`.
"""
import io

import numpy as np
import pytest

from fastopt import optim
from fastopt.checkpoint import CheckpointError
from fastopt.optim.rule_adapter import RuleOptimizer


# rule_adapter._overlaps__mutmut_7 (a0 <= b1): gradients that tile one buffer starting exactly where
# the parameters' buffer ends share no memory with it: the flat step takes them (under the mutant
# the touching end counted as an overlap and the step was refused).
def test_gradients_right_after_the_parameters_in_one_array_are_accepted():
    buf = np.zeros(16)
    buf[:8] = 1.0
    params = {"w": buf[:6].reshape(2, 3), "b": buf[6:8]}
    grads = {"w": buf[8:14].reshape(2, 3), "b": buf[14:16]}
    grads["w"][...] = 0.5
    grads["b"][...] = 0.25
    opt = RuleOptimizer(optim.sgd, params, {"learning_rate": 0.1})
    for step in (1, 2):
        opt.step(grads)
        np.testing.assert_allclose(params["w"], 1.0 - step * 0.05, rtol=1e-12)
        np.testing.assert_allclose(params["b"], 1.0 - step * 0.025, rtol=1e-12)
    np.testing.assert_array_equal(buf[8:14], 0.5)
    np.testing.assert_array_equal(buf[14:16], 0.25)


# rule_adapter._unchanged__mutmut_3 (every config counted as changed): a config that still holds the
# values validated at the last step is not validated again, so a user's rule is called once per
# parameter and step from the second step on (under the mutant every step also ran the rule on the
# 1-element validation probe of every config).
def test_a_users_rule_is_not_probed_again_while_its_configs_are_unchanged():
    calls = []

    def rule(w, dw, config):
        calls.append(w.size)
        config = dict(config)
        config.setdefault("learning_rate", 1e-2)
        return w - config["learning_rate"] * dw, config

    params = {"w": np.ones((3, 4)), "b": np.ones(5)}
    grads = {n: np.full(w.shape, 0.5) for n, w in params.items()}
    opt = RuleOptimizer(rule, params, {"learning_rate": 0.1})
    opt.step(grads)
    for _ in range(3):
        calls.clear()
        opt.step(grads)
        assert sorted(calls) == [5, 12]
    np.testing.assert_allclose(params["w"], 1.0 - 4 * 0.05, rtol=1e-12)
    # A changed config is validated (probed) again.
    opt.configs["w"]["learning_rate"] = 0.2
    calls.clear()
    opt.step(grads)
    assert len(calls) == 3 and sorted(calls)[1:] == [5, 12]


# RuleOptimizer.step__mutmut_139 (reshape(None)): with a user's rule and track_update_ratio=True the
# update ratio of a 2-D parameter is ||w_new - w_old|| / ||w_old|| (under the mutant the 2-D new
# value met the 1-D old one and the step raised).
def test_update_ratio_of_a_users_rule_on_a_2d_parameter():
    def rule(w, dw, config):
        config = dict(config)
        config.setdefault("learning_rate", 1e-2)
        return w - config["learning_rate"] * dw, config

    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
    grads = {n: rng.standard_normal(w.shape) for n, w in params.items()}
    old = {n: w.copy() for n, w in params.items()}
    opt = RuleOptimizer(rule, params, {"learning_rate": 0.1}, track_update_ratio=True)
    opt.step(grads)
    got = opt.update_ratios()
    assert set(got) == {"w", "b"}
    for n in params:
        np.testing.assert_allclose(params[n], old[n] - 0.1 * grads[n], rtol=1e-12)
        want = np.linalg.norm(params[n] - old[n]) / np.linalg.norm(old[n])
        assert got[n] == pytest.approx(want, rel=1e-12)


# _base.Optimizer._load_state_dict__mutmut_20: a param group that is not a dict is refused naming
# its type (the mutant named NoneType).
def test_load_state_dict_names_the_type_of_a_group_that_is_not_a_dict():
    opt = optim.SGD([np.ones(3)], lr=0.1)
    sd = opt.state_dict()
    sd["param_groups"] = [[0]]
    with pytest.raises(TypeError, match=r"state_dict\['param_groups'\]\[0\] must be a dict, got list"):
        opt.load_state_dict(sd)


# _declarations._adamax_step__mutmut_27 (lr * (1 - beta1**t)): Adamax's first step from zero state
# is p -= lr / (1 - beta1) * m / u with m = (1 - beta1) g, u = |g| + eps: a step of lr * sign(g)
# (the mutant's step was lr * (1 - beta1)**2).
def test_adamax_first_step_is_bias_corrected():
    p = np.zeros(3)
    opt = optim.Adamax([p], lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    g = np.array([1.0, -2.0, 4.0])
    opt.step([g])
    np.testing.assert_allclose(p, -0.01 * np.sign(g) * np.abs(g) / (np.abs(g) + 1e-8), rtol=1e-9)
    # Second step: m = 0.9 m + 0.1 g, u = max(0.999 u, |g| + eps), p -= lr / (1 - 0.9**2) * m / u.
    m, u = 0.1 * g, np.abs(g) + 1e-8
    before = p.copy()
    opt.step([g])
    m, u = 0.9 * m + 0.1 * g, np.maximum(0.999 * u, np.abs(g) + 1e-8)
    np.testing.assert_allclose(p, before - 0.01 / (1 - 0.9 ** 2) * m / u, rtol=1e-9)


# _serialize._describe_file__mutmut_6: load_state of a corrupt file object without a name names
# the object itself (its repr) in the CheckpointError (the mutant wrote None).
def test_load_state_of_a_corrupt_nameless_file_object_names_the_object():
    opt = optim.SGD([np.ones(3)], lr=0.1)
    buf = io.BytesIO(b"this is not an npz file at all")
    with pytest.raises(CheckpointError, match=r"optimizer state file <_io\.BytesIO object at 0x[0-9a-f]+> "
                                              r"cannot be loaded"):
        optim.load_state(buf, opt)


# _base.Optimizer._add_group__mutmut_65: parameter names come from a group's params dict, not from a
# 'param_names' entry of the group: a group of unnamed params given one stays unnamed (under the
# mutant it kept the stray names, and its state_dict saved them as the group's names).
def test_a_param_names_entry_does_not_name_a_group_of_unnamed_params():
    in_constructor = optim.SGD([{"params": [np.ones(3)], "param_names": ["x"], "lr": 0.2}], lr=0.1)
    added = optim.SGD([np.ones(2)], lr=0.1)
    added.add_param_group({"params": [np.ones(3)], "param_names": ["x"], "lr": 0.2})
    for opt in (in_constructor, added):
        g = opt.param_groups[-1]
        assert "param_names" not in g and g["lr"] == 0.2
        assert "param_names" not in opt.state_dict()["param_groups"][-1]
    named = optim.SGD({"a": np.ones(2)}, lr=0.1)
    named.add_param_group({"params": {"y": np.ones(3)}, "param_names": ["x"]})
    assert named.param_groups[1]["param_names"] == ("y",)
    assert named.state_dict()["param_groups"][1]["param_names"] == ["y"]
