"""The cached multi-tensor step (issue 11): after one validated step, an optimizer over many
separate arrays steps each group with ONE kernel call (<rule>_multi over a StepPlan), bitwise as the
per-parameter path, and every guarantee of the validated path still holds (each is re-checked
by the StepGuard, or the step falls back to the validated path)."""
import numpy as np
import pytest

import fastopt
from fastopt import _backend, optim
from fastopt.optim import SGD, Adam, AdamW, NAdam
from fastopt.reference import optim as twin
from test_optim_flat import assert_same_state, bits
from _ratio_bound import ratio_rel

SIZES = [1000] * 17 + [1, 7, 1023]          # 20 tensors, odd sizes among them
CASES = [
    (Adam, dict(lr=1e-2)),
    (Adam, dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.01, amsgrad=True, maximize=True)),
    (AdamW, dict(lr=1e-2, weight_decay=0.1)),
    (SGD, dict(lr=0.1)),
    (SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    (SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
    (optim.RMSprop, dict(lr=1e-2, momentum=0.5, centered=True, weight_decay=0.01)),
    (optim.Adagrad, dict(lr=1e-2, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1)),
    (NAdam, dict(lr=1e-2, weight_decay=0.01, decoupled_weight_decay=True)),
    (optim.RAdam, dict(lr=1e-2, weight_decay=0.01)),          # rectified from step 6 on: see steps
    (optim.Adamax, dict(lr=1e-2, weight_decay=0.01)),
    (optim.Adadelta, dict(lr=1.0, weight_decay=0.01)),
    (optim.Lion, dict(lr=1e-3, weight_decay=0.1)),
]
IDS = [f"{cls.__name__}-{i}" for i, (cls, _) in enumerate(CASES)]


def arrays(dtype, seed=0, sizes=SIZES):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(dtype) for n in sizes]


def fill(grads, seed):
    rng = np.random.default_rng(seed)
    for g in grads:
        g[...] = rng.standard_normal(g.shape)


def assert_same(a, b):
    for pa, pb in zip(a.param_groups[0]["params"], b.param_groups[0]["params"]):
        assert np.array_equal(bits(pa), bits(pb))
    assert_same_state(a.state, b.state)


