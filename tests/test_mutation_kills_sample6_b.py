"""Tests written for mutants that survived the fresh mutation sample (seed 6, 3%; MUTATION.md), group B.

Each test pins a documented behaviour and was checked by hand (tools/mutation_verify.py) to fail
with its mutant applied and to pass without; the mutant is named in the comment above it. The exact
text of each refusal is pinned by tests/error_messages.json (tests/_messages.py); the new refusals
here have no entry there yet, so an anchored `match` pins their text too.
"""
import math

import numpy as np
import pytest

from fastopt.optim import lr_scheduler as S
from fastopt.optim import SGD
from fastopt.optim.lbfgs import LBFGS


def _lr(opt):
    return opt.param_groups[0]["lr"]


# LBFGS.__init____mutmut_40 (`self.defaults = None`): LBFGS keeps its hyperparameters in `defaults`
# as torch's (max_eval resolved to max_iter * 5 // 4), and a scheduler over it saves and loads its
# state (load_state_dict validates on a stand-in optimizer that copies `defaults`).
def test_lbfgs_defaults_hold_its_hyperparameters_and_a_scheduler_state_loads():
    opt = LBFGS([np.zeros(2)], lr=0.5, max_iter=8, history_size=3, line_search_fn="strong_wolfe")
    assert opt.defaults == {"lr": 0.5, "max_iter": 8, "max_eval": 10, "tolerance_grad": 1e-7,
                            "tolerance_change": 1e-9, "history_size": 3, "line_search_fn": "strong_wolfe"}
    sched = S.StepLR(opt, 1, gamma=0.5)
    sched.step()
    saved = sched.state_dict()
    other = S.StepLR(opt, 1, gamma=0.5)
    other.load_state_dict(saved)
    assert other.last_epoch == 1 and other.get_last_lr() == [0.25]


# LBFGS._run__mutmut_39 (the re-evaluation after going back from an unevaluated move counted
# twice): every closure call counts once against max_eval. A step that starts on a non-finite point
# left by the previous step's last (unevaluated) fixed move goes back (1 + 1 evaluations) and then
# has max_eval - 2 evaluations left: two fixed steps here (the mutant stopped after one).
def test_lbfgs_counts_the_reevaluation_after_going_back_once_against_max_eval():
    x = np.zeros(1)
    calls = []

    def closure():
        calls.append(float(x[0]))
        if x[0] > 0.5:
            return float("nan"), [np.full(1, np.nan)]
        return 0.5 * (x[0] - 3.0) ** 2, [x - 3.0]

    opt = LBFGS([x], lr=1, max_iter=1)
    opt.step(closure)                    # one evaluation at 0, then an unevaluated move to 1
    assert calls == [0.0] and x[0] == 1.0
    opt.param_groups[0].update(lr=0.1, max_iter=5, max_eval=4)
    calls.clear()
    opt.step(closure)
    assert len(calls) == 4 and calls[:3] == [1.0, 0.0, 0.1]
    assert opt.state["func_evals"] == 5 and opt.state["n_resets"] == 1
    assert x[0] == pytest.approx(0.39, rel=1e-12)


# LBFGS._strong_wolfe__mutmut_46 (`ls_iter > 1 or f_new >= f_prev`): while the loss keeps falling,
# the strong-Wolfe search keeps extrapolating (each trial up to 10x the last), as torch's does; the
# mutant bracketed at the third trial and never went past it. torch.optim.LBFGS (2.13.0) evaluates
# at the same points 0, 0.5, 5, 50, 500, 5000 on this quadratic.
def test_lbfgs_strong_wolfe_extrapolates_while_the_loss_falls():
    target = 1e4
    x = np.zeros(1)
    calls = []

    def closure():
        calls.append(float(x[0]))
        return 0.5 * (x[0] - target) ** 2, [x - target]

    LBFGS([x], lr=0.5, max_iter=1, max_eval=25, line_search_fn="strong_wolfe").step(closure)
    assert calls == pytest.approx([0.0, 0.5, 5.0, 50.0, 500.0, 5000.0], rel=1e-12)
    assert x[0] == pytest.approx(5000.0, rel=1e-12)


# LBFGS._strong_wolfe__mutmut_228 (`f - c1 * t * gtd` in the zoom's sufficient-decrease test): in
# the zoom a trial that lowers the loss by less than c1 * t * |g.d| (Armijo) replaces the bracket's
# high end, as in torch; the mutant accepted such a trial at once (3 evaluations). The loss: a dip of
# depth 1e-6 (and a slope of 1e-7) then a wall; torch.optim.LBFGS (2.13.0) makes the same 23
# evaluations and ends at the same point.
def test_lbfgs_strong_wolfe_zoom_refuses_a_trial_without_sufficient_decrease():
    s, a, w = 1e-6, 1e-7, 0.5
    x = np.zeros(1)
    calls = []

    def closure():
        v = float(x[0])
        calls.append(v)
        loss = -s * (1 - math.exp(-v / s)) - a * v + max(v - w, 0.0) ** 2
        return loss, [np.array([-math.exp(-v / s) - a + 2 * max(v - w, 0.0)])]

    opt = LBFGS([x], lr=1, max_iter=1, max_eval=25, line_search_fn="strong_wolfe")
    opt.step(closure)
    assert calls[:2] == [0.0, 1.0]
    assert len(calls) == 23 and opt.state["func_evals"] == 23
    assert x[0] == pytest.approx(0.3333339066673226, rel=1e-12)


