"""Learning-rate schedules: known values from their formulas, validation."""
import math

import pytest

from fastopt.schedules import CosineLR, ExponentialLR, LinearWarmup, StepLR


def values(schedule, ts, base=1.0):
    return [schedule(t, base) for t in ts]


def test_step():
    assert values(StepLR(2, 0.5), range(6)) == [1, 1, 0.5, 0.5, 0.25, 0.25]
    assert StepLR(3)(7, 0.2) == pytest.approx(0.2 * 0.01)


def test_exponential():
    assert values(ExponentialLR(0.9), range(4), 2.0) == pytest.approx([2.0, 1.8, 1.62, 1.458])


def test_cosine():
    s = CosineLR(10, eta_min=0.1)
    assert s(0, 1.0) == 1.0
    assert s(5, 1.0) == pytest.approx(0.55)
    assert s(10, 1.0) == pytest.approx(0.1) and s(25, 1.0) == 0.1
    assert CosineLR(4)(1, 2.0) == pytest.approx(1 + math.cos(math.pi / 4))


def test_linear_warmup():
    assert values(LinearWarmup(4), [0, 1, 2, 3, 4, 100]) == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    s = LinearWarmup(2, after=StepLR(2, 0.1))
    assert values(s, range(7)) == pytest.approx([0.5, 1, 1, 1, 0.1, 0.1, 0.01])


def test_equality_and_repr():
    assert StepLR(2, 0.5) == StepLR(2, 0.5) != StepLR(2, 0.25)
    assert repr(LinearWarmup(3, CosineLR(5))) == "LinearWarmup(warmup_steps=3, after=CosineLR(T_max=5, eta_min=0.0))"


@pytest.mark.parametrize("make,exc,fragment", [
    (lambda: StepLR(0), ValueError, "step_size"),
    (lambda: StepLR(2, 0), ValueError, "gamma"),
    (lambda: StepLR(2, 1.5), ValueError, "gamma"),
    (lambda: StepLR(1.5), TypeError, "step_size"),
    (lambda: ExponentialLR(float("nan")), ValueError, "gamma"),
    (lambda: CosineLR(0), ValueError, "T_max"),
    (lambda: CosineLR(3, eta_min=-1), ValueError, "eta_min"),
    (lambda: LinearWarmup(0), ValueError, "warmup_steps"),
    (lambda: LinearWarmup(3, after=0.5), TypeError, "after"),
    (lambda: StepLR(1)(-1, 0.1), ValueError, "t must be"),
    (lambda: StepLR(1)(1.0, 0.1), TypeError, "t must be"),
    (lambda: StepLR(1)(1, -0.1), ValueError, "base_lr"),
])
def test_bad_arguments(make, exc, fragment):
    with pytest.raises(exc, match=fragment):
        make()


# ---------------------------------------------------------------- the bridge to fastopt.optim.lr_scheduler
from fastopt.optim import lr_scheduler  # noqa: E402
from fastopt.schedules import SpecSchedule  # noqa: E402


class _Groups:
    def __init__(self, lr):
        self.param_groups = [{"lr": lr}]
        self.defaults = {"lr": lr}


def test_closed_forms_are_the_schedulers():
    # The shim's classes evaluate the lr_scheduler classes' closed forms: the same floats.
    opt = _Groups(0.3)
    stateful = lr_scheduler.StepLR(opt, 3, gamma=0.5)
    for t in range(10):
        assert StepLR(3, 0.5)(t, 0.3) == stateful._get_closed_form_lr()[0]
        stateful.step()
    assert ExponentialLR(0.9)(7, 2.0) == lr_scheduler.ExponentialLR.closed_form(2.0, 7, 0.9)
    assert CosineLR(10, 0.1)(4, 1.0) == lr_scheduler.CosineAnnealingLR.closed_form(1.0, 4, 10, 0.1)


