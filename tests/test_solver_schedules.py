"""The Solver drives its learning rate through fastopt.optim.lr_scheduler: the same lr sequence as
the scheduler stepped by hand, the scheduler's state in the checkpoint, bitwise resume."""
import json
import math

import pytest
from _nn_data import blob_data
from test_solver import assert_same_run, make_model, solver_kwargs

from fastopt import checkpoint, optim
from fastopt.optim import lr_scheduler as S
from fastopt.solver import Solver


def lrs_of(solver):
    """The lr of every step of solver.train() (the callback's "iteration" lr)."""
    seen = []
    solver.callback = lambda s, e, i: seen.append(i["lr"]) if e == "iteration" else None
    solver.train()
    return seen


class _Groups:
    def __init__(self, lr):
        self.param_groups = [{"lr": lr}]
        self.defaults = {}


def by_hand(make, steps_per_epoch, epochs, unit, metrics=None, lr=0.1):
    """The lr of every step when `make(optimizer)` is stepped by hand in `unit`."""
    opt = _Groups(lr)
    sched, out = make(opt), []
    for e in range(epochs):
        for _ in range(steps_per_epoch):
            out.append(opt.param_groups[0]["lr"])
            if unit == "iteration":
                sched.step()
        if unit == "epoch":
            sched.step(metrics[e]) if metrics is not None else sched.step()
    return out


SGD = dict(update_rule="sgd_momentum", optim_config={"learning_rate": 0.1})


def test_lr_decay_is_exponential_lr_per_epoch():
    s = Solver(make_model(), blob_data(), **solver_kwargs(**SGD, lr_decay=0.5))
    assert isinstance(s.scheduler, S.ExponentialLR) and s.scheduler.gamma == 0.5
    ipe = s.iterations_per_epoch
    assert lrs_of(s) == by_hand(lambda o: S.ExponentialLR(o, 0.5), ipe, 3, "epoch")
    assert s.lr == 0.1 * 0.5 * 0.5 * 0.5
    assert Solver(make_model(), blob_data(), **solver_kwargs(**SGD)).scheduler is None  # lr_decay 1


@pytest.mark.parametrize("spec,make,unit", [
    ("cosine:T_max=3,eta_min=0.01", lambda o: S.CosineAnnealingLR(o, 3, eta_min=0.01), "epoch"),
    ({"name": "step", "step_size": 4, "gamma": 0.5, "unit": "iteration"}, lambda o: S.StepLR(o, 4, 0.5), "iteration"),
    ("multistep:milestones=[1,2],gamma=0.3", lambda o: S.MultiStepLR(o, [1, 2], 0.3), "epoch"),
    ("cosine_restarts:T_0=2,T_mult=2", lambda o: S.CosineAnnealingWarmRestarts(o, 2, 2), "epoch"),
    ("linear:start_factor=0.25,total_iters=7,unit=iteration", lambda o: S.LinearLR(o, 0.25, total_iters=7), "iteration"),
])
def test_a_spec_gives_the_schedulers_own_sequence(spec, make, unit):
    s = Solver(make_model(), blob_data(), **solver_kwargs(**SGD, lr_schedule=spec))
    assert lrs_of(s) == by_hand(make, s.iterations_per_epoch, 3, unit)


def test_onecycle_defaults_to_the_runs_length():
    s = Solver(make_model(), blob_data(), **solver_kwargs(**SGD, lr_schedule="onecycle:max_lr=0.5"))
    total = 3 * s.iterations_per_epoch
    assert s.scheduler.total_steps == total
    # RuleOptimizer has no momentum group entry: OneCycleLR's cycle_momentum is off by default.
    assert lrs_of(s) == by_hand(lambda o: S.OneCycleLR(o, 0.5, total_steps=total, cycle_momentum=False),
                                s.iterations_per_epoch, 3, "iteration")
    assert max(s.loss_history) < math.inf


