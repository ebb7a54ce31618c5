"""The update/weight ratio in the step's own pass, for every rule (issue 12, branches optim2, ratio).

Tracked, each chunk runs through its rule's core in src/_rule_cores.h with the lane adds compiled
in: the rule's formula in explicit vectors with p_old^2 and (p_new - p_old)^2 summed from registers
in the same loop (src/_optim_kernels.pxi); untracked, the same loop without them. Checked here for every rule and its flag combinations, both dtypes, odd
sizes and >= 1M elements, on the flat one-call path, the cached StepPlan path and the per-parameter
path: the step itself (parameters, state, running average) is bitwise what the untracked step
computes; the ratios equal a direct NumPy computation from the same parameters and the NumPy twin's;
they and the step are bitwise the same for 1, 2 and 3 threads and in every compiled build (SSE2,
AVX2, AVX-512 when built); a flat group stays one kernel call with tracking on, and a
RuleOptimizer's standalone parameters each take one multi-tensor call with the flat path's bits."""
import numpy as np
import pytest

import fastopt
from fastopt import _backend, optim
from fastopt.flat import FlatParams
from fastopt.optim import RULES
from fastopt.optim.rule_adapter import RuleOptimizer
from fastopt.reference import optim as twin

from _ratio_bound import ratio_rel