@pytest.mark.parametrize("spec", ["cosine:T_max=7,eta_min=0.01", "step:step_size=3,gamma=0.5",
                                  "multistep:milestones=[2,5]", "linear:start_factor=0.2,total_iters=4",
                                  "cosine_restarts:T_0=3,T_mult=2", "exponential:gamma=0.8",
                                  "onecycle:max_lr=0.5,total_steps=20"])
def test_spec_schedule_replays_the_stateful_scheduler(spec):
    s = SpecSchedule(spec)
    opt = _Groups(0.1)
    runner = lr_scheduler.build(SpecSchedule(spec).spec, opt)
    expected = []
    for _ in range(19):
        expected.append(opt.param_groups[0]["lr"])
        runner.scheduler.step()
    assert [s(t, 0.1) for t in range(19)] == expected                 # forward, one step at a time
    assert [s(t, 0.1) for t in (11, 3, 18, 0)] == [expected[t] for t in (11, 3, 18, 0)]  # and back
    assert s.unit == ("iteration" if spec.startswith("onecycle") else "epoch")


def test_spec_schedule_refuses_plateau_and_bad_specs():
    with pytest.raises(ValueError, match="metric"):
        SpecSchedule("plateau:patience=2")
    with pytest.raises(ValueError, match="T_max"):
        SpecSchedule("cosine:T_max=0")
    assert SpecSchedule("cosine:T_max=3") == SpecSchedule({"name": "cosine", "T_max": 3})


def test_solver_runs_a_spec_schedule():
    from fastopt import FullyConnectedNet, Solver
    from fastopt.data import load_digits
    data = load_digits(standardize=True)
    lrs = []
    solver = Solver(FullyConnectedNet([16], input_dim=64, seed=0), data, update_rule="sgd",
                    optim_config={"learning_rate": 0.1}, lr_schedule=SpecSchedule("step:step_size=1,gamma=0.5"),
                    num_epochs=3, batch_size=200, verbose=False, seed=0,
                    callback=lambda s, e, i: lrs.append(i["lr"]) if e == "iteration" else None)
    solver.train()
    ipe = solver.iterations_per_epoch
    assert lrs == [0.1] * ipe + [0.05] * ipe + [0.025] * ipe


# ---------------------------------------------------------------- fastopt train --lr-schedule
def test_train_cli_lr_schedule(tmp_path):
    import json

    from fastopt.cli import main
    path = tmp_path / "out.json"
    fast = ["train", "--epochs", "2", "--hidden", "16", "--threads", "1", "--quiet", "--json", str(path)]
    assert main([*fast, "--lr-schedule", "multistep:milestones=[1],gamma=0.5"]) == 0
    cfg = json.loads(path.read_text())["config"]
    assert cfg["lr_schedule"] == {"name": "multistep", "milestones": [1], "gamma": 0.5} and cfg["lr_decay"] == 1
    assert main([*fast, "--lr-schedule", "onecycle:max_lr=0.01"]) == 0
    assert main([*fast]) == 0 and json.loads(path.read_text())["config"]["lr_decay"] == 0.95


@pytest.mark.parametrize("argv,fragment", [
    (["--lr-schedule", "cosine"], "T_max"),
    (["--lr-schedule", "cosine:T_max=0"], "T_max must be >= 1"),
    (["--lr-schedule", "cosine:T_max"], "key=value"),
    (["--lr-schedule", "cosine:T_max=abc"], "T_max must be an int"),
    (["--lr-schedule", "warmup:steps=3"], "unknown schedule 'warmup'"),
    (["--lr-schedule", "step:step_size=2,gama=0.5"], "does not take 'gama'"),
    (["--lr-schedule", "plateau"], "not available in fastopt train"),
    (["--lr-schedule", "step:step_size=2", "--lr-decay", "0.9"], "not both"),
])
def test_train_cli_refuses_malformed_lr_schedule(argv, fragment, capsys):
    from fastopt.cli import main
    assert main(["train", "--epochs", "2", "--threads", "1", "--quiet", *argv]) == 2
    assert fragment in capsys.readouterr().err
