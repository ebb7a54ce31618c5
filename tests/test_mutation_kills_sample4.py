"""Tests written for mutants that survived the fresh mutation sample (seed 4, 3%; MUTATION.md).

Each test pins a documented behaviour and was checked by hand (tools/mutation_verify.py) to fail
with its mutant applied and to pass without; the mutant is named in the comment above it. The exact
text of each refusal is pinned by tests/error_messages.json (tests/_messages.py), not by `match`.
"""
import math

import numpy as np
import pytest

from fastopt import optim
from fastopt.optim import SGD, lr_scheduler as S
from test_mutation_kills_sample3 import lr_trace


def _opt():
    return SGD([np.zeros(2)], lr=1.0)


# Message mutants of settings no test refused (the plugin pins a message only where a test raises
# it): MultiStepLR.__init____mutmut_31 (gamma), CosineAnnealingWarmRestarts.__init____mutmut_43
# (last_epoch, checked before LRScheduler's own check), OneCycleLR.__init____mutmut_102
# (final_div_factor), SequentialLR.__init____mutmut_7 (no schedulers).
def test_schedulers_name_a_bad_setting():
    with pytest.raises(ValueError, match="gamma"):
        S.MultiStepLR(_opt(), [1, 2], gamma=0.0)
    with pytest.raises(ValueError, match="last_epoch"):
        S.CosineAnnealingWarmRestarts(_opt(), T_0=2, last_epoch=-2)
    with pytest.raises(ValueError, match="final_div_factor"):
        S.OneCycleLR(_opt(), max_lr=1.0, total_steps=10, final_div_factor=0.0)
    with pytest.raises(ValueError, match="at least one scheduler"):
        S.SequentialLR(_opt(), [], [])


# LinearLR._get_closed_form_lr__mutmut_1 (no test reached it): SequentialLR switching to a LinearLR
# at its milestone sets the LinearLR's closed form. torch 2.13.0's rates, written out.
def test_sequential_lr_switches_to_a_linear_lr_as_torch():
    opt = _opt()
    sched = S.SequentialLR(opt, [S.StepLR(opt, step_size=5, gamma=0.5),
                                 S.LinearLR(opt, start_factor=0.25, total_iters=3)], milestones=[2])
    np.testing.assert_allclose(lr_trace(opt, sched, 6), [1.0, 1.0, 0.25, 0.5, 0.75, 1.0, 1.0], rtol=1e-12)


# ReduceLROnPlateau.step__mutmut_9: the state's step count counts the steps (one per metric).
def test_plateau_counts_one_step_per_metric():
    sched = S.ReduceLROnPlateau(_opt())
    for n in range(1, 4):
        sched.step(1.0)
        assert sched.state_dict()["_step_count"] == sched.last_epoch == n


# RuleOptimizer.__repr____mutmut_9 (no test reached it): the repr shows the rule and its lr.
def test_rule_optimizer_repr_names_the_rule_and_lr():
    from fastopt.optim.rule_adapter import RuleOptimizer
    assert repr(RuleOptimizer(optim.sgd, {"w": np.zeros(2)}, {"learning_rate": 0.5})) == "RuleOptimizer(sgd, lr=0.5)"


# LBFGS._validate_state__mutmut_157: a loaded state that continues (restart False) without its
# direction d is refused, also when t is given.
def test_lbfgs_state_that_continues_needs_its_direction():
    w = np.ones(3)
    opt = optim.LBFGS([w], max_iter=3)
    opt.step(lambda: (float(w @ w), [2 * w]))
    state = opt.state_dict()
    assert state["state"]["restart"] is False and state["state"]["t"] is not None
    state["state"]["d"] = None
    target = optim.LBFGS([np.ones(3)])
    with pytest.raises(ValueError, match="needs d, t and prev_flat_grad"):
        target.load_state_dict(state)


# LBFGS._reset_history__mutmut_2: falling back to the last finite point drops the curvature pairs,
# also those gathered before (the seed-1 test fell back with an empty history).
def test_lbfgs_fall_back_drops_the_history_it_had():
    w = np.array([1.0, 2.0, -1.5])
    opt = optim.LBFGS({"w": w}, lr=0.1, max_iter=4)
    opt.step(lambda: (float(0.5 * w @ (np.arange(1, 4) * w)), {"w": np.arange(1, 4) * w}))
    state = opt.state_dict()["state"]
    assert state["unevaluated_move"] and len(state["old_dirs"]) > 0
    start = np.array(state["last_finite_x"])

    def closure():                            # not finite away from the last evaluated point
        loss = float(0.5 * w @ w) if np.array_equal(w, start) else math.inf
        return loss, {"w": w.copy()}

    opt.param_groups[0]["tolerance_grad"] = 10.0
    opt.step(closure)
    state = opt.state_dict()["state"]
    assert state["n_resets"] == 1 and len(state["old_dirs"]) == len(state["old_stps"]) == len(state["ro"]) == 0


