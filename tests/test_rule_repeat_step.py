"""RuleOptimizer's repeated flat step: the same FlatArrays of gradients as the last clean flat step
skips _prepare's per-name checks, its StepGuard re-reads what they read (in C). Every change those
checks would see must still be seen: the error, and nothing changed; a valid change, honoured."""
import numpy as np
import pytest

from fastopt.flat import FlatParams
from fastopt.optim import RULES
from fastopt.optim.rule_adapter import RuleOptimizer

SHAPES = {"W1": (13, 7), "b1": (7,), "W2": (7, 5), "b2": (5,)}


def _setup(steps=2, seed=0):
    rng = np.random.default_rng(seed)
    values = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    flat = FlatParams(values)
    loose = {k: v.copy() for k, v in values.items()}
    opt = RuleOptimizer(RULES["adam"], flat.params, {"learning_rate": 1e-2})
    cfgs = {k: {"learning_rate": 1e-2} for k in SHAPES}
    for _ in range(steps):
        _next(rng, flat, loose, cfgs, opt)
    return rng, flat, loose, cfgs, opt


def _next(rng, flat, loose, cfgs, opt, lr=None, calls=None):
    g = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    for k in SHAPES:
        flat.grads[k][...] = g[k]
        if lr is not None:
            cfgs[k]["learning_rate"] = lr
        RULES["adam"](loose[k], g[k], cfgs[k])
    if calls is not None:
        calls.clear()                   # only the optimizer's calls
    opt.step(flat.grads)


def _snapshot(flat, opt):
    # the parameters and each config's state (m, v, t); a rate set on the group is written into the
    # configs at once, by design, and checked at the step
    return flat.params.buffer(np.float32).copy(), {k: {key: (v.copy() if isinstance(v, np.ndarray) else v)
                                                      for key, v in c.items() if key != "learning_rate"}
                                                  for k, c in opt.configs.items()}


def _unchanged(before, flat, opt):
    params, cfgs = before
    assert np.array_equal(params, flat.params.buffer(np.float32))
    for k, c in opt.configs.items():
        assert c.keys() - {"learning_rate"} == cfgs[k].keys()
        for key, v in cfgs[k].items():
            assert np.array_equal(c[key], v), (k, key)


def test_the_same_flatarrays_repeat_the_step_with_the_functional_bits(kernel_calls):
    rng, flat, loose, cfgs, opt = _setup(steps=2)
    assert opt._repeat is not None and opt._repeat[0] is flat.grads
    for _ in range(3):
        _next(rng, flat, loose, cfgs, opt, calls=kernel_calls)
        assert kernel_calls.names("optim") == ["adam_multi"] and opt._repeat is not None
    for k in SHAPES:
        assert np.array_equal(flat.params[k], loose[k]), k
        assert opt.configs[k]["t"] == cfgs[k]["t"] == 5
        for key in ("m", "v"):
            assert np.array_equal(opt.configs[k][key], cfgs[k][key]), (k, key)


def test_a_gradient_view_reshaped_in_place_is_refused_and_nothing_changes():
    rng, flat, loose, cfgs, opt = _setup()
    before = _snapshot(flat, opt)
    g = flat.grads["W1"]
    g.shape = (7, 13)                  # in place: the same object, another shape
    with pytest.raises(ValueError, match=r"grads\['W1'\] must have the shape of params\['W1'\] \(13, 7\)"):
        opt.step(flat.grads)
    _unchanged(before, flat, opt)
    g.shape = (13, 7)
    _next(rng, flat, loose, cfgs, opt)   # and the step after it is the functional rule's
    for k in SHAPES:
        assert np.array_equal(flat.params[k], loose[k]), k


def test_a_parameter_made_read_only_is_refused_and_nothing_changes():
    _, flat, _, _, opt = _setup()
    before = _snapshot(flat, opt)
    flat.params["b2"].flags.writeable = False
    with pytest.raises(ValueError, match=r"params\['b2'\] must be writeable"):
        opt.step(flat.grads)
    flat.params["b2"].flags.writeable = True
    _unchanged(before, flat, opt)


