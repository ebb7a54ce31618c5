"""The compiled cached step (issue 11): one run_cached call checks every group's guard, computes
each group's per-step scalars in C, runs its multi-tensor pass and writes the new step counts.

Its scalars must be the rule's per_step bit for bit (compared directly, and through the bits of
whole steps against the validated path), on both backends. With several threads an untracked
step splits the elements evenly (boundaries inside the 16384-element chunks): the bits must not
depend on the thread count, and must equal the NumPy twin's. The rule adapter's positional call
of a multi kernel (its argument names read from the code object) is tested here too."""
import numpy as np
import pytest

import fastopt
from fastopt import _backend, optim
from fastopt.flat import FlatParams
from fastopt.optim._base import _positional
from fastopt.optim._declarations import class_rules
from test_optim_small_step import CASES, IDS, arrays, assert_same, assert_unchanged, fill, snapshot

SIZES = [1000] * 3 + [1, 7, 1023, 16385]


def _separate(cls, kw, dtype, **opts):
    return cls(arrays(dtype, sizes=SIZES), **kw, **opts)


def _flat(cls, kw, dtype, **opts):
    flat = FlatParams({f"p{i}": a for i, a in enumerate(arrays(dtype, sizes=SIZES))})
    return cls(list(flat.params.values()), **kw, **opts)


def _flat_grads(dtype):
    return list(FlatParams({f"p{i}": a for i, a in enumerate(arrays(dtype, seed=1, sizes=SIZES))}).params.values())


@pytest.mark.parametrize("cls, kw", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [_separate, _flat], ids=["separate", "flat"])
@pytest.mark.parametrize("ema, track", [(None, False), (0.9, False), ("polyak", False), (None, True)],
                         ids=["plain", "ema", "polyak", "track"])
def test_the_cached_step_gives_the_validated_bits(cls, kw, dtype, make, ema, track):
    fast, slow = (make(cls, kw, dtype, ema=ema, track_update_ratio=track) for _ in range(2))
    grads = arrays(dtype, seed=1, sizes=SIZES) if make is _separate else _flat_grads(dtype)
    for step in range(7):
        fill(grads, 10 + step)
        fast.step(grads)                        # the same gradient objects: cached from step 2 on
        slow.step([g.copy() for g in grads])    # new objects every step: always validated
        assert (fast._fast.program.last_threads != (0,)) == (step > 0)     # the cached step ran
        # one multi-tensor pass: a flat group's plan holds its buffer as one tensor (unless tracked)
        assert [plan.n_segments for _, plan, _ in fast._fast.entries] == [
            len(SIZES) if make is _separate or track else 1]
        if track:
            assert fast.update_ratios() == slow.update_ratios()
    assert_same(fast, slow)


def _hypers(rule, rng):
    """Validated-looking hyperparameters of `rule` with random values (and its fixed ones)."""
    h = {}
    for hp in rule.hypers:
        if hp.kind == "bool":
            h[hp.name] = bool(rng.integers(2))
        elif hp.name == "betas":
            h[hp.name] = (float(rng.choice([0.0, 0.5, 0.9, 0.99])), float(rng.choice([0.0, 0.9, 0.999, 0.9999])))
        else:
            h[hp.name] = float(rng.choice([0.0, 1e-3, 0.1, 0.37, 0.9]))
    return {**h, **rule.fixed}


# The rules whose per_step derives scalars from the step count (the others pass hyperparameters on).
COUNTED = {"adam", "adamw", "adagrad", "nadam", "radam", "adamax"}


