"""The update/weight ratio (issue 12): track_update_ratio=True makes every step compute, per
parameter, ||p_new - p_old|| / ||p_old|| (0 when p_old is all zeros); opt.update_ratios() returns
{name or index: ratio} of the last step. Checked against a direct NumPy computation, against the
NumPy twin (both dtypes, odd and > 1M sizes), for thread-count independence and on every path
(validated, cached, flat, per parameter, RuleOptimizer)."""
import numpy as np
import pytest

import fastopt
from fastopt import _optim_kernels, optim
from fastopt.flat import FlatParams
from fastopt.optim import RULES
from fastopt.optim._declarations import class_rules
from fastopt.optim.rule_adapter import RuleOptimizer

from _ratio_bound import ratio_rel

CLASSES = [getattr(optim, r.class_name) for r in class_rules()]
KW = {r.class_name: dict(r.bench) for r in class_rules()}
SIZES = [1, 7, 1023, (1 << 20) + 3]


def direct(old, new):
    o, n = old.astype(np.float64), new.astype(np.float64)
    no = np.sqrt(np.sum(o * o))
    return 0.0 if no == 0 else float(np.sqrt(np.sum((n - o) ** 2)) / no)


def _arrays(dtype, sizes, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(dtype) for n in sizes]


def _run(cls, dtype, sizes, steps=3, named=False, **options):
    params = _arrays(dtype, sizes, 0)
    if named:
        params = {f"w{i}": p for i, p in enumerate(params)}
    opt = cls(params, **KW[cls.__name__], track_update_ratio=True, **options)
    grads = _arrays(dtype, sizes, 1)
    arrays = list(params.values()) if named else params
    seen = []
    for step in range(steps):
        rng = np.random.default_rng(10 + step)
        for g in grads:
            g[...] = rng.standard_normal(g.shape)
        old = [p.copy() for p in arrays]
        opt.step(dict(zip(params, grads)) if named else grads)
        want = {(f"w{i}" if named else i): direct(o, p) for i, (o, p) in enumerate(zip(old, arrays))}
        seen.append((opt.update_ratios(), want))
    return opt, seen


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ratios_match_a_direct_numpy_computation(cls, dtype):
    _, seen = _run(cls, dtype, SIZES[:3] + [70001])
    for got, want in seen:                # steps 1 (validated path) and 2-3 (cached where available)
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=ratio_rel(dtype, 70001), abs=1e-300), key


@pytest.mark.parametrize("cls", [optim.Adam, optim.SGD, optim.AdamW], ids=lambda c: c.__name__)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ratios_at_realistic_size_and_against_the_twin(cls, dtype):
    _, seen = _run(cls, dtype, SIZES, steps=2, named=True)
    fastopt.set_backend("numpy")
    _, twin_seen = _run(cls, dtype, SIZES, steps=2, named=True)
    for (got, want), (tgot, _) in zip(seen, twin_seen):
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=ratio_rel(dtype, max(SIZES))), key
            assert got[key] == pytest.approx(tgot[key], rel=1e-6 if dtype == np.float32 else 1e-12), key


def test_ratios_are_bitwise_independent_of_the_thread_count():
    out = []
    for n in (1, 2):
        fastopt.set_num_threads(n)
        _, seen = _run(optim.Adam, np.float32, [(1 << 21) + 5, 300000], steps=2)
        out.append([got for got, _ in seen])
    assert out[0] == out[1]


def test_zero_parameter_has_ratio_zero_and_skipped_steps_report_zero():
    opt = optim.SGD([np.zeros(10), np.ones(5)], lr=0.1, track_update_ratio=True, skip_nonfinite=True)
    assert opt.update_ratios() == {}
    opt.step([np.ones(10), np.ones(5)])
    r = opt.update_ratios()
    assert r[0] == 0.0 and r[1] == pytest.approx(0.1)
    opt.step([np.full(10, np.nan), np.ones(5)])
    assert opt.update_ratios() == {0: 0.0, 1: 0.0}


def test_update_ratios_needs_tracking():
    opt = optim.Adam([np.ones(3)])
    with pytest.raises(RuntimeError, match="track_update_ratio"):
        opt.update_ratios()
    with pytest.raises(TypeError, match="track_update_ratio"):
        optim.Adam([np.ones(3)], track_update_ratio=1)


@pytest.mark.parametrize("cls", [optim.Adam, optim.SGD, optim.RMSprop], ids=lambda c: c.__name__)
def test_flat_group_ratios_are_per_parameter_and_one_call(cls, kernel_calls):
    shapes = {"W1": (300, 70), "b1": (70,), "W2": (70, 10), "b2": (10,)}
    rng = np.random.default_rng(0)
    fp = FlatParams({k: rng.standard_normal(s) for k, s in shapes.items()})
    opt = cls(dict(fp.params), **KW[cls.__name__], track_update_ratio=True)
    for step in range(3):
        for k in shapes:
            fp.grads[k][...] = rng.standard_normal(shapes[k])
        old = {k: fp.params[k].copy() for k in shapes}
        kernel_calls.clear()
        opt.step(dict(fp.grads))
        multi = cls._RULE.kernel.replace("_step", "_multi")
        if hasattr(_optim_kernels, multi):
            assert kernel_calls.names("optim") == [multi]
        got = opt.update_ratios()
        for k in shapes:
            assert got[k] == pytest.approx(direct(old[k], fp.params[k]), rel=1e-10), k


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rule_optimizer_ratios(name, dtype, kernel_calls):
    shapes = {"W1": (64, 33), "b1": (33,), "W2": (33, 10), "b2": (10,)}
    rng = np.random.default_rng(0)
    fp = FlatParams({k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()})
    opt = RuleOptimizer(RULES[name], fp.params, {"learning_rate": 1e-2}, track_update_ratio=True)
    assert opt.update_ratios() == {}
    for step in range(2):
        for k in shapes:
            fp.grads[k][...] = rng.standard_normal(shapes[k])
        old = {k: fp.params[k].copy() for k in shapes}
        kernel_calls.clear()
        opt.step(fp.grads)
        assert len(kernel_calls.names("optim")) == 1
        got = opt.update_ratios()
        for k in shapes:
            assert got[k] == pytest.approx(direct(old[k], fp.params[k]), rel=ratio_rel(dtype, 64 * 33)), k


def test_rule_optimizer_ratios_on_separate_arrays_and_a_user_rule():
    def user_sgd(w, dw, config=None):
        config = {} if config is None else config
        config.setdefault("learning_rate", 1e-2)
        return w - config["learning_rate"] * dw, config
    params = {"a": np.ones(4), "b": np.zeros(3)}
    for rule in (RULES["sgd"], user_sgd):
        ps = {k: v.copy() for k, v in params.items()}
        opt = RuleOptimizer(rule, ps, {"learning_rate": 0.5}, track_update_ratio=True)
        opt.step({"a": np.ones(4), "b": np.ones(3)})
        got = opt.update_ratios()
        assert got["a"] == pytest.approx(0.5) and got["b"] == 0.0
