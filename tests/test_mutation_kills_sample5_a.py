"""Tests written for mutants that survived the fresh mutation sample (seed 5, 3%; MUTATION.md), group A.

Each test pins a documented behaviour and was checked by hand (tools/mutation_verify.py) to fail
with its mutant applied and to pass without; the mutant is named in the comment above it. The exact
text of each refusal is pinned by tests/error_messages.json (tests/_messages.py), not by `match`.
"""
import numpy as np
import pytest

from fastopt import optim
from fastopt.optim.rule_adapter import RuleOptimizer


def _no_check_rule(w, dw, config):
    """A user's rule that checks nothing (so that RuleOptimizer's own checks decide)."""
    config = dict(config)
    config.setdefault("learning_rate", 1e-2)
    return w - config["learning_rate"] * dw, config


# RuleOptimizer.__init____mutmut_32: a read-only parameter is refused when the optimizer is built
# (it is updated in place), not first at a step.
def test_rule_optimizer_refuses_a_read_only_parameter_at_construction():
    w = np.zeros(3)
    w.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\['w'\] must be writeable"):
        RuleOptimizer(optim.sgd, {"w": w})
    with pytest.raises(ValueError, match=r"params\['w'\] must be writeable"):
        RuleOptimizer(_no_check_rule, {"w": w})


# RuleOptimizer.__init____mutmut_79: a negative rate that the user's rule lets through is refused
# by the optimizer, under the config's label.
def test_rule_optimizer_names_a_negative_rate_its_rule_accepts():
    with pytest.raises(ValueError, match=r"optim_config\['learning_rate'\] must be >= 0"):
        RuleOptimizer(_no_check_rule, {"w": np.zeros(2)}, {"learning_rate": -1.0})


# RuleOptimizer._prepare__mutmut_74: the overlap check of a gradient against its parameter's state
# runs again when the state arrays changed in number (the first step created the velocities). A
# velocity set by hand to the gradient array of the step before is refused before anything is
# updated (all or nothing: under the mutant only the rule's own check, at "w", caught it, after "b"
# had been updated).
def test_a_gradient_that_is_the_velocity_set_by_hand_is_refused_after_the_first_step():
    for params in ({"b": np.ones(2), "w": np.ones(3)}, {"w": np.ones(3)}):
        grads = {name: np.full(w.shape, 0.5) for name, w in params.items()}
        opt = RuleOptimizer(optim.sgd_momentum, params, {"learning_rate": 0.1})
        assert not any(isinstance(v, np.ndarray) for v in opt.configs["w"].values())
        opt.step(grads)                      # creates the velocities
        opt.configs["w"]["velocity"] = grads["w"]
        before = {name: w.copy() for name, w in params.items()}
        with pytest.raises(ValueError) as exc:
            opt.step(grads)
        for name, w in params.items():
            np.testing.assert_array_equal(w, before[name])
        exc.match(r"grads\['w'\] shares memory with params\['w'\] or its state")


# RuleOptimizer._config_rates__mutmut_18: configs that hold the group's rate (equal, as the first
# step finds them: optim_config's own number) leave the group its checked Python float; under the
# mutant the group adopted the config's object (an int, or a float32 that a schedule's
# `group['lr'] *= gamma` then multiplied in float32).
def test_the_group_keeps_its_float_rate_when_the_configs_hold_an_equal_one():
    for given in (1, np.float32(0.1)):
        w, g = np.ones(3), np.full(3, 0.5)
        opt = RuleOptimizer(optim.sgd, {"w": w}, {"learning_rate": given})
        opt.step({"w": g})
        lr = opt.param_groups[0]["lr"]
        assert type(lr) is float and lr == float(given)
        assert type(opt.state_dict()["param_groups"][0]["lr"]) is float
        opt.param_groups[0]["lr"] *= 0.3
        assert type(opt.param_groups[0]["lr"]) is float and opt.param_groups[0]["lr"] == float(given) * 0.3
        before = w.copy()
        opt.step({"w": g})
        np.testing.assert_allclose(before - w, float(given) * 0.3 * g, rtol=1e-12)