@pytest.mark.parametrize("cls, kw", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ema", [None, 0.9])
def test_cached_step_is_one_call_and_the_per_parameter_bits(cls, kw, dtype, ema, kernel_calls):
    fast, slow = cls(arrays(dtype), **kw, ema=ema), cls(arrays(dtype), **kw, ema=ema)
    grads = arrays(dtype, seed=1)
    multi = cls._RULE.kernel.replace("_step", "_multi")
    for step in range(7):
        fill(grads, 10 + step)
        kernel_calls.clear()
        fast.step(grads)
        assert kernel_calls.names("optim") == ([cls._RULE.kernel] * len(SIZES) if step == 0 else [multi])
        kernel_calls.clear()
        slow.step([g.copy() for g in grads])       # new gradient objects: the validated path every time
        assert kernel_calls.names("optim") == [cls._RULE.kernel] * len(SIZES)
    assert_same(fast, slow)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cached_step_on_the_numpy_backend(dtype):
    fastopt.set_backend("numpy")
    fast, slow = Adam(arrays(dtype), lr=1e-2), Adam(arrays(dtype), lr=1e-2)
    grads = arrays(dtype, seed=1)
    for step in range(3):
        fill(grads, step)
        fast.step(grads)
        slow.step([g.copy() for g in grads])
    assert fast._fast is not None
    assert_same(fast, slow)


def test_named_params_and_flat_arrays_grads_take_the_cached_step(kernel_calls):
    names = [f"p{i}" for i in range(len(SIZES))]
    opt = Adam(dict(zip(names, arrays(np.float32))), lr=1e-2)
    grads = dict(zip(names, arrays(np.float32, seed=1)))
    opt.step(grads)
    kernel_calls.clear()
    opt.step(dict(grads))                          # a new dict of the same arrays
    assert kernel_calls.names("optim") == ["adam_multi"]


def _warm(cls=Adam, dtype=np.float64, **kw):
    opt = cls(arrays(dtype), lr=1e-2, **kw)
    grads = arrays(dtype, seed=1)
    opt.step(grads)
    opt.step(grads)
    # clipping and skip_nonfinite read the gradients every step: never cached
    assert (opt._fast is not None) == (opt.max_grad_norm is None and not opt.skip_nonfinite)
    return opt, grads


def snapshot(opt):
    return ([p.copy() for p in opt.param_groups[0]["params"]],
            [{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in st.items()} for st in opt.state])


def assert_unchanged(opt, snap):
    params, state = snap
    for p, q in zip(opt.param_groups[0]["params"], params):
        assert np.array_equal(p, q)
    for st, ref in zip(opt.state, state):
        for k, v in ref.items():
            assert np.array_equal(st[k], v) if isinstance(v, np.ndarray) else st[k] == v


def test_a_reshaped_gradient_is_refused_before_anything_changes():
    opt, grads = _warm()
    snap = snapshot(opt)
    grads[0].shape = (10, 100)
    with pytest.raises(ValueError, match=r"grads\[0\]"):
        opt.step(grads)
    assert_unchanged(opt, snap)


def test_a_read_only_parameter_is_refused_before_anything_changes():
    opt, grads = _warm()
    snap = snapshot(opt)
    opt.param_groups[0]["params"][5].flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        opt.step(grads)
    assert_unchanged(opt, snap)


def test_a_rebound_or_read_only_state_array_is_refused_before_anything_changes():
    opt, grads = _warm()
    snap = snapshot(opt)
    opt.state[3]["exp_avg"] = opt.state[3]["exp_avg"].copy()
    with pytest.raises(ValueError, match="rebound"):
        opt.step(grads)
    opt2, grads2 = _warm()
    opt2.state[4]["exp_avg_sq"].flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        opt2.step(grads2)


def test_a_gradient_that_is_a_parameter_is_refused():
    opt, grads = _warm()
    snap = snapshot(opt)
    bad = list(grads)
    bad[2] = opt.param_groups[0]["params"][2]
    with pytest.raises(ValueError, match=r"grads\[2\]"):
        opt.step(bad)
    assert_unchanged(opt, snap)


def test_hyperparameter_and_step_count_edits_take_effect():
    opt, grads = _warm()
    ref = Adam(arrays(np.float64), lr=1e-2)
    ref.step([g.copy() for g in grads])
    ref.step([g.copy() for g in grads])
    for o in (opt, ref):
        o.param_groups[0]["lr"] = 0.5
        o.state[7]["step"] = 40                     # one parameter's step count: per-parameter scalars
    opt.step(grads)
    ref.step([g.copy() for g in grads])
    assert_same(opt, ref)
    opt.step(grads)                                # unequal steps: no cached step, still right
    ref.step([g.copy() for g in grads])
    assert_same(opt, ref)


def test_hooks_run_on_the_cached_step():
    opt, grads = _warm()
    seen = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: seen.append("post"))
    opt.step(grads)
    assert seen == ["pre", "post"]


def test_clipping_and_skipping_take_the_validated_path_and_still_work():
    opt, grads = _warm(max_grad_norm=0.1)
    ref = Adam(arrays(np.float64), lr=1e-2, max_grad_norm=0.1)
    ref.step(grads)
    ref.step(grads)
    assert_same(opt, ref)
    opt, grads = _warm(skip_nonfinite=True)
    snap = snapshot(opt)
    grads[3][5] = np.nan
    opt.step(grads)
    assert opt.skipped_steps == 1
    assert_unchanged(opt, snap)


