"""Every declared rule's compiled kernel against its NumPy twin, SSE2 against AVX2, and the new rules
(NAdam, RAdam, Adamax, Adadelta, Lion, Adam(decoupled_weight_decay=True)) against torch 2.13 step for
step and (Lion) against the paper's formula.

The cases come from the declarations (fastopt.optim._declarations.RULES): per rule, its defaults,
each flag switched on, weight decay, and everything at once; the per-step scalars are the
declaration's own `per_step`, and arrays are passed by keyword as the API passes them.
"""
import numpy as np
import pytest

from fastopt import _backend, optim
from fastopt import _optim_kernels as K
from fastopt.optim._declarations import RULES
from fastopt.reference import optim as R

VARIANTS = list(_backend.compiled_variants("optim").values())   # the baseline (K) first

DTYPES = [np.float32, np.float64]
SIZES = [1, 7, 1023, 70001]
TOL = {np.float32: dict(rtol=5e-6, atol=1e-7), np.float64: dict(rtol=1e-13, atol=1e-300)}
# State kinds that are non-negative in any real run (second moments, accumulators, infinity norms).
POSITIVE = {"exp_avg_sq", "max_exp_avg_sq", "square_avg", "sum", "acc_delta", "exp_inf"}


def bits(a):
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def configs(rule):
    """Hyperparameter dicts to test a rule under: defaults, each flag on, weight decay, all at once."""
    base = dict(rule.defaults)
    if "lr" in base:
        base["lr"] = min(base["lr"] * 10, 1.0)
    out = [dict(base)]
    flags = [h.name for h in rule.hypers if h.kind == "bool"]
    for f in flags:
        out.append({**base, f: True})
    for key, value in (("weight_decay", 0.1), ("momentum", 0.9), ("lr_decay", 0.01), ("momentum_decay", 0.01)):
        if key in base:
            out.append({**base, key: value})
    everything = {**base, **{f: True for f in flags}}
    for key, value in (("weight_decay", 0.1), ("momentum", 0.9)):
        if key in base:
            everything[key] = value
    out.append(everything)
    return [h for h in out if rule.check is None or rule.check(h) is None]


CASES = [(key, i, h) for key, rule in RULES.items() for i, h in enumerate(configs(rule))]
CASE_IDS = [f"{key}-{i}" for key, i, _ in CASES]


def kernel_call(rule, h, n, dtype, rng, step=3, fresh=False, averaging=False, grad_scale=1.0):
    """(keyword arguments of one kernel call, names of the arrays in them) for rule under h."""
    s = {sc.name: sc.initial for sc in rule.scalars}
    if "step" in s:
        s["step"] = step
    if "mu_product" in s:
        s["mu_product"] = 0.9 ** step
    scalars, _ = rule.per_step(h, s, fresh)
    kw = {"param": rng.standard_normal(n).astype(dtype), "grad": rng.standard_normal(n).astype(dtype)}
    centered = h.get("centered", False)
    for st in rule.state:
        if not st.used(h):
            a = np.empty(0, dtype)
        elif st.name in POSITIVE:
            a = (rng.random(n) + 1e-3).astype(dtype)
        else:
            a = (0.1 * rng.standard_normal(n)).astype(dtype)
        kw[st.kernel_arg] = a
    if centered:   # square_avg >= grad_avg**2, as in a real run
        kw["square_avg"] = (kw["square_avg"] + kw["grad_avg"].astype(np.float64) ** 2).astype(dtype)
    if rule.averaging:
        kw["param_avg"] = rng.standard_normal(n).astype(dtype) if averaging else np.empty(0, dtype)
        kw["grad_scale"] = grad_scale
        kw["avg_weight"] = 0.01 if averaging else 0.0
    kw.update(scalars)
    return kw, [k for k, v in kw.items() if isinstance(v, np.ndarray)]


