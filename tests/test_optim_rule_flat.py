"""CS231n rules through RuleOptimizer (the Solver's adapter) on a model whose params and grads tile
one buffer: ONE kernel call per step for the whole model, configs exactly as the per-parameter
functional rule leaves them (keys, values, m / v / cache / velocity contents, t), same bits."""
import numpy as np
import pytest

from fastopt.flat import FlatParams
from fastopt.optim import RULES
from fastopt.optim._declarations import cs231n_forms
from fastopt.optim.rule_adapter import RuleOptimizer

KERNEL = {name: rule.kernel for name, (rule, _) in cs231n_forms().items()}
SMALL = {"W1": (13, 7), "b1": (7,), "W2": (7, 5), "b2": (5,)}
# A 3072-1024-1024-10 FullyConnectedNet's parameters (> 4M elements).
BIG = {"W1": (3072, 1024), "b1": (1024,), "W2": (1024, 1024), "b2": (1024,), "W3": (1024, 10), "b3": (10,)}
CONFIGS = {"sgd": {"learning_rate": 1e-2}, "sgd_momentum": {"learning_rate": 1e-2, "momentum": 0.8},
           "nesterov_momentum": {"learning_rate": 1e-2}, "adagrad": {"learning_rate": 1e-2},
           "rmsprop": {"learning_rate": 1e-3, "decay_rate": 0.9}, "adam": {"learning_rate": 1e-3, "beta1": 0.8}}


def bits(a):
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def _grads(shapes, dtype, steps, seed=1):
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()} for _ in range(steps)]


def _run(name, shapes, dtype, kernel_calls, steps=3):
    rng = np.random.default_rng(0)
    values = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    flat = FlatParams(values)
    loose = {k: v.copy() for k, v in values.items()}
    opt = RuleOptimizer(RULES[name], flat.params, CONFIGS[name])
    loose_cfg = {k: dict(CONFIGS[name]) for k in shapes}
    for g in _grads(shapes, dtype, steps):
        for k in shapes:
            flat.grads[k][...] = g[k]
        kernel_calls.clear()
        opt.step(flat.grads)
        # ONE call, whole model: the rule's multi-tensor kernel on the buffer as one tensor
        assert kernel_calls.names("optim") == [KERNEL[name].replace("_step", "_multi")], kernel_calls.calls
        assert opt._flat.one[2].n_segments == 1 and opt._flat.one[2].size == opt._flat.span.size
        for k in shapes:                        # the functional rule per parameter
            RULES[name](loose[k], g[k], loose_cfg[k])
    for k in shapes:
        assert np.array_equal(bits(flat.params[k]), bits(loose[k])), k
        cfg, ref = opt.configs[k], loose_cfg[k]
        assert cfg.keys() == ref.keys(), k
        for key, v in ref.items():
            if isinstance(v, np.ndarray):
                assert cfg[key].shape == v.shape and cfg[key].dtype == v.dtype
                assert np.array_equal(bits(cfg[key]), bits(v)), (k, key)
            else:
                assert cfg[key] == v and type(cfg[key]) is type(v), (k, key)
    return opt, flat, loose, loose_cfg


def _next_grads(name, flat, loose, loose_cfg, dtype, seed):
    """New gradients into the model's buffer, and the functional rule's step on the loose copy."""
    g = _grads(SMALL, dtype, 1, seed=seed)[0]
    for k in SMALL:
        flat.grads[k][...] = g[k]
        RULES[name](loose[k], g[k], loose_cfg[k])


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rule_on_flat_model_is_one_call_and_the_functional_bits(name, dtype, kernel_calls):
    _run(name, SMALL, dtype, kernel_calls)


@pytest.mark.parametrize("name", ["adam", "sgd_momentum", "rmsprop"])
def test_rule_on_flat_model_at_realistic_size(name, kernel_calls):
    _run(name, BIG, np.float32, kernel_calls, steps=2)


def test_state_in_configs_is_a_view_of_one_buffer_and_edits_in_place_are_seen(kernel_calls):
    opt, flat, loose, loose_cfg = _run("adam", SMALL, np.float64, kernel_calls, steps=1)
    opt.configs["b1"]["m"][...] = 0.5          # an in-place edit of a view: the flat step sees it
    loose_cfg["b1"]["m"][...] = 0.5
    _next_grads("adam", flat, loose, loose_cfg, np.float64, seed=7)
    opt.step(flat.grads)
    for k in SMALL:
        assert np.array_equal(flat.params[k], loose[k]), k


def test_rebound_state_or_unequal_configs_fall_back_to_per_parameter_calls(kernel_calls):
    opt, flat, loose, loose_cfg = _run("adam", SMALL, np.float64, kernel_calls, steps=1)
    opt.configs["W2"]["m"] = opt.configs["W2"]["m"].copy()      # rebound: no longer the buffer's view
    loose_cfg["W2"]["m"] = loose_cfg["W2"]["m"].copy()
    opt.configs["b2"]["beta1"] = 0.5                             # one parameter's own hyperparameter
    loose_cfg["b2"]["beta1"] = 0.5
    _next_grads("adam", flat, loose, loose_cfg, np.float64, seed=9)
    kernel_calls.clear()
    opt.step(flat.grads)
    assert kernel_calls.names("optim") == ["adam_step"] * len(SMALL)
    for k in SMALL:
        assert np.array_equal(flat.params[k], loose[k]), k
        assert np.array_equal(opt.configs[k]["m"], loose_cfg[k]["m"]), k


def test_load_state_dict_keeps_the_one_call_path(kernel_calls):
    opt, flat, loose, loose_cfg = _run("rmsprop", SMALL, np.float32, kernel_calls, steps=2)
    saved = opt.state_dict()
    fresh = RuleOptimizer(RULES["rmsprop"], flat.params, CONFIGS["rmsprop"])
    fresh.load_state_dict(saved)
    _next_grads("rmsprop", flat, loose, loose_cfg, np.float32, seed=3)
    kernel_calls.clear()
    fresh.step(flat.grads)
    assert kernel_calls.names("optim") == ["rmsprop_multi"]
    for k in SMALL:
        assert np.array_equal(bits(flat.params[k]), bits(loose[k])), k
        assert np.array_equal(bits(fresh.configs[k]["cache"]), bits(loose_cfg[k]["cache"])), k


def test_gradients_that_are_the_state_are_refused_before_anything_changes(kernel_calls):
    opt, flat, _, _ = _run("adam", SMALL, np.float64, kernel_calls, steps=1)
    before = flat.params.buffer(np.float64).copy()
    m_before = {k: opt.configs[k]["m"].copy() for k in SMALL}
    grads = {k: opt.configs[k]["m"] for k in SMALL}          # tiles the state buffer
    with pytest.raises(ValueError, match="shares memory"):
        opt.step(grads)
    assert np.array_equal(flat.params.buffer(np.float64), before)
    for k in SMALL:
        assert np.array_equal(opt.configs[k]["m"], m_before[k]) and opt.configs[k]["t"] == 1