def _grads(seed, shapes):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in shapes]


# Optimizer._step_group__mutmut_95: a parameter's cached kernel arguments are rebuilt when the layout
# changed (load_state_dict copies the state into new arrays); under the mutant an optimizer that had
# stepped before the load kept updating its old state arrays.
def test_a_loaded_state_continues_the_run_in_an_optimizer_that_had_stepped():
    shapes = [(3,), (2, 2)]
    ref = [np.linspace(-1.0, 1.0, 3), np.linspace(0.5, 2.0, 4).reshape(2, 2)]
    a = optim.Adam(ref, lr=0.1)          # separate arrays: one kernel call per parameter
    for t in range(3):
        a.step(_grads(t, shapes))
    other = [np.zeros(3), np.zeros((2, 2))]
    b = optim.Adam(other, lr=0.1)
    b.step(_grads(10, shapes))
    b.load_state_dict(a.state_dict())
    for p, q in zip(other, ref):
        p[...] = q
    for t in range(3, 5):
        g = _grads(t, shapes)
        a.step(g)
        b.step([x.copy() for x in g])
        for p, q in zip(other, ref):
            np.testing.assert_array_equal(p, q)
    for sa, sb in zip(a.state_dict()["state"].values(), b.state_dict()["state"].values()):
        assert sa.keys() == sb.keys()
        for key in sa:
            np.testing.assert_array_equal(sb[key], sa[key])


# Optimizer.averages__mutmut_2: averages() of an optimizer built without ema= says so (a message no
# test raised).
def test_averages_without_ema_is_refused_with_how_to_get_them():
    opt = optim.Adam([np.ones(2)])
    with pytest.raises(RuntimeError, match="Adam keeps no averages: construct it with ema="):
        opt.averages()


# Optimizer._load_state_dict__mutmut_32 (a group's 'params' that is not a list names its type) and
# _load_state_dict__mutmut_130 (a state entry without its step count): messages no test raised.
def test_load_state_dict_names_a_bad_params_entry_and_a_missing_step():
    opt = optim.Adam([np.ones(2)])
    state = opt.state_dict()
    state["param_groups"][0]["params"] = 3
    with pytest.raises(ValueError, match=r"\['params'\] must list 1 parameter indices, got int"):
        opt.load_state_dict(state)
    state = opt.state_dict()
    del state["state"][0]["step"]
    with pytest.raises(ValueError, match=r"state_dict\['state'\]\[0\] has no 'step' entry"):
        opt.load_state_dict(state)


# Optimizer._load_state_dict__mutmut_72: parameter names belong to the optimizer, not to the state
# loaded: an optimizer of unnamed parameters that loads a named optimizer's state stays unnamed
# (under the mutant it took the saved names, and then refused a state saved under other names).
def test_an_unnamed_optimizer_does_not_take_the_names_of_a_loaded_state():
    opt = optim.Adam([np.ones(2)])
    for name in ("w", "v"):
        named = optim.Adam({name: np.ones(2)}, lr=0.5)
        saved = named.state_dict()
        assert saved["param_groups"][0]["param_names"] == [name]
        opt.load_state_dict(saved)
        assert "param_names" not in opt.param_groups[0] and opt.param_groups[0]["lr"] == 0.5
        assert "param_names" not in opt.state_dict()["param_groups"][0]


# Optimizer._load_state_dict__mutmut_139: a state that leaves out an optional array (Adam's
# max_exp_avg_sq without amsgrad; state_dict() writes it as an empty array) loads, and the run
# continues as with the full state; under the mutant the load failed (None for the array).
def test_a_state_without_an_unused_optional_array_loads_and_continues():
    for make in (lambda: [np.linspace(-1.0, 1.0, 5)],                  # one buffer (flat group)
                 lambda: [np.linspace(-1.0, 1.0, 3), np.ones((2, 2))]):  # per parameter
        ref = make()
        shapes = [p.shape for p in ref]
        a = optim.Adam(ref, lr=0.1)
        a.step(_grads(0, shapes))
        state = a.state_dict()
        for entry in state["state"].values():
            assert entry.pop("max_exp_avg_sq").size == 0
        params = [p.copy() for p in ref]
        b = optim.Adam(params, lr=0.1)
        b.load_state_dict(state)
        g = _grads(1, shapes)
        a.step(g)
        b.step([x.copy() for x in g])
        for p, q in zip(params, ref):
            np.testing.assert_array_equal(p, q)
        assert all(entry["max_exp_avg_sq"].size == 0 for entry in b.state_dict()["state"].values())