def run(mod, rule, kw, names, n_threads):
    copies = {k: (v.copy() if k in names else v) for k, v in kw.items()}
    copies["grad"].flags.writeable = False
    getattr(mod, rule.kernel)(**copies, n_threads=n_threads)
    return {k: copies[k] for k in names}


@pytest.mark.parametrize("key, i, h", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_matches_twin_and_variants_are_bitwise_equal(key, i, h, dtype):
    rule = RULES[key]
    rng = np.random.default_rng(100 + i)
    for n in SIZES:
        for averaging, scale in ((False, 1.0), (True, 0.37)) if rule.averaging else ((False, 1.0),):
            kw, names = kernel_call(rule, h, n, dtype, rng, fresh=(i % 2 == 0), averaging=averaging,
                                    grad_scale=scale)
            twin = run(R, rule, kw, names, 1)
            first = None
            for mod in VARIANTS:
                one, two = run(mod, rule, kw, names, 1), run(mod, rule, kw, names, 2)
                for name in names:
                    assert np.array_equal(bits(one[name]), bits(two[name])), (mod.SIMD_VARIANT, name, n)
                    np.testing.assert_allclose(one[name], twin[name], **TOL[dtype],
                                               err_msg=f"{mod.SIMD_VARIANT} {name} n={n}")
                if first is None:
                    first = one
                else:   # -ffp-contract=off: the AVX2 build computes the SSE2 build's bits
                    for name in names:
                        assert np.array_equal(bits(one[name]), bits(first[name])), ("sse2 vs avx2", name, n)
            np.testing.assert_array_equal(kw["grad"], run(K, rule, kw, names, 1)["grad"])


@pytest.mark.parametrize("key", [k for k, r in RULES.items() if r.class_name is not None])
def test_realistic_size_float32_matches_twin(key):
    rule = RULES[key]
    rng = np.random.default_rng(7)
    kw, names = kernel_call(rule, configs(rule)[-1], 1 << 20, np.float32, rng, averaging=rule.averaging,
                            grad_scale=0.5)
    twin, got = run(R, rule, kw, names, 1), run(K, rule, kw, names, 2)
    for name in names:
        np.testing.assert_allclose(got[name], twin[name], **TOL[np.float32], err_msg=name)


def test_grad_scale_one_and_minus_one_are_exact():
    # grad_scale folds clipping and `maximize` into one multiply: scale 1 with maximize is the
    # negated gradient bit for bit.
    rule = RULES["nadam"]
    h = dict(rule.defaults)
    rng = np.random.default_rng(3)
    kw, names = kernel_call(rule, {**h, "maximize": True}, 1023, np.float32, rng)
    a = run(K, rule, kw, names, 1)
    kw2 = dict(kw, maximize=False, grad=-kw["grad"])
    b = run(K, rule, kw2, names, 1)
    for name in names:
        if name != "grad":
            assert np.array_equal(bits(a[name]), bits(b[name])), name


# ---------------------------------------------------------------------------------------------
# torch 2.13 parity, through the classes

TORCH_CASES = [
    ("NAdam", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.05, momentum_decay=0.01)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("RAdam", dict(lr=0.01)),
    ("RAdam", dict(lr=0.01, betas=(0.9, 0.99), weight_decay=0.05)),
    ("RAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("Adamax", dict(lr=0.01)),
    ("Adamax", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.05, eps=1e-6, maximize=True)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.05, maximize=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, amsgrad=True)),
]
STEPS = 12   # RAdam's rectification starts at step 6 for beta2 = 0.999 (rho_t > 5): both branches run


def torch_run(torch, name, kwargs, p0, grads):
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = getattr(torch.optim, name)([tp], foreach=False, **kwargs)
    out = []
    for g in grads:
        tp.grad = torch.from_numpy(g.copy())
        opt.step()
        out.append(tp.detach().numpy().copy())
    return out


