"""Tests written for mutants that survived the fresh mutation sample (seed 2, 3%; MUTATION.md).

Each test pins a documented behaviour and was checked by hand to fail with its mutant applied and to
pass without; the mutant is named in the comment above it.
"""
import math

import numpy as np
import pytest

from fastopt import optim
from fastopt.optim import SGD, clip_grad_norm_, lr_scheduler as S


# optim._clip.clip_grad_norm___mutmut_2: torch's default error_if_nonfinite=False: a non-finite
# norm is returned, not raised.
def test_clip_grad_norm_returns_a_nonfinite_norm_by_default():
    norm = clip_grad_norm_([np.array([np.inf, 1.0])], 1.0)
    assert math.isinf(norm)
    with pytest.raises(ValueError, match="not finite"):
        clip_grad_norm_([np.array([np.inf, 1.0])], 1.0, error_if_nonfinite=True)


# lr_scheduler.MultiStepLR.__init____mutmut_16: repeated milestones are refused (strictly increasing).
def test_multistep_lr_refuses_a_repeated_milestone():
    with pytest.raises(ValueError, match="milestones"):
        S.MultiStepLR(SGD([np.zeros(2)], lr=1.0), milestones=[2, 2])


# lr_scheduler.SequentialLR.__init____mutmut_41: decreasing milestones are a ValueError that shows them.
def test_sequential_lr_shows_milestones_out_of_order():
    opt = SGD([np.zeros(2)], lr=1.0)
    with pytest.raises(ValueError, match=r"milestones must be increasing, got \[3, 2\]"):
        S.SequentialLR(opt, [S.StepLR(opt, 1), S.StepLR(opt, 1), S.StepLR(opt, 1)], milestones=[3, 2])


# optim.lbfgs.LBFGS._validate_state__mutmut_52: a loaded state's H_diag must be > 0.
@pytest.mark.parametrize("h", [0.0, -1.0])
def test_lbfgs_state_refuses_a_non_positive_h_diag(h):
    w = np.ones(2)
    opt = optim.LBFGS({"w": w})
    opt.step(lambda: (float(w @ w), {"w": 2 * w}))
    state = opt.state_dict()
    state["state"]["H_diag"] = h
    with pytest.raises(ValueError, match="H_diag"):
        optim.LBFGS({"w": np.ones(2)}).load_state_dict(state)


# optim.lbfgs.LBFGS._gather_grads__mutmut_4 and _evaluate__mutmut_8: what the closure returned wrongly
# is named.
def test_lbfgs_names_what_the_closure_returned():
    w = np.ones(2)
    with pytest.raises(TypeError, match=r"grads a dict by parameter name \['w'\], got grads of type list"):
        optim.LBFGS({"w": w}).step(lambda: (1.0, [w.copy()]))
    with pytest.raises(TypeError, match="must return a pair \\(loss, grads\\), got float$"):
        optim.LBFGS({"w": w}).step(lambda: 1.0)


# reference.mlp.bias_relu_forward__mutmut_10 and relu_batchnorm_backward__mutmut_8: the twin checks
# the shapes of out and z as the kernel does, by name (a (1, D) z would otherwise broadcast).
@pytest.mark.parametrize("name", ["twin", "_mlp_kernels"])
def test_mlp_twin_and_kernel_name_a_wrongly_shaped_operand(name):
    import importlib
    from fastopt.reference import mlp
    mod = mlp if name == "twin" else importlib.import_module(f"fastopt.{name}")
    f = np.float64
    n, d = 4, 3
    with pytest.raises(ValueError, match="^out "):
        mod.bias_relu_forward(np.ones((n, d)), np.ones(d), np.empty((n + 1, d)), 1)
    vec = lambda: np.ones(d, f)                                     # noqa: E731
    with pytest.raises(ValueError, match="^z "):
        mod.relu_batchnorm_backward(np.ones((n, d)), np.ones((n, d)), np.ones((1, d)), vec(), vec(), vec(), vec(),
                                    np.empty((n, d)), vec(), vec(), vec(), 1)


