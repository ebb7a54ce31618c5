"""Library defects found while classifying the seed-6 mutation survivors (MUTATION.md), each pinned
by a test that failed before its fix."""
import math

import numpy as np
import pytest

from fastopt import optim
from fastopt.nn import FullyConnectedNet
from fastopt.optim import lr_scheduler
from fastopt.optim.lbfgs import LBFGS, _cubic_interpolate


@pytest.mark.parametrize("change", [{"generator": "bogus"}, {"offset": 3}])
def test_a_dropout_setting_changed_after_a_step_is_refused_before_the_running_statistics_move(change):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((8, 5)), rng.integers(0, 3, 8)
    model = FullyConnectedNet([6], input_dim=5, num_classes=3, dropout_keep_ratio=0.5,
                              normalization="batchnorm", seed=1, dtype=np.float64)
    model.loss(X, y)
    before = {k: v.copy() for k, v in model.bn_params[0].items() if isinstance(v, np.ndarray)}
    model.dropout_param.update(change)
    with pytest.raises((TypeError, ValueError), match=r"dropout_param\['(generator|offset)'\]"):
        model.loss(X, y)
    assert before and all(np.array_equal(model.bn_params[0][k], v) for k, v in before.items())


@pytest.mark.parametrize("kw", [dict(total_steps=2, pct_start=0.5), dict(total_steps=4, pct_start=0.25),
                                dict(total_steps=5, pct_start=1.0)])
def test_onecycle_with_a_phase_of_zero_steps_is_refused_by_name(kw):
    opt = optim.SGD([np.zeros(2)], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"pct_start=.* with total_steps=.* gives a phase of the cycle zero steps"):
        lr_scheduler.OneCycleLR(opt, max_lr=0.1, **kw)


def test_onecycle_with_every_phase_long_enough_steps_through_its_cycle():
    opt = optim.SGD([np.zeros(2)], lr=0.1, momentum=0.9)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=4, pct_start=0.5)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(4):
        opt.step([np.zeros(2)])
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert max(lrs) == pytest.approx(0.1) and all(math.isfinite(v) for v in lrs)


def test_the_solver_names_lr_schedule_for_a_zero_length_onecycle_phase():
    from fastopt import Solver
    rng = np.random.default_rng(0)
    data = {"X_train": rng.standard_normal((4, 3)), "y_train": rng.integers(0, 2, 4),
            "X_val": rng.standard_normal((2, 3)), "y_val": rng.integers(0, 2, 2)}
    model = FullyConnectedNet([4], input_dim=3, num_classes=2, rng=0)
    with pytest.raises(ValueError, match="lr_schedule"):
        Solver(model, data, update_rule=optim.SGD, optim_config={"lr": 0.1, "momentum": 0.9}, batch_size=4,
               num_epochs=1, lr_schedule="onecycle:max_lr=0.01,pct_start=1,unit=epoch", verbose=False)


@pytest.mark.parametrize("args", [(0.0, 1.0, 0.0, 1.0, 1.0, 0.0),          # equal flat ends: 0/0
                                  (0.0, 0.0, -1e200, 1.0, 1e300, 1e200)])  # d1 ** 2 overflows
def test_cubic_interpolation_falls_back_to_the_midpoint_where_python_floats_would_raise(args):
    assert _cubic_interpolate(*args, bounds=(0.0, 1.0)) == 0.5


def test_cubic_interpolation_still_finds_the_minimum_of_a_cubic():
    # f = (x - 0.3)^2 on [0, 1]: the cubic through the ends is that parabola, minimum at 0.3
    f, g = (lambda x: (x - 0.3) ** 2), (lambda x: 2 * (x - 0.3))
    assert _cubic_interpolate(0.0, f(0.0), g(0.0), 1.0, f(1.0), g(1.0)) == pytest.approx(0.3)


def test_lbfgs_strong_wolfe_survives_a_flat_then_walled_loss():
    x = np.zeros(1)

    def closure():
        v = float(x[0])
        loss = -1e-6 * (1 - math.exp(-v / 1e-6)) + max(v - 0.5, 0.0) ** 2
        grad = np.array([-math.exp(-v / 1e-6) + 2 * max(v - 0.5, 0.0)])
        return loss, [grad]
    opt = LBFGS([x], lr=1, max_iter=1, max_eval=25, line_search_fn="strong_wolfe")
    opt.step(closure)
    assert np.isfinite(x).all()