def test_plateau_watches_the_epochs_val_accuracy():
    s = Solver(make_model(), blob_data(), **solver_kwargs(**SGD, num_epochs=5,
                                                          lr_schedule="plateau:patience=0,factor=0.5"))
    seen = lrs_of(s)
    assert s.scheduler.mode == "max"
    # val_acc_history: after iteration 1, then at each epoch end.
    expected = by_hand(lambda o: S.ReduceLROnPlateau(o, mode="max", factor=0.5, patience=0),
                       s.iterations_per_epoch, 5, "epoch", metrics=s.val_acc_history[1:])
    assert seen == expected
    assert min(seen) < 0.1  # five epochs with patience 0: the accuracy stalls at least once


def test_plateau_on_the_loss_gets_the_epochs_mean_training_loss():
    s = Solver(make_model(), blob_data(), **solver_kwargs(**SGD, lr_schedule="plateau:monitor=loss,patience=0"))
    seen = lrs_of(s)
    ipe = s.iterations_per_epoch
    means = [math.fsum(s.loss_history[e * ipe:(e + 1) * ipe]) / ipe for e in range(3)]
    assert s.scheduler.mode == "min"
    assert seen == by_hand(lambda o: S.ReduceLROnPlateau(o, mode="min", patience=0), ipe, 3, "epoch", metrics=means)


def test_a_factory_and_a_rate_function():
    # factory(optimizer) -> LRScheduler: stepped per lr_schedule_unit (default epoch).
    s = Solver(make_model(), blob_data(), **solver_kwargs(
        **SGD, lr_schedule=lambda opt: S.LambdaLR(opt, lambda e: 1.0 / (e + 1))))
    assert lrs_of(s) == by_hand(lambda o: S.LambdaLR(o, lambda e: 1.0 / (e + 1)), s.iterations_per_epoch, 3, "epoch")
    # ... or a ScheduleRunner, which brings its own unit.
    s = Solver(make_model(), blob_data(), **solver_kwargs(
        **SGD, lr_schedule=lambda opt: S.build("step:step_size=2,unit=iteration", opt)))
    assert lrs_of(s) == by_hand(lambda o: S.StepLR(o, 2), s.iterations_per_epoch, 3, "iteration")
    # A plain rate(t, base_lr) function, per iteration (what fastopt.babysit.lr_find passes).
    s = Solver(make_model(), blob_data(), **solver_kwargs(
        **SGD, lr_schedule=lambda t, base: base / (1 + t), lr_schedule_unit="iteration"))
    seen = lrs_of(s)
    assert seen == [0.1 / (1 + t) for t in range(len(seen))]


@pytest.mark.parametrize("kwargs,exc,fragment", [
    ({"lr_schedule": "cosine:T_max=0"}, ValueError, "T_max"),
    ({"lr_schedule": "warmup:steps=3"}, ValueError, "unknown schedule"),
    ({"lr_schedule": {"name": "step", "step_size": 2, "gama": 0.5}}, ValueError, "does not take 'gama'"),
    ({"lr_schedule": {"name": "step", "step_size": {"x": 1}}}, TypeError, "lr_schedule"),
    ({"lr_schedule": "cosine:T_max=3", "lr_schedule_unit": "iteration"}, ValueError, "its own unit"),
    ({"lr_schedule_unit": "iteration"}, ValueError, "there is no lr_schedule"),
    ({"lr_schedule": lambda a, b, c: 0.1}, TypeError, "3 positional"),
    ({"lr_schedule": lambda opt: 0.5}, TypeError, "must return a fastopt.optim.lr_scheduler"),
    ({"lr_schedule": lambda opt: S.build("step:step_size=1", opt), "lr_schedule_unit": "iteration"},
     ValueError, "steps per epoch"),
])
def test_bad_schedules_are_refused_at_construction(kwargs, exc, fragment):
    with pytest.raises(exc, match=fragment):
        Solver(make_model(), blob_data(), **solver_kwargs(**SGD, **kwargs))


