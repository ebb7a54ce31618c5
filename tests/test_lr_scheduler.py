"""fastopt.optim.lr_scheduler: torch's lr sequences, known answers, state_dict, specs."""
import math
import pickle

import numpy as np
import pytest

import fastopt
from fastopt.optim import lr_scheduler as S
from fastopt.optim.lbfgs import LBFGS

STEPS = 100


def make_sgd(lrs=(0.1, 0.02), momentum=0.9):
    groups = [{"params": [np.zeros(3)], "lr": lr} for lr in lrs]
    return fastopt.SGD(groups, lr=lrs[0], momentum=momentum)


def make_adam(lrs=(1e-3,)):
    groups = [{"params": [np.zeros(3)], "lr": lr} for lr in lrs]
    return fastopt.Adam(groups, lr=lrs[0], betas=(0.9, 0.999))


# Each case: (name, fastopt factory (optimizer) -> scheduler, torch factory, optimizer kind, metrics?)
def _cases():
    return [
        ("StepLR", lambda o, m: m.StepLR(o, step_size=7, gamma=0.5), "sgd"),
        ("MultiStepLR", lambda o, m: m.MultiStepLR(o, milestones=[10, 25, 60], gamma=0.3), "sgd"),
        ("ExponentialLR", lambda o, m: m.ExponentialLR(o, gamma=0.97), "sgd"),
        ("CosineAnnealingLR", lambda o, m: m.CosineAnnealingLR(o, T_max=30, eta_min=1e-3), "sgd"),
        ("CosineAnnealingWarmRestarts",
         lambda o, m: m.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2, eta_min=1e-4), "sgd"),
        ("LinearLR", lambda o, m: m.LinearLR(o, start_factor=0.1, end_factor=0.9, total_iters=20), "sgd"),
        ("LambdaLR", lambda o, m: m.LambdaLR(o, lr_lambda=[lambda e: 0.95 ** e, lambda e: 1 / (1 + e)]), "sgd"),
        ("OneCycleLR", lambda o, m: m.OneCycleLR(o, max_lr=[0.5, 0.1], total_steps=STEPS + 1), "sgd"),
        ("OneCycleLR-3phase-linear-adam",
         lambda o, m: m.OneCycleLR(o, max_lr=0.01, epochs=10, steps_per_epoch=11, pct_start=0.25,
                                   anneal_strategy="linear", three_phase=True), "adam"),
        ("SequentialLR", lambda o, m: m.SequentialLR(
            o, [m.LinearLR(o, start_factor=0.2, total_iters=5), m.CosineAnnealingLR(o, T_max=40),
                m.ExponentialLR(o, gamma=0.9)], milestones=[5, 45]), "sgd"),
    ]


CASES = _cases()


@pytest.mark.parametrize("name,factory,kind", CASES, ids=[c[0] for c in CASES])
def test_lr_sequence_matches_torch(name, factory, kind):
    torch = pytest.importorskip("torch")
    opt = make_sgd() if kind == "sgd" else make_adam()
    tparams = [torch.zeros(3, requires_grad=True) for _ in opt.param_groups]
    tgroups = [{"params": [p], "lr": g["lr"]} for p, g in zip(tparams, opt.param_groups)]
    topt = (torch.optim.SGD(tgroups, lr=0.1, momentum=0.9) if kind == "sgd"
            else torch.optim.Adam(tgroups, lr=1e-3, betas=(0.9, 0.999)))
    ours, theirs = factory(opt, S), factory(topt, torch.optim.lr_scheduler)
    for step in range(STEPS):
        assert ours.get_last_lr() == theirs.get_last_lr(), step        # the same floats
        assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in topt.param_groups]
        if name.startswith("OneCycleLR"):
            key = "momentum" if kind == "sgd" else "betas"
            assert [g[key] for g in opt.param_groups] == [g[key] for g in topt.param_groups], step
        topt.step()                                          # torch warns if its optimizer never stepped
        ours.step()
        theirs.step()
    assert ours.last_epoch == theirs.last_epoch


def test_reduce_on_plateau_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    metrics = np.concatenate([np.linspace(1, 0.5, 20), 0.5 + 0.01 * rng.standard_normal(60),
                              np.linspace(0.5, 0.2, 20)])
    for kw in (dict(mode="min", factor=0.5, patience=3, cooldown=2, min_lr=[1e-3, 1e-4]),
               dict(mode="max", factor=0.2, patience=0, threshold=0.05, threshold_mode="abs")):
        opt = make_sgd()
        tp = [torch.zeros(1, requires_grad=True) for _ in range(2)]
        topt = torch.optim.SGD([{"params": [p], "lr": g["lr"]} for p, g in zip(tp, opt.param_groups)], lr=0.1)
        ours, theirs = S.ReduceLROnPlateau(opt, **kw), torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kw)
        seen = set()
        for m in metrics:
            ours.step(float(m))
            theirs.step(float(m))
            assert ours.get_last_lr() == theirs.get_last_lr()
            assert (ours.best, ours.num_bad_epochs, ours.cooldown_counter) == \
                (theirs.best, theirs.num_bad_epochs, theirs.cooldown_counter)
            seen.add(tuple(ours.get_last_lr()))
        assert len(seen) > 2                                  # it did reduce, more than once