# Every class rule with the options that select its loop variants (flags of its core).
CASES = [
    ("SGD", dict(lr=1e-2)),
    ("SGD", dict(lr=1e-2, momentum=0.9)),
    ("SGD", dict(lr=1e-2, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("SGD", dict(lr=1e-2, momentum=0.9, dampening=0.1, maximize=True)),
    ("Adam", dict(lr=1e-3)),
    ("Adam", dict(lr=1e-3, weight_decay=1e-2)),
    ("Adam", dict(lr=1e-3, amsgrad=True)),
    ("Adam", dict(lr=1e-3, amsgrad=True, weight_decay=1e-2, maximize=True)),
    ("AdamW", dict(lr=1e-3, weight_decay=1e-2)),
    ("Adagrad", dict(lr=1e-2)),
    ("Adagrad", dict(lr=1e-2, weight_decay=1e-3, lr_decay=1e-3)),
    ("RMSprop", dict(lr=1e-2)),
    ("RMSprop", dict(lr=1e-2, centered=True)),
    ("RMSprop", dict(lr=1e-2, momentum=0.9, weight_decay=1e-3)),
    ("RMSprop", dict(lr=1e-2, centered=True, momentum=0.9)),
    ("NAdam", dict(lr=2e-3)),
    ("NAdam", dict(lr=2e-3, weight_decay=1e-2, decoupled_weight_decay=True)),
    ("RAdam", dict(lr=1e-3)),
    ("RAdam", dict(lr=1e-3, weight_decay=1e-2)),
    ("Adamax", dict(lr=2e-3)),
    ("Adamax", dict(lr=2e-3, weight_decay=1e-3)),
    ("Adadelta", dict(lr=1.0)),
    ("Adadelta", dict(lr=1.0, weight_decay=1e-3)),
    ("Lion", dict(lr=1e-4)),
    ("Lion", dict(lr=1e-4, weight_decay=1e-2)),
]
IDS = [f"{c}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for c, kw in CASES]
ODD = [1, 7, 129, 1023, 70001]     # 1, 7: a tail only; 129: 16 blocks of 8 and a tail; 70001: several
                                   # NORM_BLOCK chunks and a partial one
BIG = [(1 << 20) + 3, 7]
EMA = {"SGD": 0.9, "Adam": "polyak", "AdamW": 0.9, "Adagrad": 0.9, "RMSprop": 0.99, "NAdam": 0.9,
       "RAdam": "polyak", "Adamax": 0.9, "Adadelta": 0.9, "Lion": 0.9}   # each core's averaged variant


def direct(old, new):
    o, n = old.astype(np.float64), new.astype(np.float64)
    no = np.sqrt(np.sum(o * o))
    return 0.0 if no == 0 else float(np.sqrt(np.sum((n - o) ** 2)) / no)


def run(name, kw, dtype, sizes, *, track=True, flat=False, steps=3, threads=1, ema=None):
    """(final params, per-step ratios, per-step direct ratios) of `steps` steps of optim.<name>."""
    fastopt.set_num_threads(threads)
    rng = np.random.default_rng(0)
    values = {f"w{i}": rng.standard_normal(n).astype(dtype) for i, n in enumerate(sizes)}
    if flat:
        fp = FlatParams(values)
        params, grads = dict(fp.params), dict(fp.grads)
    else:
        params = values
        grads = {k: np.empty_like(v) for k, v in values.items()}
    opt = getattr(optim, name)(params, **kw, track_update_ratio=track, ema=ema)
    ratios, want = [], []
    for step in range(steps):
        g_rng = np.random.default_rng(10 + step)
        for g in grads.values():
            g[...] = g_rng.standard_normal(g.shape)
        old = {k: p.copy() for k, p in params.items()}
        opt.step(grads)
        if track:
            ratios.append(opt.update_ratios())
            want.append({k: direct(old[k], params[k]) for k in params})
    return {k: p.copy() for k, p in params.items()}, ratios, want


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("flat", [False, True], ids=["separate", "flat"])
def test_tracking_leaves_the_step_bitwise_unchanged_and_ratios_are_right(name, kw, dtype, flat):
    # Step 1 is the validated path (per parameter when separate, one call when flat); steps 2-3
    # the cached StepPlan path.
    ema = EMA.get(name) if flat else None
    plain, _, _ = run(name, kw, dtype, ODD, track=False, flat=flat, ema=ema)
    tracked, ratios, want = run(name, kw, dtype, ODD, track=True, flat=flat, ema=ema)
    for k in plain:
        np.testing.assert_array_equal(tracked[k], plain[k], err_msg=k)
    for got, exp in zip(ratios, want):
        assert got.keys() == exp.keys()
        for k in exp:
            assert got[k] == pytest.approx(exp[k], rel=ratio_rel(dtype, max(ODD)), abs=1e-300), k
            assert got[k] > 0, k                  # every parameter here moves


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tracking_leaves_a_1m_step_bitwise_unchanged(name, kw, dtype):
    # >= 1M elements, two threads: whole chunks of the tracked step against the untracked one.
    ema = EMA.get(name)
    plain, _, _ = run(name, kw, dtype, BIG, track=False, flat=True, steps=2, threads=2, ema=ema)
    tracked, ratios, want = run(name, kw, dtype, BIG, track=True, flat=True, steps=2, threads=2, ema=ema)
    for k in plain:
        np.testing.assert_array_equal(tracked[k], plain[k], err_msg=k)
    for got, exp in zip(ratios, want):
        assert got == pytest.approx(exp, rel=ratio_rel(dtype, BIG[0]))


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ratios_at_1m_bitwise_across_threads_and_against_the_twin(name, kw, dtype):
    one = run(name, kw, dtype, BIG, flat=True, steps=2, threads=1)
    for threads in (2, 3):
        other = run(name, kw, dtype, BIG, flat=True, steps=2, threads=threads)
        assert one[1] == other[1], threads         # dict equality of floats: bitwise (no NaN here)
        for k in one[0]:
            np.testing.assert_array_equal(one[0][k], other[0][k], err_msg=k)
    for got, exp in zip(one[1], one[2]):
        for k in exp:
            assert got[k] == pytest.approx(exp[k], rel=ratio_rel(dtype, BIG[0])), k
    fastopt.set_backend("numpy")
    ref = run(name, kw, dtype, BIG, flat=True, steps=2, threads=1)
    for got, tgot in zip(one[1], ref[1]):
        for k in got:
            assert got[k] == pytest.approx(tgot[k], rel=2e-6 if dtype == np.float32 else 1e-12), k


@pytest.mark.skipif(len(_backend.compiled_variants("optim")) < 2, reason="no SIMD build or CPU")
@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ratios_and_step_bitwise_equal_in_every_build(name, kw, dtype):
    out = {}
    for variant in _backend.compiled_variants("optim"):
        _backend.set_simd(variant)
        assert _backend.simd_variant("optim") == variant
        out[variant] = run(name, kw, dtype, [(1 << 20) + 3, 70001, 1023, 5], flat=True, steps=2,
                           ema=EMA.get(name))
    base = out.pop("sse2")
    for variant, got in out.items():
        assert got[1] == base[1], variant
        for k in base[0]:
            np.testing.assert_array_equal(got[0][k], base[0][k], err_msg=f"{variant} {k}")


def _steps_are_one_call(opt, fp, step_arg, kernel_calls, is_one_call):
    # Three steps (validated, then cached): each one kernel call, ratios as computed directly.
    rng = np.random.default_rng(5)
    for _ in range(3):
        for g in fp.grads.values():
            g[...] = rng.standard_normal(g.shape)
        before = {name: p.copy() for name, p in fp.params.items()}
        kernel_calls.clear()
        opt.step(step_arg())
        assert is_one_call(kernel_calls.names("optim")), kernel_calls.names("optim")
        assert opt.update_ratios() == pytest.approx(
            {name: direct(before[name], p) for name, p in fp.params.items()},
            rel=ratio_rel(next(iter(fp.params.values())).dtype, max(p.size for p in fp.params.values())))


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "NAdam", "RAdam", "Adamax",
                                  "Adadelta", "Lion"])
def test_flat_group_is_one_call_with_tracking_at_1m(name, kernel_calls):
    shapes = {"W1": (1024, 1030), "b1": (1030,), "W2": (1030, 10), "b2": (10,)}
    rng = np.random.default_rng(0)
    fp = FlatParams({k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()})
    assert sum(p.size for p in fp.params.values()) >= 1 << 20
    opt = getattr(optim, name)(dict(fp.params), **dict(CASES[[c for c, _ in CASES].index(name)][1]),
                               track_update_ratio=True)
    multi = opt._RULE.kernel.replace("_step", "_multi")
    _steps_are_one_call(opt, fp, lambda: dict(fp.grads), kernel_calls, lambda names: names == [multi])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nesterov", [False, True])
def test_velocity_multi_against_the_twin_and_across_threads(dtype, nesterov):
    # CS231n momentum has no class: its multi kernel directly, against the twin's.
    k = _backend.kernels("optim")
    out = []
    for module, threads in ((k, 1), (k, 2), (twin, 1)):
        rng = np.random.default_rng(3)
        params = [rng.standard_normal(n).astype(dtype) for n in BIG + ODD]
        old = [p.copy() for p in params]
        grads = [rng.standard_normal(p.size).astype(dtype) for p in params]
        states = [[(0.1 * rng.standard_normal(p.size)).astype(dtype)] for p in params]
        avgs = [np.empty(0, dtype) for _ in params]
        plan = module.StepPlan(params, grads, states, avgs)
        module.velocity_multi(plan, lr=1e-2, mu=0.9, nesterov=nesterov, track_ratio=True, n_threads=threads)
        r = plan.ratios()
        assert r == pytest.approx([direct(o, p) for o, p in zip(old, params)], rel=ratio_rel(dtype, BIG[0]))
        out.append((r, params))
    assert out[0][0] == out[1][0]
    for a, b in zip(out[0][1], out[1][1]):
        np.testing.assert_array_equal(a, b)
    assert out[0][0] == pytest.approx(out[2][0], rel=2e-6 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("name", sorted(RULES))
def test_rule_optimizer_flat_ratios_at_1m_one_call(name, kernel_calls):
    rng = np.random.default_rng(0)
    fp = FlatParams({"W1": rng.standard_normal((1024, 1025)), "b1": rng.standard_normal(1025)})
    opt = RuleOptimizer(RULES[name], fp.params, {"learning_rate": 1e-3}, track_update_ratio=True)
    _steps_are_one_call(opt, fp, lambda: fp.grads, kernel_calls, lambda names: len(names) == 1)


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rule_optimizer_standalone_ratios_come_from_the_step_kernel(name, dtype, kernel_calls):
    # Standalone (non-flat) parameters: each through its rule's multi-tensor kernel with the ratio
    # in the same pass; the same chunks per parameter as on the flat path, so the same bits.
    shapes = {"W1": (1024, 1025), "b1": (1025,), "b2": (7,)}
    out = []
    for flat in (False, True):
        rng = np.random.default_rng(0)
        values = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
        fp = FlatParams(values) if flat else None
        params = fp.params if flat else values
        grads = fp.grads if flat else {k: np.empty_like(v) for k, v in values.items()}
        opt = RuleOptimizer(RULES[name], params, {"learning_rate": 1e-3}, track_update_ratio=True)
        seen = []
        for step in range(2):
            for k in shapes:
                grads[k][...] = rng.standard_normal(shapes[k])
            old = {k: params[k].copy() for k in shapes}
            kernel_calls.clear()
            opt.step(grads)
            names = kernel_calls.names("optim")     # a changed config's 1-element probes aside
            multi = [n for n in names if n.endswith("_multi")]
            assert len(multi) == (1 if flat else len(shapes)) and len(set(multi)) == 1, names
            got = opt.update_ratios()
            assert got == pytest.approx({k: direct(old[k], params[k]) for k in shapes}, rel=ratio_rel(dtype, 1 << 20))
            seen.append(got)
        out.append((seen, {k: params[k].copy() for k in shapes}))
    assert out[0][0] == out[1][0]
    for k in shapes:
        np.testing.assert_array_equal(out[0][1][k], out[1][1][k], err_msg=k)


def test_a_tracked_flat_rule_remakes_its_plan_when_the_backend_switches():
    # The tracked flat path caches a StepPlan, an object of one kernel module: after set_backend or
    # set_simd the cached plan must not be handed to the other module's kernel.
    def make():
        rng = np.random.default_rng(3)
        fp = FlatParams({"W": rng.standard_normal((40, 30)), "b": rng.standard_normal(30)})
        fp.grads["W"][...] = rng.standard_normal((40, 30))
        fp.grads["b"][...] = rng.standard_normal(30)
        return fp, RuleOptimizer(RULES["adam"], fp.params, {"learning_rate": 1e-2}, track_update_ratio=True)
    fp_a, a = make()
    fp_b, b = make()
    a.step(fp_a.grads)
    b.step(fp_b.grads)
    fastopt.set_backend("numpy")
    a.step(fp_a.grads)
    fastopt.set_backend("cython")
    b.step(fp_b.grads)
    for k in fp_a.params:
        np.testing.assert_allclose(fp_a.params[k], fp_b.params[k], rtol=1e-12, atol=1e-15)
        assert a.update_ratios()[k] == pytest.approx(b.update_ratios()[k], rel=1e-12)


@pytest.mark.parametrize("variant", list(_backend.compiled_variants("optim")))
def test_float32_ratio_within_its_bound_on_equal_squares(variant):
    # Equal squares are the float partial sums' worst case (every add rounds at the same magnitude,
    # nothing cancels): the ratio stays within the bound the tests above allow, in every build.
    k = _backend.compiled_variants("optim")[variant]
    n = (1 << 20) + 3
    e = np.empty(0, np.float32)
    for value in (0.1, 1 / 3, 3.0e-5, 7.0e3):
        p = np.full(n, value, np.float32)
        old = p.copy()
        plan = k.StepPlan([p], [np.full(n, 1.7, np.float32)], [[e]], [e])
        k.sgd_multi(plan, lr=1e-3, weight_decay=0.0, momentum=0.0, dampening=0.0, nesterov=False, maximize=False,
                    first_step=False, grad_scale=1.0, avg_weight=0.0, track_ratio=True, n_threads=1)
        exact = direct(old, p)
        assert exact > 0
        assert abs(plan.ratios()[0] / exact - 1) <= ratio_rel(np.float32, n), value