# solver._monitor._float_map__mutmut_3: a monitor record's update_ratio must map names to floats.
def test_a_monitor_record_with_a_ratio_that_is_not_a_number_is_refused():
    from _nn_data import blob_data
    from fastopt.nn import FullyConnectedNet
    from fastopt.solver import Solver, _monitor
    solver = Solver(FullyConnectedNet([8], input_dim=6, num_classes=3, rng=0), blob_data(), update_rule="sgd",
                    num_epochs=1, batch_size=30, verbose=False, seed=0, monitor=1)
    solver.train()
    rec = dict(solver.monitor_history[0])
    rec["update_ratio"] = {k: "x" for k in rec["update_ratio"]}
    with pytest.raises(ValueError, match="update_ratio and grad_norm must map names to floats"):
        _monitor.check_record(rec, "h[0]", solver.iteration)


# solver._registry._declared_betas__mutmut_23: beta1 alone for a class without a declaration takes
# Adam's beta2 (the mutant reads the missing declaration).
def test_beta1_alone_for_an_undeclared_class_takes_adams_beta2():
    from fastopt.solver._registry import class_kwargs

    class Mine:
        pass

    assert class_kwargs({"beta1": 0.8}, Mine) == {"betas": (0.8, 0.999)}
    assert class_kwargs({"beta2": 0.9}, optim.Lion) == {"betas": (0.9, 0.9)}


# Solver._diagnose__mutmut_6: the "exploded" diagnosis records the epoch it happened in.
def test_an_exploded_diagnosis_records_its_epoch():
    from _nn_data import blob_data
    from fastopt.nn import FullyConnectedNet
    from fastopt.solver import Solver
    solver = Solver(FullyConnectedNet([8], input_dim=6, num_classes=3, rng=0), blob_data(), update_rule="sgd",
                    optim_config={"learning_rate": 1e3}, num_epochs=20, batch_size=30, verbose=False, seed=0,
                    monitor=10)
    with np.errstate(all="ignore"):
        solver.train()
    assert solver.stopped["kind"] == "exploded"
    assert solver.stopped["epoch"] == (solver.stopped["iteration"] - 1) // solver.iterations_per_epoch


# LBFGS.__init____mutmut_43: the param group holds the parameters (torch's param_groups[0]['params']).
def test_lbfgs_param_group_holds_the_parameters():
    w, v = np.ones(3), np.zeros(2)
    group = optim.LBFGS([w, v]).param_groups[0]
    assert len(group["params"]) == 2 and group["params"][0] is w and group["params"][1] is v


# LBFGS._parse_params__mutmut_41: a params dict with a key that is not a str is named by its type.
def test_lbfgs_names_a_params_key_that_is_not_a_str():
    with pytest.raises(TypeError, match="params keys must be str names"):
        optim.LBFGS({1: np.ones(3)})


# reference.dropout.philox_threshold__mutmut_15: T = floor(p * 2**32) (documented), for a p whose
# product with 2**32 + 1 floors otherwise.
def test_philox_threshold_is_the_floor_of_p_times_two_to_the_32():
    from fastopt.reference.dropout import philox_threshold
    for p in (0.3, 0.7, 1e-9, 0.999999):
        assert philox_threshold(p) == math.floor(p * 2.0 ** 32)


# reference.mlp.batchnorm_relu_forward__mutmut_16 and reference.norm._check_test__mutmut_16: the twins
# check the shapes of mean (training) and out (test mode) as the kernels do.
@pytest.mark.parametrize("name", ["twin", "kernel"])
def test_batchnorm_twins_and_kernels_name_a_wrongly_shaped_mean_or_out(name):
    import importlib
    from fastopt.reference import mlp, norm
    mlp_mod = mlp if name == "twin" else importlib.import_module("fastopt._mlp_kernels")
    norm_mod = norm if name == "twin" else importlib.import_module("fastopt._norm_kernels")
    n, d = 4, 3
    vec = lambda: np.ones(d)                                           # noqa: E731
    with pytest.raises(ValueError, match="^mean "):
        mlp_mod.batchnorm_relu_forward(np.ones((n, d)), vec(), vec(), vec(), 1e-5, 0.9, vec(), vec(),
                                       np.empty((n, d)), np.empty(d + 1), np.empty(d), 1)
    with pytest.raises(ValueError, match="^out "):
        norm_mod.batchnorm_test_forward(np.ones((n, d)), vec(), vec(), vec(), vec(), 1e-5, np.empty((n + 1, d)), 1)