# ---------------------------------------------------------------- known answers (no torch)
def lrs(opt):
    return [g["lr"] for g in opt.param_groups]


def run(sched, opt, n, metric=None):
    out = []
    for _ in range(n):
        out.append(lrs(opt)[0])
        sched.step() if metric is None else sched.step(metric)
    return out


def test_known_answers():
    opt = make_sgd((1.0,))
    assert run(S.StepLR(opt, 2, gamma=0.5), opt, 6) == [1, 1, 0.5, 0.5, 0.25, 0.25]
    opt = make_sgd((1.0,))
    assert run(S.MultiStepLR(opt, [1, 3], gamma=0.1), opt, 5) == pytest.approx([1, 0.1, 0.1, 0.01, 0.01])
    opt = make_sgd((2.0,))
    assert run(S.ExponentialLR(opt, 0.5), opt, 4) == [2, 1, 0.5, 0.25]
    opt = make_sgd((1.0,))
    got = run(S.CosineAnnealingLR(opt, T_max=4, eta_min=0.0), opt, 9)
    want = [(1 + math.cos(math.pi * t / 4)) / 2 for t in range(9)]   # and back up after T_max, as torch
    assert got == pytest.approx(want, abs=1e-15)
    opt = make_sgd((1.0,))
    got = run(S.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=2), opt, 8)
    want = [1, 0.5, 1, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2, 1,
            (1 + math.cos(math.pi / 8)) / 2]                          # restarts at 2 and 2 + 4
    assert got == pytest.approx(want, abs=1e-15)
    opt = make_sgd((1.0,))
    assert run(S.LinearLR(opt, start_factor=0.25, total_iters=3), opt, 6) == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1])
    opt = make_sgd((0.5,))
    assert run(S.LambdaLR(opt, lambda e: e + 1), opt, 3) == [0.5, 1.0, 1.5]


def test_onecycle_phases():
    opt = make_sgd((0.123,))
    sched = S.OneCycleLR(opt, max_lr=1.0, total_steps=100, pct_start=0.3)
    values, moms = [], []
    for _ in range(100):
        values.append(lrs(opt)[0])
        moms.append(opt.param_groups[0]["momentum"])
        sched.step() if len(values) < 100 else None
    assert values[0] == pytest.approx(1.0 / 25)                       # initial_lr = max_lr / div_factor
    assert max(values) == pytest.approx(1.0) and int(np.argmax(values)) == 29   # peak at pct_start
    assert values[-1] == pytest.approx(1.0 / 25 / 1e4)                # min_lr
    assert all(a <= b for a, b in zip(values[:29], values[1:30]))
    assert all(a >= b for a, b in zip(values[29:], values[30:]))
    assert moms[0] == 0.95 and moms[29] == pytest.approx(0.85) and moms[-1] == pytest.approx(0.95)
    with pytest.raises(ValueError, match="Tried to step"):
        sched.step()
        sched.step()
    with pytest.raises(ValueError, match="momentum"):
        S.OneCycleLR(LBFGS([np.zeros(2)]), max_lr=1.0, total_steps=10)
    S.OneCycleLR(LBFGS([np.zeros(2)]), max_lr=1.0, total_steps=10, cycle_momentum=False)


def test_plateau_known_answer():
    opt = make_sgd((1.0,))
    sched = S.ReduceLROnPlateau(opt, factor=0.5, patience=2)
    got = [lrs(opt)[0]] + [(sched.step(m), lrs(opt)[0])[1] for m in [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]]
    assert got == [1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5]
    with pytest.raises(TypeError, match="metrics"):
        sched.step("0.5")


def test_works_on_lbfgs_and_any_param_groups_holder():
    opt = LBFGS([np.zeros(2)], lr=1.0)
    sched = S.StepLR(opt, 1, gamma=0.5)
    sched.step()
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[0]["initial_lr"] == 1.0
    assert sched.base_lrs == [1.0]
    with pytest.raises(TypeError, match="param_groups"):
        S.StepLR(object(), 1)
    with pytest.raises(ValueError, match="'lr'"):
        S.StepLR(type("O", (), {"param_groups": [{}]})(), 1)