@pytest.mark.parametrize("rule", class_rules(), ids=lambda r: r.key)
@pytest.mark.parametrize("variant", sorted(_backend.compiled_variants("optim")))
def test_step_scalars_are_the_rules_per_step_bit_for_bit(rule, variant):
    k = _backend.compiled_variants("optim")[variant]
    rng = np.random.default_rng(7)
    for trial in range(40):
        h = _hypers(rule, rng)
        if rule.key == "radam" and h["betas"][1] == 0.0:
            continue                      # rho_inf = 1: per_step divides by zero (torch's too)
        for t in (1, 2, 3, 5, 6, 7, 10, 99, 1000, 12345, 10 ** 6):
            state = {"step": t - 1, "mu_product": float(rng.uniform(0.1, 0.9))}
            scalars, new = rule.per_step(h, state, False)
            got = k.step_scalars(rule.multi_kernel, h, t, state["mu_product"])
            assert bool(got) == (rule.key in COUNTED)
            for name, value in got.items():
                want = new[name] if name == "mu_product" else scalars[name]
                assert type(value) is type(want) and value == want, (rule.key, h, t, name, value, want)


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_a_cached_step_program_refuses_wrong_parts(backend):
    fastopt.set_backend(backend)
    opt = optim.NAdam(arrays(np.float64), lr=1e-2, ema=0.5)
    grads = arrays(np.float64, seed=1)
    opt.step(grads)
    program = opt._fast.program
    CachedStep = type(program)
    parts = list(program.entries)
    groups = tuple(opt.param_groups)
    with pytest.raises(ValueError, match="kernel must be one of"):
        CachedStep("nadam_step", groups, parts, ("step", "mu_product", "avg_count"), 0.5, None)
    with pytest.raises(ValueError, match="keys must be"):
        CachedStep("nadam_multi", groups, parts, ("step",), 0.5, None)
    with pytest.raises(ValueError, match="ema must be"):
        CachedStep("nadam_multi", groups, parts, ("step", "mu_product", "avg_count"), 1.5, None)
    with pytest.raises(TypeError, match="entries must hold"):
        CachedStep("nadam_multi", groups, [parts[0][:2]], ("step", "mu_product", "avg_count"), 0.5, None)
    # and a step that does not match what the program was made for declines, changing nothing
    snap = snapshot(opt)
    k = _backend.kernels("optim")
    assert not k.run_cached(program, grads[:-1], opt.param_groups, 1, False)
    assert not k.run_cached(program, grads, opt.param_groups[:0], 1, False)
    assert not k.run_cached(program, iter(grads), opt.param_groups, 1, False)
    assert not k.run_cached(program, [g.copy() for g in grads], opt.param_groups, 1, False)
    assert_unchanged(opt, snap)
    assert k.run_cached(program, grads, opt.param_groups, 1, False)
    assert opt.state[0]["step"] == 2


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_a_cached_step_program_refuses_a_plan_without_the_arrays_its_pass_needs(backend):
    # made by hand (the optimizer never does this): amsgrad's max_exp_avg_sq, or an average, that
    # the plan does not hold would be read through a null pointer; refused when the program is made
    fastopt.set_backend(backend)
    opt = optim.Adam(arrays(np.float64), lr=1e-2)
    opt.step(arrays(np.float64, seed=1))
    program = opt._fast.program
    (plan, guard, hyper), = program.entries
    CachedStep, groups = type(program), tuple(opt.param_groups)
    with pytest.raises(ValueError, match=r"used state arrays \(and average\) are \(True, True, False, False\); "
                                         r"these hyperparameters need \(True, True, True, False\)"):
        CachedStep("adam_multi", groups, [(plan, guard, {**hyper, "amsgrad": True})], ("step",), None, None)
    with pytest.raises(ValueError, match=r"need \(True, True, False, True\)"):
        CachedStep("adam_multi", groups, [(plan, guard, hyper)], ("step", "avg_count"), 0.5, None)
    with pytest.raises(ValueError, match=r"need \(True, False\)$"):       # an Adam plan for Adagrad's pass
        CachedStep("adagrad_multi", groups, [(plan, guard, hyper)], ("step",), None, None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_wrapped_kernel_module_sees_one_multi_tensor_pass_and_the_same_bits(dtype, monkeypatch):
    from _kernel_calls import count_kernel_calls
    plain, wrapped = _separate(optim.Adam, dict(lr=1e-2), dtype), _separate(optim.Adam, dict(lr=1e-2), dtype)
    grads = arrays(dtype, seed=1, sizes=SIZES)
    fill(grads, 3)
    plain.step(grads)
    plain.step(grads)
    calls = count_kernel_calls(monkeypatch)      # asserts that every kernel it sees has keywords only
    wrapped.step(grads)
    wrapped.step(grads)
    assert calls == ["adam_step"] * len(SIZES) + ["adam_multi"]
    assert_same(plain, wrapped)


def test_positional_needs_exactly_the_checked_argument_names():
    def kernel(plan, lr, beta1, track_ratio, n_threads):
        pass
    assert _positional(kernel, {"plan": 1}, ("lr", "beta1"), ("track_ratio", "n_threads")) == (1,)
    assert _positional(kernel, {"plan": 1}, ("beta1", "lr"), ("track_ratio", "n_threads")) is None
    assert _positional(kernel, {"plan": 1}, ("lr", "beta1", "eps"), ("track_ratio", "n_threads")) is None
    assert _positional(kernel, {"param": 1}, ("lr", "beta1"), ("track_ratio", "n_threads")) is None
    assert _positional(kernel, {"plan": 1}, ("lr",), ("beta1", "track_ratio", "n_threads")) is None
    assert _positional(lambda *a, **k: None, {"plan": 1}, ("lr", "beta1"), ("track_ratio", "n_threads")) is None

    def flat(grad, param, lr, beta1, n_threads):
        pass
    assert _positional(flat, {"param": "p", "grad": "g"}, ("lr", "beta1"), ("n_threads",)) == ("g", "p")


def test_a_rebound_hyperparameter_is_seen_by_the_cached_step():
    fast, slow = (_separate(optim.Adam, dict(lr=1e-2), np.float64) for _ in range(2))
    grads = arrays(np.float64, seed=1, sizes=SIZES)
    for step, lr in enumerate([1e-2, 1e-2, 3e-3, 3e-3, np.float64(3e-3), 1e-3]):
        fill(grads, step)
        for opt in (fast, slow):
            opt.param_groups[0]["lr"] = lr
        fast.step(grads)
        slow.step([g.copy() for g in grads])
        assert type(fast.param_groups[0]["lr"]) is float   # np.float64 was validated and normalized
    assert_same(fast, slow)
    fast.param_groups[0]["lr"] = -1.0
    before = [p.copy() for p in fast.param_groups[0]["params"]]
    with pytest.raises(ValueError, match="lr"):
        fast.step(grads)
    assert all(np.array_equal(a, b) for a, b in zip(before, fast.param_groups[0]["params"]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls, kw", [(optim.Adam, dict(lr=1e-2, weight_decay=0.01)),
                                     (optim.SGD, dict(lr=0.1, momentum=0.9)), (optim.Lion, dict(lr=1e-3))],
                         ids=["Adam", "SGD", "Lion"])
def test_the_even_thread_split_keeps_the_bits_of_one_thread_and_the_twin(dtype, cls, kw):
    # sizes put the split points inside chunks, at odd places, and past 1M elements
    sizes = [1_000_003, 7, 65_537, 16_383, 100_001]
    results = []
    with _backend.preserved():
        for backend, threads in [("numpy", 1), ("cython", 1), ("cython", 2), ("cython", 3)]:
            _backend.set_backend(backend)
            fastopt.set_num_threads(threads)
            opt = cls(arrays(dtype, sizes=sizes), **kw)
            grads = arrays(dtype, seed=1, sizes=sizes)
            for step in range(3):
                fill(grads, step)
                opt.step(grads)
            results.append(opt)
    for other in results[1:]:
        assert_same(results[0], other)