def fastopt_run(name, kwargs, p0, grads):
    p = p0.copy()
    opt = getattr(optim, name)([p], **kwargs)
    out = []
    for g in grads:
        opt.step([g])
        out.append(p.copy())
    return out


@pytest.mark.parametrize("name, kwargs", TORCH_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(TORCH_CASES)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_torch_step_for_step(name, kwargs, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    p0 = rng.standard_normal(1031).astype(dtype)
    grads = [rng.standard_normal(1031).astype(dtype) for _ in range(STEPS)]
    # torch keeps NAdam's mu_product and the step count in its default dtype: float64 here, so the
    # float64 comparison is of the same mathematics (fastopt keeps these scalars in double).
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
    try:
        expected = torch_run(torch, name, kwargs, p0, grads)
    finally:
        torch.set_default_dtype(previous)
    got = fastopt_run(name, kwargs, p0, grads)
    for t, (a, b) in enumerate(zip(got, expected), start=1):
        if dtype == np.float64:
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=0, err_msg=f"{name} step {t}")
        else:
            # A few ulps of the O(1) parameters: torch's vectorized float32 kernels contract into
            # FMAs and order operations their own way; seen <= 2 ulps over 12 steps.
            ulps = np.abs(a.astype(np.float64) - b) / (np.finfo(np.float32).eps * np.maximum(np.abs(b), 1.0))
            assert ulps.max() <= 4, f"{name} step {t}: {ulps.max():.1f} ulps"


def test_adamw_is_adam_with_decoupled_weight_decay():
    rng = np.random.default_rng(5)
    p0 = rng.standard_normal(257)
    grads = [rng.standard_normal(257) for _ in range(5)]
    a = fastopt_run("Adam", dict(lr=0.01, weight_decay=0.2, decoupled_weight_decay=True), p0, grads)
    b = fastopt_run("AdamW", dict(lr=0.01, weight_decay=0.2), p0, grads)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = fastopt_run("Adam", dict(lr=0.01, weight_decay=0.2), p0, grads)
    assert not np.array_equal(a[-1], c[-1])


# ---------------------------------------------------------------------------------------------
# Lion: the paper's Algorithm 2, element by element in Python floats

def lion_paper(p, grads, lr, beta1, beta2, wd):
    p, m = [float(x) for x in p], [0.0] * len(p)
    for g in grads:
        for j, gj in enumerate(map(float, g)):
            c = beta1 * m[j] + (1 - beta1) * gj
            sign = (c > 0) - (c < 0)
            p[j] = p[j] - lr * (sign + wd * p[j])
            m[j] = beta2 * m[j] + (1 - beta2) * gj
    return np.array(p)


@pytest.mark.parametrize("kwargs", [dict(), dict(lr=1e-3, weight_decay=0.1), dict(lr=1e-2, betas=(0.95, 0.98))])
def test_lion_follows_the_paper(kwargs):
    rng = np.random.default_rng(9)
    p0 = rng.standard_normal(301)
    grads = [rng.standard_normal(301) for _ in range(6)]
    got = fastopt_run("Lion", kwargs, p0, grads)[-1]
    full = {"lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.0, **kwargs}
    expected = lion_paper(p0, grads, full["lr"], *full["betas"], full["weight_decay"])
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-15)


def test_lion_defaults_and_sign_of_zero():
    opt = optim.Lion([np.zeros(3)])
    assert opt.defaults == {"lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.0, "maximize": False}
    p = np.array([1.0, 2.0, 3.0])
    optim.Lion([p], lr=0.1).step([np.array([0.0, 1.0, -1.0])])
    np.testing.assert_allclose(p, [1.0, 1.9, 3.1], rtol=1e-15)   # sign(0) = 0: no move


def test_new_classes_are_exported():
    import fastopt
    for name in ("NAdam", "RAdam", "Adamax", "Adadelta", "Lion", "clip_grad_norm_"):
        assert getattr(fastopt, name) is getattr(optim, name)
