"""RuleOptimizer skips re-reading its configs while nothing but its own flat step changed them (a
_Watch flag cleared by every mutating dict method): every change a user or CS231n code makes between
steps must still be honoured exactly as the functional rule on plain dicts honours it, and a bad one
must still be refused before anything changes."""
import copy

import numpy as np
import pytest

from fastopt.flat import FlatParams
from fastopt.optim import RULES
from fastopt.optim.rule_adapter import RuleOptimizer

SHAPES = {"W1": (13, 7), "b1": (7,), "W2": (7, 5), "b2": (5,)}
CONFIG = {"learning_rate": 1e-2, "beta1": 0.8}


def bits(a):
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


class Pair:
    """The optimizer on a flat model beside an oracle: the same optimizer on a copy whose watch can
    never be clean (`_watched` unset), so it re-reads every config every step, as before the watch."""

    def __init__(self, dtype=np.float64):
        rng = np.random.default_rng(0)
        values = {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}
        self.flat, self.other = FlatParams(values), FlatParams(values)
        self.opt = RuleOptimizer(RULES["adam"], self.flat.params, CONFIG)
        self.oracle = RuleOptimizer(RULES["adam"], self.other.params, CONFIG)
        self.oracle._watched = None
        self.rng = np.random.default_rng(1)
        self.dtype = dtype

    @property
    def ref(self):
        return self.oracle.configs

    def step(self, calls=None):
        """One step of both; returns the optimizer's kernel calls when `calls` (the fixture) is given."""
        g = {k: self.rng.standard_normal(s).astype(self.dtype) for k, s in SHAPES.items()}
        for k in SHAPES:
            self.flat.grads[k][...] = g[k]
            self.other.grads[k][...] = g[k]
        if calls is not None:
            calls.clear()
        self.opt.step(self.flat.grads)
        names = None if calls is None else calls.names("optim")
        self.oracle.step(self.other.grads)
        assert not self.oracle._watch.clean
        self.check()
        return names

    def check(self):
        for k in SHAPES:
            assert np.array_equal(bits(self.flat.params[k]), bits(self.other.params[k])), k
            cfg, ref = self.opt.configs[k], self.ref[k]
            assert cfg.keys() == ref.keys(), k
            for key, v in ref.items():
                if isinstance(v, np.ndarray):
                    assert np.array_equal(bits(cfg[key]), bits(v)), (k, key)
                else:
                    assert cfg[key] == v, (k, key, cfg[key], v)


def test_clean_steps_are_the_functional_rules_bits(kernel_calls):
    pair = Pair()
    loose = {k: v.copy() for k, v in pair.flat.params.items()}
    configs = {k: dict(CONFIG) for k in SHAPES}
    for _ in range(4):
        assert pair.step(kernel_calls) == ["adam_multi"]
        for k in SHAPES:
            RULES["adam"](loose[k], pair.flat.grads[k].copy(), configs[k])
    assert pair.opt._watch.clean
    for k in SHAPES:
        assert np.array_equal(bits(pair.flat.params[k]), bits(loose[k])), k
        assert np.array_equal(bits(pair.opt.configs[k]["v"]), bits(configs[k]["v"])) and pair.opt.configs[k]["t"] == 4


def both(pair, edit):
    edit(pair.opt.configs)
    edit(pair.ref)


def _scale_lr(configs):          # CS231n's Solver at an epoch end: in place, every config
    for cfg in configs.values():
        cfg["learning_rate"] *= 0.5


def _rebind_m(configs):
    configs["W2"]["m"] = configs["W2"]["m"].copy()


def _rebind_v(configs):
    configs["b2"]["v"] = np.full_like(configs["b2"]["v"], 0.25)


@pytest.mark.parametrize("edit", [
    _scale_lr,
    lambda c: c["b1"].__setitem__("learning_rate", 3e-3),             # one parameter's own rate
    lambda c: c["W2"].update(beta2=0.9),
    lambda c: c["W1"].__setitem__("t", 7),                            # its step counter
    lambda c: [cfg.__setitem__("t", 2) for cfg in c.values()],        # every counter: stays one call
    lambda c: c.__setitem__("W1", dict(c["W1"], beta1=0.5)),          # a replaced config dict
    _rebind_m,                                                        # a rebound state array
    _rebind_v,
    lambda c: c["W1"].setdefault("epsilon", 1e-4) if c["W1"].pop("epsilon") else None,
    lambda c: c["b1"].__ior__({"beta1": 0.7}),
], ids=["scale-lr", "one-lr", "update", "one-t", "all-t", "replace-dict", "rebind-m", "rebind-v",
        "pop-setdefault", "ior"])
def test_every_change_between_steps_is_honoured_as_by_the_functional_rule(edit, kernel_calls):
    pair = Pair()
    pair.step()
    pair.step()
    assert pair.opt._watch.clean
    both(pair, edit)
    assert not pair.opt._watch.clean
    calls = [pair.step(kernel_calls) for _ in range(3)]
    agree = len({repr({k: v for k, v in cfg.items() if not isinstance(v, np.ndarray)})
                 for cfg in pair.ref.values()}) == 1
    if agree and edit not in (_rebind_m, _rebind_v):   # configs agree again: back to one call
        assert calls[-1] == ["adam_multi"] and pair.opt._watch.clean