def test_averaged_block_refuses_the_cached_step():
    opt, grads = _warm(ema=0.5)
    with opt.averaged():
        with pytest.raises(RuntimeError, match="averaged"):
            opt.step(grads)
    opt.step(grads)


def test_two_groups_are_two_calls(kernel_calls):
    a, b = arrays(np.float32), arrays(np.float32, seed=2)
    opt = Adam([{"params": a}, {"params": b, "lr": 0.5}], lr=1e-2)
    grads = arrays(np.float32, seed=1) + arrays(np.float32, seed=3)
    opt.step(grads)
    kernel_calls.clear()
    opt.step(grads)
    assert kernel_calls.names("optim") == ["adam_multi", "adam_multi"]


def test_every_class_rule_has_a_multi_kernel_on_both_backends():
    from fastopt.optim._declarations import RULES
    for rule in RULES.values():
        for mod in [twin] + [_module(m) for m in MODULES]:
            assert callable(getattr(mod, rule.kernel.replace("_step", "_multi"))), (mod, rule.key)


# ---------------------------------------------------------------- the kernels' own contract
# (tests/test_kernel_contract.py lists these in PLANNED: its buffer specs cannot build a StepPlan)
MODULES = [m.__name__.rsplit(".", 1)[1] for m in _backend.compiled_variants("optim").values()]


def _module(name):
    import importlib
    return importlib.import_module(f"fastopt.{name}")


def _plan_args(mod, dtype, sizes, nstate=3, used=(True, True, True), avg=True, seed=0):
    rng = np.random.default_rng(seed)
    e = np.empty(0, dtype)
    ps = [rng.standard_normal(n).astype(dtype) for n in sizes]
    gs = [rng.standard_normal(n).astype(dtype) for n in sizes]
    # positive state, the first one >= 1 (RMSprop's centered square_avg - grad_avg**2 stays > 0)
    ss = [[((np.abs(rng.standard_normal(n)) + 1) if j == 0 else 0.1 * np.abs(rng.standard_normal(n))).astype(dtype)
           if u else e for j, u in enumerate(used[:nstate])] for n in sizes]
    av = [rng.standard_normal(n).astype(dtype) if avg else e for n in sizes]
    return ps, gs, ss, av


ADAM_KW = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2, step_size=1e-2,
               bias_correction2_sqrt=0.05, decoupled=False, amsgrad=True, maximize=False, grad_scale=0.7,
               avg_weight=0.1)
SGD_KW = dict(lr=1e-2, weight_decay=1e-2, momentum=0.9, dampening=0.1, nesterov=False, maximize=True,
              first_step=False, grad_scale=1.0, avg_weight=0.1)


def _registry_scalars(kernel):
    # The kernel contract's values for `kernel` (every state buffer in use, averaging on).
    from test_kernel_contract import REGISTRY
    return {k: v[1] for k, v in REGISTRY["optim"][kernel].items() if v[0] == "v"}


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel", sorted(twin._STATE_ARGS))
def test_multi_kernels_equal_their_single_tensor_kernel_and_the_twin(name, dtype, kernel):
    mod = _module(name)
    kw = _registry_scalars(kernel)
    names = twin._STATE_ARGS[kernel]
    averaging = kernel != "velocity_step"
    sizes = [1, 7, 1023, 16384, 40000]
    def make():
        return _plan_args(mod, dtype, sizes, len(names), used=(True, True, True), avg=averaging, seed=5)
    args, ref, tw = make(), make(), make()
    plan = mod.StepPlan(*args)
    multi = kernel.replace("_step", "_multi")
    getattr(mod, multi)(plan=plan, **kw, track_ratio=True, n_threads=2)
    for k in range(len(sizes)):                      # the single-tensor kernel, tensor by tensor
        p, g, st, a = ref[0][k], ref[1][k], ref[2][k], ref[3][k]
        avg = {"param_avg": a} if averaging else {}
        getattr(mod, kernel)(param=p, grad=g, **dict(zip(names, st)), **avg, **kw, n_threads=1)
        assert np.array_equal(bits(args[0][k]), bits(p)), k
        for x, y in zip(args[2][k], st):
            assert np.array_equal(bits(x), bits(y)), k
        assert np.array_equal(bits(args[3][k]), bits(a)), k
    tplan = twin.StepPlan(*tw)
    getattr(twin, multi)(plan=tplan, **kw, track_ratio=True, n_threads=1)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    for x, y in zip(args[0], tw[0]):
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol)
    np.testing.assert_allclose(plan.ratios(), tplan.ratios(), rtol=1e-5 if dtype == np.float32 else 1e-11)
    for p0, p1, r in zip(make()[0], args[0], plan.ratios()):       # and against NumPy directly
        o, n = p0.astype(np.float64), p1.astype(np.float64)
        assert r == pytest.approx(np.linalg.norm(n - o) / np.linalg.norm(o), rel=ratio_rel(dtype, max(sizes)))