@pytest.mark.parametrize("make,exc,fragment", [
    (lambda o: S.StepLR(o, 0), ValueError, "step_size"),
    (lambda o: S.StepLR(o, 1.5), TypeError, "step_size"),
    (lambda o: S.StepLR(o, 2, gamma=0), ValueError, "gamma"),
    (lambda o: S.MultiStepLR(o, [5, 3]), ValueError, "increasing"),
    (lambda o: S.ExponentialLR(o, float("nan")), ValueError, "gamma"),
    (lambda o: S.CosineAnnealingLR(o, 0), ValueError, "T_max"),
    (lambda o: S.CosineAnnealingWarmRestarts(o, 5, T_mult=0), ValueError, "T_mult"),
    (lambda o: S.LinearLR(o, start_factor=0), ValueError, "start_factor"),
    (lambda o: S.OneCycleLR(o, max_lr=1.0), ValueError, "total_steps"),
    (lambda o: S.OneCycleLR(o, max_lr=[1.0], total_steps=5), ValueError, "max_lr"),
    (lambda o: S.OneCycleLR(o, max_lr=1.0, total_steps=5, anneal_strategy="exp"), ValueError, "anneal"),
    (lambda o: S.ReduceLROnPlateau(o, factor=1.0), ValueError, "factor"),
    (lambda o: S.ReduceLROnPlateau(o, mode="up"), ValueError, "mode"),
    (lambda o: S.LambdaLR(o, 0.5), TypeError, "lr_lambda"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 1)], milestones=[3]), ValueError, "milestone"),
    (lambda o: S.SequentialLR(o, [S.ReduceLROnPlateau(o), S.StepLR(o, 1)], [3]), ValueError, "ReduceLROnPlateau"),
])
def test_bad_arguments(make, exc, fragment):
    with pytest.raises(exc, match=fragment):
        make(make_sgd())


# ---------------------------------------------------------------- state_dict
STATEFUL = [c for c in CASES if c[0] != "LambdaLR"]


@pytest.mark.parametrize("name,factory,kind", STATEFUL, ids=[c[0] for c in STATEFUL])
def test_state_dict_continues_exactly(name, factory, kind):
    make = make_sgd if kind == "sgd" else make_adam
    opt_a = make()
    a = factory(opt_a, S)
    for _ in range(37):
        a.step()
    saved = pickle.loads(pickle.dumps(a.state_dict()))
    assert _plain_only(saved)
    opt_b = make()
    b = factory(opt_b, S)
    for g, ga in zip(opt_b.param_groups, opt_a.param_groups):   # the optimizer state travels with it
        g.update({k: v for k, v in ga.items() if k not in ("params",)})
    b.load_state_dict(saved)
    for _ in range(40):
        a.step()
        b.step()
        assert a.get_last_lr() == b.get_last_lr() == lrs(opt_b)