def test_a_users_own_dict_stays_live_after_it_replaced_a_config():
    pair = Pair()
    pair.step()
    mine = dict(pair.opt.configs["W2"])
    pair.opt.configs["W2"] = mine
    theirs = pair.ref["W2"] = dict(pair.ref["W2"])
    pair.step()
    pair.step()
    mine["beta1"] = 0.5             # a plain dict: no watch; the optimizer must still see this
    theirs["beta1"] = 0.5
    pair.step()
    assert pair.opt.configs["W2"] is mine


def test_a_rebound_configs_mapping_is_read_again():
    pair = Pair()
    pair.step()
    pair.step()
    for opt in (pair.opt, pair.oracle):
        opt.configs = {k: dict(v) for k, v in opt.configs.items()}
    pair.step()
    for opt in (pair.opt, pair.oracle):
        opt.configs["b1"]["epsilon"] = 1e-3
    pair.step()


def test_group_lr_and_load_state_dict_are_honoured(kernel_calls):
    pair = Pair(np.float32)
    pair.step()
    pair.step()
    for opt in (pair.opt, pair.oracle):
        opt.param_groups[0]["lr"] = 2e-3
    pair.step()
    saved = pair.opt.state_dict()
    pair.step()
    for opt in (pair.opt, pair.oracle):
        opt.load_state_dict(saved)
    assert pair.step(kernel_calls) == ["adam_multi"]
    assert pair.step(kernel_calls) == ["adam_multi"] and pair.opt._watch.clean


@pytest.mark.parametrize("edit, error", [
    (lambda c: c["W1"].__setitem__("beta1", 2.0), ValueError),
    (lambda c: c["b2"].__setitem__("epsilon", -1.0), ValueError),
    (lambda c: c["b2"].__setitem__("t", -1), ValueError),
    (lambda c: c["b1"].__setitem__("m", np.zeros(3)), ValueError),
    (lambda c: c["W2"].__setitem__("typo", 1.0), ValueError),
    (lambda c: c["W2"].__setitem__("beta2", "x"), TypeError),
])
def test_a_bad_change_on_a_clean_optimizer_is_refused_and_changes_nothing(edit, error):
    pair = Pair()
    pair.step()
    pair.step()
    assert pair.opt._watch.clean
    edit(pair.opt.configs)
    before = {k: v.copy() for k, v in pair.flat.params.items()}
    state = {k: {key: (v.copy() if isinstance(v, np.ndarray) else v) for key, v in cfg.items()}
             for k, cfg in pair.opt.configs.items()}
    with pytest.raises(error):
        pair.opt.step(pair.flat.grads)
    for k in SHAPES:
        assert np.array_equal(pair.flat.params[k], before[k])
        for key, v in state[k].items():
            now = pair.opt.configs[k][key]
            assert np.array_equal(now, v) if isinstance(v, np.ndarray) else now == v


def test_a_bad_group_rate_on_a_clean_optimizer_is_refused():
    pair = Pair()
    pair.step()
    pair.step()
    pair.opt.param_groups[0]["lr"] = float("nan")
    before = {k: v.copy() for k, v in pair.flat.params.items()}
    with pytest.raises(ValueError, match="lr"):
        pair.opt.step(pair.flat.grads)
    assert all(np.array_equal(pair.flat.params[k], v) for k, v in before.items())


def test_a_read_only_or_reshaped_gradient_is_still_checked_on_a_clean_optimizer():
    pair = Pair()
    pair.step()
    pair.step()
    g = pair.flat.grads["W1"]
    g.shape = (7, 13)               # the same array object, another shape
    with pytest.raises(ValueError, match="shape"):
        pair.opt.step(pair.flat.grads)
    g.shape = (13, 7)
    pair.flat.params["b1"].flags.writeable = False
    try:
        with pytest.raises(ValueError, match="writeable"):
            pair.opt.step(pair.flat.grads)
    finally:
        pair.flat.params["b1"].flags.writeable = True
    pair.step()


def test_configs_copy_and_pickle_as_plain_mappings():
    import pickle

    pair = Pair()
    pair.step()
    pair.step()
    for clone in (copy.deepcopy(pair.opt.configs), pickle.loads(pickle.dumps(pair.opt.configs))):
        assert clone.keys() == pair.opt.configs.keys()
        clone["W1"]["learning_rate"] = 9.0     # the copy's own: the optimizer's stays clean
        assert pair.opt._watch.clean and pair.opt.configs["W1"]["learning_rate"] == CONFIG["learning_rate"]
        assert all(np.array_equal(clone[k]["m"], pair.opt.configs[k]["m"]) for k in SHAPES)
    pair.step()


def test_missing_gradients_are_named_and_a_defaultdict_is_not_grown():
    from collections import defaultdict

    pair = Pair()
    pair.step()
    grads = defaultdict(lambda: np.zeros(3), {k: pair.flat.grads[k] for k in SHAPES if k != "b2"})
    grads["extra"] = np.zeros(5)
    with pytest.raises(ValueError, match=r"missing \['b2'\]"):
        pair.opt.step(grads)
    assert sorted(grads) == sorted([k for k in SHAPES if k != "b2"] + ["extra"])
    with pytest.raises(TypeError, match="float ndarray"):
        pair.opt.step({**{k: pair.flat.grads[k] for k in SHAPES}, "b1": None})