def test_a_group_rate_set_between_repeats_is_checked_and_honoured():
    rng, flat, loose, cfgs, opt = _setup()
    before = _snapshot(flat, opt)
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr"):
        opt.step(flat.grads)
    _unchanged(before, flat, opt)
    opt.param_groups[0]["lr"] = 3e-3
    _next(rng, flat, loose, cfgs, opt, lr=3e-3)
    _next(rng, flat, loose, cfgs, opt, lr=3e-3)    # the repeat after it keeps the new rate
    assert opt._repeat is not None
    for k in SHAPES:
        assert np.array_equal(flat.params[k], loose[k]), k


def test_a_config_edited_between_repeats_is_seen():
    # CS231n code decays the rate in the configs: the watch clears, the step re-reads every config.
    rng, flat, loose, cfgs, opt = _setup()
    for k in SHAPES:
        opt.configs[k]["learning_rate"] = 5e-3
    _next(rng, flat, loose, cfgs, opt, lr=5e-3)
    _next(rng, flat, loose, cfgs, opt, lr=5e-3)
    for k in SHAPES:
        assert np.array_equal(flat.params[k], loose[k]), k


def test_another_mapping_of_the_same_arrays_takes_the_checked_path(kernel_calls):
    rng, flat, loose, cfgs, opt = _setup()
    g = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    for k in SHAPES:
        flat.grads[k][...] = g[k]
        RULES["adam"](loose[k], g[k], cfgs[k])
    opt.step(dict(flat.grads))          # a plain dict can be edited: it is never repeated blindly
    assert opt._repeat is None
    bad = dict(flat.grads)
    bad["W1"] = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match=r"grads\['W1'\]"):
        opt.step(bad)
    for k in SHAPES:
        assert np.array_equal(flat.params[k], loose[k]), k


def test_a_state_array_made_read_only_in_place_is_refused_and_nothing_changes():
    # No config write happens (the flag is set on the array), so no watch sees it: the repeat's guard
    # and _prepare's checks must.
    _, flat, _, _, opt = _setup()
    before = _snapshot(flat, opt)
    opt.configs["W2"]["v"].flags.writeable = False
    with pytest.raises(ValueError, match=r"configs\['W2'\]\['v'\] must be writeable"):
        opt.step(flat.grads)
    _unchanged(before, flat, opt)


@pytest.mark.parametrize("rule", ["adam", "sgd_momentum"])
def test_separate_arrays_with_a_read_only_state_array_are_refused_before_any_parameter_moves(rule):
    # The per-parameter path: refusing at the second parameter after updating the first would
    # leave a half-updated model (found by the seed-6 mutation review).
    rng = np.random.default_rng(0)
    params = {"b": rng.standard_normal(3), "w": rng.standard_normal((2, 3))}
    opt = RuleOptimizer(RULES[rule], params, {"learning_rate": 1e-2})
    grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    opt.step(grads)
    key = "m" if rule == "adam" else "velocity"
    opt.configs["w"][key].flags.writeable = False
    before = {k: v.copy() for k, v in params.items()}
    state = {k: {c: v.copy() for c, v in cfg.items() if isinstance(v, np.ndarray)} for k, cfg in opt.configs.items()}
    with pytest.raises(ValueError, match=rf"configs\['w'\]\['{key}'\] must be writeable"):
        opt.step(grads)
    for k in params:
        assert np.array_equal(params[k], before[k]), k
        for c, v in state[k].items():
            assert np.array_equal(opt.configs[k][c], v), (k, c)


def test_the_compiled_multi_kernel_is_called_positionally_with_the_functional_bits():
    # Unwrapped, the flat step finds the compiled kernel's arguments in per_step's order and calls
    # it positionally (no keyword parsing); the bits stay the functional rule's.
    rng, flat, loose, cfgs, opt = _setup(steps=2)
    names, pick = opt._flat.kernel[3:5]
    assert pick is not None and names[:2] == ("lr", "beta1") and names[-2:] == ("grad_scale", "avg_weight")
    for _ in range(4):
        _next(rng, flat, loose, cfgs, opt)
    for k in SHAPES:
        assert np.array_equal(flat.params[k], loose[k]), k
        assert np.array_equal(opt.configs[k]["m"], cfgs[k]["m"]) and opt.configs[k]["t"] == cfgs[k]["t"] == 6