RESUMED = {
    "lr_decay": dict(lr_decay=0.7),
    "cosine": dict(lr_schedule="cosine:T_max=2"),
    "step-iteration": dict(lr_schedule="step:step_size=3,gamma=0.5,unit=iteration"),
    "plateau": dict(lr_schedule="plateau:patience=0,factor=0.5"),
    "plateau-loss": dict(lr_schedule="plateau:monitor=loss,patience=0,factor=0.5"),
    "onecycle": dict(lr_schedule="onecycle:max_lr=0.3"),
    "cosine_restarts-Adam": dict(update_rule=optim.Adam, optim_config={"lr": 5e-3}, lr_schedule="cosine_restarts:T_0=1"),
    "onecycle-AdamW": dict(update_rule=optim.AdamW, optim_config={"lr": 5e-3}, lr_schedule="onecycle:max_lr=0.01"),
}


@pytest.mark.parametrize("config", RESUMED.values(), ids=RESUMED.keys())
def test_resume_with_a_schedule_is_bit_for_bit(tmp_path, config):
    data = blob_data()
    kw = solver_kwargs(**{**SGD, **config}, num_epochs=4)
    full = Solver(make_model(), data, checkpoint_name=str(tmp_path / "run"), **kw)
    full_lrs = lrs_of(full)
    saved = checkpoint.load(tmp_path / "run_epoch_2.pkl")
    assert saved["schedule"]["scheduler"]["type"] == type(full.scheduler).__name__
    for path in ("run_epoch_0.pkl", "run_epoch_2.pkl"):   # mid-epoch (after iteration 1) and an epoch end
        resumed = Solver.from_checkpoint(tmp_path / path, make_model(rng=999), data)
        done = resumed.iteration
        assert resumed.lr == full_lrs[done]
        assert lrs_of(resumed) == full_lrs[done:]
        assert_same_run(full, resumed)
        assert resumed._schedule.state_dict() == full._schedule.state_dict()
        assert resumed.optimizer.state_dict()["param_groups"][0]["lr"] == full.lr
    by_hand = Solver(make_model(rng=42), data, **{**kw, "seed": 77})
    by_hand.load_checkpoint(tmp_path / "run_epoch_2.pkl")
    by_hand.callback = None
    by_hand.train()
    assert_same_run(full, by_hand)


def test_a_factory_schedule_is_passed_again_and_its_state_restored(tmp_path):
    def factory(opt):
        return S.LambdaLR(opt, lambda e: 0.5 ** e)

    data = blob_data()
    full = Solver(make_model(), data, checkpoint_name=str(tmp_path / "f"), **solver_kwargs(**SGD, lr_schedule=factory))
    full.train()
    saved = checkpoint.load(tmp_path / "f_epoch_1.pkl")
    assert saved["lr_schedule"] is None and saved["lr_schedule_custom"] is True
    assert saved["schedule"]["scheduler"]["type"] == "LambdaLR"
    with pytest.raises(ValueError, match="pass lr_schedule="):
        Solver.from_checkpoint(tmp_path / "f_epoch_1.pkl", make_model(), data)
    resumed = Solver.from_checkpoint(tmp_path / "f_epoch_1.pkl", make_model(), data, lr_schedule=factory)
    assert resumed.scheduler.last_epoch == 1
    resumed.train()
    assert_same_run(full, resumed)
    # Another scheduler's state does not fit: refused, nothing changes.
    other = Solver(make_model(), data, **solver_kwargs(**SGD, lr_schedule="step:step_size=1"))
    before = other._schedule.state_dict()
    with pytest.raises(ValueError, match="schedule state does not fit StepLR"):
        other.load_checkpoint(tmp_path / "f_epoch_1.pkl")
    assert other._schedule.state_dict() == before and other.iteration == 0


def test_a_checkpoint_without_a_schedule_does_not_load_into_a_solver_with_one(tmp_path):
    data = blob_data()
    plain = Solver(make_model(), data, **solver_kwargs(**SGD, num_epochs=1))
    plain.train()
    path = plain.save_checkpoint(tmp_path / "plain.ckpt")
    target = Solver(make_model(), data, **solver_kwargs(**SGD, lr_schedule="cosine:T_max=3"))
    with pytest.raises(ValueError, match="without a learning-rate schedule"):
        target.load_checkpoint(path)
    assert target.iteration == 0 and target.lr == 0.1


