"""Tests written for mutants that survived the fresh mutation sample (seed 5, 3%; MUTATION.md), group B.

Each test pins a documented behaviour and was checked by hand (tools/mutation_verify.py) to fail
with its mutant applied and to pass without; the mutant is named in the comment above it. The exact
text of each refusal is also pinned by tests/error_messages.json (tests/_messages.py); where a
mutant only changes a label or a message, the `match` here is anchored or names the label, so the
test kills it on its own.
"""
import numpy as np
import pytest

from fastopt import optim
from fastopt.optim import SGD, lr_scheduler as S


def _lbfgs_state():
    """An LBFGS after one step of a quadratic (a history of one pair) and its state_dict."""
    w = np.ones(3)
    opt = optim.LBFGS([w], max_iter=3)
    opt.step(lambda: (float(w @ w), [2 * w]))
    return opt, opt.state_dict()


# LBFGS._parse_params__mutmut_51 (the message wrapped in XX..XX): no test built an LBFGS without
# parameters (test_optim_badinput's empty-params case is for the declared optimizers' own check).
def test_lbfgs_refuses_empty_params():
    for empty in ([], {}):
        with pytest.raises(ValueError, match=r"^params is empty: the optimizer has nothing to update$"):
            optim.LBFGS(empty)


# LBFGS.state_dict__mutmut_32 (the group checked under the label None): state_dict re-checks the
# group, which a user may have edited by hand; its refusal names param_groups[0].
def test_lbfgs_state_dict_names_a_bad_hand_edited_group():
    opt = optim.LBFGS([np.ones(2)])
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match=r"^param_groups\[0\]\['lr'\] must be >= 0"):
        opt.state_dict()


# LBFGS._validate_state__mutmut_3 (the message names NoneType for the type given): a loaded state
# whose 'state' entry is not a dict names the type it got.
def test_lbfgs_load_names_a_state_that_is_not_a_dict():
    _, state = _lbfgs_state()
    state["state"] = list(state["state"].items())
    with pytest.raises(TypeError, match=r"^state_dict\['state'\] must be a dict, got list$"):
        optim.LBFGS([np.ones(3)]).load_state_dict(state)


# LBFGS._validate_state__mutmut_94 (ValueError(None) for a non-finite vector): a loaded direction
# holding a NaN is refused, and the refusal names the entry.
def test_lbfgs_load_names_a_non_finite_vector():
    _, state = _lbfgs_state()
    state["state"]["d"][1] = np.nan
    target = optim.LBFGS([np.ones(3)])
    with pytest.raises(ValueError, match=r"^state_dict\['state'\]\['d'\] holds non-finite values$"):
        target.load_state_dict(state)
    assert target.state["d"] is None          # nothing loaded


# LBFGS._validate_state__mutmut_113 (the label 'OLD_STPS'): a loaded old_stps of the wrong dtype or
# holding a NaN is refused under its own key.
def test_lbfgs_load_names_bad_old_stps():
    _, state = _lbfgs_state()
    good = state["state"]["old_stps"]
    state["state"]["old_stps"] = good.astype(np.float32)
    with pytest.raises(ValueError, match=r"^state_dict\['state'\]\['old_stps'\] must be a float64 array"):
        optim.LBFGS([np.ones(3)]).load_state_dict(state)
    bad = good.copy()
    bad[0, 0] = np.inf
    state["state"]["old_stps"] = bad
    with pytest.raises(ValueError, match=r"^state_dict\['state'\]\['old_stps'\] holds non-finite values$"):
        optim.LBFGS([np.ones(3)]).load_state_dict(state)