# Hyper.bounds__mutmut_2 (`highXX=`): the options of the rules that exist only as classes take
# their range from the declaration (Hyper.bounds), the upper bound too (--rho <= 1, never refused
# by a test before; test_train_cli.py, which refuses --weight-decay -1, is left out of the fast
# mutation runs).
@pytest.mark.parametrize("argv, fragment", [
    (["--optimizer", "adadelta", "--rho", "1.5"], "--rho must be a number >= 0 and <= 1, got '1.5'"),
    (["--optimizer", "nadam", "--momentum-decay", "-1"], "--momentum-decay must be a number >= 0, got '-1'"),
])
def test_class_only_optimizer_options_are_refused_out_of_their_declared_range(argv, fragment, capsys):
    from fastopt.cli import main
    assert main(["train", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"fastopt train: error: {fragment}\n" and captured.out == ""


# _adagrad_step__mutmut_13 (`maximize=None` to the kernel, read as False): Adagrad with
# maximize=True ascends, as torch's (only the torch-parity test, skipped without torch, had it).
@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_adagrad_maximize_ascends(backend):
    from fastopt import _backend
    from test_optim_api import GRADS, P0, close, ref_adagrad
    if backend == "cython" and not _backend._compiled_available():
        pytest.skip("the compiled core is not built")
    with _backend.preserved():
        _backend.set_backend(backend)
        for kwargs in (dict(lr=0.2), dict(lr=0.2, lr_decay=0.1, weight_decay=0.1, initial_accumulator_value=0.3)):
            p = np.array(P0)
            opt = optim.Adagrad([p], maximize=True, **kwargs)
            for g in GRADS:
                opt.step([np.array(g)])
            ref = dict(lr=0.2) if len(kwargs) == 1 else dict(lr=0.2, lr_decay=0.1, wd=0.1, init=0.3)
            close(p, ref_adagrad(list(P0), GRADS, maximize=True, **ref), np.float64)


# functional.make_function__mutmut_62 (`__doc__ = None`): each CS231n update function documents its
# config: every key the function fills in, the hyperparameters with their defaults.
def test_cs231n_update_functions_document_their_config_keys():
    for name, update in optim.RULES.items():
        lines = (update.__doc__ or "").splitlines()
        config_lines = [line for line in lines if line.startswith("config: ")]
        assert len(config_lines) == 1, name
        line = config_lines[0]
        _, config = update(np.zeros(2), np.zeros(2))
        for key, value in config.items():
            assert key in line, (name, key)
            if isinstance(value, float):       # a hyperparameter: its default, as filled in
                assert f"{key} ({value:g})" in line, (name, key)
        assert lines[0] and not lines[0].startswith("config: "), name   # the form's own description first


# _classes._doc__mutmut_30 (the Options line wrapped in XX): each optimizer class documents the
# options its constructor takes beyond the hyperparameters (keyword-only, not in a param group).
def test_optimizer_classes_document_their_options():
    import inspect
    from fastopt.optim._declarations import class_rules
    classes = [getattr(optim, rule.class_name) for rule in class_rules() if rule.class_name]
    assert optim.Adam in classes and optim.SGD in classes
    for cls in classes:
        group = cls([np.zeros(2)]).param_groups[0]
        options = [p.name for p in inspect.signature(cls).parameters.values()
                   if p.kind is p.KEYWORD_ONLY and p.name not in group]
        assert options, cls
        assert f"Options: {', '.join(options)} (see fastopt.optim.Optimizer)." in cls.__doc__.splitlines(), cls