# solver._registry.make_optimizer__mutmut_9: track_update_ratio=True is passed on only to an optimizer
# class that takes it (the Solver asks tracks_update_ratio itself first, so only a direct call shows it).
class _PlainSGD(optim.SGD):
    def __init__(self, params, lr=0.1):
        super().__init__(params, lr=lr)


def test_make_optimizer_passes_track_update_ratio_only_where_the_class_takes_it():
    from fastopt.solver._registry import make_optimizer
    params = {"w": np.ones(3)}
    assert make_optimizer(optim.Adam, params, {"learning_rate": 1e-3}, track_update_ratio=True).track_update_ratio
    plain = make_optimizer(_PlainSGD, params, {"learning_rate": 1e-3}, track_update_ratio=True)
    assert isinstance(plain, _PlainSGD) and not plain.track_update_ratio


# solver._monitor.check_spec__mutmut_140: a probe of one row is a probe (N >= 1); none is refused.
def test_a_monitor_probe_of_one_row_is_taken_and_of_none_refused():
    from fastopt.solver import _monitor
    probe = np.ones((1, 6))
    assert _monitor.check_spec({"interval": 1, "probe": probe})["probe"] is probe
    with pytest.raises(TypeError, match="must be a float ndarray of rows"):
        _monitor.check_spec({"interval": 1, "probe": np.ones((0, 6))})


# RuleOptimizer.step__mutmut_98: a user's rule that returns an array of the wrong shape is refused
# by name (the mutant let a wrongly shaped ndarray through to the copy).
def test_a_user_rule_returning_the_wrong_shape_is_named():
    from fastopt.optim.rule_adapter import RuleOptimizer

    def shrink(w, dw, config):
        return w[:-1] - dw[:-1], config

    opt = RuleOptimizer(shrink, {"w": np.ones(3)}, {"learning_rate": 0.1})
    with pytest.raises(ValueError, match="update rule 'shrink' returned"):
        opt.step({"w": np.ones(3)})


# rule_adapter._with_lr__mutmut_1 (default in_place=True): a step that a user's rule makes fail leaves
# the configs as they were, also a learning rate edited in them by hand.
def test_a_failed_user_rule_step_leaves_a_hand_edited_config():
    from fastopt.optim.rule_adapter import RuleOptimizer

    def shrink(w, dw, config):
        return w[:-1], config

    opt = RuleOptimizer(shrink, {"w": np.ones(3)}, {"learning_rate": 0.1})
    opt.configs["w"]["learning_rate"] = 0.5
    with pytest.raises(ValueError, match="update rule 'shrink' returned"):
        opt.step({"w": np.ones(3)})
    assert opt.configs["w"] == {"learning_rate": 0.5}


# layers.normalization._bn_config__mutmut_80: a beta that is the running mean is named.
def test_batchnorm_names_a_beta_that_is_its_running_mean():
    from fastopt.layers import batchnorm_forward
    rm = np.zeros(3)
    with pytest.raises(ValueError, match="is the same array as"):
        batchnorm_forward(np.ones((4, 3)), np.ones(3), rm, {"mode": "train", "running_mean": rm})


# reference.norm._check_backward__mutmut_5: the backward twin checks dout's shape as the kernel does.
@pytest.mark.parametrize("name", ["twin", "kernel"])
def test_batchnorm_backward_twin_and_kernel_name_a_wrongly_shaped_dout(name):
    import importlib
    from fastopt.reference import norm
    mod = norm if name == "twin" else importlib.import_module("fastopt._norm_kernels")
    vec = lambda: np.ones(3)                                           # noqa: E731
    with pytest.raises(ValueError, match="^dout must have shape"):
        mod.batchnorm_backward(np.ones((5, 3)), np.ones((4, 3)), vec(), vec(), vec(), np.empty((4, 3)),
                               np.empty(3), np.empty(3), 1)


# layers.normalization._cache_for__mutmut_20: a cache whose x has the wrong number of dimensions says
# what its forward saw.
def test_a_norm_cache_with_an_x_of_other_dimensions_is_named():
    import copy
    from fastopt.layers import batchnorm_backward, batchnorm_forward
    _, cache = batchnorm_forward(np.random.default_rng(0).normal(size=(4, 3)), np.ones(3), np.zeros(3),
                                 {"mode": "train"})
    forged = copy.copy(cache)
    forged.x = np.ones((4, 3, 2))
    with pytest.raises(ValueError, match="cache.x must be 2-D"):
        batchnorm_backward(np.ones((4, 3)), forged)


# reference.optim.StepPlan.__init____mutmut_1: the twin's plan names params that are not a list.
def test_step_plan_twin_names_params_that_are_not_a_list():
    from fastopt.reference.optim import StepPlan
    with pytest.raises(TypeError, match="must be a list, got tuple"):
        StepPlan((), [], [], [])
