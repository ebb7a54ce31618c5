"""The compiled optimizer kernels against their NumPy twins, known answers, and torch.optim parity.

The compiled modules and the twin are imported directly (not through the backend switch), so the
comparison never degenerates into the reference against itself. Every compiled SIMD variant this
machine can run (the SSE2 baseline, and the AVX2+FMA build where present) is checked against the twin.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastopt import _backend
from fastopt import _optim_kernels as K
from fastopt.reference import optim as R


# The compiled optim modules this machine runs: the baseline first, then every SIMD build it supports.
VARIANTS = list(_backend.compiled_variants("optim").values())

DTYPES = [np.float32, np.float64]
# 70001 is split by two threads (the kernels split whatever n_threads they are given).
SIZES = [1, 7, 1023, 70001]
TOL = {np.float32: dict(rtol=2e-6, atol=1e-7), np.float64: dict(rtol=1e-13, atol=1e-300)}
# No extra tolerance for the AVX2 variant: it is built with -ffp-contract=off (no FMA contraction),
# so it rounds exactly like the baseline (test_simd_dispatch checks every kernel bitwise).


def tolerance(mod, dtype, arrays):
    return dict(TOL[dtype])


def empty(dtype):
    return np.empty(0, dtype)


# The kernels take keywords (the API calls them so); these tests write the calls in the kernels'
# positional order of arrays and scalars, and `call` names them (the averaging and clipping
# arguments get their "off" values: no average, gradient factor 1).
ARGS = {
    "sgd_step": (("param", "grad", "momentum_buffer"),
                 ("lr", "weight_decay", "momentum", "dampening", "nesterov", "maximize", "first_step")),
    "velocity_step": (("param", "grad", "velocity"), ("lr", "mu", "nesterov")),
    "adagrad_step": (("param", "grad", "state_sum"), ("clr", "weight_decay", "eps", "maximize")),
    "rmsprop_step": (("param", "grad", "square_avg", "grad_avg", "momentum_buffer"),
                     ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize")),
    "adam_step": (("param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
                  ("lr", "beta1", "beta2", "eps", "weight_decay", "step_size", "bias_correction2_sqrt",
                   "decoupled", "amsgrad", "maximize")),
}


def call(mod, name, *args):
    """mod.<name>(arrays..., scalars..., n_threads) with every argument passed by keyword."""
    arrays, scalars = ARGS[name]
    assert len(args) == len(arrays) + len(scalars) + 1, name
    kw = dict(zip(arrays + scalars, args[:-1]), n_threads=args[-1])
    if name != "velocity_step":
        kw.update(param_avg=np.empty(0, args[0].dtype), grad_scale=1.0, avg_weight=0.0)
    return getattr(mod, name)(**kw)


def bits(a):
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def run_all(name, arrays, scalars, mod=K):
    """Run kernel `name` of `mod` with 1 thread, with 2 threads and its twin, each on fresh copies.

    arrays: [param, grad, *state] (grad is made read-only, as a caller may pass one).
    Returns the three lists of arrays after the step.
    """
    results = []
    for m, n_threads in ((mod, 1), (mod, 2), (R, 1)):
        copies = [a.copy() for a in arrays]
        copies[1].flags.writeable = False
        call(m, name, *copies, *scalars, n_threads)
        results.append(copies)
    return results


def check_against_twin(name, arrays, scalars):
    """Every compiled variant: 1 vs 2 threads bitwise equal, and close to the twin."""
    dtype = arrays[0].dtype.type
    for mod in VARIANTS:
        one, two, twin = run_all(name, arrays, scalars, mod)
        for k, (a1, a2, ar) in enumerate(zip(one, two, twin)):
            # Elementwise kernels: the thread count must not change a single bit.
            assert np.array_equal(bits(a1), bits(a2)), f"{mod.SIMD_VARIANT} array {k}: 1 vs 2 threads differ"
            np.testing.assert_allclose(a1, ar, err_msg=f"{mod.SIMD_VARIANT} array {k} vs twin",
                                       **tolerance(mod, dtype, arrays))
        np.testing.assert_array_equal(one[1], arrays[1])  # grad untouched


# ---------------------------------------------------------------------------------------------
# hypothesis: random sizes, dtypes, hyperparameters, flags and states

sizes = st.sampled_from(SIZES)
dtypes = st.sampled_from(DTYPES)
flags = st.booleans()
seeds = st.integers(0, 2**32 - 1)


def unit(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def normal(rng, n, dtype, scale=1.0):
    return (scale * rng.standard_normal(n)).astype(dtype)


def positive(rng, n, dtype, scale=1.0):
    return (scale * rng.random(n) + 1e-3).astype(dtype)


@settings(max_examples=40)
@given(n=sizes, dtype=dtypes, seed=seeds, lr=unit(1e-4, 1.0), wd=st.sampled_from([0.0, 1e-2, 0.3]),
       momentum=st.sampled_from([0.0, 0.5, 0.9]), dampening=unit(0.0, 0.5), nesterov=flags,
       maximize=flags, first_step=flags)
def test_sgd_matches_twin(n, dtype, seed, lr, wd, momentum, dampening, nesterov, maximize, first_step):
    rng = np.random.default_rng(seed)
    buf = normal(rng, n, dtype) if momentum != 0 else empty(dtype)
    check_against_twin("sgd_step", [normal(rng, n, dtype), normal(rng, n, dtype), buf],
                       [lr, wd, momentum, dampening, nesterov, maximize, first_step])


@settings(max_examples=25)
@given(n=sizes, dtype=dtypes, seed=seeds, lr=unit(1e-4, 1.0), mu=unit(0.0, 0.99), nesterov=flags)
def test_velocity_matches_twin(n, dtype, seed, lr, mu, nesterov):
    rng = np.random.default_rng(seed)
    check_against_twin("velocity_step", [normal(rng, n, dtype) for _ in range(3)], [lr, mu, nesterov])


@settings(max_examples=25)
@given(n=sizes, dtype=dtypes, seed=seeds, clr=unit(1e-4, 1.0), wd=st.sampled_from([0.0, 1e-2]),
       eps=st.sampled_from([1e-10, 1e-8, 1e-3]), maximize=flags)
def test_adagrad_matches_twin(n, dtype, seed, clr, wd, eps, maximize):
    rng = np.random.default_rng(seed)
    check_against_twin("adagrad_step",
                       [normal(rng, n, dtype), normal(rng, n, dtype), positive(rng, n, dtype)],
                       [clr, wd, eps, maximize])


@settings(max_examples=40)
@given(n=sizes, dtype=dtypes, seed=seeds, lr=unit(1e-4, 0.1), alpha=unit(0.5, 0.999),
       eps=st.sampled_from([1e-8, 1e-3]), wd=st.sampled_from([0.0, 1e-2]),
       momentum=st.sampled_from([0.0, 0.9]), centered=flags, maximize=flags)
def test_rmsprop_matches_twin(n, dtype, seed, lr, alpha, eps, wd, momentum, centered, maximize):
    rng = np.random.default_rng(seed)
    grad_avg = normal(rng, n, dtype, 0.1) if centered else empty(dtype)
    # square_avg >= grad_avg**2 as in a real run, so the centered variance stays >= 0
    square_avg = (positive(rng, n, dtype) + (grad_avg.astype(np.float64) ** 2 if centered else 0)).astype(dtype)
    buf = normal(rng, n, dtype) if momentum > 0 else empty(dtype)
    check_against_twin("rmsprop_step",
                       [normal(rng, n, dtype), normal(rng, n, dtype), square_avg, grad_avg, buf],
                       [lr, alpha, eps, wd, momentum, centered, maximize])


def adam_scalars(lr, beta1, beta2, t):
    """The per-step scalars a caller computes (double, once per step)."""
    return lr / (1 - beta1 ** t), math.sqrt(1 - beta2 ** t)


@settings(max_examples=50)
@given(n=sizes, dtype=dtypes, seed=seeds, lr=unit(1e-4, 0.1), beta1=unit(0.0, 0.99),
       beta2=unit(0.9, 0.9999), eps=st.sampled_from([1e-8, 1e-6]), wd=st.sampled_from([0.0, 1e-2, 0.5]),
       t=st.integers(1, 1000), decoupled=flags, amsgrad=flags, maximize=flags)
def test_adam_matches_twin(n, dtype, seed, lr, beta1, beta2, eps, wd, t, decoupled, amsgrad, maximize):
    rng = np.random.default_rng(seed)
    step_size, bc2_sqrt = adam_scalars(lr, beta1, beta2, t)
    vmax = positive(rng, n, dtype) if amsgrad else empty(dtype)
    check_against_twin("adam_step",
                       [normal(rng, n, dtype), normal(rng, n, dtype), normal(rng, n, dtype, 0.1),
                        positive(rng, n, dtype), vmax],
                       [lr, beta1, beta2, eps, wd, step_size, bc2_sqrt, decoupled, amsgrad, maximize])


# ---------------------------------------------------------------------------------------------
# known answers, worked out by hand from the formulas

@pytest.fixture(params=VARIANTS + [R], ids=[m.SIMD_VARIANT for m in VARIANTS] + ["twin"])
def mod(request):
    return request.param


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_first_step_moves_by_lr_times_sign(mod, dtype):
    # t = 1, m = v = 0: m = (1-b1) g, v = (1-b2) g^2, so step_size*m/denom = lr*g/(|g| + eps).
    g = np.array([3.0, -0.5, 1e-3, -20.0], dtype)
    p = np.array([1.0, 2.0, -1.0, 0.0], dtype)
    lr, beta1, beta2 = 0.01, 0.9, 0.999
    m, v = np.zeros_like(p), np.zeros_like(p)
    step_size, bc2_sqrt = adam_scalars(lr, beta1, beta2, 1)
    call(mod, "adam_step", p, g, m, v, empty(dtype), lr, beta1, beta2, 1e-12, 0.0, step_size, bc2_sqrt,
                  False, False, False, 1)
    np.testing.assert_allclose(p, np.array([0.99, 2.01, -1.01, 0.01]), rtol=1e-5)
    np.testing.assert_allclose(m, 0.1 * g.astype(np.float64), rtol=1e-6)
    np.testing.assert_allclose(v, 0.001 * g.astype(np.float64) ** 2, rtol=1e-5)


def test_adamw_decays_param_and_adam_adds_to_grad(mod):
    p = np.array([2.0]); g = np.array([0.0])
    lr, wd, eps = 0.1, 0.5, 1e-8
    step_size, bc2_sqrt = adam_scalars(lr, 0.9, 0.999, 1)
    # AdamW with zero gradient: only the decay acts, param * (1 - lr*wd) = 2 * 0.95.
    call(mod, "adam_step", p, g, np.zeros(1), np.zeros(1), empty(np.float64), lr, 0.9, 0.999, eps, wd,
                  step_size, bc2_sqrt, True, False, False, 1)
    assert p[0] == pytest.approx(1.9, rel=1e-15)
    # Adam (L2) with zero gradient: g = wd * p = 1, so the first step moves by ~lr.
    p = np.array([2.0])
    call(mod, "adam_step", p, g, np.zeros(1), np.zeros(1), empty(np.float64), lr, 0.9, 0.999, eps, wd,
                  step_size, bc2_sqrt, False, False, False, 1)
    assert p[0] == pytest.approx(1.9, rel=1e-7)


def test_adam_amsgrad_uses_the_running_max(mod):
    # v_new = 0.5*v + 0.5*g^2 = 0.5*4 + 0 = 2 < vmax = 9: denom = sqrt(9)/1 + 0 = 3.
    p, g = np.array([1.0]), np.array([0.0])
    m, v, vmax = np.array([6.0]), np.array([4.0]), np.array([9.0])
    call(mod, "adam_step", p, g, m, v, vmax, 0.1, 0.5, 0.5, 0.0, 0.0, 1.0, 1.0, False, True, False, 1)
    assert m[0] == 3.0 and v[0] == 2.0 and vmax[0] == 9.0
    assert p[0] == 1.0 - 3.0 / 3.0


def test_sgd_momentum_two_steps(mod):
    p, g = np.array([1.0, 2.0]), np.array([0.5, -1.0])
    buf = np.zeros(2)
    call(mod, "sgd_step", p, g, buf, 0.1, 0.0, 0.9, 0.0, False, False, True, 1)   # buf = g
    np.testing.assert_array_equal(buf, g)
    np.testing.assert_allclose(p, [0.95, 2.1], rtol=1e-15)
    call(mod, "sgd_step", p, g, buf, 0.1, 0.0, 0.9, 0.0, False, False, False, 1)  # buf = 0.9 g + g
    np.testing.assert_allclose(buf, [0.95, -1.9], rtol=1e-15)
    np.testing.assert_allclose(p, [0.855, 2.29], rtol=1e-15)


def test_sgd_nesterov_dampening_weight_decay_maximize(mod):
    p, g, buf = np.array([2.0]), np.array([1.0]), np.array([1.0])
    # maximize: g = -1; wd: g = -1 + 0.5*2 = 0; buf = 0.9*1 + 0.8*0 = 0.9; nesterov: g = 0 + 0.81
    call(mod, "sgd_step", p, g, buf, 0.1, 0.5, 0.9, 0.2, True, True, False, 1)
    assert buf[0] == pytest.approx(0.9, rel=1e-15)
    assert p[0] == pytest.approx(2.0 - 0.081, rel=1e-15)


def test_velocity_plain_and_nesterov(mod):
    p, g, v = np.array([1.0]), np.array([2.0]), np.array([0.5])
    call(mod, "velocity_step", p, g, v, 0.1, 0.9, False, 1)       # v = 0.45 - 0.2 = 0.25; p = 1.25
    assert v[0] == pytest.approx(0.25, rel=1e-15) and p[0] == pytest.approx(1.25, rel=1e-15)
    p, v = np.array([1.0]), np.array([0.5])
    call(mod, "velocity_step", p, g, v, 0.1, 0.9, True, 1)        # p = 1 - 0.45 + 1.9*0.25 = 1.025
    assert v[0] == pytest.approx(0.25, rel=1e-15) and p[0] == pytest.approx(1.025, rel=1e-15)


def test_adagrad_first_step(mod):
    p, g, s = np.array([1.0, 1.0]), np.array([2.0, -3.0]), np.zeros(2)
    call(mod, "adagrad_step", p, g, s, 0.1, 0.0, 0.0, False, 1)   # s = g^2, step = clr * g/|g|
    np.testing.assert_array_equal(s, [4.0, 9.0])
    np.testing.assert_allclose(p, [0.9, 1.1], rtol=1e-15)


def test_rmsprop_first_step(mod):
    # sq = (1-0.99) g^2 -> avg = 0.1|g|, so the move is lr*g/avg = 10*lr*sign(g).
    p, g, sq = np.array([1.0, 1.0]), np.array([4.0, -0.25]), np.zeros(2)
    call(mod, "rmsprop_step", p, g, sq, empty(np.float64), empty(np.float64), 0.01, 0.99, 0.0, 0.0, 0.0,
                     False, False, 1)
    np.testing.assert_allclose(sq, [0.16, 0.000625], rtol=1e-13)
    np.testing.assert_allclose(p, [0.9, 1.1], rtol=1e-13)
    # centered: ga = 0.01 g, variance 0.01 g^2 - 1e-4 g^2 = 0.0099 g^2; momentum 0.5 from buf = 1
    p, sq, ga, buf = np.array([1.0]), np.zeros(1), np.zeros(1), np.array([1.0])
    call(mod, "rmsprop_step", p, np.array([2.0]), sq, ga, buf, 0.01, 0.99, 0.0, 0.0, 0.5, True, False, 1)
    assert ga[0] == pytest.approx(0.02, rel=1e-13)
    expected_buf = 0.5 + 2.0 / math.sqrt(0.0099 * 4.0)
    assert buf[0] == pytest.approx(expected_buf, rel=1e-13)
    assert p[0] == pytest.approx(1.0 - 0.01 * expected_buf, rel=1e-13)


# Every rule in every option combination that changes its arithmetic: (name, state kinds, scalars)
# with state kinds 0 = normal, 1 = positive, None = unused (empty).
_ADAM = adam_scalars(1e-3, 0.9, 0.999, 3)
PRECISION_CASES = [
    ("sgd_step", [None], [0.1, 0.0, 0.0, 0.0, False, False, False]),
    ("sgd_step", [0], [0.1, 0.01, 0.9, 0.2, False, True, False]),
    ("sgd_step", [0], [0.1, 0.01, 0.9, 0.0, True, False, True]),
    ("velocity_step", [0], [0.1, 0.9, False]),
    ("velocity_step", [0], [0.1, 0.9, True]),
    ("adagrad_step", [1], [0.1, 0.01, 1e-10, False]),
    ("rmsprop_step", [1, None, None], [0.01, 0.99, 1e-8, 0.0, 0.0, False, False]),
    ("rmsprop_step", [1, 0, 0], [0.01, 0.9, 1e-8, 0.01, 0.9, True, True]),
    ("adam_step", [0, 1, None], [1e-3, 0.9, 0.999, 1e-8, 0.0, *_ADAM, False, False, False]),
    ("adam_step", [0, 1, 1], [1e-3, 0.9, 0.999, 1e-8, 0.01, *_ADAM, True, True, True]),
    ("adam_step", [0, 1, 1], [1e-3, 0.9, 0.999, 1e-8, 0.01, *_ADAM, False, True, False]),
]


@pytest.mark.parametrize("name, states, scalars", PRECISION_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(PRECISION_CASES)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_arithmetic_stays_in_the_array_precision_bit_for_bit(name, states, scalars, dtype):
    # The kernels must round like the twin, which computes in the array's own precision: not like a
    # float64 computation cast at the end (float32), and without FMA contraction (every variant).
    rng = np.random.default_rng(1)
    n = 4099
    p, g = normal(rng, n, dtype), normal(rng, n, dtype)
    state = [empty(dtype) if k is None else positive(rng, n, dtype) if k else normal(rng, n, dtype, 0.1)
             for k in states]
    if name == "rmsprop_step" and states[1] == 0:     # centered: square_avg >= grad_avg**2
        state[0] = (state[0] + state[1].astype(np.float64) ** 2).astype(dtype)
    for mod in VARIANTS:
        compiled, _, twin = run_all(name, [p, g, *state], scalars, mod)
        for k, (a, b) in enumerate(zip(compiled, twin)):
            assert np.array_equal(bits(a), bits(b)), f"{mod.SIMD_VARIANT} {name} array {k}"


@pytest.mark.parametrize("name, states, scalars", [
    # states: 0 = normal, 1 = positive; scalars: a function of `maximize`
    ("sgd_step", [0], lambda mx: [0.1, 0.01, 0.9, 0.0, False, mx, False]),
    ("adagrad_step", [1], lambda mx: [0.1, 0.01, 1e-10, mx]),
    ("rmsprop_step", [1, 0, 0], lambda mx: [0.01, 0.99, 1e-8, 0.01, 0.9, True, mx]),
    ("adam_step", [0, 1, 1], lambda mx: [1e-3, 0.9, 0.999, 1e-8, 0.01, 1e-2, 0.03, False, True, mx]),
])
@pytest.mark.parametrize("dtype", DTYPES)
def test_maximize_is_descent_on_negated_grad(name, states, scalars, dtype):
    rng = np.random.default_rng(2)
    n = 1000
    p0, g = normal(rng, n, dtype), normal(rng, n, dtype)
    s0 = [positive(rng, n, dtype) if kind else normal(rng, n, dtype) for kind in states]
    for mod in VARIANTS:
        a = [p0.copy(), g] + [s.copy() for s in s0]
        b = [p0.copy(), -g] + [s.copy() for s in s0]
        call(mod, name, *a, *scalars(True), 1)
        call(mod, name, *b, *scalars(False), 1)
        for k in [0] + list(range(2, len(a))):
            assert np.array_equal(bits(a[k]), bits(b[k])), f"{mod.SIMD_VARIANT} array {k}"


# ---------------------------------------------------------------------------------------------
# unused buffers and sizes

UNUSED_CALLS = {
    # name: (build args from param, grad, sentinel buffer) for a configuration that ignores it
    "sgd_step": lambda p, g, s: ([p, g, s], [0.1, 0.0, 0.0, 0.0, False, False, False]),
    "rmsprop_grad_avg": lambda p, g, s: ([p, g, np.ones_like(p), s, np.empty(0, p.dtype)],
                                         [0.01, 0.9, 1e-8, 0.0, 0.0, False, False]),
    "rmsprop_momentum": lambda p, g, s: ([p, g, np.ones_like(p), np.empty(0, p.dtype), s],
                                         [0.01, 0.9, 1e-8, 0.0, 0.0, False, False]),
    "adam_step": lambda p, g, s: ([p, g, np.zeros_like(p), np.ones_like(p), s],
                                  [1e-3, 0.9, 0.999, 1e-8, 0.0, 1e-2, 0.03, False, False, False]),
}


@pytest.mark.parametrize("case", sorted(UNUSED_CALLS))
@pytest.mark.parametrize("size", ["empty", "full"])
def test_unused_buffer_is_untouched(mod, case, size):
    name = case if case in ("sgd_step", "adam_step") else "rmsprop_step"
    p, g = np.linspace(-1, 1, 9), np.linspace(1, 2, 9)
    sentinel = np.full(9 if size == "full" else 0, 7.0)
    arrays, scalars = UNUSED_CALLS[case](p, g, sentinel)
    call(mod, name, *arrays, *scalars, 2)
    assert np.all(sentinel == 7.0)
    assert not np.array_equal(p, np.linspace(-1, 1, 9))  # the step itself happened


@pytest.mark.parametrize("dtype", DTYPES)
def test_wrong_state_size_is_refused_before_any_change(mod, dtype):
    p, g = np.ones(5, dtype), np.ones(5, dtype)
    m, v = np.zeros(5, dtype), np.zeros(4, dtype)
    with pytest.raises(ValueError, match="exp_avg_sq must have 5 elements"):
        call(mod, "adam_step", p, g, m, v, empty(dtype), 1e-3, 0.9, 0.999, 1e-8, 0.0, 1e-2, 0.03,
                      False, False, False, 1)
    with pytest.raises(ValueError, match="momentum_buffer is unused here and must be empty"):
        call(mod, "sgd_step", p, g, np.zeros(3, dtype), 0.1, 0.0, 0.0, 0.0, False, False, False, 1)
    with pytest.raises(ValueError, match="grad must have 5 elements"):
        call(mod, "velocity_step", p, g[:3], m, 0.1, 0.9, False, 1)
    assert np.all(p == 1) and np.all(m == 0)


def test_both_modules_expose_the_same_grain():
    assert K.GRAIN == R.GRAIN and isinstance(K.GRAIN, int) and K.GRAIN > 0
    assert all(m.GRAIN == K.GRAIN for m in VARIANTS)
    assert K.STEP_GRAIN == R.STEP_GRAIN and all(m.STEP_GRAIN == K.STEP_GRAIN for m in VARIANTS)


def test_variants_hold_the_same_functions():
    names = {n for n in dir(K) if n.endswith("_step")}
    assert names >= {"sgd_step", "velocity_step", "adagrad_step", "rmsprop_step", "adam_step"}
    for mod in VARIANTS:
        assert {n for n in dir(mod) if n.endswith("_step")} == names


# ---------------------------------------------------------------------------------------------
# torch.optim parity (only where torch is installed)

TORCH_CASES = [
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01, nesterov=False)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, maximize=True)),
    ("SGD", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, eps=1e-10)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.01, momentum=0.5, centered=True)),
    ("RMSprop", dict(lr=0.01, maximize=True)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, maximize=True)),
    ("AdamW", dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)),
]


def fastopt_steps(name, opts, p, grads):
    """Drive the compiled kernels the way the API layer does (scalars computed once per step)."""
    n, dt = p.size, p.dtype
    state = {k: np.zeros(n, dt) for k in ("buf", "sum", "sq", "gavg", "m", "v", "vmax")}
    maximize = opts.get("maximize", False)
    wd = opts.get("weight_decay", 0.0 if name != "AdamW" else 1e-2)
    for t, g in enumerate(grads, start=1):
        if name == "SGD":
            mom = opts.get("momentum", 0.0)
            call(K, "sgd_step", p, g, state["buf"] if mom else empty(dt), opts["lr"], wd, mom,
                       opts.get("dampening", 0.0), opts.get("nesterov", False), maximize, t == 1, 1)
        elif name == "Adagrad":
            clr = opts["lr"] / (1 + (t - 1) * opts.get("lr_decay", 0.0))
            call(K, "adagrad_step", p, g, state["sum"], clr, wd, opts.get("eps", 1e-10), maximize, 1)
        elif name == "RMSprop":
            centered, mom = opts.get("centered", False), opts.get("momentum", 0.0)
            call(K, "rmsprop_step", p, g, state["sq"], state["gavg"] if centered else empty(dt),
                           state["buf"] if mom > 0 else empty(dt), opts["lr"], opts.get("alpha", 0.99),
                           opts.get("eps", 1e-8), wd, mom, centered, maximize, 1)
        else:
            beta1, beta2 = opts.get("betas", (0.9, 0.999))
            amsgrad = opts.get("amsgrad", False)
            step_size, bc2_sqrt = adam_scalars(opts["lr"], beta1, beta2, t)
            call(K, "adam_step", p, g, state["m"], state["v"], state["vmax"] if amsgrad else empty(dt),
                        opts["lr"], beta1, beta2, opts.get("eps", 1e-8), wd, step_size, bc2_sqrt,
                        name == "AdamW", amsgrad, maximize, 1)


@pytest.mark.parametrize("name, opts", TORCH_CASES)
def test_matches_torch_optim(name, opts):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal(257)
    grads = [rng.standard_normal(257) for _ in range(4)]
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = getattr(torch.optim, name)([tp], foreach=False, **opts)
    for g in grads:
        tp.grad = torch.from_numpy(g.copy())
        opt.step()
    p = p0.copy()
    fastopt_steps(name, opts, p, grads)
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-14)