# LBFGS.__repr____mutmut_5 (no test reached it; the lines joined by "XX\nXX"): the repr is torch's
# layout, one "    key: value" line per hyperparameter of the group.
def test_lbfgs_repr_lists_the_group_one_line_per_hyperparameter():
    opt = optim.LBFGS([np.ones(2)], lr=0.5, max_iter=8, history_size=4, line_search_fn="strong_wolfe")
    assert repr(opt).split("\n") == [
        "LBFGS (",
        "Parameter Group 0",
        "    lr: 0.5",
        "    max_iter: 8",
        "    max_eval: 10",          # torch's default, max_iter * 5 // 4
        "    tolerance_grad: 1e-07",
        "    tolerance_change: 1e-09",
        "    history_size: 4",
        "    line_search_fn: strong_wolfe",
        ")",
    ]


class _Groups:
    def __init__(self, groups):
        self.param_groups = groups


# lr_scheduler._check_optimizer__mutmut_10 (`and` for the first `or`): an optimizer whose
# param_groups is empty, or not a list, is refused by every scheduler.
@pytest.mark.parametrize("groups", [[], ({"lr": 0.1},)], ids=["empty list", "tuple"])
def test_schedulers_refuse_param_groups_that_are_not_a_non_empty_list(groups):
    with pytest.raises(TypeError, match=r"^optimizer must have param_groups, a non-empty list of dicts"):
        S.StepLR(_Groups(groups), step_size=2)


# OneCycleLR.__init____mutmut_29 (epochs checked without its lower bound): epochs given with
# steps_per_epoch must be at least 1, and the refusal names epochs.
@pytest.mark.parametrize("epochs", [0, -2])
def test_onecycle_refuses_epochs_below_one(epochs):
    opt = SGD([np.zeros(2)], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"^epochs must be >= 1"):
        S.OneCycleLR(opt, max_lr=1.0, epochs=epochs, steps_per_epoch=3)


# SequentialLR.__init____mutmut_21 (a milestone checked under the label None): a milestone below 1
# is refused under its index.
def test_sequential_lr_names_a_milestone_below_one():
    opt = SGD([np.zeros(2)], lr=0.1)
    children = [S.StepLR(opt, step_size=2), S.StepLR(opt, step_size=3)]
    with pytest.raises(ValueError, match=r"^milestones\[0\] must be >= 1"):
        S.SequentialLR(opt, children, milestones=[0])


# lr_scheduler.build__mutmut_64 (iterations_per_epoch used whatever the unit): build's docstring:
# onecycle's default total_steps is epochs * iterations_per_epoch for unit "iteration", else epochs.
def test_onecycle_spec_stepped_per_epoch_lasts_the_epochs():
    opt = SGD([np.zeros(2)], lr=0.1)
    runner = S.build("onecycle:max_lr=0.1,unit=epoch", opt, iterations_per_epoch=5, epochs=3)
    assert runner.unit == "epoch" and runner.scheduler.total_steps == 3
    runner = S.build("onecycle:max_lr=0.1", SGD([np.zeros(2)], lr=0.1), iterations_per_epoch=5, epochs=3)
    assert runner.unit == "iteration" and runner.scheduler.total_steps == 15


# lr_scheduler.build__mutmut_89 (the key 'betas' misspelled): build's onecycle cycles the momentum
# by default of an optimizer with betas (Adam-style: betas[0]), as of one with a momentum.
@pytest.mark.parametrize("cls", [optim.Adam, optim.AdamW])
def test_onecycle_spec_cycles_betas_by_default(cls):
    opt = cls([np.zeros(2)], lr=1e-3, betas=(0.5, 0.999))
    runner = S.build("onecycle:max_lr=0.01", opt, iterations_per_epoch=4, epochs=2)
    assert runner.scheduler.cycle_momentum is True and runner.scheduler.use_beta1 is True
    assert opt.param_groups[0]["betas"] == (0.95, 0.999)        # max_momentum at the first step
    for _ in range(3):
        opt.step([np.ones(2)])
        runner.after_iteration()
    assert opt.param_groups[0]["betas"][0] < 0.95 and opt.param_groups[0]["betas"][1] == 0.999