def _plain_only(value):
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_only(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_only(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def test_lambda_lr_state_needs_the_function_again():
    opt = make_sgd((1.0,))
    sched = S.LambdaLR(opt, lambda e: 0.5 ** e)
    sched.step()
    saved = sched.state_dict()
    assert _plain_only(saved)
    opt2 = make_sgd((1.0,))
    again = S.LambdaLR(opt2, lambda e: 0.5 ** e)
    again.load_state_dict(saved)
    again.step()
    assert again.get_last_lr() == [0.25]


def test_plateau_state_round_trip():
    opt = make_sgd((1.0,))
    sched = S.ReduceLROnPlateau(opt, patience=1)
    for m in (1.0, 2.0, 2.0):
        sched.step(m)
    saved = sched.state_dict()
    opt2 = make_sgd((lrs(opt)[0],))
    other = S.ReduceLROnPlateau(opt2, patience=1)
    other.load_state_dict(saved)
    assert (other.best, other.num_bad_epochs, other.last_epoch) == (1.0, 0, 3)


@pytest.mark.parametrize("edit,exc,fragment", [
    (lambda s: s.update(step_size=0), ValueError, "step_size"),
    (lambda s: s.update(gamma="0.1"), TypeError, "gamma"),
    (lambda s: s.update(last_epoch=-5), ValueError, "last_epoch"),
    (lambda s: s.update(base_lrs=[0.1]), ValueError, "base_lrs"),
    (lambda s: s.update(type="ExponentialLR"), ValueError, "ExponentialLR"),
    (lambda s: s.pop("gamma"), ValueError, "missing"),
    (lambda s: s.update(code="os.system"), ValueError, "unexpected"),
])
def test_tampered_state_is_refused_and_changes_nothing(edit, exc, fragment):
    opt = make_sgd()
    sched = S.StepLR(opt, 3, gamma=0.5)
    for _ in range(4):
        sched.step()
    before = sched.state_dict()
    bad = sched.state_dict()
    edit(bad)
    with pytest.raises(exc, match=fragment):
        sched.load_state_dict(bad)
    assert sched.state_dict() == before and lrs(opt) == before["_last_lr"]


def test_sequential_state_refuses_a_bad_child_and_changes_nothing():
    opt = make_sgd()
    sched = S.SequentialLR(opt, [S.StepLR(opt, 2), S.ExponentialLR(opt, 0.9)], milestones=[4])
    for _ in range(6):
        sched.step()
    before = sched.state_dict()
    bad = sched.state_dict()
    bad["_schedulers"][1]["gamma"] = -1.0
    with pytest.raises(ValueError, match=r"_schedulers'\]\[1\].*gamma"):
        sched.load_state_dict(bad)
    assert sched.state_dict() == before


# ---------------------------------------------------------------- specs and runners
def test_parse_specs():
    assert S.parse("cosine:T_max=20") == {"name": "cosine", "T_max": 20}
    assert S.parse("step:step_size=5,gamma=0.5") == {"name": "step", "step_size": 5, "gamma": 0.5}
    assert S.parse("onecycle:max_lr=0.01,anneal_strategy=linear,three_phase=true") == \
        {"name": "onecycle", "max_lr": 0.01, "anneal_strategy": "linear", "three_phase": True}
    assert S.parse("multistep:milestones=[5,10],gamma=0.5")["milestones"] == [5, 10]
    assert S.parse("exponential") == {"name": "exponential"}


@pytest.mark.parametrize("text,fragment", [
    ("cosin:T_max=3", "unknown schedule"),
    ("cosine:", "no key=value"),
    ("cosine:T_max", "key=value"),
    ("cosine:T_max=3,T_max=4", "twice"),
    ("cosine:Tmax=3", "does not take 'Tmax'"),
    ("multistep:milestones=[5,10", "unbalanced"),
    ("step:=3", "key=value"),
])
def test_parse_refuses_malformed_specs(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        S.parse(text)


def test_build_runner_steps_in_its_unit():
    opt = make_sgd((1.0,))
    runner = S.build("step:step_size=1,gamma=0.5", opt, iterations_per_epoch=3)
    for _ in range(3):
        runner.after_iteration()
    assert lrs(opt) == [1.0]
    runner.after_epoch(val_acc=0.5)
    assert lrs(opt) == [0.5]
    opt = make_sgd((1.0,))
    runner = S.build({"name": "onecycle", "max_lr": 1.0}, opt, iterations_per_epoch=4, epochs=2)
    assert runner.unit == "iteration" and runner.scheduler.total_steps == 8
    assert runner.scheduler.cycle_momentum               # SGD has a momentum: cycled by default
    runner.after_epoch()
    assert lrs(opt) == [pytest.approx(0.04)]
    runner.after_iteration()
    assert lrs(opt)[0] > 0.04
    opt = make_sgd((1.0,))
    runner = S.build("plateau:patience=0,factor=0.5", opt)
    runner.after_epoch(val_acc=0.5)
    runner.after_epoch(val_acc=0.4)                      # watches val_acc, mode max: worse
    assert lrs(opt) == [0.5]
    with pytest.raises(ValueError, match="val_acc"):
        runner.after_epoch(loss=1.0)
    saved = runner.state_dict()
    opt2 = make_sgd((0.5,))
    again = S.build("plateau:patience=0,factor=0.5", opt2)
    again.load_state_dict(saved)
    assert again.scheduler.best == 0.5


def test_solver_lr_decay_is_exponential_per_epoch():
    # The Solver's lr_decay: group["lr"] *= lr_decay after every epoch. Same floats.
    opt = make_sgd((3e-3,))
    runner = S.build({"name": "exponential", "gamma": 0.95}, opt)
    lr = 3e-3
    for _ in range(30):
        runner.after_iteration()
        runner.after_epoch(val_acc=0.0)
        lr *= 0.95
        assert lrs(opt)[0] == lr


def test_build_refuses_bad_specs():
    with pytest.raises(ValueError, match="T_max"):
        S.build("cosine:T_max=0", make_sgd())
    with pytest.raises(TypeError, match="T_max"):
        S.build("cosine:T_max=abc", make_sgd())
    with pytest.raises(ValueError, match="unit"):
        S.build("cosine:T_max=3,unit=batch", make_sgd())
    with pytest.raises(ValueError, match="total_steps"):
        S.build("onecycle:max_lr=0.1", make_sgd())