# ---------------------------------------------------------------- fastopt train --lr-schedule
def test_train_cli_lr_schedule(tmp_path):
    from fastopt.cli import main
    path = tmp_path / "out.json"
    fast = ["train", "--epochs", "2", "--hidden", "16", "--threads", "1", "--quiet", "--json", str(path)]
    assert main([*fast, "--lr-schedule", "multistep:milestones=[1],gamma=0.5"]) == 0
    cfg = json.loads(path.read_text())["config"]
    assert cfg["lr_schedule"] == {"name": "multistep", "milestones": [1], "gamma": 0.5} and cfg["lr_decay"] == 1
    assert main([*fast, "--lr-schedule", "onecycle:max_lr=0.01"]) == 0
    assert main([*fast, "--lr-schedule", "plateau:patience=0,factor=0.5"]) == 0
    assert json.loads(path.read_text())["config"]["lr_schedule"] == {"name": "plateau", "patience": 0, "factor": 0.5}
    assert main([*fast]) == 0 and json.loads(path.read_text())["config"]["lr_decay"] == 0.95


def test_train_cli_resumes_a_plateau_run(tmp_path):
    from fastopt.cli import main
    ckpt, a, b = tmp_path / "c.ckpt", tmp_path / "a.json", tmp_path / "b.json"
    common = ["train", "--hidden", "16", "--threads", "1", "--quiet", "--lr-schedule", "plateau:patience=0"]
    assert main([*common, "--epochs", "1", "--checkpoint", str(ckpt)]) == 0
    assert checkpoint.load(ckpt)["schedule"]["scheduler"]["type"] == "ReduceLROnPlateau"
    assert main([*common, "--epochs", "2", "--resume", str(ckpt), "--json", str(b)]) == 0
    assert main([*common, "--epochs", "2", "--json", str(a)]) == 0
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    assert ra["test_acc"] == rb["test_acc"] and ra["best_val_acc"] == rb["best_val_acc"]


@pytest.mark.parametrize("argv,fragment", [
    (["--lr-schedule", "cosine"], "T_max"),
    (["--lr-schedule", "cosine:T_max=0"], "T_max must be >= 1"),
    (["--lr-schedule", "cosine:T_max"], "key=value"),
    (["--lr-schedule", "cosine:T_max=abc"], "T_max must be an int"),
    (["--lr-schedule", "warmup:steps=3"], "unknown schedule 'warmup'"),
    (["--lr-schedule", "step:step_size=2,gama=0.5"], "does not take 'gama'"),
    (["--lr-schedule", "plateau:monitor=accuracy"], "monitor"),
    (["--lr-schedule", "plateau:factor=2"], "factor"),
    (["--lr-schedule", "step:step_size=2", "--lr-decay", "0.9"], "not both"),
])
def test_train_cli_refuses_malformed_lr_schedule(argv, fragment, capsys):
    from fastopt.cli import main
    assert main(["train", "--epochs", "2", "--threads", "1", "--quiet", *argv]) == 2
    assert fragment in capsys.readouterr().err


def test_a_runner_refuses_a_monitor_for_a_scheduler_that_takes_no_metric():
    # Before, the monitor was kept: after_iteration then never stepped, and after_epoch called
    # StepLR.step(metric), which takes no argument (a TypeError in the middle of training).
    opt = _Groups(0.1)
    step = S.StepLR(opt, 1)
    with pytest.raises(ValueError, match="monitor is for ReduceLROnPlateau only; StepLR steps per iteration"):
        S.ScheduleRunner(step, "iteration", "val_acc")
    assert opt.param_groups[0]["lr"] == 0.1
    runner = S.ScheduleRunner(step, "iteration")      # the same scheduler, untouched, still usable
    runner.after_iteration()
    assert runner.monitor is None and opt.param_groups[0]["lr"] == pytest.approx(0.01)
    plateau = S.ScheduleRunner(S.ReduceLROnPlateau(_Groups(0.1), mode="min"), "iteration", "loss")
    assert (plateau.unit, plateau.monitor) == ("epoch", "loss")