# solver._schedule._runner__mutmut_12 and __mutmut_24: a Solver's ReduceLROnPlateau watches the
# validation accuracy in mode "max", the loss in mode "min", at epoch ends.
@pytest.mark.parametrize("mode, watched", [("max", "val_acc"), ("min", "loss")])
def test_a_solvers_plateau_schedule_watches_the_metric_of_its_mode(mode, watched):
    from fastopt.solver import _schedule
    runner = _schedule._runner(S.ReduceLROnPlateau(SGD([np.zeros(2)], lr=1.0), mode=mode), None)
    assert runner.unit == "epoch" and runner.monitor == watched


# ReduceLROnPlateau._is_better__mutmut_3 and __mutmut_6: mode "min" with a relative threshold (torch's
# default): 9.5 after 10 is no improvement at threshold 0.1 (it needs < 9), 8.0 is.
def test_plateau_min_mode_uses_the_relative_threshold():
    opt = SGD([np.zeros(2)], lr=1.0)
    sched = S.ReduceLROnPlateau(opt, mode="min", threshold=0.1, threshold_mode="rel", patience=0, factor=0.5)
    seen = []
    for metric in (10.0, 9.5, 8.0):
        sched.step(metric)
        seen.append(opt.param_groups[0]["lr"])
    assert seen == [1.0, 0.5, 0.5]


# LBFGS.state_dict__mutmut_43 and load_state_dict__mutmut_42: a state of named params records the
# names, and a state of other names is refused (nothing loaded).
def test_lbfgs_state_keeps_the_param_names_and_refuses_others():
    w = np.ones(2)
    opt = optim.LBFGS({"w": w})
    opt.step(lambda: (float(w @ w), {"w": 2 * w}))
    state = opt.state_dict()
    assert state["param_groups"][0]["param_names"] == ["w"]
    other = optim.LBFGS({"v": np.ones(2)})
    before = other.state_dict()
    with pytest.raises(ValueError, match="param_names"):
        other.load_state_dict(state)
    assert other.state_dict()["state"]["n_iter"] == before["state"]["n_iter"]


# checkpoint._orphan_writer__mutmut_20: only names whose token is 16 hex digits are this module's
# temporaries; a look-alike of a dead writer with another token is left alone.
def test_only_temporaries_with_a_hex_token_are_removed(tmp_path):
    from fastopt import checkpoint
    from test_checkpoint_hygiene import _dead_pid, _temp_of
    dead = _dead_pid()
    ours, other = _temp_of("c.ckpt", dead), _temp_of("c.ckpt", dead, token="0123456789abcdeg")
    for name in (ours, other):
        (tmp_path / name).write_bytes(b"x")
    assert checkpoint.remove_orphan_temporaries(tmp_path / "c.ckpt") == [ours]
    assert (tmp_path / other).read_bytes() == b"x"


# lr_scheduler.LRScheduler.__init____mutmut_12: a bad last_epoch is named.
def test_a_scheduler_names_a_bad_last_epoch():
    with pytest.raises(ValueError, match="^last_epoch "):
        S.StepLR(SGD([np.zeros(2)], lr=1.0), step_size=1, last_epoch=-2)



# rule_adapter.RuleOptimizer._probe__mutmut_35: a rule that does not return (next_w, config) is named.
def test_a_rule_that_returns_no_config_is_named():
    from fastopt.optim.rule_adapter import RuleOptimizer

    def bare(w, dw, config):
        return w - dw
    with pytest.raises(TypeError, match=r"^update rule 'bare' must return \(next_w, config\), got ndarray$"):
        RuleOptimizer(bare, {"w": np.ones(3)}, {})


# solver._options.check_options__mutmut_43 and __mutmut_64: lr_decay lies in (0, 1]; num_epochs may be 0.
def test_solver_lr_decay_at_most_one_and_zero_epochs_allowed():
    from _nn_data import blob_data
    from test_solver import make_model, solver_kwargs
    from fastopt.solver import Solver
    with pytest.raises(ValueError, match="^lr_decay "):
        Solver(make_model(), blob_data(), **solver_kwargs(lr_decay=1.5))
    Solver(make_model(), blob_data(), **solver_kwargs(lr_decay=1.0, num_epochs=0))