# CosineAnnealingLR.closed_form__mutmut_4 (`base_lr + eta_min`): a SequentialLR that switches to a
# CosineAnnealingLR at a milestone restarts it at its closed form for epoch 0 (torch's), its base lr
# 0.1, also with eta_min > 0 (the mutant gave 0.1 + 2 * eta_min); then it anneals towards eta_min.
def test_sequential_lr_restarts_a_cosine_with_eta_min_at_its_base_lr():
    opt = SGD([np.zeros(2)], lr=0.1)
    first = S.ExponentialLR(opt, gamma=0.5)
    cosine = S.CosineAnnealingLR(opt, T_max=4, eta_min=0.01)
    sched = S.SequentialLR(opt, [first, cosine], milestones=[2])
    seen = []
    for _ in range(4):
        sched.step()
        seen.append(_lr(opt))
    assert seen[0] == pytest.approx(0.05, rel=1e-15) and seen[1] == pytest.approx(0.1, rel=1e-15)
    for e, lr in ((1, seen[2]), (2, seen[3])):
        assert lr == pytest.approx(0.01 + 0.09 * (1 + math.cos(math.pi * e / 4)) / 2, rel=1e-12)


# CosineAnnealingLR.closed_form__mutmut_8 (`epoch * T_max`): the public closed form is the
# schedule's documented cosine, eta_min + (base_lr - eta_min) (1 + cos(pi epoch / T_max)) / 2: it
# agrees with the rates the scheduler sets step by step.
def test_cosine_annealing_closed_form_matches_the_stepped_rates():
    opt = SGD([np.zeros(2)], lr=0.1)
    sched = S.CosineAnnealingLR(opt, T_max=4, eta_min=0.01)
    for e in range(1, 9):
        sched.step()
        assert S.CosineAnnealingLR.closed_form(0.1, e, 4, 0.01) == pytest.approx(_lr(opt), rel=1e-12), e
    assert S.CosineAnnealingLR.closed_form(0.1, 2, 4, 0.01) == pytest.approx(0.055, rel=1e-12)
    assert S.CosineAnnealingLR.closed_form(0.1, 4, 4, 0.01) == pytest.approx(0.01, rel=1e-12)


# ReduceLROnPlateau.__init____mutmut_49 (label `XXthreshold_modeXX`): a bad threshold_mode is refused
# under its own name.
def test_plateau_names_a_bad_threshold_mode():
    opt = SGD([np.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match=r"^threshold_mode must be one of \('rel', 'abs'\), got 'relative'$"):
        S.ReduceLROnPlateau(opt, threshold_mode="relative")


# ReduceLROnPlateau._is_better__mutmut_21 (`best / (1 + threshold)`): in mode "max" with a relative
# threshold a metric improves only when it exceeds best * (1 + threshold) (torch's); a rise of 5%
# under threshold=0.1 is no improvement, so with patience 0 the lr is cut (the mutant counted it as
# better). A rise of 20% is an improvement.
def test_plateau_max_mode_relative_threshold_needs_best_times_one_plus_threshold():
    opt = SGD([np.zeros(2)], lr=1.0)
    sched = S.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=0, threshold=0.1, threshold_mode="rel")
    sched.step(1.0)
    assert sched.best == 1.0 and _lr(opt) == 1.0
    sched.step(1.05)
    assert sched.best == 1.0 and sched.num_bad_epochs == 0 and _lr(opt) == 0.5
    sched.step(1.2)
    assert sched.best == 1.2 and _lr(opt) == 0.5


# SequentialLR.__init____mutmut_56 (label `LAST_EPOCH`): SequentialLR checks its own last_epoch
# (it does not run LRScheduler's constructor) under the argument's name.
def test_sequential_lr_names_a_bad_last_epoch():
    opt = SGD([np.zeros(2)], lr=0.1)
    child = S.StepLR(opt, 1)
    with pytest.raises(ValueError, match=r"^last_epoch must be >= -1, got -2$"):
        S.SequentialLR(opt, [child], milestones=[], last_epoch=-2)


# ScheduleRunner.__init____mutmut_12 (label `XXunitXX`): a runner built directly (not by build(),
# which checks the spec's unit first) refuses a bad unit under the argument's name.
def test_schedule_runner_names_a_bad_unit():
    opt = SGD([np.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match=r"^unit must be one of \('epoch', 'iteration'\), got 'week'$"):
        S.ScheduleRunner(S.StepLR(opt, 1), "week")