@pytest.mark.parametrize("name", MODULES)
def test_step_plan_refuses_wrong_inputs(name):
    mod = _module(name)
    ps, gs, ss, av = _plan_args(mod, np.float32, [5, 9])
    bad_grads = [gs[0], gs[1][:8].copy()]
    with pytest.raises(ValueError, match=r"grads\[1\]"):
        mod.StepPlan(ps, bad_grads, ss, av)
    with pytest.raises(TypeError, match=r"grads\[0\]"):
        mod.StepPlan(ps, [gs[0].astype(np.float64), gs[1]], ss, av)
    with pytest.raises(ValueError, match=r"states\[1\]\[2\]"):
        mod.StepPlan(ps, gs, [ss[0], [ss[1][0], ss[1][1], ss[1][2][:3].copy()]], av)
    ro = ps[0].copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        mod.StepPlan([ro, ps[1]], gs, ss, av)
    with pytest.raises(ValueError, match="C-contiguous"):
        mod.StepPlan([np.zeros(10, np.float32)[::2], ps[1]], gs, ss, av)
    with pytest.raises(ValueError, match="one entry per tensor"):
        mod.StepPlan(ps, gs[:1], ss, av)
    with pytest.raises(TypeError):
        mod.StepPlan(ps, gs, ss, None)
    plan = mod.StepPlan(ps, gs, ss, av)
    before = [p.copy() for p in ps]
    with pytest.raises(ValueError, match="amsgrad|need"):
        mod.adam_multi(plan=plan, **dict(ADAM_KW, amsgrad=False), track_ratio=False, n_threads=1)
    with pytest.raises(ValueError, match="state arrays"):
        mod.sgd_multi(plan=plan, **SGD_KW, track_ratio=False, n_threads=1)
    for n in (0, -1):
        with pytest.raises(ValueError, match="n_threads"):
            mod.adam_multi(plan=plan, **ADAM_KW, track_ratio=True, n_threads=n)
    with pytest.raises(TypeError):
        mod.adam_multi(plan=None, **ADAM_KW, track_ratio=False, n_threads=1)
    for p, q in zip(ps, before):
        assert np.array_equal(p, q)
    mod.adam_multi(plan=plan, **ADAM_KW, track_ratio=False, n_threads=100000)   # capped, runs


def test_multi_kernel_results_do_not_depend_on_thread_count():
    mod = _module(MODULES[-1])
    sizes = [(1 << 20) + 7, 3, 50000]
    out = []
    for n in (1, 2, 3):
        args = _plan_args(mod, np.float32, sizes, seed=4)
        plan = mod.StepPlan(*args)
        mod.adam_multi(plan=plan, **ADAM_KW, track_ratio=True, n_threads=n)
        out.append((args[0], plan.ratios()))
    for params, ratios in out[1:]:
        assert ratios == out[0][1]
        for p, q in zip(params, out[0][0]):
            assert np.array_equal(bits(p), bits(q))
